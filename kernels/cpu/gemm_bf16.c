/* F16 weights times f32 activations with bfloat16 products (opt-in for the vision encoder):
 * both sides rounded to bf16 and multiplied a pair at a time into f32 sums, as PyTorch runs a
 * model in torch.bfloat16. vdpbf16ps does two multiply-adds a lane where an FMA does one, so on
 * CPUs with AVX512-BF16 the GEMM runs at up to twice the f32 FMA rate (BFDOT on Armv8.6 does
 * the same with four lanes). Compiled by build.rs portable (the reference, *_scalar), with
 * -DLE_BF16_AVX512 on x86-64 and with -DLE_BF16_NEON (armv8.6-a+bf16) on AArch64.
 *
 * Layouts (k values a row, p = k / 2 rounded up pairs; a dword holds value 2i in its low half):
 * - weights are packed per call, 32 rows a panel: pack[i * 32 + r] = pair i of row r;
 * - tokens are packed once per product, 12 a tile: xp[(tile * p + i) * 12 + t] = pair i of token
 *   tile * 12 + t, tokens past nt zero. One pointer and constant offsets then feed a tile. */
#include <stddef.h>
#include <string.h>

#include "llava_kernels.h"

#include "half.h"

#define PANEL_ROWS LE_BF16_PANEL_ROWS
#define TILE_TOKENS LE_BF16_TILE_TOKENS

static inline uint32_t pair_of(const uint16_t *w, int i, int k) {
    const float b = 2 * i + 1 < k ? f16_to_f32(w[2 * i + 1]) : 0.0f;
    return (uint32_t)f32_to_bf16(f16_to_f32(w[2 * i])) | (uint32_t)f32_to_bf16(b) << 16;
}

static inline uint32_t pair_of_f32(const float *x, int i, int k) {
    return (uint32_t)f32_to_bf16(x[2 * i]) | (uint32_t)f32_to_bf16(2 * i + 1 < k ? x[2 * i + 1] : 0.0f) << 16;
}

#if defined(LE_BF16_AVX512) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#define SUFFIX(name) name##_avx512

#include "transpose_x86.h"

/* Sixteen values of a row (fewer at its end, zero-filled) as eight bf16 pairs. */
static inline __m256i pairs16_f16(const uint16_t *w, int n) {
    const __m256i h = _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1), w);
    return (__m256i)_mm512_cvtneps_pbh(_mm512_cvtph_ps(h));
}

static inline __m256i pairs16_f32(const float *x, int n) {
    return (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), x));
}

/* Eight rows at a time: sixteen values of each become eight pairs, transposed in registers so
 * every store fills 32 contiguous bytes of the panel (dword stores a row apart thrashed). */
static void pack_panel(int k, const uint16_t *w, size_t ldw, int nrows, uint32_t *pack) {
    for (int r0 = 0; r0 < PANEL_ROWS; r0 += 8) {
        for (int c = 0; c < k; c += 16) {
            const int n = k - c < 16 ? k - c : 16;
            __m256 r[8];
            for (int j = 0; j < 8; j++) {
                r[j] = r0 + j < nrows ? _mm256_castsi256_ps(pairs16_f16(w + (size_t)(r0 + j) * ldw + c, n))
                                      : _mm256_setzero_ps();
            }
            le_transpose8x8_ps(r);
            for (int j = 0; j < (n + 1) / 2; j++) {
                _mm256_storeu_ps((float *)(pack + (size_t)(c / 2 + j) * PANEL_ROWS + r0), r[j]);
            }
        }
    }
}

/* Sixteen values of a token (fewer at its end) as bf16 pairs, for pack_tokens. */
#define TOKEN_CHUNK 16
static inline void token_pairs(const float *x, int n, uint32_t *out) {
    _mm256_storeu_si256((__m256i *)out, pairs16_f32(x, n));
}

/* 32 rows x 12 tokens: 24 sums in registers; per pair two weight loads and twelve broadcasts
 * feed 24 vdpbf16ps. Named accumulators, as GCC keeps them in registers that way. */
#define DOT2(t)                                                                                                      \
    do {                                                                                                             \
        const __m512bh b = (__m512bh)_mm512_set1_epi32((int)xt[t]);                                                 \
        c##t##a = _mm512_dpbf16_ps(c##t##a, w0, b);                                                                  \
        c##t##b = _mm512_dpbf16_ps(c##t##b, w1, b);                                                                  \
    } while (0)

