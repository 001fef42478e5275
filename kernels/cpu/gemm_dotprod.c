/* The prefill GEMM on AArch64 with SDOT (Pi 5, Jetson Orin). A 128-bit register holds four
 * values of four rows, so a panel block is 16 registers (8 chunks x 2 row halves) and
 * vdotq_laneq_s32 multiplies them by one four-byte lane of the token's activations: sixteen SDOTs
 * advance eight rows by 32 values. SDOT is signed x signed, so every code kind takes the same
 * path. Compiled with +dotprod; called only after detection. build.rs compiles it a second time
 * with -DLE_GEMM_PLAIN_NEON for CPUs without SDOT (Cortex-A53/A72: Pi 3/4, Jetson Nano), where
 * each lane's four-byte dot product is made of widening multiplies and pairwise adds. */
#if defined(__aarch64__)
#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#include "llava_kernels.h"
#include "x8_kinds.h"

#define TILE_TOKENS 4

#ifdef LE_GEMM_PLAIN_NEON
#define GEMM_FN le_gemm_x8_neon
#define GEMV_X8_FN le_gemv_x8_neon
/* acc + per-lane four-byte dot products of w with lane `lane` of v broadcast: SDOT by element,
 * from widening multiplies (the same integers). */
#define LANE_DOT(acc, w, v, lane) lane_dot((acc), (w), vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(v), lane)))
static inline int32x4_t lane_dot(int32x4_t acc, int8x16_t x, int8x16_t y) {
    const int16x8_t lo = vmull_s8(vget_low_s8(x), vget_low_s8(y));
    const int16x8_t hi = vmull_s8(vget_high_s8(x), vget_high_s8(y));
    return vaddq_s32(acc, vpaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
}
#else
#define GEMM_FN le_gemm_x8_dotprod
#define GEMV_X8_FN le_gemv_x8_dotprod
#define LANE_DOT(acc, w, v, lane) vdotq_laneq_s32((acc), (w), (v), lane)
#endif

/* Chunks c0..c0+3 of one row half (h) against activations v (lane k = values 4(c0+k)..+3). */
static inline int32x4_t dot4(const int8x16_t wq[8][2], int c0, int h, int8x16_t v) {
    int32x4_t s = vdupq_n_s32(0);
    s = LANE_DOT(s, wq[c0][h], v, 0);
    s = LANE_DOT(s, wq[c0 + 1][h], v, 1);
    s = LANE_DOT(s, wq[c0 + 2][h], v, 2);
    s = LANE_DOT(s, wq[c0 + 3][h], v, 3);
    return s;
}

static inline __attribute__((always_inline)) void tile(le_codes codes, int nb, const le_block_x8 *w,
                                                       const le_block_q8_0x *a, int nt, float *out, size_t ldo,
                                                       int rows) {
    float32x4_t acc[TILE_TOKENS][2];
    for (int t = 0; t < nt; t++) {
        acc[t][0] = acc[t][1] = vdupq_n_f32(0.0f);
    }
    const int has_offset = codes == LE_CODES_U4 || codes == LE_CODES_U5;
    for (int b = 0; b < nb; b++) {
        const le_block_x8 *x = w + b;
        int8x16_t wq[8][2];
        for (int c = 0; c < 8; c++) {
            wq[c][0] = vld1q_s8(x->q + 32 * c);
            wq[c][1] = vld1q_s8(x->q + 32 * c + 16);
        }
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb + b;
            const int8x16_t v0 = vld1q_s8(y->qs), v1 = vld1q_s8(y->qs + 16);
            for (int h = 0; h < 2; h++) {
                const int32x4_t lo = dot4(wq, 0, h, v0), hi = dot4(wq, 4, h, v1);
                const float32x4_t s0 = vmulq_n_f32(vld1q_f32(x->s[0] + 4 * h), y->d);
                if (codes == LE_CODES_S6) {
                    const float32x4_t s1 = vmulq_n_f32(vld1q_f32(x->s[1] + 4 * h), y->d);
                    acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(lo), s0);
                    acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(hi), s1);
                } else {
                    acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(vaddq_s32(lo, hi)), s0);
                }
                if (has_offset) {
                    acc[t][h] = vfmaq_n_f32(acc[t][h], vld1q_f32(x->o + 4 * h), y->dsum);
                }
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        float tmp[8];
        vst1q_f32(tmp, acc[t][0]);
        vst1q_f32(tmp + 4, acc[t][1]);
        memcpy(out + (size_t)t * ldo, tmp, (size_t)(rows < 8 ? rows : 8) * sizeof(float));
    }
}

