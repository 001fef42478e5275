/* One attention head: softmax(q . K^T * scale) V over n_kv positions, keys and values read in
 * place from the cache (f32, or f16 bits converted as they are read), the softmax computed online
 * a block of positions at a time so no score row is stored. Compiled three times by build.rs:
 * portable (le_attend_head_scalar), with AVX2+FMA+F16C (-DLE_ATTN_AVX2) and for AArch64 NEON
 * (-DLE_ATTN_NEON). */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "llava_kernels.h"

#include "half.h"

/* Positions per block: their scores sit in a small stack array. */
#define BLOCK 32
/* The largest head the kernels take (stack accumulator). */
#define MAX_HEAD_DIM 256

#if defined(LE_ATTN_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#define ATTEND_FN le_attend_head_avx2

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load8(const void *p, int f16, size_t i) {
    if (f16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    }
    return _mm256_loadu_ps((const float *)p + i);
}

static inline float load1(const void *p, int f16, size_t i) {
    return f16 ? _cvtsh_ss(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* e^x for x <= 0 (scores minus their running maximum), to about 2 ulp: 2^n * p(r) with
 * x = n ln2 + r, |r| <= ln2 / 2, p a degree-6 Taylor polynomial; below -87 the result is 0. */
static inline __m256 exp_neg(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

static float dot_qk(const float *q, const void *k, int f16, size_t off, int hd) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= hd; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(k, f16, off + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8(k, f16, off + i + 8), a1);
    }
    for (; i + 8 <= hd; i += 8) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(k, f16, off + i), a0);
    }
    float s = hsum8(_mm256_add_ps(a0, a1));
    for (; i < hd; i++) {
        s += q[i] * load1(k, f16, off + i);
    }
    return s;
}

static void exp_block(float *s, int n, float m) {
    int j = 0;
    const __m256 vm = _mm256_set1_ps(m);
    for (; j + 8 <= n; j += 8) {
        _mm256_storeu_ps(s + j, exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm)));
    }
    for (; j < n; j++) {
        s[j] = expf(s[j] - m);
    }
}

/* o = o * c + sum_j w[j] v[j]. Up to 64 dimensions of o stay in registers while the keys' rows
 * stream past (one broadcast of w[j] serves eight FMAs), rather than re-reading every row for
 * each 8 dimensions. */
static void accumulate_v(float *o, float c, const float *w, int n, const void *v, int f16, size_t stride, size_t off,
                         int hd) {
    int i0 = 0;
    for (; i0 + 64 <= hd; i0 += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) {
            acc[k] = _mm256_mul_ps(_mm256_loadu_ps(o + i0 + 8 * k), _mm256_set1_ps(c));
        }
        for (int j = 0; j < n; j++) {
            const __m256 wj = _mm256_set1_ps(w[j]);
            const size_t at = off + (size_t)j * stride + i0;
            for (int k = 0; k < 8; k++) {
                acc[k] = _mm256_fmadd_ps(wj, load8(v, f16, at + 8 * k), acc[k]);
            }
        }
        for (int k = 0; k < 8; k++) {
            _mm256_storeu_ps(o + i0 + 8 * k, acc[k]);
        }
    }
    for (; i0 + 8 <= hd; i0 += 8) {
        __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(o + i0), _mm256_set1_ps(c));
        for (int j = 0; j < n; j++) {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), load8(v, f16, off + (size_t)j * stride + i0), acc);
        }
        _mm256_storeu_ps(o + i0, acc);
    }
    for (int i = i0; i < hd; i++) {
        float acc = o[i] * c;
        for (int j = 0; j < n; j++) {
            acc += w[j] * load1(v, f16, off + (size_t)j * stride + i);
        }
        o[i] = acc;
    }
}

#elif defined(LE_ATTN_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define ATTEND_FN le_attend_head_neon

