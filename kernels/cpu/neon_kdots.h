/* Q5_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K dot products for AArch64, included by neon_dotprod.c (KDOT = SDOT) and
 * neon.c (KDOT through widening multiplies, for Cortex-A53/A72 without SDOT). The includer
 * defines KDOT(acc, x, y) (acc + four-byte dot products of x and y per lane), KDOT_FN(name) and
 * h2f, and includes arm_neon.h, string.h and llava_kernels.h. */
#include "q3k_scales.h"

/* 16 bits of qh to 16 bytes holding 0x10 where the bit is set (Q5_0's fifth bits). */
static inline uint8x16_t fifth_bits(uint32_t qh16) {
    static const uint8_t sel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t b = vcombine_u8(vdup_n_u8((uint8_t)(qh16 & 0xff)), vdup_n_u8((uint8_t)(qh16 >> 8)));
    return vandq_u8(vtstq_u8(b, vld1q_u8(sel)), vdupq_n_u8(0x10));
}

float KDOT_FN(le_vec_dot_q5_0_q8_0)(int n, const le_block_q5_0 *w, const le_block_q8_0 *a) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t sixteen = vdupq_n_s8(16);
    for (int b = 0; b < n / LE_QK5_0; b++) {
        uint32_t qh;
        memcpy(&qh, w[b].qh, sizeof qh);
        const uint8x16_t q = vld1q_u8(w[b].qs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, low4), fifth_bits(qh & 0xffff))), sixteen);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), fifth_bits(qh >> 16))), sixteen);
        int32x4_t s = KDOT(vdupq_n_s32(0), lo, vld1q_s8(a[b].qs));
        s = KDOT(s, hi, vld1q_s8(a[b].qs + 16));
        acc = vmlaq_n_f32(acc, vcvtq_f32_s32(s), h2f(w[b].d) * h2f(a[b].d));
    }
    return vaddvq_f32(acc);
}

/* Q4_K's sub-block scales and mins, as the scalar reference decodes them. */
static inline void scales_mins(const uint8_t *q, int sc[8], int m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
        sc[j + 4] = (q[j + 8] & 0x0f) | ((q[j] >> 6) << 4);
        m[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
}

/* Q4_K and Q5_K share their super-block; Q5_K adds a fifth bit per value in qh (bit j of qh[l]
 * for sub-block j). One body, inlined twice with qh present or not (NULL folds away); the
 * fields of block 0 are passed in and blocks lie stride bytes apart. */
static inline __attribute__((always_inline)) float dot_k45(int n, size_t stride, const uint16_t *d0,
                                                            const uint16_t *dmin0, const uint8_t *scales0,
                                                            const uint8_t *qs0, const uint8_t *qh0,
                                                            const le_block_q8_K *a) {
#define AT(p, b) ((const void *)((const uint8_t *)(p) + (size_t)(b) * stride))
    const uint8x16_t low4 = vdupq_n_u8(0x0f), one = vdupq_n_u8(1);
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sc[8], m[8];
        scales_mins(AT(scales0, b), sc, m);
        int summ = 0;
        for (int j = 0; j < 8; j++) {
            summ += m[j] * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
        uint8x16_t h0 = vdupq_n_u8(0), h1 = vdupq_n_u8(0);
        if (qh0) {
            h0 = vld1q_u8(AT(qh0, b));
            h1 = vld1q_u8((const uint8_t *)AT(qh0, b) + 16);
        }
        int sumi = 0;
        for (int c = 0; c < 4; c++) {
            const uint8_t *qs = (const uint8_t *)AT(qs0, b) + 32 * c;
            const int8_t *y = a[b].qs + 64 * c;
            const uint8x16_t q0 = vld1q_u8(qs), q1 = vld1q_u8(qs + 16);
            /* Unsigned codes are valid signed bytes: SDOT takes them as they are. */
            uint8x16_t l0 = vandq_u8(q0, low4), l1 = vandq_u8(q1, low4);
            uint8x16_t u0 = vshrq_n_u8(q0, 4), u1 = vshrq_n_u8(q1, 4);
            if (qh0) {
                /* Fifth bits: bit 2c of qh for the low nibbles, bit 2c + 1 for the high. */
                l0 = vorrq_u8(l0, vshlq_n_u8(vandq_u8(h0, one), 4));
                l1 = vorrq_u8(l1, vshlq_n_u8(vandq_u8(h1, one), 4));
                u0 = vorrq_u8(u0, vshlq_n_u8(vandq_u8(vshrq_n_u8(h0, 1), one), 4));
                u1 = vorrq_u8(u1, vshlq_n_u8(vandq_u8(vshrq_n_u8(h1, 1), one), 4));
                h0 = vshrq_n_u8(h0, 2);
                h1 = vshrq_n_u8(h1, 2);
            }
            int32x4_t lo = KDOT(vdupq_n_s32(0), vreinterpretq_s8_u8(l0), vld1q_s8(y));
            lo = KDOT(lo, vreinterpretq_s8_u8(l1), vld1q_s8(y + 16));
            int32x4_t hi = KDOT(vdupq_n_s32(0), vreinterpretq_s8_u8(u0), vld1q_s8(y + 32));
            hi = KDOT(hi, vreinterpretq_s8_u8(u1), vld1q_s8(y + 48));
            sumi += sc[2 * c] * vaddvq_s32(lo) + sc[2 * c + 1] * vaddvq_s32(hi);
        }
        const float d = h2f(*(const uint16_t *)AT(d0, b)), dmin = h2f(*(const uint16_t *)AT(dmin0, b));
        sum += d * a[b].d * (float)sumi - dmin * a[b].d * (float)summ;
    }
#undef AT
    return sum;
}

float KDOT_FN(le_vec_dot_q4_K_q8_K)(int n, const le_block_q4_K *w, const le_block_q8_K *a) {
    return dot_k45(n, sizeof *w, &w->d, &w->dmin, w->scales, w->qs, NULL, a);
}

float KDOT_FN(le_vec_dot_q5_K_q8_K)(int n, const le_block_q5_K *w, const le_block_q8_K *a) {
    return dot_k45(n, sizeof *w, &w->d, &w->dmin, w->scales, w->qs, w->qh, a);
}

float KDOT_FN(le_vec_dot_q6_K_q8_K)(int n, const le_block_q6_K *w, const le_block_q8_K *a) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f), three = vdupq_n_u8(3);
    const int8x16_t k32 = vdupq_n_s8(32);
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[b].ql + 64 * h, *qhp = w[b].qh + 32 * h;
            const int8_t *sc = w[b].scales + 8 * h, *y = a[b].qs + 128 * h;
            for (int l = 0; l < 32; l += 16) {
                const uint8x16_t l0 = vld1q_u8(ql + l), l1 = vld1q_u8(ql + 32 + l), qh = vld1q_u8(qhp + l);
                int8x16_t q[4];
                q[0] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l0, low4), vshlq_n_u8(vandq_u8(qh, three), 4)));
                q[1] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l1, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), three), 4)));
                q[2] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), three), 4)));
                q[3] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4)));
                const int is = l / 16;
                for (int k = 0; k < 4; k++) {
                    const int32x4_t d = KDOT(vdupq_n_s32(0), vsubq_s8(q[k], k32), vld1q_s8(y + 32 * k + l));
                    sumi += sc[is + 2 * k] * vaddvq_s32(d);
                }
            }
        }
        sum += h2f(w[b].d) * a[b].d * (float)sumi;
    }
    return sum;
}

