/* The prefill GEMM on x86 (decode over interleaved rows is gemv_x86.c), compiled twice by build.rs: with AVX2 (products through
 * vpmaddubsw into int16, widened by vpmaddwd) and with -DLE_VNNI and AVX512-VNNI/VL (vpdpbusd
 * multiplies four byte pairs and accumulates in int32 in one instruction, on 256-bit registers).
 * The tile is 8 weight rows (one panel, lanes = rows) by up to 4 tokens; each panel block is
 * loaded once for the four tokens and each token's activations are broadcast four bytes at a
 * time. Called only after run-time detection. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "llava_kernels.h"
#include "x8_kinds.h"
#include "prefetch_x86.h"
#include "bytes_x86.h"

#ifdef LE_VNNI
#define GEMM_FN le_gemm_x8_vnni
#else
#define GEMM_FN le_gemm_x8_avx2
#endif

/* Tokens per tile: AVX512-VL's 32 vector registers hold eight accumulators beside the panel
 * block's eight (sixteen for signed codes); AVX2's sixteen hold four. */
#ifdef LE_VNNI
#define TILE_TOKENS 8
#else
#define TILE_TOKENS 4
#endif

#ifdef LE_VNNI
/* Unsigned codes x signed activations, chunks c0..c1-1, summed in int32 per row. Two chains
 * hide the instruction's latency. */
static inline __m256i dot_chunks_u(const __m256i *wq, const int8_t *qs, int c0, int c1) {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int c = c0; c < c1; c += 2) {
        s0 = _mm256_dpbusd_epi32(s0, wq[c], bcast4(qs + 4 * c));
        s1 = _mm256_dpbusd_epi32(s1, wq[c + 1], bcast4(qs + 4 * c + 4));
    }
    return _mm256_add_epi32(s0, s1);
}

/* Signed codes: the unsigned operand is |w|, w's sign moves onto the activations. */
static inline __m256i dot_chunks_s(const __m256i *wq, const __m256i *wa, const int8_t *qs, int c0, int c1) {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int c = c0; c < c1; c += 2) {
        s0 = _mm256_dpbusd_epi32(s0, wa[c], _mm256_sign_epi8(bcast4(qs + 4 * c), wq[c]));
        s1 = _mm256_dpbusd_epi32(s1, wa[c + 1], _mm256_sign_epi8(bcast4(qs + 4 * c + 4), wq[c + 1]));
    }
    return _mm256_add_epi32(s0, s1);
}
#else
/* Unsigned codes: `run` chunks' int16 pair sums may be added before widening (U4: 8 x 2 x 15 x
 * 127 = 30480, U5: 4 x 2 x 31 x 127 = 31496, both below 32767). */
static inline __m256i dot_chunks_u(const __m256i *wq, const int8_t *qs, int c0, int c1, int run) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int g = c0; g < c1; g += run) {
        __m256i s16 = _mm256_maddubs_epi16(wq[g], bcast4(qs + 4 * g));
        for (int c = g + 1; c < g + run; c++) {
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wq[c], bcast4(qs + 4 * c)));
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s16, ones));
    }
    return acc;
}

/* Signed codes through the sign trick; S6 runs 4 chunks in int16 (4 x 2 x 32 x 127 = 32512),
 * S8 one (2 x 127 x 127 = 32258). */
static inline __m256i dot_chunks_s(const __m256i *wq, const __m256i *wa, const int8_t *qs, int c0, int c1, int run) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc = _mm256_setzero_si256();
    for (int g = c0; g < c1; g += run) {
        __m256i s16 = _mm256_maddubs_epi16(wa[g], _mm256_sign_epi8(bcast4(qs + 4 * g), wq[g]));
        for (int c = g + 1; c < g + run; c++) {
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(wa[c], _mm256_sign_epi8(bcast4(qs + 4 * c), wq[c])));
        }
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s16, ones));
    }
    return acc;
}
#endif

/* One panel against nt (1..TILE_TOKENS) tokens. Inlined with constant codes and nt so each
 * combination compiles to straight-line code. */