#include "gemm_tiles.h"

/* Decode over interleaved legacy rows (see le_block_q4_0x8 .. le_block_q5_1x8): each 16-byte
 * half of a 32-byte chunk is four values of four rows, so one SDOT by lane advances four rows by
 * four values; the codes stay unsigned (0..31 are valid signed bytes), the fifth bits are
 * shifted out of qh into bit 4 (byte k of qh lines up with byte k of each chunk), and the
 * -8 / -16 offset (or the minimum) is applied once at the end. */
static inline __attribute__((always_inline)) void gemv_x8(int five, int with_min, int n, const uint8_t *w, int ng,
                                                          const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nb = n / 32;
    const size_t bsize = 8 * X8_PLAIN_BYTES(five, with_min);
    const uint8x16_t low4 = vdupq_n_u8(0x0f), bit4 = vdupq_n_u8(0x10);
    const float offset = with_min ? -1.0f : (five ? 16.0f : 8.0f);
    for (int g = 0; g < ng; g++) {
        const uint8_t *x = w + (size_t)g * nb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            float32x4_t off[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            for (int b = 0; b < nb; b++) {
                const uint8_t *xb = x + (size_t)b * bsize;
                const int8x16_t a0 = vld1q_s8(y[b].qs), a1 = vld1q_s8(y[b].qs + 16);
                for (int h = 0; h < 2; h++) {
                    const uint8_t *q = xb + bsize - 128 + 16 * h;
                    const uint8x16_t v0 = vld1q_u8(q), v1 = vld1q_u8(q + 32);
                    const uint8x16_t v2 = vld1q_u8(q + 64), v3 = vld1q_u8(q + 96);
                    const uint8x16_t hb = five ? vld1q_u8(xb + bsize - 160 + 16 * h) : low4;
#define FIFTH(shift) (five ? vandq_u8(vshlq_u8(hb, vdupq_n_s8(shift)), bit4) : vdupq_n_u8(0))
#define LO(v, c) vreinterpretq_s8_u8(vorrq_u8(vandq_u8((v), low4), FIFTH(4 - (c))))
#define HI(v, c) vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8((v), 4), FIFTH(-(c))))
                    int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
                    s0 = LANE_DOT(s0, LO(v0, 0), a0, 0);
                    s1 = LANE_DOT(s1, HI(v0, 0), a1, 0);
                    s0 = LANE_DOT(s0, LO(v1, 1), a0, 1);
                    s1 = LANE_DOT(s1, HI(v1, 1), a1, 1);
                    s0 = LANE_DOT(s0, LO(v2, 2), a0, 2);
                    s1 = LANE_DOT(s1, HI(v2, 2), a1, 2);
                    s0 = LANE_DOT(s0, LO(v3, 3), a0, 3);
                    s1 = LANE_DOT(s1, HI(v3, 3), a1, 3);
#undef FIFTH
#undef LO
#undef HI
                    uint16_t dh[4];
                    memcpy(dh, xb + 8 * h, sizeof dh);
                    const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
                    float32x4_t o = d;
                    if (with_min) {
                        memcpy(dh, xb + 16 + 8 * h, sizeof dh);
                        o = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
                    }
                    acc[h] = vfmaq_f32(acc[h], vcvtq_f32_s32(vaddq_s32(s0, s1)), vmulq_n_f32(d, y[b].d));
                    off[h] = vfmaq_n_f32(off[h], o, y[b].dsum);
                }
            }
            float *o = out + (size_t)t * ldo + 8 * g;
            vst1q_f32(o, vfmsq_n_f32(acc[0], off[0], offset));
            vst1q_f32(o + 4, vfmsq_n_f32(acc[1], off[1], offset));
        }
    }
}

/* Decode over interleaved Q8_0 rows (le_block_q8_0x8): the signed codes meet SDOT as they are,
 * so there is no offset; chunk c's half h is four values (4c..4c+3) of rows 4h..4h+3. */