static inline float32x4_t load4(const void *p, int f16, size_t i) {
    if (f16) {
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + i)));
    }
    return vld1q_f32((const float *)p + i);
}

static inline float load1(const void *p, int f16, size_t i) {
    return f16 ? f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static float dot_qk(const float *q, const void *k, int f16, size_t off, int hd) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= hd; i += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), load4(k, f16, off + i));
        a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), load4(k, f16, off + i + 4));
    }
    for (; i + 4 <= hd; i += 4) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), load4(k, f16, off + i));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < hd; i++) {
        s += q[i] * load1(k, f16, off + i);
    }
    return s;
}

static void exp_block(float *s, int n, float m) {
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - m);
    }
}

static void accumulate_v(float *o, float c, const float *w, int n, const void *v, int f16, size_t stride, size_t off,
                         int hd) {
    int i = 0;
    for (; i + 4 <= hd; i += 4) {
        float32x4_t acc = vmulq_n_f32(vld1q_f32(o + i), c);
        for (int j = 0; j < n; j++) {
            acc = vfmaq_n_f32(acc, load4(v, f16, off + (size_t)j * stride + i), w[j]);
        }
        vst1q_f32(o + i, acc);
    }
    for (; i < hd; i++) {
        float acc = o[i] * c;
        for (int j = 0; j < n; j++) {
            acc += w[j] * load1(v, f16, off + (size_t)j * stride + i);
        }
        o[i] = acc;
    }
}

#elif !defined(LE_ATTN_AVX2) && !defined(LE_ATTN_NEON)
#define ATTEND_FN le_attend_head_scalar

static inline float load1(const void *p, int f16, size_t i) {
    return f16 ? f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static float dot_qk(const float *q, const void *k, int f16, size_t off, int hd) {
    float s = 0.0f;
    for (int i = 0; i < hd; i++) {
        s += q[i] * load1(k, f16, off + i);
    }
    return s;
}

static void exp_block(float *s, int n, float m) {
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - m);
    }
}

static void accumulate_v(float *o, float c, const float *w, int n, const void *v, int f16, size_t stride, size_t off,
                         int hd) {
    for (int i = 0; i < hd; i++) {
        float acc = o[i] * c;
        for (int j = 0; j < n; j++) {
            acc += w[j] * load1(v, f16, off + (size_t)j * stride + i);
        }
        o[i] = acc;
    }
}
#endif

#ifdef ATTEND_FN
int ATTEND_FN(int n_kv, int hd, const float *q, const void *k, const void *v, int f16, size_t stride, float scale,
              float *out) {
    if (hd <= 0 || hd > MAX_HEAD_DIM) {
        return -1;
    }
    float o[MAX_HEAD_DIM];
    memset(o, 0, (size_t)hd * sizeof(float));
    float m = -INFINITY, l = 0.0f;
    for (int p0 = 0; p0 < n_kv; p0 += BLOCK) {
        const int nb = n_kv - p0 < BLOCK ? n_kv - p0 : BLOCK;
        float s[BLOCK];
        float bm = -INFINITY;
        for (int j = 0; j < nb; j++) {
            s[j] = dot_qk(q, k, f16, (size_t)(p0 + j) * stride, hd) * scale;
            bm = s[j] > bm ? s[j] : bm;
        }
        /* A new maximum rescales what was accumulated under the old one (c = 0 at the start). */
        const float nm = bm > m ? bm : m;
        const float c = m == -INFINITY ? 0.0f : expf(m - nm);
        m = nm;
        exp_block(s, nb, m);
        float bl = 0.0f;
        for (int j = 0; j < nb; j++) {
            bl += s[j];
        }
        l = l * c + bl;
        accumulate_v(o, c, s, nb, v, f16, stride, (size_t)p0 * stride, hd);
    }
    const float inv = n_kv > 0 ? 1.0f / l : 0.0f;
    for (int i = 0; i < hd; i++) {
        out[i] = o[i] * inv;
    }
    return 0;
}
#endif
