/* GEMM for F16 weights and f32 activations (the vision encoder's matrices), compiled four
 * times by build.rs: portable (le_gemm_f16_scalar), AVX2+FMA+F16C (-DLE_F16_AVX2), AVX-512
 * (-DLE_F16_AVX512) and AArch64 NEON (-DLE_F16_NEON). A panel of weight rows (16; 32 for
 * AVX-512) is repacked k-major (w[k][rows], still f16) into the caller's buffer, then each tile
 * of tokens x panel rows keeps its sums in registers while k runs: per k, the panel's weight
 * vectors are widened once and meet the tile's broadcast activations in FMAs, so loads and
 * conversions are amortised over the tile rather than paid per product as in a dot-product loop.
 * Every build adds each output's k products in order with one fused multiply-add each, so the
 * SIMD builds agree bit for bit (the scalar reference rounds the product apart). */
#include <stddef.h>
#include <string.h>

#include "llava_kernels.h"

#include "half.h"

#if defined(LE_F16_AVX512)
#define PANEL_ROWS 32 /* two zmm of rows: 24 accumulators for twelve packed tokens */
/* The panel is widened to f32 as it is packed: on Intel cores a 512-bit vcvtph2ps takes both
 * FMA ports for a cycle, so widening in the tile cost a fifth of its FMA slots. */
typedef float panel_t;
#define PANEL_FLOATS PANEL_ROWS
#else
#define PANEL_ROWS 16
#define TILE_TOKENS 6
typedef uint16_t panel_t;
#define PANEL_FLOATS (PANEL_ROWS / 2)
#endif
#if PANEL_FLOATS > LE_F16_PACK_FLOATS
#error "the caller's pack scratch holds LE_F16_PACK_FLOATS floats per k"
#endif

static inline panel_t to_panel(uint16_t h) {
#if defined(LE_F16_AVX512)
    return f16_to_f32(h);
#else
    return h;
#endif
}

#if (defined(LE_F16_AVX2) || defined(LE_F16_AVX512)) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>

/* Eight rows x eight halves (w rows ldw apart, from column i) transposed to pack[i + j][r0 + r]:
 * three rounds of SSE2 interleaves instead of 64 scalar moves. */
static inline void store8(panel_t *dst, __m128i v) {
#if defined(LE_F16_AVX512)
    _mm256_storeu_ps(dst, _mm256_cvtph_ps(v));
#else
    _mm_storeu_si128((__m128i *)dst, v);
#endif
}

static inline void transpose8x8_u16(const uint16_t *w, size_t ldw, panel_t *pack, int r0) {
    __m128i a[8], t[8], u[8];
    for (int r = 0; r < 8; r++) {
        a[r] = _mm_loadu_si128((const __m128i *)(w + (size_t)r * ldw));
    }
    for (int r = 0; r < 8; r += 2) {
        t[r] = _mm_unpacklo_epi16(a[r], a[r + 1]);
        t[r + 1] = _mm_unpackhi_epi16(a[r], a[r + 1]);
    }
    for (int h = 0; h < 8; h += 4) {
        u[h] = _mm_unpacklo_epi32(t[h], t[h + 2]);
        u[h + 1] = _mm_unpackhi_epi32(t[h], t[h + 2]);
        u[h + 2] = _mm_unpacklo_epi32(t[h + 1], t[h + 3]);
        u[h + 3] = _mm_unpackhi_epi32(t[h + 1], t[h + 3]);
    }
    for (int j = 0; j < 4; j++) {
        store8(pack + (size_t)(2 * j) * PANEL_ROWS + r0, _mm_unpacklo_epi64(u[j], u[j + 4]));
        store8(pack + (size_t)(2 * j + 1) * PANEL_ROWS + r0, _mm_unpackhi_epi64(u[j], u[j + 4]));
    }
}
#define HAVE_TRANSPOSE8X8_U16
#endif

/* w (nrows rows of k halves, ldw apart) to pack[k][PANEL_ROWS], rows past nrows zero. */
static void pack_panel(int k, const uint16_t *w, size_t ldw, int nrows, panel_t *pack) {
#ifdef HAVE_TRANSPOSE8X8_U16
    /* A whole panel (all but a matrix's last) eight columns at a time: the scalar loop was 5.5%
     * of a SigLIP encode. */
    if (nrows == PANEL_ROWS) {
        int i = 0;
        for (; i + 8 <= k; i += 8) {
            for (int r0 = 0; r0 < PANEL_ROWS; r0 += 8) {
                transpose8x8_u16(w + (size_t)r0 * ldw + i, ldw, pack + (size_t)i * PANEL_ROWS, r0);
            }
        }
        for (; i < k; i++) {
            for (int r = 0; r < PANEL_ROWS; r++) {
                pack[(size_t)i * PANEL_ROWS + r] = to_panel(w[(size_t)r * ldw + i]);
            }
        }
        return;
    }
#endif
    for (int r = 0; r < PANEL_ROWS; r++) {
        if (r < nrows) {
            const uint16_t *row = w + (size_t)r * ldw;
            for (int i = 0; i < k; i++) {
                pack[(size_t)i * PANEL_ROWS + r] = to_panel(row[i]);
            }
        } else {
            for (int i = 0; i < k; i++) {
                pack[(size_t)i * PANEL_ROWS + r] = 0;
            }
        }
    }
}