static void tile(int np, const uint32_t *pack, const uint32_t *xtile, int nt, float *out, size_t ldo, int rows) {
    __m512 c0a = _mm512_setzero_ps(), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a, c3a = c0a, c3b = c0a;
    __m512 c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a, c6a = c0a, c6b = c0a, c7a = c0a, c7b = c0a;
    __m512 c8a = c0a, c8b = c0a, c9a = c0a, c9b = c0a, c10a = c0a, c10b = c0a, c11a = c0a, c11b = c0a;
    for (int i = 0; i < np; i++) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(pack + (size_t)i * PANEL_ROWS);
        const __m512bh w1 = (__m512bh)_mm512_loadu_si512(pack + (size_t)i * PANEL_ROWS + 16);
        const uint32_t *xt = xtile + (size_t)i * TILE_TOKENS;
        DOT2(0);
        DOT2(1);
        DOT2(2);
        DOT2(3);
        DOT2(4);
        DOT2(5);
        DOT2(6);
        DOT2(7);
        DOT2(8);
        DOT2(9);
        DOT2(10);
        DOT2(11);
    }
    const __m512 res[TILE_TOKENS][2] = {{c0a, c0b}, {c1a, c1b}, {c2a, c2b},   {c3a, c3b},   {c4a, c4b},   {c5a, c5b},
                                        {c6a, c6b}, {c7a, c7b}, {c8a, c8b}, {c9a, c9b}, {c10a, c10b}, {c11a, c11b}};
    const __mmask16 lo = (__mmask16)(rows >= 16 ? 0xffff : (1u << rows) - 1);
    const __mmask16 hi = (__mmask16)(rows >= 32 ? 0xffff : rows <= 16 ? 0 : (1u << (rows - 16)) - 1);
    for (int t = 0; t < nt; t++) {
        _mm512_mask_storeu_ps(out + (size_t)t * ldo, lo, res[t][0]);
        _mm512_mask_storeu_ps(out + (size_t)t * ldo + 16, hi, res[t][1]);
    }
}
#undef DOT2

#elif defined(LE_BF16_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define SUFFIX(name) name##_neon

/* f32 bits to bf16 bits as f32_to_bf16 (integer arithmetic, so it matches the scalar rounding
 * bit for bit whatever BFCVT does with subnormals). */
static inline uint16x4_t bf16_bits4(uint32x4_t u) {
    const uint32x4_t exp = vandq_u32(u, vdupq_n_u32(0x7f800000));
    const uint32x4_t mag = vandq_u32(u, vdupq_n_u32(0x7fffffff));
    const uint32x4_t rne =
        vshrq_n_u32(vaddq_u32(u, vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1)))), 16);
    const uint32x4_t nan = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
    const uint32x4_t sign = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x8000));
    uint32x4_t r = vbslq_u32(vcgtq_u32(mag, vdupq_n_u32(0x7f800000)), nan, rne);
    r = vbslq_u32(vceqq_u32(exp, vdupq_n_u32(0)), sign, r);
    return vmovn_u32(r);
}

/* Eight values (fewer at the end, zero-filled) as four bf16 pairs. */
static inline uint32x4_t pairs8_f32(const float *x, int n) {
    float tmp[8] = {0};
    const float *p = x;
    if (n < 8) {
        memcpy(tmp, x, (size_t)n * sizeof(float));
        p = tmp;
    }
    const uint16x8_t h = vcombine_u16(bf16_bits4(vreinterpretq_u32_f32(vld1q_f32(p))),
                                      bf16_bits4(vreinterpretq_u32_f32(vld1q_f32(p + 4))));
    return vreinterpretq_u32_u16(h);
}

static inline uint32x4_t pairs8_f16(const uint16_t *w, int n) {
    uint16_t tmp[8] = {0};
    const uint16_t *p = w;
    if (n < 8) {
        memcpy(tmp, w, (size_t)n * sizeof(uint16_t));
        p = tmp;
    }
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(p));
    const uint16x8_t b = vcombine_u16(bf16_bits4(vreinterpretq_u32_f32(vcvt_f32_f16(vget_low_f16(h)))),
                                      bf16_bits4(vreinterpretq_u32_f32(vcvt_high_f32_f16(h))));
    return vreinterpretq_u32_u16(b);
}

/* Four rows at a time: eight values of each become four pairs, a 4x4 dword transpose puts each
 * pair's four rows in one store. */
