/* AArch64 kernels with base NEON (ARMv8.0: Cortex-A53/A72, Pi 3/4, Jetson Nano). */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#include "half.h"
#include "llava_kernels.h"

static inline float h2f(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* Sum of 16 signed-byte products, widened through int16 pairs. */
static inline int32x4_t dot16(int8x16_t x, int8x16_t y) {
    const int16x8_t lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    const int16x8_t hi = vmull_s8(vget_high_s8(x), vget_high_s8(y));
    return vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi));
}

float le_vec_dot_q4_0_q8_0_neon(int n, const le_block_q4_0 *w, const le_block_q8_0 *a) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int b = 0; b < n / LE_QK4_0; b++) {
        const uint8x16_t q = vld1q_u8(w[b].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, low4)), eight);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
        const int32x4_t s = vaddq_s32(dot16(lo, vld1q_s8(a[b].qs)), dot16(hi, vld1q_s8(a[b].qs + 16)));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), h2f(w[b].d) * h2f(a[b].d));
    }
    return vaddvq_f32(acc);
}

float le_vec_dot_q8_0_q8_0_neon(int n, const le_block_q8_0 *w, const le_block_q8_0 *a) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int b = 0; b < n / LE_QK8_0; b++) {
        const int32x4_t s = vaddq_s32(dot16(vld1q_s8(w[b].qs), vld1q_s8(a[b].qs)),
                                      dot16(vld1q_s8(w[b].qs + 16), vld1q_s8(a[b].qs + 16)));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), h2f(w[b].d) * h2f(a[b].d));
    }
    return vaddvq_f32(acc);
}

void le_f16_to_f32_neon(const uint16_t *x, float *y, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(y + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x + i))));
    }
    for (; i < n; i++) {
        y[i] = h2f(x[i]);
    }
}

/* Four half-width weights to f32: F16 by conversion, BF16 by a widening shift. */
static inline float32x4_t h16x4(int bf, const uint16_t *p) {
    const uint16x4_t v = vld1_u16(p);
    return bf ? vreinterpretq_f32_u32(vshll_n_u16(v, 16)) : vcvt_f32_f16(vreinterpret_f16_u16(v));
}

static inline float h16_1(int bf, uint16_t v) {
    return bf ? bf16_to_f32(v) : h2f(v);
}

static inline float dot_h16(int bf, int n, const uint16_t *w, const float *a) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, h16x4(bf, w + i), vld1q_f32(a + i));
        acc1 = vfmaq_f32(acc1, h16x4(bf, w + i + 4), vld1q_f32(a + i + 4));
    }
    float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++) {
        sum += h16_1(bf, w[i]) * a[i];
    }
    return sum;
}

float le_vec_dot_f16_f32_neon(int n, const uint16_t *w, const float *a) {
    return dot_h16(0, n, w, a);
}

float le_vec_dot_bf16_f32_neon(int n, const uint16_t *w, const float *a) {
    return dot_h16(1, n, w, a);
}
#endif

#if defined(__aarch64__)
/* vrndaq_f32 rounds halves away from zero, as roundf: the bytes equal the scalar quantizer's. */
static inline float quantize_block(const float *x, int8_t *q, uint16_t *dbits, int *sum) {
    float32x4_t v[8], m = vdupq_n_f32(0.0f);
    for (int k = 0; k < 8; k++) {
        v[k] = vld1q_f32(x + 4 * k);
        m = vmaxq_f32(m, vabsq_f32(v[k]));
    }
    const float d = vmaxvq_f32(m) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32x4_t s = vdupq_n_s32(0);
    for (int k = 0; k < 8; k += 2) {
        const int32x4_t a = vcvtq_s32_f32(vrndaq_f32(vmulq_n_f32(v[k], id)));
        const int32x4_t b = vcvtq_s32_f32(vrndaq_f32(vmulq_n_f32(v[k + 1], id)));
        /* The low byte of each int32, as the scalar (int8_t) conversion keeps (the same as
         * saturation for codes in -127..127; also equal when a denormal scale overflows). */
        const int8x8_t q8 = vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b)));
        s = vaddq_s32(s, vpaddlq_s16(vmovl_s8(q8)));
        vst1_s8(q + 4 * k, q8);
    }
    *sum = vaddvq_s32(s);
    const float16x4_t dh = vcvt_f16_f32(vdupq_n_f32(d));
    *dbits = vget_lane_u16(vreinterpret_u16_f16(dh), 0);
    return vgetq_lane_f32(vcvt_f32_f16(dh), 0);
}

void le_quantize_row_q8_0_neon(const float *x, le_block_q8_0 *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int sum;
        quantize_block(x + b * LE_QK8_0, y[b].qs, &y[b].d, &sum);
    }
}

void le_quantize_row_q8_0x_neon(const float *x, le_block_q8_0x *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int sum;
        uint16_t bits;
        y[b].d = quantize_block(x + b * LE_QK8_0, y[b].qs, &bits, &sum);
        y[b].dsum = y[b].d * (float)sum;
    }
}
#endif

#if defined(__aarch64__)

/* Four-byte dot products per lane without SDOT: widening multiplies, pairwise adds. The sums
 * are the same integers as SDOT's, so results equal the dotprod build's. */
static inline int32x4_t dot4_lanes(int32x4_t acc, int8x16_t x, int8x16_t y) {
    const int16x8_t lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    const int16x8_t hi = vmull_s8(vget_high_s8(x), vget_high_s8(y));
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
}
#define KDOT(acc, x, y) dot4_lanes((acc), (x), (y))
#define KDOT_FN(name) name##_neon
#include "neon_kdots.h"
#endif