static inline __attribute__((always_inline)) void tile(le_codes codes, int nb, const le_block_x8 *w,
                                                       const le_block_q8_0x *a, int nt, float *out, size_t ldo,
                                                       int rows) {
    __m256 acc[TILE_TOKENS];
    for (int t = 0; t < nt; t++) {
        acc[t] = _mm256_setzero_ps();
    }
    const int is_signed = codes == LE_CODES_S6 || codes == LE_CODES_S8;
    for (int b = 0; b < nb; b++) {
        const le_block_x8 *x = w + b;
        __m256i wq[8], wa[8];
        for (int c = 0; c < 8; c++) {
            wq[c] = _mm256_loadu_si256((const __m256i *)(x->q + 32 * c));
            if (is_signed) {
                wa[c] = _mm256_abs_epi8(wq[c]);
            }
        }
        const __m256 s0 = _mm256_loadu_ps(x->s[0]);
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb + b;
            const __m256 da = _mm256_set1_ps(y->d);
            if (codes == LE_CODES_S6) {
#ifdef LE_VNNI
                const __m256i lo = dot_chunks_s(wq, wa, y->qs, 0, 4), hi = dot_chunks_s(wq, wa, y->qs, 4, 8);
#else
                const __m256i lo = dot_chunks_s(wq, wa, y->qs, 0, 4, 4), hi = dot_chunks_s(wq, wa, y->qs, 4, 8, 4);
#endif
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(s0, da), acc[t]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(_mm256_loadu_ps(x->s[1]), da), acc[t]);
                continue;
            }
            __m256i isum;
#ifdef LE_VNNI
            isum = is_signed ? dot_chunks_s(wq, wa, y->qs, 0, 8) : dot_chunks_u(wq, y->qs, 0, 8);
#else
            if (codes == LE_CODES_U4) {
                isum = dot_chunks_u(wq, y->qs, 0, 8, 8);
            } else if (codes == LE_CODES_U5) {
                isum = dot_chunks_u(wq, y->qs, 0, 8, 4);
            } else {
                isum = dot_chunks_s(wq, wa, y->qs, 0, 8, 1);
            }
#endif
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(s0, da), acc[t]);
            if (!is_signed) {
                acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(x->o), _mm256_set1_ps(y->dsum), acc[t]);
            }
        }
    }
    for (int t = 0; t < nt; t++) {
        if (rows >= 8) {
            _mm256_storeu_ps(out + (size_t)t * ldo, acc[t]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, acc[t]);
            memcpy(out + (size_t)t * ldo, tmp, (size_t)rows * sizeof(float));
        }
    }
}

#include "gemm_tiles.h"

#ifdef LE_VNNI
/* Two panels (sixteen rows) on 512-bit registers for unsigned codes (U4, U5: the Q4 and Q5
 * types): per block and token, eight vpdpbusd advance sixteen rows instead of eight, so the
 * broadcasts, the int32 -> f32 conversion and the scale FMAs, which the 256-bit tile pays per
 * eight rows, are paid per sixteen. Lanes 0..7 are panel p's rows, 8..15 panel p + 1's, which
 * are the next eight rows of the matrix, so a token's sixteen sums store contiguously. */
static inline __attribute__((always_inline)) void tile16(int nb, const le_block_x8 *w0, const le_block_x8 *w1,
                                                         const le_block_q8_0x *a, int nt, float *out, size_t ldo,
                                                         int rows) {
    __m512 acc[TILE_TOKENS];
    for (int t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b++) {
        const le_block_x8 *x0 = w0 + b, *x1 = w1 + b;
        __m512i wq[8];
        for (int c = 0; c < 8; c++) {
            wq[c] = join256(x0->q + 32 * c, x1->q + 32 * c);
        }
        const __m512 s = join8f(x0->s[0], x1->s[0]), o = join8f(x0->o, x1->o);
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb + b;
            __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
            for (int c = 0; c < 8; c += 2) {
                s0 = _mm512_dpbusd_epi32(s0, wq[c], bcast4z(y->qs + 4 * c));
                s1 = _mm512_dpbusd_epi32(s1, wq[c + 1], bcast4z(y->qs + 4 * c + 4));
            }
            const __m512 isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            acc[t] = _mm512_fmadd_ps(isum, _mm512_mul_ps(s, _mm512_set1_ps(y->d)), acc[t]);
            acc[t] = _mm512_fmadd_ps(o, _mm512_set1_ps(y->dsum), acc[t]);
        }
    }
    const __mmask16 keep = (__mmask16)(rows >= 16 ? 0xffff : (1u << rows) - 1);
    for (int t = 0; t < nt; t++) {
        _mm512_mask_storeu_ps(out + (size_t)t * ldo, keep, acc[t]);
    }
}

/* tile16 for signed codes (S6: Q6_K, Q3_K; S8: Q8_0). vpdpbusd's unsigned operand is the
 * activations moved up by 128 (their sign bit flipped), its signed one the codes; the surplus
 * 128 x (sum of a row's codes) comes off per 16-value half, those sums taken once per block by
 * one vpdpbusd of ones a chunk and shared by the tile's tokens. AVX-512 has no vpsignb, so the
 * 256-bit tile's sign trick does not carry over. */
