/* The exact GELU, x * Phi(x) = 0.5 x erfc(-x / sqrt 2), with erfc from the Chebyshev fit
 * erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2) for z >= 0 (Numerical Recipes' erfcc,
 * fractional error below 1.2e-7 everywhere) and erfc(-z) = 2 - erfc(z): no cancellation in
 * either tail, and a handful of FMAs and one exp per value instead of a series.
 *
 * The sigmoid-gated activations, y = x * sigmoid(z(x)): SiLU (z = x), CLIP's quick_gelu
 * (z = 1.702 x) and GELU's tanh form (z = 2 sqrt(2/pi) (x + 0.044715 x^3), since
 * 0.5 (1 + tanh(u)) = sigmoid(2u)); with `mul`, SwiGLU's y = silu(x) * mul. Written as
 * x / (1 + e^-z), which neither overflows nor cancels at either tail. Compiled three times by
 * build.rs like attention.c: portable, -DLE_ACT_AVX2 and -DLE_ACT_NEON. */
#include <math.h>
#include <stddef.h>

#include "llava_kernels.h"

static inline float z_of(int kind, float x) {
    switch (kind) {
    case LE_ACT_QUICK_GELU:
        return 1.702f * x;
    case LE_ACT_GELU_TANH:
        return 1.5957691216057308f * (x + 0.044715f * x * x * x);
    default:
        return x;
    }
}

static inline float gate1(int kind, float x) {
    return x / (1.0f + expf(-z_of(kind, x)));
}

#define ERFC_P(t, FMA, C)                                                                                              \
    FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(FMA(C(0.17087277f), t, C(-0.82215223f)), t, C(1.48851587f)), t, C(-1.13520398f)),   \
                        t, C(0.27886807f)),                                                                            \
                    t, C(-0.18628806f)),                                                                               \
                t, C(0.09678418f)),                                                                                    \
            t, C(0.37409196f)),                                                                                        \
        t, C(1.00002368f)),                                                                                            \
    t, C(-1.26551223f))

static inline float fma1(float a, float b, float c) {
    return a * b + c;
}
static inline float c1(float c) {
    return c;
}

static inline float gelu_erf1(float x) {
    const float z = fabsf(x) * 0.70710678118654752f;
    const float t = 1.0f / (1.0f + 0.5f * z);
    const float r = t * expf(-z * z + ERFC_P(t, fma1, c1));
    return 0.5f * x * (x < 0.0f ? r : 2.0f - r);
}

#if defined(LE_ACT_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#define ACT_FN le_activation_avx2
#include "vexp.h"

static inline __m256 z_v(int kind, __m256 x) {
    switch (kind) {
    case LE_ACT_QUICK_GELU:
        return _mm256_mul_ps(_mm256_set1_ps(1.702f), x);
    case LE_ACT_GELU_TANH: {
        const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        return _mm256_mul_ps(_mm256_set1_ps(1.5957691216057308f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
    }
    default:
        return x;
    }
}

static inline __m256 gelu_erf_v(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(0.70710678118654752f));
    const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, _mm256_set1_ps(1.0f)));
    const __m256 p = ERFC_P(t, _mm256_fmadd_ps, _mm256_set1_ps);
    const __m256 r = _mm256_mul_ps(t, le_exp_neg_avx2(_mm256_fnmadd_ps(z, z, p)));
    const __m256 e = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), r), r, x);
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), e);
}

void ACT_FN(int kind, float *x, const float *mul, int n) {
    int i = 0;
    if (kind == LE_ACT_GELU_ERF) {
        for (; i + 8 <= n; i += 8) {
            _mm256_storeu_ps(x + i, gelu_erf_v(_mm256_loadu_ps(x + i)));
        }
        for (; i < n; i++) {
            x[i] = gelu_erf1(x[i]);
        }
        return;
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 nz = _mm256_sub_ps(_mm256_setzero_ps(), z_v(kind, v));
        __m256 y = _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), le_exp_avx2(nz)));
        /* Past the clamp e^-z is infinite and the gate closed: exactly 0, as x / inf. */
        y = _mm256_andnot_ps(_mm256_cmp_ps(nz, _mm256_set1_ps(88.0f), _CMP_GT_OQ), y);
        if (mul) {
            y = _mm256_mul_ps(y, _mm256_loadu_ps(mul + i));
        }
        _mm256_storeu_ps(x + i, y);
    }
    for (; i < n; i++) {
        x[i] = gate1(kind, x[i]) * (mul ? mul[i] : 1.0f);
    }
}

#elif defined(LE_ACT_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define ACT_FN le_activation_neon
#include "vexp.h"

static inline float32x4_t z_v(int kind, float32x4_t x) {
    switch (kind) {
    case LE_ACT_QUICK_GELU:
        return vmulq_n_f32(x, 1.702f);
    case LE_ACT_GELU_TANH:
        return vmulq_n_f32(vfmaq_f32(x, vmulq_f32(vmulq_f32(x, x), x), vdupq_n_f32(0.044715f)), 1.5957691216057308f);
    default:
        return x;
    }
}

static inline float32x4_t fma_v(float32x4_t a, float32x4_t b, float32x4_t c) {
    return vfmaq_f32(c, a, b);
}

static inline float32x4_t gelu_erf_v(float32x4_t x) {
    const float32x4_t z = vmulq_n_f32(vabsq_f32(x), 0.70710678118654752f);
    const float32x4_t t = vdivq_f32(vdupq_n_f32(1.0f), vfmaq_n_f32(vdupq_n_f32(1.0f), z, 0.5f));
    const float32x4_t p = ERFC_P(t, fma_v, vdupq_n_f32);
    const float32x4_t r = vmulq_f32(t, le_exp_neg_neon(vfmsq_f32(p, z, z)));
    const float32x4_t e = vbslq_f32(vcltzq_f32(x), r, vsubq_f32(vdupq_n_f32(2.0f), r));
    return vmulq_f32(vmulq_n_f32(x, 0.5f), e);
}

void ACT_FN(int kind, float *x, const float *mul, int n) {
    int i = 0;
    if (kind == LE_ACT_GELU_ERF) {
        for (; i + 4 <= n; i += 4) {
            vst1q_f32(x + i, gelu_erf_v(vld1q_f32(x + i)));
        }
        for (; i < n; i++) {
            x[i] = gelu_erf1(x[i]);
        }
        return;
    }
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const float32x4_t nz = vnegq_f32(z_v(kind, v));
        float32x4_t y = vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), le_exp_neon(nz)));
        /* Past the clamp e^-z is infinite and the gate closed: exactly 0, as x / inf. */
        y = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), vcgtq_f32(nz, vdupq_n_f32(88.0f))));
        if (mul) {
            y = vmulq_f32(y, vld1q_f32(mul + i));
        }
        vst1q_f32(x + i, y);
    }
    for (; i < n; i++) {
        x[i] = gate1(kind, x[i]) * (mul ? mul[i] : 1.0f);
    }
}

#elif !defined(LE_ACT_AVX2) && !defined(LE_ACT_NEON)
#define ACT_FN le_activation_scalar

void ACT_FN(int kind, float *x, const float *mul, int n) {
    for (int i = 0; i < n; i++) {
        x[i] = kind == LE_ACT_GELU_ERF ? gelu_erf1(x[i]) : gate1(kind, x[i]) * (mul ? mul[i] : 1.0f);
    }
}
#endif