static inline void store_rows(float *out, const float *acc, int rows) {
    memcpy(out, acc, (size_t)(rows < PANEL_ROWS ? rows : PANEL_ROWS) * sizeof(float));
}

#if defined(LE_F16_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#define GEMM_F16_FN le_gemm_f16_avx2

/* Always six tokens, in named registers (GCC spills an array of accumulators to the stack on
 * every iteration); a short tile repeats its last token and drops those results. */
static void tile(int k, const uint16_t *pack, const float *x, size_t ldx, int nt, float *out, size_t ldo, int rows) {
    const float *x0 = x, *x1 = x + (nt > 1 ? 1 : 0) * ldx, *x2 = x + (nt > 2 ? 2 : nt - 1) * ldx;
    const float *x3 = x + (nt > 3 ? 3 : nt - 1) * ldx, *x4 = x + (nt > 4 ? 4 : nt - 1) * ldx;
    const float *x5 = x + (nt > 5 ? 5 : nt - 1) * ldx;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int i = 0; i < k; i++) {
        const __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(pack + (size_t)i * PANEL_ROWS)));
        const __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(pack + (size_t)i * PANEL_ROWS + 8)));
        __m256 b = _mm256_broadcast_ss(x0 + i);
        c00 = _mm256_fmadd_ps(w0, b, c00);
        c01 = _mm256_fmadd_ps(w1, b, c01);
        b = _mm256_broadcast_ss(x1 + i);
        c10 = _mm256_fmadd_ps(w0, b, c10);
        c11 = _mm256_fmadd_ps(w1, b, c11);
        b = _mm256_broadcast_ss(x2 + i);
        c20 = _mm256_fmadd_ps(w0, b, c20);
        c21 = _mm256_fmadd_ps(w1, b, c21);
        b = _mm256_broadcast_ss(x3 + i);
        c30 = _mm256_fmadd_ps(w0, b, c30);
        c31 = _mm256_fmadd_ps(w1, b, c31);
        b = _mm256_broadcast_ss(x4 + i);
        c40 = _mm256_fmadd_ps(w0, b, c40);
        c41 = _mm256_fmadd_ps(w1, b, c41);
        b = _mm256_broadcast_ss(x5 + i);
        c50 = _mm256_fmadd_ps(w0, b, c50);
        c51 = _mm256_fmadd_ps(w1, b, c51);
    }
    const __m256 res[TILE_TOKENS][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int t = 0; t < nt; t++) {
        float tmp[PANEL_ROWS];
        _mm256_storeu_ps(tmp, res[t][0]);
        _mm256_storeu_ps(tmp + 8, res[t][1]);
        store_rows(out + (size_t)t * ldo, tmp, rows);
    }
}

#elif defined(LE_F16_AVX512) && (defined(__x86_64__) || defined(_M_X64))

/* 32 rows x 12 tokens: 24 sums in named zmm registers (GCC keeps them in registers that way);
 * per k, two panel loads and twelve broadcasts from the packed tokens (one pointer, constant
 * offsets: le_f16_pack_tokens_avx512) feed 24 FMAs. The eight-token tile on strided token rows this
 * replaces spent ten loads from nine streams on sixteen FMAs. */
#define FMA2(t)                                                                                                      \
    do {                                                                                                             \
        const __m512 b = _mm512_set1_ps(xt[t]);                                                                      \
        c##t##a = _mm512_fmadd_ps(w0, b, c##t##a);                                                                   \
        c##t##b = _mm512_fmadd_ps(w1, b, c##t##b);                                                                   \
    } while (0)