static void gemv_q8_0x8(int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nb = n / 32;
    const size_t bsize = sizeof(le_block_q8_0x8);
    for (int g = 0; g < ng; g++) {
        const uint8_t *x = w + (size_t)g * nb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            for (int b = 0; b < nb; b++) {
                const uint8_t *xb = x + (size_t)b * bsize;
                const int8x16_t a0 = vld1q_s8(y[b].qs), a1 = vld1q_s8(y[b].qs + 16);
                for (int h = 0; h < 2; h++) {
                    const int8_t *q = (const int8_t *)(xb + 16 + 16 * h);
                    int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
                    s0 = LANE_DOT(s0, vld1q_s8(q), a0, 0);
                    s1 = LANE_DOT(s1, vld1q_s8(q + 128), a1, 0);
                    s0 = LANE_DOT(s0, vld1q_s8(q + 32), a0, 1);
                    s1 = LANE_DOT(s1, vld1q_s8(q + 160), a1, 1);
                    s0 = LANE_DOT(s0, vld1q_s8(q + 64), a0, 2);
                    s1 = LANE_DOT(s1, vld1q_s8(q + 192), a1, 2);
                    s0 = LANE_DOT(s0, vld1q_s8(q + 96), a0, 3);
                    s1 = LANE_DOT(s1, vld1q_s8(q + 224), a1, 3);
                    uint16_t dh[4];
                    memcpy(dh, xb + 8 * h, sizeof dh);
                    const float32x4_t d = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh)));
                    acc[h] = vfmaq_f32(acc[h], vcvtq_f32_s32(vaddq_s32(s0, s1)), vmulq_n_f32(d, y[b].d));
                }
            }
            float *o = out + (size_t)t * ldo + 8 * g;
            vst1q_f32(o, acc[0]);
            vst1q_f32(o + 4, acc[1]);
        }
    }
}

/* Decode over interleaved Q4_K / Q5_K rows (le_block_q4_Kx8, le_block_q5_Kx8): as gemv_x8 per 32-value sub-block, the
 * integer sums scaled by the sub-block's 6-bit scale in float and its minimum meeting the
 * activation block's dsum; the scales of all eight rows unpack from 8-byte rows of bytes. */
static inline float32x4_t u8_quarter_f32(uint8x16_t v, int h8, int h4) {
    const uint16x8_t w = h8 ? vmovl_u8(vget_high_u8(v)) : vmovl_u8(vget_low_u8(v));
    return vcvtq_f32_u32(h4 ? vmovl_u16(vget_high_u16(w)) : vmovl_u16(vget_low_u16(w)));
}

