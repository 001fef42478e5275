/* x86-64 kernels: AVX2 + FMA + F16C (Haswell and later). Compiled only into this file with
 * those flags; called only after run-time detection. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

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

#if defined(__x86_64__) || defined(_M_X64)
/* 32 bits to 32 bytes, 0xFF where the bit is set: byte i looks at bit i of qh. */
static inline __m256i bits_to_bytes(uint32_t qh) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
}

float le_vec_dot_q5_0_q8_0_avx2(int n, const le_block_q5_0 *w, const le_block_q8_0 *a) {
    __m256 acc = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10), sixteen = _mm256_set1_epi8(16);
    for (int b = 0; b < n / LE_QK5_0; b++) {
        const __m128i q = _mm_loadu_si128((const __m128i *)w[b].qs);
        __m256i x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low4);
        uint32_t qh;
        memcpy(&qh, w[b].qh, sizeof qh);
        x = _mm256_or_si256(x, _mm256_and_si256(bits_to_bytes(qh), bit4));
        x = _mm256_sub_epi8(x, sixteen);
        const __m256i y = _mm256_loadu_si256((const __m256i *)a[b].qs);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(a[b].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(x, y)), acc);
    }
    return hsum8(acc);
}

static inline int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

float le_vec_dot_q4_K_q8_K_avx2(int n, const le_block_q4_K *w, const le_block_q8_K *a) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sc[8], m[8];
        for (int j = 0; j < 4; j++) {
            sc[j] = w[b].scales[j] & 63;
            m[j] = w[b].scales[j + 4] & 63;
            sc[j + 4] = (w[b].scales[j + 8] & 0x0f) | ((w[b].scales[j] >> 6) << 4);
            m[j + 4] = (w[b].scales[j + 8] >> 4) | ((w[b].scales[j + 4] >> 6) << 4);
        }
        int summ = 0;
        for (int j = 0; j < 8; j++) {
            summ += m[j] * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
        __m256i acc = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * c));
            const __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)(a[b].qs + 64 * c));
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)(a[b].qs + 64 * c + 32));
            /* Unsigned 4-bit x signed 8-bit pairs fit int16 (2 * 15 * 127); then scale and widen. */
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16((short)sc[2 * c]));
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16((short)sc[2 * c + 1]));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        const float d = _cvtsh_ss(w[b].d) * a[b].d, dmin = _cvtsh_ss(w[b].dmin) * a[b].d;
        sum += d * (float)hsum_i32(acc) - dmin * (float)summ;
    }
    return sum;
}

float le_vec_dot_q6_K_q8_K_avx2(int n, const le_block_q6_K *w, const le_block_q8_K *a) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[b].ql + 64 * h, *qhp = w[b].qh + 32 * h;
            const int8_t *sc = w[b].scales + 8 * h, *yq = a[b].qs + 128 * h;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, low4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4));
            for (int k = 0; k < 4; k++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(yq + 32 * k));
                /* (q - 32) * y = q * y - 32 * y, both in int16 pairs: 2 * 63 * 127 fits. */
                const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], y), _mm256_maddubs_epi16(k32, y));
                const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
            }
        }
        sum += _cvtsh_ss(w[b].d) * a[b].d * (float)hsum_i32(acc);
    }
    return sum;
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
void le_f16_to_f32_avx2(const uint16_t *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    }
    for (; i < n; i++) {
        y[i] = _cvtsh_ss(x[i]);
    }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
void le_vec_dot_q4_0_q8_0_x4_avx2(int n, const le_block_q4_0 *w, const le_block_q8_0 *const a[4], float out[4]) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
    for (int b = 0; b < n / LE_QK4_0; b++) {
        const __m128i q = _mm_loadu_si128((const __m128i *)w[b].qs);
        __m256i x = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
        x = _mm256_sub_epi8(_mm256_and_si256(x, low4), eight);
        /* The sign trick's |x| is shared by the four products. */
        const __m256i ax = _mm256_sign_epi8(x, x);
        const float dw = _cvtsh_ss(w[b].d);
        for (int j = 0; j < 4; j++) {
            const __m256i y = _mm256_loadu_si256((const __m256i *)a[j][b].qs);
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(y, x)), _mm256_set1_epi16(1));
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * _cvtsh_ss(a[j][b].d)), _mm256_cvtepi32_ps(p), acc[j]);
        }
    }
    for (int j = 0; j < 4; j++) {
        out[j] = hsum8(acc[j]);
    }
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
/* roundf (halves away from zero) on 8 lanes: truncate, then step away from zero where the
 * dropped fraction is at least one half. Exact, so the bytes equal the scalar quantizer's. */
static inline __m256 round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
    const __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, t));
    const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_or_ps(step, sign));
}

/* One block of 32: codes into q, returns the f16-rounded scale widened to f32 and the code sum. */
static inline float quantize_block(const float *x, int8_t *q, uint16_t *dbits, int *sum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        m = _mm256_max_ps(m, _mm256_and_ps(v[k], absmask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256i i32[4];
    for (int k = 0; k < 4; k++) {
        i32[k] = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[k], _mm256_set1_ps(id))));
    }
    /* Keep the low byte of each int32, as the scalar (int8_t) conversion does: equal to
     * saturation for every code in -127..127, and also for the scalar's result when a denormal
     * scale makes x * id infinite (the "integer indefinite" 0x80000000 keeps byte 0). */
    __m256i s32 = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        i32[k] = _mm256_srai_epi32(_mm256_slli_epi32(i32[k], 24), 24);
        s32 = _mm256_add_epi32(s32, i32[k]);
    }
    /* Pack to bytes; the packs interleave 128-bit lanes, the permute restores the order. */
    const __m256i p16a = _mm256_packs_epi32(i32[0], i32[1]), p16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p8);
    *sum = hsum_i32(s32);
    *dbits = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    return _cvtsh_ss(*dbits);
}

void le_quantize_row_q8_0_avx2(const float *x, le_block_q8_0 *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int sum;
        quantize_block(x + b * LE_QK8_0, y[b].qs, &y[b].d, &sum);
    }
}

void le_quantize_row_q8_0x_avx2(const float *x, le_block_q8_0x *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int sum;
        uint16_t bits;
        y[b].d = quantize_block(x + b * LE_QK8_0, y[b].qs, &bits, &sum);
        y[b].dsum = y[b].d * (float)sum;
    }
}
#endif