static void pack_panel(int k, const uint16_t *w, size_t ldw, int nrows, uint32_t *pack) {
    for (int r0 = 0; r0 < PANEL_ROWS; r0 += 4) {
        for (int c = 0; c < k; c += 8) {
            const int n = k - c < 8 ? k - c : 8;
            uint32x4_t r[4];
            for (int j = 0; j < 4; j++) {
                r[j] = r0 + j < nrows ? pairs8_f16(w + (size_t)(r0 + j) * ldw + c, n) : vdupq_n_u32(0);
            }
            const uint32x4_t t0 = vtrn1q_u32(r[0], r[1]), t1 = vtrn2q_u32(r[0], r[1]);
            const uint32x4_t t2 = vtrn1q_u32(r[2], r[3]), t3 = vtrn2q_u32(r[2], r[3]);
            const uint32x4_t o[4] = {
                vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))),
                vreinterpretq_u32_u64(vtrn1q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3))),
                vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t0), vreinterpretq_u64_u32(t2))),
                vreinterpretq_u32_u64(vtrn2q_u64(vreinterpretq_u64_u32(t1), vreinterpretq_u64_u32(t3)))};
            for (int j = 0; j < (n + 1) / 2; j++) {
                vst1q_u32(pack + (size_t)(c / 2 + j) * PANEL_ROWS + r0, o[j]);
            }
        }
    }
}

#define TOKEN_CHUNK 8
static inline void token_pairs(const float *x, int n, uint32_t *out) {
    vst1q_u32(out, pairs8_f32(x, n));
}

/* 8 rows x 12 tokens, four times across the panel: 24 sums, per pair two weight and three
 * token registers feed 24 BFDOTs (a token pair picked by lane). */
#define BFDOT3(a, w, x0, x1, x2, row)                                                                                \
    do {                                                                                                             \
        a[row][0] = vbfdotq_laneq_f32(a[row][0], w, x0, 0);                                                          \
        a[row][1] = vbfdotq_laneq_f32(a[row][1], w, x0, 1);                                                          \
        a[row][2] = vbfdotq_laneq_f32(a[row][2], w, x0, 2);                                                          \
        a[row][3] = vbfdotq_laneq_f32(a[row][3], w, x0, 3);                                                          \
        a[row][4] = vbfdotq_laneq_f32(a[row][4], w, x1, 0);                                                          \
        a[row][5] = vbfdotq_laneq_f32(a[row][5], w, x1, 1);                                                          \
        a[row][6] = vbfdotq_laneq_f32(a[row][6], w, x1, 2);                                                          \
        a[row][7] = vbfdotq_laneq_f32(a[row][7], w, x1, 3);                                                          \
        a[row][8] = vbfdotq_laneq_f32(a[row][8], w, x2, 0);                                                          \
        a[row][9] = vbfdotq_laneq_f32(a[row][9], w, x2, 1);                                                          \
        a[row][10] = vbfdotq_laneq_f32(a[row][10], w, x2, 2);                                                        \
        a[row][11] = vbfdotq_laneq_f32(a[row][11], w, x2, 3);                                                        \
    } while (0)

static inline __attribute__((always_inline)) void tile(int np, const uint32_t *pack, const uint32_t *xtile, int nt,
                                                       float *out, size_t ldo, int rows) {
    for (int g = 0; g < PANEL_ROWS && g < rows; g += 8) {
        float32x4_t a[2][TILE_TOKENS];
        for (int h = 0; h < 2; h++) {
            for (int t = 0; t < TILE_TOKENS; t++) {
                a[h][t] = vdupq_n_f32(0.0f);
            }
        }
        for (int i = 0; i < np; i++) {
            const uint32_t *wp = pack + (size_t)i * PANEL_ROWS + g, *xt = xtile + (size_t)i * TILE_TOKENS;
            const bfloat16x8_t w0 = vreinterpretq_bf16_u32(vld1q_u32(wp)), w1 = vreinterpretq_bf16_u32(vld1q_u32(wp + 4));
            const bfloat16x8_t x0 = vreinterpretq_bf16_u32(vld1q_u32(xt));
            const bfloat16x8_t x1 = vreinterpretq_bf16_u32(vld1q_u32(xt + 4));
            const bfloat16x8_t x2 = vreinterpretq_bf16_u32(vld1q_u32(xt + 8));
            BFDOT3(a, w0, x0, x1, x2, 0);
            BFDOT3(a, w1, x0, x1, x2, 1);
        }
        const int n = rows - g < 8 ? rows - g : 8;
        for (int t = 0; t < nt; t++) {
            float tmp[8];
            vst1q_f32(tmp, a[0][t]);
            vst1q_f32(tmp + 4, a[1][t]);
            memcpy(out + (size_t)t * ldo + g, tmp, (size_t)n * sizeof(float));
        }
    }
}
#undef BFDOT3