static inline __attribute__((always_inline)) void tile16_s(int s6, int nb, const le_block_x8 *w0,
                                                           const le_block_x8 *w1, const le_block_q8_0x *a, int nt,
                                                           float *out, size_t ldo, int rows) {
    __m512 acc[TILE_TOKENS];
    for (int t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
    }
    const __m512i flip = _mm512_set1_epi8((char)0x80), ones = _mm512_set1_epi8(1);
    for (int b = 0; b < nb; b++) {
        const le_block_x8 *x0 = w0 + b, *x1 = w1 + b;
        __m512i wq[8];
        for (int c = 0; c < 8; c++) {
            wq[c] = join256(x0->q + 32 * c, x1->q + 32 * c);
        }
        __m512i ws0 = _mm512_setzero_si512(), ws1 = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            ws0 = _mm512_dpbusd_epi32(ws0, ones, wq[c]);
            ws1 = _mm512_dpbusd_epi32(ws1, ones, wq[c + 4]);
        }
        ws0 = _mm512_slli_epi32(ws0, 7);
        ws1 = _mm512_slli_epi32(ws1, 7);
        const __m512i ws = _mm512_add_epi32(ws0, ws1);
        const __m512 sl = join8f(x0->s[0], x1->s[0]), sh = join8f(x0->s[1], x1->s[1]);
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb + b;
#define UA(c) _mm512_xor_si512(bcast4z(y->qs + 4 * (c)), flip)
            __m512i lo0 = _mm512_setzero_si512(), lo1 = _mm512_setzero_si512();
            __m512i hi0 = _mm512_setzero_si512(), hi1 = _mm512_setzero_si512();
            lo0 = _mm512_dpbusd_epi32(lo0, UA(0), wq[0]);
            lo1 = _mm512_dpbusd_epi32(lo1, UA(1), wq[1]);
            hi0 = _mm512_dpbusd_epi32(hi0, UA(4), wq[4]);
            hi1 = _mm512_dpbusd_epi32(hi1, UA(5), wq[5]);
            lo0 = _mm512_dpbusd_epi32(lo0, UA(2), wq[2]);
            lo1 = _mm512_dpbusd_epi32(lo1, UA(3), wq[3]);
            hi0 = _mm512_dpbusd_epi32(hi0, UA(6), wq[6]);
            hi1 = _mm512_dpbusd_epi32(hi1, UA(7), wq[7]);
#undef UA
            const __m512 da = _mm512_set1_ps(y->d);
            if (s6) {
                const __m512i lo = _mm512_sub_epi32(_mm512_add_epi32(lo0, lo1), ws0);
                const __m512i hi = _mm512_sub_epi32(_mm512_add_epi32(hi0, hi1), ws1);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo), _mm512_mul_ps(sl, da), acc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi), _mm512_mul_ps(sh, da), acc[t]);
            } else {
                const __m512i isum =
                    _mm512_sub_epi32(_mm512_add_epi32(_mm512_add_epi32(lo0, lo1), _mm512_add_epi32(hi0, hi1)), ws);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(sl, da), acc[t]);
            }
        }
    }
    const __mmask16 keep = (__mmask16)(rows >= 16 ? 0xffff : (1u << rows) - 1);
    for (int t = 0; t < nt; t++) {
        _mm512_mask_storeu_ps(out + (size_t)t * ldo, keep, acc[t]);
    }
}

/* gemm() of gemm_tiles.h on 512-bit registers: pairs of panels through tile16 (unsigned codes)
 * or tile16_s (signed), a last odd panel through the 256-bit tile. */
static inline __attribute__((always_inline)) void gemm16(le_codes codes, int nb, const le_block_x8 *w, int np,
                                                           int nrows, const le_block_q8_0x *a, int nt, float *out,
                                                           size_t ldo) {
    for (int t0 = 0; t0 < nt; t0 += TILE_TOKENS) {
        const int k = nt - t0 < TILE_TOKENS ? nt - t0 : TILE_TOKENS;
        const le_block_q8_0x *at = a + (size_t)t0 * nb;
        int p = 0;
        for (; p + 2 <= np; p += 2) {
            const le_block_x8 *w0 = w + (size_t)p * nb, *w1 = w0 + nb;
            float *o = out + (size_t)t0 * ldo + 8 * p;
            const int rows = nrows - 8 * p;
#define CALL16(n)                                                                                                      \
    do {                                                                                                               \
        if (codes == LE_CODES_S6 || codes == LE_CODES_S8) {                                                            \
            tile16_s(codes == LE_CODES_S6, nb, w0, w1, at, n, o, ldo, rows);                                           \
        } else {                                                                                                       \
            tile16(nb, w0, w1, at, n, o, ldo, rows);                                                                   \
        }                                                                                                              \
    } while (0)
            LE_TILE_SWITCH(k, CALL16)
#undef CALL16
        }
        if (p < np) {
            /* The odd panel: the whole tile loop on it alone, tokens t0.. of this tile. */
            gemm(codes, nb, w + (size_t)p * nb, 1, nrows - 8 * p, at, k, out + (size_t)t0 * ldo + 8 * p, ldo);
        }
    }
}
#endif


void GEMM_FN(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a, int nt,
             float *out, size_t ldo) {
    const int nb = n / 32;
#ifdef LE_VNNI
#define GEMM_WIDE gemm16
#else
#define GEMM_WIDE gemm
#endif
    switch (codes) {
    case LE_CODES_U4:
        GEMM_WIDE(LE_CODES_U4, nb, w, np, nrows, a, nt, out, ldo);
        break;
    case LE_CODES_U5:
        GEMM_WIDE(LE_CODES_U5, nb, w, np, nrows, a, nt, out, ldo);
        break;
    case LE_CODES_S6:
        GEMM_WIDE(LE_CODES_S6, nb, w, np, nrows, a, nt, out, ldo);
        break;
    case LE_CODES_S8:
        GEMM_WIDE(LE_CODES_S8, nb, w, np, nrows, a, nt, out, ldo);
        break;
    }
}
#endif