float KDOT_FN(le_vec_dot_q3_K_q8_K)(int n, const le_block_q3_K *w, const le_block_q8_K *a) {
    const uint8x16_t three = vdupq_n_u8(3), one = vdupq_n_u8(1);
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int8_t sc[16];
        q3_K_scales(w[b].scales, sc);
        uint8x16_t h0 = vld1q_u8(w[b].hmask), h1 = vld1q_u8(w[b].hmask + 16);
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            uint8x16_t q0 = vld1q_u8(w[b].qs + 32 * h), q1 = vld1q_u8(w[b].qs + 32 * h + 16);
            for (int k = 0; k < 4; k++) {
                const int j = 4 * h + k;
                /* Two low bits, minus 4 where the high bit is clear. */
                const int8x16_t c0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q0, three)),
                                              vreinterpretq_s8_u8(vshlq_n_u8(vbicq_u8(one, h0), 2)));
                const int8x16_t c1 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q1, three)),
                                              vreinterpretq_s8_u8(vshlq_n_u8(vbicq_u8(one, h1), 2)));
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
                h0 = vshrq_n_u8(h0, 1);
                h1 = vshrq_n_u8(h1, 1);
                const int8_t *y = a[b].qs + 32 * j;
                const int32x4_t d0 = KDOT(vdupq_n_s32(0), c0, vld1q_s8(y));
                const int32x4_t d1 = KDOT(vdupq_n_s32(0), c1, vld1q_s8(y + 16));
                sumi += sc[8 * h + 2 * k] * vaddvq_s32(d0) + sc[8 * h + 2 * k + 1] * vaddvq_s32(d1);
            }
        }
        sum += h2f(w[b].d) * a[b].d * (float)sumi;
    }
    return sum;
}

/* Q2_K: Q3_K's code layout without the high bits, a 4-bit scale and min a sub-block. */
float KDOT_FN(le_vec_dot_q2_K_q8_K)(int n, const le_block_q2_K *w, const le_block_q8_K *a) {
    const uint8x16_t three = vdupq_n_u8(3);
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        const uint8x16_t sm = vld1q_u8(w[b].scales);
        const int16x8_t m0 = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(vshrq_n_u8(sm, 4))));
        const int16x8_t m1 = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(vshrq_n_u8(sm, 4))));
        int32x4_t mins = vmull_s16(vget_low_s16(m0), vld1_s16(a[b].bsums));
        mins = vmlal_s16(mins, vget_high_s16(m0), vld1_s16(a[b].bsums + 4));
        mins = vmlal_s16(mins, vget_low_s16(m1), vld1_s16(a[b].bsums + 8));
        mins = vmlal_s16(mins, vget_high_s16(m1), vld1_s16(a[b].bsums + 12));
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            uint8x16_t q0 = vld1q_u8(w[b].qs + 32 * h), q1 = vld1q_u8(w[b].qs + 32 * h + 16);
            for (int k = 0; k < 4; k++) {
                const int j = 4 * h + k;
                const int8x16_t c0 = vreinterpretq_s8_u8(vandq_u8(q0, three));
                const int8x16_t c1 = vreinterpretq_s8_u8(vandq_u8(q1, three));
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
                const int8_t *y = a[b].qs + 32 * j;
                const int32x4_t d0 = KDOT(vdupq_n_s32(0), c0, vld1q_s8(y));
                const int32x4_t d1 = KDOT(vdupq_n_s32(0), c1, vld1q_s8(y + 16));
                sumi += (w[b].scales[2 * j] & 0x0f) * vaddvq_s32(d0) + (w[b].scales[2 * j + 1] & 0x0f) * vaddvq_s32(d1);
            }
        }
        sum += a[b].d * (h2f(w[b].d) * (float)sumi - h2f(w[b].dmin) * (float)vaddvq_s32(mins));
    }
    return sum;
}