#elif !defined(LE_BF16_AVX512) && !defined(LE_BF16_NEON)
#define SUFFIX(name) name##_scalar

static void pack_panel(int k, const uint16_t *w, size_t ldw, int nrows, uint32_t *pack) {
    const int np = (k + 1) / 2;
    for (int r = 0; r < PANEL_ROWS; r++) {
        for (int i = 0; i < np; i++) {
            pack[(size_t)i * PANEL_ROWS + r] = r < nrows ? pair_of(w + (size_t)r * ldw, i, k) : 0;
        }
    }
}

#define TOKEN_CHUNK 2
static inline void token_pairs(const float *x, int n, uint32_t *out) {
    out[0] = pair_of_f32(x, 0, n);
}

/* The instruction's order: the odd product, then the even one, each added with rounding (the
 * products of two bf16 values are exact in f32). */
static void tile(int np, const uint32_t *pack, const uint32_t *xtile, int nt, float *out, size_t ldo, int rows) {
    for (int t = 0; t < nt; t++) {
        for (int r = 0; r < rows && r < PANEL_ROWS; r++) {
            float acc = 0.0f;
            for (int i = 0; i < np; i++) {
                const uint32_t w = pack[(size_t)i * PANEL_ROWS + r], x = xtile[(size_t)i * TILE_TOKENS + t];
                acc += bf16_to_f32((uint16_t)(w >> 16)) * bf16_to_f32((uint16_t)(x >> 16));
                acc += bf16_to_f32((uint16_t)w) * bf16_to_f32((uint16_t)x);
            }
            out[(size_t)t * ldo + r] = acc;
        }
    }
}
#endif

#ifdef SUFFIX
/* Each token's values TOKEN_CHUNK at a time into pairs (the build's conversion), then spread
 * a tile's width apart; tokens past nt are zero. */
void SUFFIX(le_bf16_pack_tokens)(int k, int nt, const float *x, size_t ldx, uint32_t *xp) {
    const int np = (k + 1) / 2;
    for (int t0 = 0; t0 < nt; t0 += TILE_TOKENS) {
        uint32_t *tile = xp + (size_t)(t0 / TILE_TOKENS) * np * TILE_TOKENS;
        for (int t = 0; t < TILE_TOKENS; t++) {
            if (t0 + t >= nt) {
                for (int i = 0; i < np; i++) {
                    tile[(size_t)i * TILE_TOKENS + t] = 0;
                }
                continue;
            }
            const float *row = x + (size_t)(t0 + t) * ldx;
            for (int c = 0; c < k; c += TOKEN_CHUNK) {
                uint32_t tmp[TOKEN_CHUNK / 2];
                token_pairs(row + c, k - c < TOKEN_CHUNK ? k - c : TOKEN_CHUNK, tmp);
                const int n = (k - c + 1) / 2 < TOKEN_CHUNK / 2 ? (k - c + 1) / 2 : TOKEN_CHUNK / 2;
                for (int j = 0; j < n; j++) {
                    tile[(size_t)(c / 2 + j) * TILE_TOKENS + t] = tmp[j];
                }
            }
        }
    }
}

void SUFFIX(le_gemm_bf16)(int k, const uint16_t *w, size_t ldw, int nrows, const uint32_t *xp, int nt, float *out,
                          size_t ldo, uint32_t *pack) {
    const int np = (k + 1) / 2;
    for (int p = 0; p < nrows; p += PANEL_ROWS) {
        const int rows = nrows - p < PANEL_ROWS ? nrows - p : PANEL_ROWS;
        pack_panel(k, w + (size_t)p * ldw, ldw, rows, pack);
        for (int t0 = 0; t0 < nt; t0 += TILE_TOKENS) {
            const int n = nt - t0 < TILE_TOKENS ? nt - t0 : TILE_TOKENS;
            tile(np, pack, xp + (size_t)(t0 / TILE_TOKENS) * np * TILE_TOKENS, n, out + (size_t)t0 * ldo + p, ldo,
                 rows);
        }
    }
}
#endif
