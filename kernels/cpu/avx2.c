/* x86-64 kernels: AVX2 + FMA + F16C (Haswell and later). Compiled only into this file with
 * those flags; called only after run-time detection. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include "llava_kernels.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Signed bytes x signed bytes summed in int32 lanes: maddubs needs one unsigned operand, so
 * move x's sign onto y (|x| * sign(x)*y = x*y). */
static inline __m256i dot_i8(__m256i x, __m256i y) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

float le_vec_dot_q4_0_q8_0_avx2(int n, const le_block_q4_0 *w, const le_block_q8_0 *a) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
    for (int b = 0; b < n / LE_QK4_0; b++) {
        const __m128i q = _mm_loadu_si128((const __m128i *)w[b].qs);
        /* Bytes 0..15: low nibbles (values j), 16..31: high nibbles (values j + 16). */
        __m256i x = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        x = _mm256_sub_epi8(_mm256_and_si256(x, low4), eight);
        const __m256i y = _mm256_loadu_si256((const __m256i *)a[b].qs);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(a[b].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(x, y)), acc);
    }
    return hsum8(acc);
}

float le_vec_dot_q8_0_q8_0_avx2(int n, const le_block_q8_0 *w, const le_block_q8_0 *a) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / LE_QK8_0; b++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)w[b].qs);
        const __m256i y = _mm256_loadu_si256((const __m256i *)a[b].qs);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(a[b].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(x, y)), acc);
    }
    return hsum8(acc);
}

float le_vec_dot_f16_f32_avx2(int n, const uint16_t *w, const float *a) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    /* Two accumulators hide the FMA latency. */
    for (; i + 16 <= n; i += 16) {
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a + i), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(a + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a + i), acc0);
    }
    float sum = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) {
        sum += _cvtsh_ss(w[i]) * a[i];
    }
    return sum;
}
#endif