static inline __attribute__((always_inline)) void gemv_q45_Kx8(int five, int n, const uint8_t *w, int ng,
                                                               const le_block_q8_0x *a, int nt, float *out,
                                                               size_t ldo) {
    const int nsb = n / 256, nb = n / 32;
    const size_t bsize = five ? sizeof(le_block_q5_Kx8) : sizeof(le_block_q4_Kx8);
    const size_t qs_at = five ? offsetof(le_block_q5_Kx8, qs) : offsetof(le_block_q4_Kx8, qs);
    const uint8x16_t low4 = vdupq_n_u8(0x0f), m63 = vdupq_n_u8(63), m30 = vdupq_n_u8(0x30);
    const uint8x16_t bit4 = vdupq_n_u8(0x10);
    for (int g = 0; g < ng; g++) {
        const uint8_t *x = w + (size_t)g * nsb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            float32x4_t accm[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            for (int b = 0; b < nsb; b++) {
                const uint8_t *xb = x + (size_t)b * bsize, *sq = xb + offsetof(le_block_q4_Kx8, scales);
                const uint8x16_t v0 = vld1q_u8(sq), v1 = vld1q_u8(sq + 16), v2 = vld1q_u8(sq + 32);
                const uint8x16_t v3 = vld1q_u8(sq + 48), v4 = vld1q_u8(sq + 64), v5 = vld1q_u8(sq + 80);
#define TOP2(v) vandq_u8(vshrq_n_u8((v), 2), m30)
                /* sc[k] holds sub-blocks 2k (low eight bytes) and 2k + 1 of all eight rows. */
                const uint8x16_t sc[4] = {vandq_u8(v0, m63), vandq_u8(v1, m63),
                                          vorrq_u8(vandq_u8(v4, low4), TOP2(v0)),
                                          vorrq_u8(vandq_u8(v5, low4), TOP2(v1))};
                const uint8x16_t mn[4] = {vandq_u8(v2, m63), vandq_u8(v3, m63),
                                          vorrq_u8(vshrq_n_u8(v4, 4), TOP2(v2)),
                                          vorrq_u8(vshrq_n_u8(v5, 4), TOP2(v3))};
#undef TOP2
                const le_block_q8_0x *yb = y + 8 * b;
                float32x4_t s[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
                float32x4_t mins[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
                for (int c = 0; c < 4; c++) {
                    const le_block_q8_0x *ylo = yb + 2 * c, *yhi = yb + 2 * c + 1;
                    const int8x16_t a0 = vld1q_s8(ylo->qs), a1 = vld1q_s8(ylo->qs + 16);
                    const int8x16_t b0 = vld1q_s8(yhi->qs), b1 = vld1q_s8(yhi->qs + 16);
                    for (int h = 0; h < 2; h++) {
                        const uint8_t *q = xb + qs_at + 256 * c + 16 * h;
                        const uint8_t *qh = xb + offsetof(le_block_q5_Kx8, qh) + 16 * h;
                        int32x4_t lo = vdupq_n_s32(0), hi = vdupq_n_s32(0);
                        /* Q5_K: bits 2c and 2c + 1 of qh under bit 4 of the low / high codes. */
                        const int8x16_t lo_shift = vdupq_n_s8((int8_t)(4 - 2 * c));
                        const int8x16_t hi_shift = vdupq_n_s8((int8_t)(3 - 2 * c));
#define FIFTH(p, sh) (five ? vandq_u8(vshlq_u8(vld1q_u8(qh + 32 * (p)), (sh)), bit4) : vdupq_n_u8(0))
#define PIECE(p, av, bv, lane)                                                                                         \
    do {                                                                                                               \
        const uint8x16_t v = vld1q_u8(q + 32 * (p));                                                                   \
        lo = LANE_DOT(lo, vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v, low4), FIFTH(p, lo_shift))), av, lane);             \
        hi = LANE_DOT(hi, vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(v, 4), FIFTH(p, hi_shift))), bv, lane);              \
    } while (0)
                        PIECE(0, a0, b0, 0);
                        PIECE(1, a0, b0, 1);
                        PIECE(2, a0, b0, 2);
                        PIECE(3, a0, b0, 3);
                        PIECE(4, a1, b1, 0);
                        PIECE(5, a1, b1, 1);
                        PIECE(6, a1, b1, 2);
                        PIECE(7, a1, b1, 3);
#undef PIECE
#undef FIFTH
                        s[h] = vfmaq_f32(s[h], vcvtq_f32_s32(lo), vmulq_n_f32(u8_quarter_f32(sc[c], 0, h), ylo->d));
                        s[h] = vfmaq_f32(s[h], vcvtq_f32_s32(hi), vmulq_n_f32(u8_quarter_f32(sc[c], 1, h), yhi->d));
                        mins[h] = vfmaq_n_f32(mins[h], u8_quarter_f32(mn[c], 0, h), ylo->dsum);
                        mins[h] = vfmaq_n_f32(mins[h], u8_quarter_f32(mn[c], 1, h), yhi->dsum);
                    }
                }
                for (int h = 0; h < 2; h++) {
                    uint16_t dh[4];
                    memcpy(dh, xb + 8 * h, sizeof dh);
                    acc[h] = vfmaq_f32(acc[h], vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh))), s[h]);
                    memcpy(dh, xb + offsetof(le_block_q4_Kx8, dmin) + 8 * h, sizeof dh);
                    accm[h] = vfmaq_f32(accm[h], vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh))), mins[h]);
                }
            }
            float *o = out + (size_t)t * ldo + 8 * g;
            vst1q_f32(o, vsubq_f32(acc[0], accm[0]));
            vst1q_f32(o + 4, vsubq_f32(acc[1], accm[1]));
        }
    }
}

/* Decode over interleaved Q6_K rows (le_block_q6_Kx8): SDOT takes the signed values (code - 32)
 * as they are, so there is no offset; per 128-value half h, piece p and row half r4, one load of
 * qh and of the two ql chunks make the codes of the sub-blocks 4h..4h+3. */
static inline float32x4_t s8_quarter_f32(const int8_t *p) {
    return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vld1_s8(p)))));
}

