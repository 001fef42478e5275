/* AArch64 kernels with the ARMv8.2 dot-product extension (SDOT: Cortex-A76 on Pi 5,
 * Cortex-A78AE on Jetson Orin). Compiled with +dotprod; called only after detection. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#include "llava_kernels.h"

static inline float h2f(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

float le_vec_dot_q4_0_q8_0_dotprod(int n, const le_block_q4_0 *w, const le_block_q8_0 *a) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int b = 0; b < n / LE_QK4_0; b++) {
        const uint8x16_t q = vld1q_u8(w[b].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, low4)), eight);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
        int32x4_t s = vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(a[b].qs));
        s = vdotq_s32(s, hi, vld1q_s8(a[b].qs + 16));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), h2f(w[b].d) * h2f(a[b].d));
    }
    return vaddvq_f32(acc);
}

float le_vec_dot_q8_0_q8_0_dotprod(int n, const le_block_q8_0 *w, const le_block_q8_0 *a) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int32x4_t s = vdotq_s32(vdupq_n_s32(0), vld1q_s8(w[b].qs), vld1q_s8(a[b].qs));
        s = vdotq_s32(s, vld1q_s8(w[b].qs + 16), vld1q_s8(a[b].qs + 16));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), h2f(w[b].d) * h2f(a[b].d));
    }
    return vaddvq_f32(acc);
}
#endif

#if defined(__aarch64__)
/* Q5_0, Q4_K and Q6_K dots, shared with neon.c (there through widening multiplies). */
#define KDOT(acc, x, y) vdotq_s32((acc), (x), (y))
#define KDOT_FN(name) name##_dotprod
#include "neon_kdots.h"
#endif
