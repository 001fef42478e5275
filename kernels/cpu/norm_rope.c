/* The per-row ops around the products: RMSNorm, LayerNorm and rotary embeddings. Compiled three
 * times by build.rs like activation.c: portable, -DLE_ROW_AVX2 and -DLE_ROW_NEON.
 *
 * Every build computes the same values bit for bit: the statistics are summed in f64 (the squares
 * of f32 values are exact there, so only the order of the sums differs, far below the final f32
 * rounding), and the per-element f32 arithmetic is the same multiplies and adds in the same order
 * with no fused multiply-add (the portable build is compiled with -ffp-contract=off, and the SIMD
 * builds use separate multiplies and adds on purpose). */
#include <math.h>
#include <stddef.h>

#include "llava_kernels.h"

#if defined(LE_ROW_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#define RMS_FN le_rms_norm_avx2
#define LN_FN le_layer_norm_avx2
#define ROPE_FN le_rope_avx2

static inline double hsum4d(__m256d v) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* sum((x - c)^2) in f64 over n values (c = 0 for RMSNorm), and the plain sum when sum != NULL. */
static double sums(const float *x, int n, double c, double *sum) {
    __m256d q0 = _mm256_setzero_pd(), q1 = q0, s0 = q0, s1 = q0;
    const __m256d cv = _mm256_set1_pd(c);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        const __m256d dl = _mm256_sub_pd(lo, cv), dh = _mm256_sub_pd(hi, cv);
        q0 = _mm256_add_pd(q0, _mm256_mul_pd(dl, dl));
        q1 = _mm256_add_pd(q1, _mm256_mul_pd(dh, dh));
        s0 = _mm256_add_pd(s0, lo);
        s1 = _mm256_add_pd(s1, hi);
    }
    double q = hsum4d(_mm256_add_pd(q0, q1)), s = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) {
        const double d = (double)x[i] - c;
        q += d * d;
        s += (double)x[i];
    }
    if (sum) {
        *sum = s;
    }
    return q;
}

static void scale_rows(float *x, const float *w, int n, float scale) {
    const __m256 sv = _mm256_set1_ps(scale);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(w + i)));
    }
    for (; i < n; i++) {
        x[i] = x[i] * scale * w[i];
    }
}

static void center_scale(float *x, const float *w, const float *b, int n, double mean, double inv) {
    const __m256d mv = _mm256_set1_pd(mean), iv = _mm256_set1_pd(inv);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d d = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), mv), iv);
        const __m128 y = _mm_add_ps(_mm_mul_ps(_mm256_cvtpd_ps(d), _mm_loadu_ps(w + i)), _mm_loadu_ps(b + i));
        _mm_storeu_ps(x + i, y);
    }
    for (; i < n; i++) {
        x[i] = (float)(((double)x[i] - mean) * inv) * w[i] + b[i];
    }
}

/* NeoX halves: eight dimensions of each half a step. */
static int rope_neox(float *h, const float *cs, const float *sn, int half) {
    int i = 0;
    for (; i + 8 <= half; i += 8) {
        const __m256 x0 = _mm256_loadu_ps(h + i), x1 = _mm256_loadu_ps(h + half + i);
        const __m256 c = _mm256_loadu_ps(cs + i), s = _mm256_loadu_ps(sn + i);
        _mm256_storeu_ps(h + i, _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s)));
        _mm256_storeu_ps(h + half + i, _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c)));
    }
    return i;
}

/* Adjacent pairs: four pairs a step; each lane's partner comes from a swap within the pair and
 * the sine is negated on the even lanes (x0 c + x1 (-s) rounds as x0 c - x1 s). */
static int rope_pairs(float *h, const float *cs, const float *sn, int half) {
    const __m256i dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256 neg_even = _mm256_setr_ps(-0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f, -0.0f, 0.0f);
    int i = 0;
    for (; i + 4 <= half; i += 4) {
        const __m256 v = _mm256_loadu_ps(h + 2 * i);
        const __m256 c = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(cs + i)), dup);
        const __m256 s = _mm256_xor_ps(_mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(sn + i)), dup),
                                       neg_even);
        const __m256 swapped = _mm256_permute_ps(v, 0xb1);
        _mm256_storeu_ps(h + 2 * i, _mm256_add_ps(_mm256_mul_ps(v, c), _mm256_mul_ps(swapped, s)));
    }
    return i;
}

#elif defined(LE_ROW_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define RMS_FN le_rms_norm_neon
#define LN_FN le_layer_norm_neon
#define ROPE_FN le_rope_neon

static double sums(const float *x, int n, double c, double *sum) {
    float64x2_t q0 = vdupq_n_f64(0.0), q1 = q0, s0 = q0, s1 = q0;
    const float64x2_t cv = vdupq_n_f64(c);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vcvt_f64_f32(vget_low_f32(v)), hi = vcvt_high_f64_f32(v);
        const float64x2_t dl = vsubq_f64(lo, cv), dh = vsubq_f64(hi, cv);
        q0 = vaddq_f64(q0, vmulq_f64(dl, dl));
        q1 = vaddq_f64(q1, vmulq_f64(dh, dh));
        s0 = vaddq_f64(s0, lo);
        s1 = vaddq_f64(s1, hi);
    }
    double q = vaddvq_f64(vaddq_f64(q0, q1)), s = vaddvq_f64(vaddq_f64(s0, s1));
    for (; i < n; i++) {
        const double d = (double)x[i] - c;
        q += d * d;
        s += (double)x[i];
    }
    if (sum) {
        *sum = s;
    }
    return q;
}