static void gemv_q6_Kx8(int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nsb = n / 256, nb = n / 32;
    const size_t bsize = sizeof(le_block_q6_Kx8);
    const uint8x16_t m0f = vdupq_n_u8(0x0f), m30 = vdupq_n_u8(0x30);
    const int8x16_t k32 = vdupq_n_s8(32);
    for (int g = 0; g < ng; g++) {
        const uint8_t *x = w + (size_t)g * nsb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            float32x4_t acc[2] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
            for (int b = 0; b < nsb; b++) {
                const uint8_t *xb = x + (size_t)b * bsize;
                const uint8_t *ql = xb + offsetof(le_block_q6_Kx8, ql), *qhs = xb + offsetof(le_block_q6_Kx8, qh);
                const int8_t *scales = (const int8_t *)xb + offsetof(le_block_q6_Kx8, scales);
                for (int r4 = 0; r4 < 2; r4++) {
                    float32x4_t sb = vdupq_n_f32(0.0f);
                    for (int h = 0; h < 2; h++) {
                        int8x16_t av[4][2];
                        for (int k = 0; k < 4; k++) {
                            av[k][0] = vld1q_s8(y[8 * b + 4 * h + k].qs);
                            av[k][1] = vld1q_s8(y[8 * b + 4 * h + k].qs + 16);
                        }
                        int32x4_t is[4][2];
                        for (int k = 0; k < 4; k++) {
                            is[k][0] = is[k][1] = vdupq_n_s32(0);
                        }
#define Q6_CODE(v) vsubq_s8(vreinterpretq_s8_u8(v), k32)
#define Q6_PIECE(p)                                                                                                    \
    do {                                                                                                               \
        const size_t at = 32 * (p) + 16 * r4;                                                                          \
        const uint8x16_t qh = vld1q_u8(qhs + 256 * h + at);                                                            \
        const uint8x16_t l0 = vld1q_u8(ql + 512 * h + at), l1 = vld1q_u8(ql + 512 * h + 256 + at);                     \
        const int8x16_t c0 = Q6_CODE(vorrq_u8(vandq_u8(l0, m0f), vandq_u8(vshlq_n_u8(qh, 4), m30)));                   \
        const int8x16_t c1 = Q6_CODE(vorrq_u8(vandq_u8(l1, m0f), vandq_u8(vshlq_n_u8(qh, 2), m30)));                   \
        const int8x16_t c2 = Q6_CODE(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(qh, m30)));                                  \
        const int8x16_t c3 = Q6_CODE(vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(qh, 2), m30)));                   \
        is[0][(p) / 4] = LANE_DOT(is[0][(p) / 4], c0, av[0][(p) / 4], (p) % 4);                                        \
        is[1][(p) / 4] = LANE_DOT(is[1][(p) / 4], c1, av[1][(p) / 4], (p) % 4);                                        \
        is[2][(p) / 4] = LANE_DOT(is[2][(p) / 4], c2, av[2][(p) / 4], (p) % 4);                                        \
        is[3][(p) / 4] = LANE_DOT(is[3][(p) / 4], c3, av[3][(p) / 4], (p) % 4);                                        \
    } while (0)
                        Q6_PIECE(0);
                        Q6_PIECE(1);
                        Q6_PIECE(2);
                        Q6_PIECE(3);
                        Q6_PIECE(4);
                        Q6_PIECE(5);
                        Q6_PIECE(6);
                        Q6_PIECE(7);
#undef Q6_PIECE
#undef Q6_CODE
                        for (int k = 0; k < 4; k++) {
                            const int s0 = 8 * h + 2 * k;
                            const float32x4_t sa = s8_quarter_f32(scales + 8 * s0 + 4 * r4);
                            const float32x4_t sc = s8_quarter_f32(scales + 8 * s0 + 8 + 4 * r4);
                            const float32x4_t v = vfmaq_f32(vmulq_f32(vcvtq_f32_s32(is[k][1]), sc),
                                                            vcvtq_f32_s32(is[k][0]), sa);
                            sb = vfmaq_n_f32(sb, v, y[8 * b + 4 * h + k].d);
                        }
                    }
                    uint16_t dh[4];
                    memcpy(dh, xb + 8 * r4, sizeof dh);
                    acc[r4] = vfmaq_f32(acc[r4], vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(dh))), sb);
                }
            }
            float *o = out + (size_t)t * ldo + 8 * g;
            vst1q_f32(o, acc[0]);
            vst1q_f32(o + 4, acc[1]);
        }
    }
}

void GEMV_X8_FN(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                size_t ldo) {
    if (type == LE_TYPE_Q8_0) {
        gemv_q8_0x8(n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q4_K) {
        gemv_q45_Kx8(0, n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q5_K) {
        gemv_q45_Kx8(1, n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q6_K) {
        gemv_q6_Kx8(n, w, ng, a, nt, out, ldo);
        return;
    }
    X8_DISPATCH(type, gemv_x8, n, w, ng, a, nt, out, ldo);
}

void GEMM_FN(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a,
                        int nt, float *out, size_t ldo) {
    const int nb = n / 32;
    switch (codes) {
    case LE_CODES_U4:
    case LE_CODES_U5:
        gemm(LE_CODES_U4, nb, w, np, nrows, a, nt, out, ldo);
        break;
    case LE_CODES_S6:
        gemm(LE_CODES_S6, nb, w, np, nrows, a, nt, out, ldo);
        break;
    case LE_CODES_S8:
        gemm(LE_CODES_S8, nb, w, np, nrows, a, nt, out, ldo);
        break;
    }
}
#endif
