/* AArch64 kernels with base NEON (ARMv8.0: Cortex-A53/A72, Pi 3/4, Jetson Nano). */
#if defined(__aarch64__)
#include <arm_neon.h>

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

float le_vec_dot_f16_f32_neon(int n, const uint16_t *w, const float *a) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const float32x4_t w0 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w + i)));
        const float32x4_t w1 = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w + i + 4)));
        acc0 = vfmaq_f32(acc0, w0, vld1q_f32(a + i));
        acc1 = vfmaq_f32(acc1, w1, vld1q_f32(a + i + 4));
    }
    float sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for (; i < n; i++) {
        sum += h2f(w[i]) * a[i];
    }
    return sum;
}
#endif