static void scale_rows(float *x, const float *w, int n, float scale) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(x + i, vmulq_f32(vmulq_n_f32(vld1q_f32(x + i), scale), vld1q_f32(w + i)));
    }
    for (; i < n; i++) {
        x[i] = x[i] * scale * w[i];
    }
}

static void center_scale(float *x, const float *w, const float *b, int n, double mean, double inv) {
    const float64x2_t mv = vdupq_n_f64(mean), iv = vdupq_n_f64(inv);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float64x2_t lo = vmulq_f64(vsubq_f64(vcvt_f64_f32(vget_low_f32(v)), mv), iv);
        const float64x2_t hi = vmulq_f64(vsubq_f64(vcvt_high_f64_f32(v), mv), iv);
        const float32x4_t d = vcvt_high_f32_f64(vcvt_f32_f64(lo), hi);
        vst1q_f32(x + i, vaddq_f32(vmulq_f32(d, vld1q_f32(w + i)), vld1q_f32(b + i)));
    }
    for (; i < n; i++) {
        x[i] = (float)(((double)x[i] - mean) * inv) * w[i] + b[i];
    }
}

static int rope_neox(float *h, const float *cs, const float *sn, int half) {
    int i = 0;
    for (; i + 4 <= half; i += 4) {
        const float32x4_t x0 = vld1q_f32(h + i), x1 = vld1q_f32(h + half + i);
        const float32x4_t c = vld1q_f32(cs + i), s = vld1q_f32(sn + i);
        vst1q_f32(h + i, vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s)));
        vst1q_f32(h + half + i, vaddq_f32(vmulq_f32(x0, s), vmulq_f32(x1, c)));
    }
    return i;
}

/* Adjacent pairs: de-interleaving loads put the even and odd dimensions in two registers. */
static int rope_pairs(float *h, const float *cs, const float *sn, int half) {
    int i = 0;
    for (; i + 4 <= half; i += 4) {
        float32x4x2_t v = vld2q_f32(h + 2 * i);
        const float32x4_t c = vld1q_f32(cs + i), s = vld1q_f32(sn + i);
        const float32x4_t x0 = v.val[0], x1 = v.val[1];
        v.val[0] = vsubq_f32(vmulq_f32(x0, c), vmulq_f32(x1, s));
        v.val[1] = vaddq_f32(vmulq_f32(x0, s), vmulq_f32(x1, c));
        vst2q_f32(h + 2 * i, v);
    }
    return i;
}

#elif !defined(LE_ROW_AVX2) && !defined(LE_ROW_NEON)
#define RMS_FN le_rms_norm_scalar
#define LN_FN le_layer_norm_scalar
#define ROPE_FN le_rope_scalar

static double sums(const float *x, int n, double c, double *sum) {
    double q = 0.0, s = 0.0;
    for (int i = 0; i < n; i++) {
        const double d = (double)x[i] - c;
        q += d * d;
        s += (double)x[i];
    }
    if (sum) {
        *sum = s;
    }
    return q;
}

static void scale_rows(float *x, const float *w, int n, float scale) {
    for (int i = 0; i < n; i++) {
        x[i] = x[i] * scale * w[i];
    }
}

static void center_scale(float *x, const float *w, const float *b, int n, double mean, double inv) {
    for (int i = 0; i < n; i++) {
        x[i] = (float)(((double)x[i] - mean) * inv) * w[i] + b[i];
    }
}

static int rope_neox(float *h, const float *cs, const float *sn, int half) {
    (void)h, (void)cs, (void)sn, (void)half;
    return 0;
}

static int rope_pairs(float *h, const float *cs, const float *sn, int half) {
    (void)h, (void)cs, (void)sn, (void)half;
    return 0;
}
#endif

#ifdef RMS_FN
void RMS_FN(float *x, const float *w, int n, float eps) {
    const double ms = sums(x, n, 0.0, NULL) / n;
    scale_rows(x, w, n, (float)(1.0 / sqrt(ms + (double)eps)));
}

void LN_FN(float *x, const float *w, const float *b, int n, float eps) {
    double s;
    sums(x, n, 0.0, &s);
    const double mean = s / n;
    const double var = sums(x, n, mean, NULL) / n;
    center_scale(x, w, b, n, mean, 1.0 / sqrt(var + (double)eps));
}

void ROPE_FN(float *x, int head_dim, int n_heads, const float *cs, const float *sn, int half, int neox) {
    for (int hh = 0; hh < n_heads; hh++) {
        float *h = x + (size_t)hh * head_dim;
        int i = neox ? rope_neox(h, cs, sn, half) : rope_pairs(h, cs, sn, half);
        for (; i < half; i++) {
            const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
            const float x0 = h[a], x1 = h[b];
            h[a] = x0 * cs[i] - x1 * sn[i];
            h[b] = x0 * sn[i] + x1 * cs[i];
        }
    }
}
#endif