static void tile(int k, const float *pack, const float *xtile, int nt, float *out, size_t ldo, int rows,
                 const float *bias) {
    __m512 c0a = _mm512_setzero_ps(), c0b = c0a, c1a = c0a, c1b = c0a, c2a = c0a, c2b = c0a, c3a = c0a, c3b = c0a;
    __m512 c4a = c0a, c4b = c0a, c5a = c0a, c5b = c0a, c6a = c0a, c6b = c0a, c7a = c0a, c7b = c0a;
    __m512 c8a = c0a, c8b = c0a, c9a = c0a, c9b = c0a, c10a = c0a, c10b = c0a, c11a = c0a, c11b = c0a;
    for (int i = 0; i < k; i++) {
        const __m512 w0 = _mm512_loadu_ps(pack + (size_t)i * PANEL_ROWS);
        const __m512 w1 = _mm512_loadu_ps(pack + (size_t)i * PANEL_ROWS + 16);
        const float *xt = xtile + (size_t)i * LE_F16_TILE_TOKENS;
        FMA2(0);
        FMA2(1);
        FMA2(2);
        FMA2(3);
        FMA2(4);
        FMA2(5);
        FMA2(6);
        FMA2(7);
        FMA2(8);
        FMA2(9);
        FMA2(10);
        FMA2(11);
    }
    const __m512 res[LE_F16_TILE_TOKENS][2] = {{c0a, c0b}, {c1a, c1b}, {c2a, c2b}, {c3a, c3b},
                                               {c4a, c4b}, {c5a, c5b}, {c6a, c6b}, {c7a, c7b},
                                               {c8a, c8b}, {c9a, c9b}, {c10a, c10b}, {c11a, c11b}};
    const __mmask16 lo = (__mmask16)(rows >= 16 ? 0xffff : (1u << rows) - 1);
    const __mmask16 hi = (__mmask16)(rows >= 32 ? 0xffff : rows <= 16 ? 0 : (1u << (rows - 16)) - 1);
    /* The bias joins as the sums are stored: adding it in a pass of its own cost 1.8% of a
     * CLIP-L encode (strided rows of outputs written twice). */
    const __m512 b0 = bias ? _mm512_maskz_loadu_ps(lo, bias) : _mm512_setzero_ps();
    const __m512 b1 = bias ? _mm512_maskz_loadu_ps(hi, bias + 16) : _mm512_setzero_ps();
    for (int t = 0; t < nt; t++) {
        _mm512_mask_storeu_ps(out + (size_t)t * ldo, lo, _mm512_add_ps(res[t][0], b0));
        _mm512_mask_storeu_ps(out + (size_t)t * ldo + 16, hi, _mm512_add_ps(res[t][1], b1));
    }
}
#undef FMA2

#include "transpose_x86.h"

/* Eight values of tokens 0..7 through an 8x8 transpose and of tokens 8..11 through two 4x4
 * ones, so every store is a contiguous run of a value's tile row (the element-wise copy was 3%
 * of a SigLIP encode). Tiles with missing tokens, and values past the last multiple of 8, go
 * element by element. */
void le_f16_pack_tokens_avx512(int k, int nt, const float *x, size_t ldx, float *xp) {
    for (int t0 = 0; t0 < nt; t0 += LE_F16_TILE_TOKENS) {
        float *tile = xp + (size_t)(t0 / LE_F16_TILE_TOKENS) * k * LE_F16_TILE_TOKENS;
        const float *row = x + (size_t)t0 * ldx;
        int i = 0;
        if (t0 + LE_F16_TILE_TOKENS <= nt) {
            for (; i + 8 <= k; i += 8) {
                __m256 r[8];
                for (int t = 0; t < 8; t++) {
                    r[t] = _mm256_loadu_ps(row + (size_t)t * ldx + i);
                }
                le_transpose8x8_ps(r);
                for (int j = 0; j < 8; j++) {
                    _mm256_storeu_ps(tile + (size_t)(i + j) * LE_F16_TILE_TOKENS, r[j]);
                }
                for (int h = 0; h < 8; h += 4) {
                    __m128 q0 = _mm_loadu_ps(row + 8 * ldx + i + h), q1 = _mm_loadu_ps(row + 9 * ldx + i + h);
                    __m128 q2 = _mm_loadu_ps(row + 10 * ldx + i + h), q3 = _mm_loadu_ps(row + 11 * ldx + i + h);
                    _MM_TRANSPOSE4_PS(q0, q1, q2, q3);
                    _mm_storeu_ps(tile + (size_t)(i + h) * LE_F16_TILE_TOKENS + 8, q0);
                    _mm_storeu_ps(tile + (size_t)(i + h + 1) * LE_F16_TILE_TOKENS + 8, q1);
                    _mm_storeu_ps(tile + (size_t)(i + h + 2) * LE_F16_TILE_TOKENS + 8, q2);
                    _mm_storeu_ps(tile + (size_t)(i + h + 3) * LE_F16_TILE_TOKENS + 8, q3);
                }
            }
        }
        for (; i < k; i++) {
            for (int t = 0; t < LE_F16_TILE_TOKENS; t++) {
                tile[(size_t)i * LE_F16_TILE_TOKENS + t] = t0 + t < nt ? row[(size_t)t * ldx + i] : 0.0f;
            }
        }
    }
}

void le_gemm_f16_packed_avx512(int k, const uint16_t *w, size_t ldw, int nrows, const float *xp, int nt, float *out,
                               size_t ldo, float *scratch, const float *bias) {
    float *pack = scratch;
    for (int p = 0; p < nrows; p += PANEL_ROWS) {
        const int rows = nrows - p < PANEL_ROWS ? nrows - p : PANEL_ROWS;
        pack_panel(k, w + (size_t)p * ldw, ldw, rows, pack);
        for (int t0 = 0; t0 < nt; t0 += LE_F16_TILE_TOKENS) {
            const int n = nt - t0 < LE_F16_TILE_TOKENS ? nt - t0 : LE_F16_TILE_TOKENS;
            tile(k, pack, xp + (size_t)(t0 / LE_F16_TILE_TOKENS) * k * LE_F16_TILE_TOKENS, n,
                 out + (size_t)t0 * ldo + p, ldo, rows, bias ? bias + p : NULL);
        }
    }
}

#elif defined(LE_F16_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define GEMM_F16_FN le_gemm_f16_neon

static inline __attribute__((always_inline)) void tile(int k, const uint16_t *pack, const float *x, size_t ldx,
                                                       int nt, float *out, size_t ldo, int rows) {
    float32x4_t acc[TILE_TOKENS][4];
    for (int t = 0; t < nt; t++) {
        for (int j = 0; j < 4; j++) {
            acc[t][j] = vdupq_n_f32(0.0f);
        }
    }
    for (int i = 0; i < k; i++) {
        float32x4_t w[4];
        for (int j = 0; j < 4; j++) {
            w[j] = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(pack + (size_t)i * PANEL_ROWS + 4 * j)));
        }
        for (int t = 0; t < nt; t++) {
            const float xv = x[(size_t)t * ldx + i];
            for (int j = 0; j < 4; j++) {
                acc[t][j] = vfmaq_n_f32(acc[t][j], w[j], xv);
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        float tmp[PANEL_ROWS];
        for (int j = 0; j < 4; j++) {
            vst1q_f32(tmp + 4 * j, acc[t][j]);
        }
        store_rows(out + (size_t)t * ldo, tmp, rows);
    }
}

#elif !defined(LE_F16_AVX2) && !defined(LE_F16_AVX512) && !defined(LE_F16_NEON)
#define GEMM_F16_FN le_gemm_f16_scalar

static inline void tile(int k, const uint16_t *pack, const float *x, size_t ldx, int nt, float *out, size_t ldo,
                        int rows) {
    for (int t = 0; t < nt; t++) {
        float acc[PANEL_ROWS] = {0};
        for (int i = 0; i < k; i++) {
            for (int r = 0; r < PANEL_ROWS; r++) {
                acc[r] += f16_to_f32(pack[(size_t)i * PANEL_ROWS + r]) * x[(size_t)t * ldx + i];
            }
        }
        store_rows(out + (size_t)t * ldo, acc, rows);
    }
}
#endif

#ifdef GEMM_F16_FN
void GEMM_F16_FN(int k, const uint16_t *w, size_t ldw, int nrows, const float *x, size_t ldx, int nt, float *out,
                 size_t ldo, float *scratch) {
    panel_t *pack = (panel_t *)scratch;
    for (int p = 0; p < nrows; p += PANEL_ROWS) {
        const int rows = nrows - p;
        pack_panel(k, w + (size_t)p * ldw, ldw, rows < PANEL_ROWS ? rows : PANEL_ROWS, pack);
        for (int t0 = 0; t0 < nt; t0 += TILE_TOKENS) {
            const int n = nt - t0 < TILE_TOKENS ? nt - t0 : TILE_TOKENS;
            const float *xt = x + (size_t)t0 * ldx;
            float *o = out + (size_t)t0 * ldo + p;
            switch (n) {
            case 6:
                tile(k, pack, xt, ldx, 6, o, ldo, rows);
                break;
            case 5:
                tile(k, pack, xt, ldx, 5, o, ldo, rows);
                break;
            case 4:
                tile(k, pack, xt, ldx, 4, o, ldo, rows);
                break;
            case 3:
                tile(k, pack, xt, ldx, 3, o, ldo, rows);
                break;
            case 2:
                tile(k, pack, xt, ldx, 2, o, ldo, rows);
                break;
            default:
                tile(k, pack, xt, ldx, 1, o, ldo, rows);
                break;
            }
        }
    }
}
#endif
