/* Decode on x86 over rows interleaved eight (or sixteen) at a time, and the Q4_0 row dot against
 * GEMM-style activations; compiled twice by build.rs as gemm_x86.c is: with AVX2, and with
 * -DLE_VNNI and AVX512-VNNI/VL. Called only after run-time detection. */
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
#define DOT_Q4_0X_FN le_vec_dot_q4_0_q8_0x_vnni
#define GEMV_X8_FN le_gemv_x8_vnni
#else
#define DOT_Q4_0X_FN le_vec_dot_q4_0_q8_0x_avx2
#define GEMV_X8_FN le_gemv_x8_avx2
#endif

/* Unsigned bytes x signed bytes, summed four at a time into int32 lanes. */
static inline __m256i dot_u8s8(__m256i x, __m256i y) {
#ifdef LE_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, y);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1));
#endif
}

#include "hsum_x86.h"

/* Decode: Q4_0 against GEMM-style activations (f32 scale and d * sum per block). The nibbles
 * stay unsigned (0..15), so no sign trick is needed, and the -8 offset becomes one scalar term
 * a block, d_w * 8 * dsum: fewer vector operations a block than le_vec_dot_q4_0_q8_0_avx2,
 * which matters because Q4_0 rows are compute-bound at decode. */
float DOT_Q4_0X_FN(int n, const le_block_q4_0 *w, const le_block_q8_0x *a) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float off0 = 0.0f, off1 = 0.0f;
    const int nb = n / LE_QK4_0;
    int b = 0;
#define Q4_0X_BLOCK(acc, off, i)                                                                        \
    do {                                                                                               \
        const __m128i q = _mm_loadu_si128((const __m128i *)w[i].qs);                                   \
        const __m256i x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low4);           \
        const __m256i p = dot_u8s8(x, _mm256_loadu_si256((const __m256i *)a[i].qs));                   \
        const float dw = _cvtsh_ss(w[i].d);                                                            \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * a[i].d), _mm256_cvtepi32_ps(p), acc);               \
        off += dw * a[i].dsum;                                                                         \
    } while (0)
    for (; b + 2 <= nb; b += 2) {
        Q4_0X_BLOCK(acc0, off0, b);
        Q4_0X_BLOCK(acc1, off1, b + 1);
    }
    if (b < nb) {
        Q4_0X_BLOCK(acc0, off0, b);
    }
#undef Q4_0X_BLOCK
    return hsum8(_mm256_add_ps(acc0, acc1)) - 8.0f * (off0 + off1);
}

/* Block b of eight interleaved Q4_0 rows against one token's block: per-row int32 sums of
 * unsigned nibbles x activations. Each 32-byte load is four values of every row; its low
 * nibbles meet activation word c, its high nibbles word 4 + c. */
static inline __m256i q4_x8_isum(const uint8_t *xq, const int8_t *qs) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i v0 = _mm256_loadu_si256((const __m256i *)xq);
    const __m256i v1 = _mm256_loadu_si256((const __m256i *)(xq + 32));
    const __m256i v2 = _mm256_loadu_si256((const __m256i *)(xq + 64));
    const __m256i v3 = _mm256_loadu_si256((const __m256i *)(xq + 96));
#define LO(v) _mm256_and_si256((v), low4)
#define HI(v) _mm256_and_si256(_mm256_srli_epi16((v), 4), low4)
#ifdef LE_VNNI
    /* Two chains, so consecutive vpdpbusd do not wait on each other. The high nibbles are
     * multiplied in place (16 x their value) and their sum shifted down once: one shift a
     * block instead of one a register. */
    const __m256i high4 = _mm256_set1_epi8((char)0xf0);
#define HI16(v) _mm256_and_si256((v), high4)
    __m256i s0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), LO(v0), bcast4(qs));
    __m256i s1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), HI16(v0), bcast4(qs + 16));
    s0 = _mm256_dpbusd_epi32(s0, LO(v1), bcast4(qs + 4));
    s1 = _mm256_dpbusd_epi32(s1, HI16(v1), bcast4(qs + 20));
    s0 = _mm256_dpbusd_epi32(s0, LO(v2), bcast4(qs + 8));
    s1 = _mm256_dpbusd_epi32(s1, HI16(v2), bcast4(qs + 24));
    s0 = _mm256_dpbusd_epi32(s0, LO(v3), bcast4(qs + 12));
    s1 = _mm256_dpbusd_epi32(s1, HI16(v3), bcast4(qs + 28));
#undef HI16
    return _mm256_add_epi32(s0, _mm256_srai_epi32(s1, 4));
#else
    /* Eight int16 pair sums of nibbles x int8 stay below 8 x 2 x 15 x 127 = 30480. */
    __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(LO(v0), bcast4(qs)),
                                  _mm256_maddubs_epi16(HI(v0), bcast4(qs + 16)));
    __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(LO(v1), bcast4(qs + 4)),
                                  _mm256_maddubs_epi16(HI(v1), bcast4(qs + 20)));
    s0 = _mm256_add_epi16(s0, _mm256_add_epi16(_mm256_maddubs_epi16(LO(v2), bcast4(qs + 8)),
                                               _mm256_maddubs_epi16(HI(v2), bcast4(qs + 24))));
    s1 = _mm256_add_epi16(s1, _mm256_add_epi16(_mm256_maddubs_epi16(LO(v3), bcast4(qs + 12)),
                                               _mm256_maddubs_epi16(HI(v3), bcast4(qs + 28))));
    return _mm256_madd_epi16(_mm256_add_epi16(s0, s1), _mm256_set1_epi16(1));
#endif
#undef LO
#undef HI
}

/* Block b of eight interleaved 5-bit rows (see le_block_q5_0x8) against one token's block: as
 * q4_x8_isum, with each nibble's fifth bit shifted out of qh into bit 4 (codes 0..31). */
static inline __m256i q5_x8_isum(const uint8_t *xh, const uint8_t *xq, const int8_t *qs) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);
    const __m256i h = _mm256_loadu_si256((const __m256i *)xh);
#define V(c) _mm256_loadu_si256((const __m256i *)(xq + 32 * (c)))
#define LO(v, c) _mm256_or_si256(_mm256_and_si256((v), low4), _mm256_and_si256(_mm256_slli_epi16(h, 4 - (c)), bit4))
#define HI(v, c)                                                                                                       \
    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16((v), 4), low4), _mm256_and_si256(_mm256_srli_epi16(h, (c)), bit4))
    const __m256i v0 = V(0), v1 = V(1), v2 = V(2), v3 = V(3);
#ifdef LE_VNNI
    __m256i s0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), LO(v0, 0), bcast4(qs));
    __m256i s1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), HI(v0, 0), bcast4(qs + 16));
    s0 = _mm256_dpbusd_epi32(s0, LO(v1, 1), bcast4(qs + 4));
    s1 = _mm256_dpbusd_epi32(s1, HI(v1, 1), bcast4(qs + 20));
    s0 = _mm256_dpbusd_epi32(s0, LO(v2, 2), bcast4(qs + 8));
    s1 = _mm256_dpbusd_epi32(s1, HI(v2, 2), bcast4(qs + 24));
    s0 = _mm256_dpbusd_epi32(s0, LO(v3, 3), bcast4(qs + 12));
    s1 = _mm256_dpbusd_epi32(s1, HI(v3, 3), bcast4(qs + 28));
    return _mm256_add_epi32(s0, s1);
#else
    /* Four int16 pair sums of codes x int8 stay below 4 x 2 x 31 x 127 = 31496. */
    const __m256i s0 = _mm256_add_epi16(
        _mm256_add_epi16(_mm256_maddubs_epi16(LO(v0, 0), bcast4(qs)), _mm256_maddubs_epi16(LO(v1, 1), bcast4(qs + 4))),
        _mm256_add_epi16(_mm256_maddubs_epi16(LO(v2, 2), bcast4(qs + 8)),
                         _mm256_maddubs_epi16(LO(v3, 3), bcast4(qs + 12))));
    const __m256i s1 = _mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(HI(v0, 0), bcast4(qs + 16)),
                                                         _mm256_maddubs_epi16(HI(v1, 1), bcast4(qs + 20))),
                                        _mm256_add_epi16(_mm256_maddubs_epi16(HI(v2, 2), bcast4(qs + 24)),
                                                         _mm256_maddubs_epi16(HI(v3, 3), bcast4(qs + 28))));
    const __m256i one = _mm256_set1_epi16(1);
    return _mm256_add_epi32(_mm256_madd_epi16(s0, one), _mm256_madd_epi16(s1, one));
#endif
#undef V
#undef LO
#undef HI
}

/* Decode over interleaved legacy rows: the eight rows' sums live in the lanes of one register,
 * so a block costs about a third of the operations of eight row dots, and decode is no longer
 * compute-bound. The -8 / -16 offset (or the minimum of Q4_1 / Q5_1) is carried as
 * d_w * dsum (m_w * dsum) per lane and applied once at the end. */
static inline __attribute__((always_inline)) void gemv_x8(int five, int with_min, int n, const uint8_t *w, int ng,
                                                          const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nb = n / 32;
    const size_t bsize = 8 * X8_PLAIN_BYTES(five, with_min);
    const int half = (ng + 1) / 2;
    for (int i = 0; i < ng; i++) {
        /* Two streams a thread: groups from the first and the second half alternately. */
        const int g = (i & 1) ? half + i / 2 : i / 2;
        const uint8_t *x = w + (size_t)g * nb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
            __m256 off0 = _mm256_setzero_ps(), off1 = _mm256_setzero_ps();
#define X8_BLOCK(acc, off, i)                                                                                          \
    do {                                                                                                               \
        const uint8_t *xb = x + (size_t)(i) * bsize;                                                                   \
        le_prefetch_ahead(xb, (int)bsize);                                                                             \
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)xb));                                        \
        const __m256i s = five ? q5_x8_isum(xb + bsize - 160, xb + bsize - 128, y[i].qs)                               \
                               : q4_x8_isum(xb + bsize - 128, y[i].qs);                                                \
        const __m256 o = with_min ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xb + 16))) : d;                  \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d, _mm256_set1_ps(y[i].d)), acc);                   \
        off = _mm256_fmadd_ps(o, _mm256_set1_ps(y[i].dsum), off);                                                      \
    } while (0)
            int b = 0;
            for (; b + 2 <= nb; b += 2) {
                X8_BLOCK(acc0, off0, b);
                X8_BLOCK(acc1, off1, b + 1);
            }
            if (b < nb) {
                X8_BLOCK(acc0, off0, b);
            }
#undef X8_BLOCK
            const float offset = with_min ? -1.0f : (five ? 16.0f : 8.0f);
            const __m256 r = _mm256_fnmadd_ps(_mm256_set1_ps(offset), _mm256_add_ps(off0, off1),
                                              _mm256_add_ps(acc0, acc1));
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g, r);
        }
    }
}

/* Block b of eight interleaved Q8_0 rows (le_block_q8_0x8) against one token's block: per-row
 * int32 sums. VNNI takes the weights as unsigned bytes with the sign bit flipped (w + 128; the
 * caller takes 128 * d * dsum off); AVX2 moves their sign onto the activations (|w| * sign(a, w):
 * pairs stay within 2 x 128 x 127 in int16). */
static inline __m256i q8_x8_isum(const uint8_t *xq, const int8_t *qs) {
#define W(c) _mm256_loadu_si256((const __m256i *)(xq + 32 * (c)))
#ifdef LE_VNNI
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int c = 0; c < 8; c += 2) {
        s0 = _mm256_dpbusd_epi32(s0, _mm256_xor_si256(W(c), flip), bcast4(qs + 4 * c));
        s1 = _mm256_dpbusd_epi32(s1, _mm256_xor_si256(W(c + 1), flip), bcast4(qs + 4 * c + 4));
    }
#else
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int c = 0; c < 8; c += 2) {
        const __m256i w0 = W(c), w1 = W(c + 1);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w0),
                                                                         _mm256_sign_epi8(bcast4(qs + 4 * c), w0)),
                                                    ones));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w1),
                                                                         _mm256_sign_epi8(bcast4(qs + 4 * c + 4), w1)),
                                                    ones));
    }
#endif
#undef W
    return _mm256_add_epi32(s0, s1);
}

/* Decode over interleaved Q8_0 rows: one 272-byte block advances eight rows by 32 values, with
 * the activation words and the scale conversion shared by the eight (a row dot repeats both
 * per row, and its horizontal sum per row; the tied output of Qwen2-0.5B is 145 of its 330 MB). */
static void gemv_q8_0x8(int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nb = n / 32;
    const size_t bsize = sizeof(le_block_q8_0x8);
    const int half = (ng + 1) / 2;
    for (int i = 0; i < ng; i++) {
        const int g = (i & 1) ? half + i / 2 : i / 2; /* two streams, as gemv_x8 */
        const uint8_t *x = w + (size_t)g * nb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), off = _mm256_setzero_ps();
#ifdef LE_VNNI
#define Q8_X8_OFFSET(d, i) off = _mm256_fmadd_ps((d), _mm256_set1_ps(y[i].dsum), off)
#else
#define Q8_X8_OFFSET(d, i) (void)0
#endif
#define Q8_X8_BLOCK(acc, i)                                                                                            \
    do {                                                                                                               \
        const uint8_t *xb = x + (size_t)(i) * bsize;                                                                   \
        le_prefetch_ahead(xb, (int)bsize);                                                                             \
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)xb));                                        \
        const __m256i s = q8_x8_isum(xb + 16, y[i].qs);                                                                \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(d, _mm256_set1_ps(y[i].d)), acc);                   \
        Q8_X8_OFFSET(d, i);                                                                                            \
    } while (0)
            int b = 0;
            for (; b + 2 <= nb; b += 2) {
                Q8_X8_BLOCK(acc0, b);
                Q8_X8_BLOCK(acc1, b + 1);
            }
            if (b < nb) {
                Q8_X8_BLOCK(acc0, b);
            }
#undef Q8_X8_BLOCK
#undef Q8_X8_OFFSET
            const __m256 r = _mm256_fnmadd_ps(_mm256_set1_ps(128.0f), off, _mm256_add_ps(acc0, acc1));
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g, r);
        }
    }
}

/* The 6-bit scales and minimums of an interleaved Q4_K block's eight rows (le_block_q4_Kx8):
 * llama.cpp's get_scale_min_k4 on sixteen bytes (two scale bytes of all eight rows) at a time.
 * s[c] and m[c] hold sub-block 2c (low eight bytes, lanes = rows) and 2c + 1 (high eight). */
static inline void q4_Kx8_scale_bytes(const uint8_t *q, __m128i s[4], __m128i m[4]) {
    const __m128i v0 = _mm_loadu_si128((const __m128i *)q), v1 = _mm_loadu_si128((const __m128i *)(q + 16));
    const __m128i v2 = _mm_loadu_si128((const __m128i *)(q + 32)), v3 = _mm_loadu_si128((const __m128i *)(q + 48));
    const __m128i v4 = _mm_loadu_si128((const __m128i *)(q + 64)), v5 = _mm_loadu_si128((const __m128i *)(q + 80));
    const __m128i m63 = _mm_set1_epi8(63), m0f = _mm_set1_epi8(0x0f), m30 = _mm_set1_epi8(0x30);
#define TOP2(v) _mm_and_si128(_mm_srli_epi16((v), 2), m30)
    s[0] = _mm_and_si128(v0, m63);
    s[1] = _mm_and_si128(v1, m63);
    s[2] = _mm_or_si128(_mm_and_si128(v4, m0f), TOP2(v0));
    s[3] = _mm_or_si128(_mm_and_si128(v5, m0f), TOP2(v1));
    m[0] = _mm_and_si128(v2, m63);
    m[1] = _mm_and_si128(v3, m63);
    m[2] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v4, 4), m0f), TOP2(v2));
    m[3] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v5, 4), m0f), TOP2(v3));
#undef TOP2
}

/* The same as floats, lanes = rows: sc[j] and m[j] for sub-block j. */
static inline void q4_Kx8_scales(const uint8_t *scales, __m256 sc[8], __m256 m[8]) {
    __m128i s[4], mm[4];
    q4_Kx8_scale_bytes(scales, s, mm);
    for (int k = 0; k < 4; k++) {
        sc[2 * k] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(s[k]));
        sc[2 * k + 1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(s[k], 8)));
        m[2 * k] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mm[k]));
        m[2 * k + 1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(mm[k], 8)));
    }
}

/* The fifth bits of a Q5_K sub-block under bit 4: bit j of qh shifted there (s = 4 - j). */
static inline __m256i fifth_bits(__m256i qh, int s) {
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    return _mm256_and_si256(s >= 0 ? _mm256_slli_epi16(qh, s) : _mm256_srli_epi16(qh, -s), bit4);
}

/* Sub-blocks 2c and 2c + 1 of an interleaved Q4_K / Q5_K block against their activation
 * blocks: the eight 32-byte loads at q are four bytes of every row, low nibbles for ya, high
 * for yb; Q5_K's fifth bits come from the loads at qh (bits 2c and 2c + 1). */
static inline __attribute__((always_inline)) void q45_Kx8_isums(int five, const uint8_t *q, const uint8_t *qhp,
                                                                int c, const int8_t *ya, const int8_t *yb,
                                                                __m256i *lo, __m256i *hi) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
#define QH(p) _mm256_loadu_si256((const __m256i *)(qhp + 32 * (p)))
#ifdef LE_VNNI
    const __m256i high4 = _mm256_set1_epi8((char)0xf0);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    __m256i s2 = _mm256_setzero_si256(), s3 = _mm256_setzero_si256();
    for (int p = 0; p < 8; p += 2) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(q + 32 * p));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(q + 32 * p + 32));
        if (five) {
            /* 5-bit codes: the high nibble shifted down (16 x 31 would not fit a byte). */
            const __m256i h0 = QH(p), h1 = QH(p + 1);
            s0 = _mm256_dpbusd_epi32(s0, _mm256_or_si256(_mm256_and_si256(v0, low4), fifth_bits(h0, 4 - 2 * c)),
                                     bcast4(ya + 4 * p));
            s1 = _mm256_dpbusd_epi32(
                s1, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 4), low4), fifth_bits(h0, 3 - 2 * c)),
                bcast4(yb + 4 * p));
            s2 = _mm256_dpbusd_epi32(s2, _mm256_or_si256(_mm256_and_si256(v1, low4), fifth_bits(h1, 4 - 2 * c)),
                                     bcast4(ya + 4 * p + 4));
            s3 = _mm256_dpbusd_epi32(
                s3, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v1, 4), low4), fifth_bits(h1, 3 - 2 * c)),
                bcast4(yb + 4 * p + 4));
        } else {
            s0 = _mm256_dpbusd_epi32(s0, _mm256_and_si256(v0, low4), bcast4(ya + 4 * p));
            s1 = _mm256_dpbusd_epi32(s1, _mm256_and_si256(v0, high4), bcast4(yb + 4 * p));
            s2 = _mm256_dpbusd_epi32(s2, _mm256_and_si256(v1, low4), bcast4(ya + 4 * p + 4));
            s3 = _mm256_dpbusd_epi32(s3, _mm256_and_si256(v1, high4), bcast4(yb + 4 * p + 4));
        }
    }
    *lo = _mm256_add_epi32(s0, s2);
    *hi = five ? _mm256_add_epi32(s1, s3) : _mm256_srai_epi32(_mm256_add_epi32(s1, s3), 4);
#else
    /* Int16 pair sums of codes x int8, widened every four loads: 4 x 2 x 31 x 128 = 31744. */
    const __m256i one = _mm256_set1_epi16(1);
    *lo = *hi = _mm256_setzero_si256();
    for (int p0 = 0; p0 < 8; p0 += 4) {
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (int p = p0; p < p0 + 4; p++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * p));
            __m256i l = _mm256_and_si256(v, low4), h = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
            if (five) {
                l = _mm256_or_si256(l, fifth_bits(QH(p), 4 - 2 * c));
                h = _mm256_or_si256(h, fifth_bits(QH(p), 3 - 2 * c));
            }
            s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(l, bcast4(ya + 4 * p)));
            s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(h, bcast4(yb + 4 * p)));
        }
        *lo = _mm256_add_epi32(*lo, _mm256_madd_epi16(s0, one));
        *hi = _mm256_add_epi32(*hi, _mm256_madd_epi16(s1, one));
    }
#endif
#undef QH
}

/* Decode over interleaved Q4_K / Q5_K rows, two streams a thread as gemv_x8. Per sub-block j
 * the integer sum is scaled by sc_j and the activation block's d in float, and the minimum
 * meets the block's dsum; d and dmin are applied once per super-block. */
static inline __attribute__((always_inline)) void gemv_q45_Kx8(int five, int n, const uint8_t *w, int ng,
                                                               const le_block_q8_0x *a, int nt, float *out,
                                                               size_t ldo) {
    const int nsb = n / 256, nb = n / 32;
    const size_t bsize = five ? sizeof(le_block_q5_Kx8) : sizeof(le_block_q4_Kx8);
    const size_t qs_at = five ? offsetof(le_block_q5_Kx8, qs) : offsetof(le_block_q4_Kx8, qs);
    const int half = (ng + 1) / 2;
    for (int i = 0; i < ng; i++) {
        const int g = (i & 1) ? half + i / 2 : i / 2;
        const uint8_t *x = w + (size_t)g * nsb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
            for (int b = 0; b < nsb; b++) {
                const uint8_t *xb = x + (size_t)b * bsize;
                le_prefetch_ahead(xb, (int)bsize);
                __m256 sc[8], m[8];
                q4_Kx8_scales(xb + offsetof(le_block_q4_Kx8, scales), sc, m);
                const le_block_q8_0x *yb = y + 8 * b;
                __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), mins = _mm256_setzero_ps();
                for (int c = 0; c < 4; c++) {
                    __m256i lo, hi;
                    q45_Kx8_isums(five, xb + qs_at + 256 * c, xb + offsetof(le_block_q5_Kx8, qh), c, yb[2 * c].qs,
                                  yb[2 * c + 1].qs, &lo, &hi);
                    s0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(sc[2 * c], _mm256_set1_ps(yb[2 * c].d)),
                                         s0);
                    s1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi),
                                         _mm256_mul_ps(sc[2 * c + 1], _mm256_set1_ps(yb[2 * c + 1].d)), s1);
                    mins = _mm256_fmadd_ps(m[2 * c], _mm256_set1_ps(yb[2 * c].dsum), mins);
                    mins = _mm256_fmadd_ps(m[2 * c + 1], _mm256_set1_ps(yb[2 * c + 1].dsum), mins);
                }
                const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)xb));
                const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(xb + 16)));
                acc = _mm256_fmadd_ps(d, _mm256_add_ps(s0, s1), acc);
                accm = _mm256_fmadd_ps(dmin, mins, accm);
            }
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g, _mm256_sub_ps(acc, accm));
        }
    }
}

/* Q6_K's codes are unsigned 0..63 here, value = code - 32; the -32 meets the activations
 * through their sums over 16 values, the same for every row: sums[2b + h] = 32 * (sum of
 * qs[16h .. 16h + 15] of block b). */
static void q8_sums16x32(const le_block_q8_0x *y, int nb, int32_t *sums) {
    for (int b = 0; b < nb; b++) {
        for (int h = 0; h < 2; h++) {
            int s = 0;
            for (int i = 0; i < 16; i++) {
                s += y[b].qs[16 * h + i];
            }
            sums[2 * b + h] = 32 * s;
        }
    }
}

/* q8_sums16x32 of nt tokens: in `local` (Q6_LOCAL_SUMS values) when they fit, else on the
 * heap; NULL when that fails. The caller frees what is not `local`. */
#define Q6_LOCAL_SUMS 1024
static int32_t *q8_sums_of_tokens(const le_block_q8_0x *a, int nb, int nt, int32_t *local) {
    const size_t need = (size_t)nt * nb * 2;
    int32_t *sums = need <= Q6_LOCAL_SUMS ? local : malloc(need * sizeof *sums);
    for (int t = 0; sums != NULL && t < nt; t++) {
        q8_sums16x32(a + (size_t)t * nb, nb, sums + (size_t)t * nb * 2);
    }
    return sums;
}

#ifdef LE_VNNI
#define Q6_DOT(acc, codes, act) _mm256_dpbusd_epi32((acc), (codes), (act))
#else
/* Pair sums of codes x int8 stay below 2 x 63 x 128 = 16128 in int16; widened at once. */
#define Q6_DOT(acc, codes, act)                                                                                        \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((codes), (act)), _mm256_set1_epi16(1)))
#endif

/* Decode over interleaved Q6_K rows (le_block_q6_Kx8), two streams a thread as gemv_x8: per
 * 128-value half h and piece p, one load of qh and of the two ql chunks make the codes of the
 * four sub-blocks 4h..4h+3, each summed in two 16-value halves for its two scales. */
static void gemv_q6_Kx8(int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nsb = n / 256, nb = n / 32;
    const size_t bsize = sizeof(le_block_q6_Kx8);
    int32_t local[Q6_LOCAL_SUMS];
    int32_t *sums = q8_sums_of_tokens(a, nb, nt, local);
    if (sums == NULL) {
        le_gemv_x8_scalar(LE_TYPE_Q6_K, n, w, ng, a, nt, out, ldo);
        return;
    }
    const __m256i m0f = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    const int half = (ng + 1) / 2;
    for (int i = 0; i < ng; i++) {
        const int g = (i & 1) ? half + i / 2 : i / 2;
        const uint8_t *x = w + (size_t)g * nsb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            const int32_t *ys = sums + (size_t)t * nb * 2;
            __m256 acc = _mm256_setzero_ps();
            for (int b = 0; b < nsb; b++) {
                const uint8_t *xb = x + (size_t)b * bsize;
                le_prefetch_ahead(xb, (int)bsize);
                const uint8_t *ql = xb + offsetof(le_block_q6_Kx8, ql), *qhs = xb + offsetof(le_block_q6_Kx8, qh);
                const int8_t *scales = (const int8_t *)xb + offsetof(le_block_q6_Kx8, scales);
                __m256 sb = _mm256_setzero_ps();
                for (int h = 0; h < 2; h++) {
                    __m256i is[4][2];
                    for (int k = 0; k < 4; k++) {
                        is[k][0] = is[k][1] = _mm256_setzero_si256();
                    }
                    for (int p = 0; p < 8; p++) {
                        const __m256i qh = _mm256_loadu_si256((const __m256i *)(qhs + 256 * h + 32 * p));
                        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 512 * h + 32 * p));
                        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 512 * h + 256 + 32 * p));
                        const __m256i c[4] = {
                            _mm256_or_si256(_mm256_and_si256(l0, m0f), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
                            _mm256_or_si256(_mm256_and_si256(l1, m0f), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m0f), _mm256_and_si256(qh, m30)),
                            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m0f),
                                            _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30))};
                        for (int k = 0; k < 4; k++) {
                            is[k][p / 4] = Q6_DOT(is[k][p / 4], c[k], bcast4(y[8 * b + 4 * h + k].qs + 4 * p));
                        }
                    }
                    for (int k = 0; k < 4; k++) {
                        const int j = 8 * b + 4 * h + k, s0 = 8 * h + 2 * k;
                        const __m256 sa = _mm256_cvtepi32_ps(
                            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(scales + 8 * s0))));
                        const __m256 sbb = _mm256_cvtepi32_ps(
                            _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(scales + 8 * s0 + 8))));
                        const __m256 ia = _mm256_cvtepi32_ps(_mm256_sub_epi32(is[k][0], _mm256_set1_epi32(ys[2 * j])));
                        const __m256 ib =
                            _mm256_cvtepi32_ps(_mm256_sub_epi32(is[k][1], _mm256_set1_epi32(ys[2 * j + 1])));
                        sb = _mm256_fmadd_ps(_mm256_fmadd_ps(ia, sa, _mm256_mul_ps(ib, sbb)), _mm256_set1_ps(y[j].d), sb);
                    }
                }
                acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)xb)), sb, acc);
            }
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g, acc);
        }
    }
    if (sums != local) {
        free(sums);
    }
}
#undef Q6_DOT

#ifdef LE_VNNI
/* The isums of two groups at once on 512-bit registers: lanes 0..7 are the first group's rows,
 * 8..15 the second's; per lane the arithmetic of q4_x8_isum, q5_x8_isum and q8_x8_isum. */
static inline __m512i q4_x16_isum(const uint8_t *xq0, const uint8_t *xq1, const int8_t *qs) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), high4 = _mm512_set1_epi8((char)0xf0);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const __m512i v = join256((const int8_t *)xq0 + 32 * c, (const int8_t *)xq1 + 32 * c);
        s0 = _mm512_dpbusd_epi32(s0, _mm512_and_si512(v, low4), bcast4z(qs + 4 * c));
        s1 = _mm512_dpbusd_epi32(s1, _mm512_and_si512(v, high4), bcast4z(qs + 16 + 4 * c));
    }
    return _mm512_add_epi32(s0, _mm512_srai_epi32(s1, 4));
}

static inline __m512i q5_x16_isum(const uint8_t *xh0, const uint8_t *xh1, const uint8_t *xq0, const uint8_t *xq1,
                                  const int8_t *qs) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), bit4 = _mm512_set1_epi8(0x10);
    const __m512i h = join256((const int8_t *)xh0, (const int8_t *)xh1);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const __m512i v = join256((const int8_t *)xq0 + 32 * c, (const int8_t *)xq1 + 32 * c);
        const __m512i lo = _mm512_or_si512(_mm512_and_si512(v, low4),
                                           _mm512_and_si512(_mm512_slli_epi16(h, 4 - c), bit4));
        const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4),
                                           _mm512_and_si512(_mm512_srli_epi16(h, c), bit4));
        s0 = _mm512_dpbusd_epi32(s0, lo, bcast4z(qs + 4 * c));
        s1 = _mm512_dpbusd_epi32(s1, hi, bcast4z(qs + 16 + 4 * c));
    }
    return _mm512_add_epi32(s0, s1);
}

static inline __m512i q8_x16_isum(const uint8_t *xq0, const uint8_t *xq1, const int8_t *qs) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    for (int c = 0; c < 8; c += 2) {
        const __m512i v0 = join256((const int8_t *)xq0 + 32 * c, (const int8_t *)xq1 + 32 * c);
        const __m512i v1 = join256((const int8_t *)xq0 + 32 * c + 32, (const int8_t *)xq1 + 32 * c + 32);
        s0 = _mm512_dpbusd_epi32(s0, _mm512_xor_si512(v0, flip), bcast4z(qs + 4 * c));
        s1 = _mm512_dpbusd_epi32(s1, _mm512_xor_si512(v1, flip), bcast4z(qs + 4 * c + 4));
    }
    return _mm512_add_epi32(s0, s1);
}

static inline __m512 halves16(const uint8_t *p0, const uint8_t *p1) {
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),
                                                   _mm_loadu_si128((const __m128i *)p1), 1));
}

/* Two tokens' rows of gemv_x16 for Q4_0 (q8 = 0) or Q8_0 (q8 = 1) in one pass over a pair of
 * groups: a block's weight registers (the joined loads, their nibble masks or sign flips, the
 * scales) are made once and serve both tokens. Each token's arithmetic is gemv_x16's, in the
 * same order, so the results are bit-equal to running the tokens one at a time. Several
 * tokens at decode (a server's batch, a verify pass) are compute-bound here, and the weight
 * side is about half of a block's vector operations. */
static inline __attribute__((always_inline)) void gemv_x16_pair(int q8, int nb, size_t bsize, const uint8_t *x0,
                                                                const uint8_t *x1, const le_block_q8_0x *ya,
                                                                const le_block_q8_0x *yb, float *outa, float *outb,
                                                                int g0, int g1) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), high4 = _mm512_set1_epi8((char)0xf0);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acca[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()}, offa[2] = {acca[0], acca[1]};
    __m512 accb[2] = {acca[0], acca[1]}, offb[2] = {acca[0], acca[1]};
    for (int i = 0; i < nb; i++) {
        const uint8_t *xb0 = x0 + (size_t)i * bsize, *xb1 = x1 + (size_t)i * bsize;
        le_prefetch_ahead(xb0, (int)bsize);
        le_prefetch_ahead(xb1, (int)bsize);
        const __m512 d = halves16(xb0, xb1);
        const int8_t *qa = ya[i].qs, *qb = yb[i].qs;
        __m512i sa, sb;
        if (q8) {
            const uint8_t *q0 = xb0 + 16, *q1 = xb1 + 16;
            __m512i s0a = _mm512_setzero_si512(), s1a = s0a, s0b = s0a, s1b = s0a;
            for (int c = 0; c < 8; c += 2) {
                const __m512i v0 = _mm512_xor_si512(join256((const int8_t *)q0 + 32 * c, (const int8_t *)q1 + 32 * c), flip);
                const __m512i v1 =
                    _mm512_xor_si512(join256((const int8_t *)q0 + 32 * c + 32, (const int8_t *)q1 + 32 * c + 32), flip);
                s0a = _mm512_dpbusd_epi32(s0a, v0, bcast4z(qa + 4 * c));
                s1a = _mm512_dpbusd_epi32(s1a, v1, bcast4z(qa + 4 * c + 4));
                s0b = _mm512_dpbusd_epi32(s0b, v0, bcast4z(qb + 4 * c));
                s1b = _mm512_dpbusd_epi32(s1b, v1, bcast4z(qb + 4 * c + 4));
            }
            sa = _mm512_add_epi32(s0a, s1a);
            sb = _mm512_add_epi32(s0b, s1b);
        } else {
            const uint8_t *q0 = xb0 + bsize - 128, *q1 = xb1 + bsize - 128;
            __m512i s0a = _mm512_setzero_si512(), s1a = s0a, s0b = s0a, s1b = s0a;
            for (int c = 0; c < 4; c++) {
                const __m512i v = join256((const int8_t *)q0 + 32 * c, (const int8_t *)q1 + 32 * c);
                const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(v, high4);
                s0a = _mm512_dpbusd_epi32(s0a, lo, bcast4z(qa + 4 * c));
                s1a = _mm512_dpbusd_epi32(s1a, hi, bcast4z(qa + 16 + 4 * c));
                s0b = _mm512_dpbusd_epi32(s0b, lo, bcast4z(qb + 4 * c));
                s1b = _mm512_dpbusd_epi32(s1b, hi, bcast4z(qb + 16 + 4 * c));
            }
            sa = _mm512_add_epi32(s0a, _mm512_srai_epi32(s1a, 4));
            sb = _mm512_add_epi32(s0b, _mm512_srai_epi32(s1b, 4));
        }
        /* Even blocks into the first accumulators, odd into the second, as gemv_x16. */
        const int k = i & 1;
        acca[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sa), _mm512_mul_ps(d, _mm512_set1_ps(ya[i].d)), acca[k]);
        offa[k] = _mm512_fmadd_ps(d, _mm512_set1_ps(ya[i].dsum), offa[k]);
        accb[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sb), _mm512_mul_ps(d, _mm512_set1_ps(yb[i].d)), accb[k]);
        offb[k] = _mm512_fmadd_ps(d, _mm512_set1_ps(yb[i].dsum), offb[k]);
    }
    const __m512 offset = _mm512_set1_ps(q8 ? 128.0f : 8.0f);
    const __m512 ra = _mm512_fnmadd_ps(offset, _mm512_add_ps(offa[0], offa[1]), _mm512_add_ps(acca[0], acca[1]));
    const __m512 rb = _mm512_fnmadd_ps(offset, _mm512_add_ps(offb[0], offb[1]), _mm512_add_ps(accb[0], accb[1]));
    _mm256_storeu_ps(outa + 8 * g0, _mm512_castps512_ps256(ra));
    _mm256_storeu_ps(outa + 8 * g1, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(ra), 1)));
    _mm256_storeu_ps(outb + 8 * g0, _mm512_castps512_ps256(rb));
    _mm256_storeu_ps(outb + 8 * g1, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(rb), 1)));
}

/* gemv_x8 and gemv_q8_0x8 on 512-bit registers: the two groups a thread reads at a time (its
 * two streams) share each instruction, so the activation broadcasts, conversions and FMAs are
 * paid once per sixteen rows. q8 selects Q8_0 (five and with_min unused); an odd last group
 * takes the 256-bit loop. Per lane the arithmetic of the 256-bit loops, so results are equal. */
static inline __attribute__((always_inline)) void gemv_x16(int q8, int five, int with_min, int n, const uint8_t *w,
                                                           int ng, const le_block_q8_0x *a, int nt, float *out,
                                                           size_t ldo) {
    const int nb = n / 32;
    const size_t bsize = q8 ? sizeof(le_block_q8_0x8) : 8 * X8_PLAIN_BYTES(five, with_min);
    const int half = (ng + 1) / 2;
    for (int j = 0; j < ng / 2; j++) {
        const int g0 = j, g1 = half + j;
        const uint8_t *x0 = w + (size_t)g0 * nb * bsize, *x1 = w + (size_t)g1 * nb * bsize;
        int t0 = 0;
        if (q8 || (!five && !with_min)) {
            for (; t0 + 2 <= nt; t0 += 2) {
                gemv_x16_pair(q8, nb, bsize, x0, x1, a + (size_t)t0 * nb, a + (size_t)(t0 + 1) * nb,
                              out + (size_t)t0 * ldo, out + (size_t)(t0 + 1) * ldo, g0, g1);
            }
        }
        for (int t = t0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            __m512 off0 = _mm512_setzero_ps(), off1 = _mm512_setzero_ps();
#define X16_ISUM(xb0, xb1, qs)                                                                                         \
    (q8     ? q8_x16_isum((xb0) + 16, (xb1) + 16, (qs))                                                                \
     : five ? q5_x16_isum((xb0) + bsize - 160, (xb1) + bsize - 160, (xb0) + bsize - 128, (xb1) + bsize - 128, (qs))    \
            : q4_x16_isum((xb0) + bsize - 128, (xb1) + bsize - 128, (qs)))
#define X16_BLOCK(acc, off, i)                                                                                         \
    do {                                                                                                               \
        const uint8_t *xb0 = x0 + (size_t)(i) * bsize, *xb1 = x1 + (size_t)(i) * bsize;                                \
        le_prefetch_ahead(xb0, (int)bsize);                                                                            \
        le_prefetch_ahead(xb1, (int)bsize);                                                                            \
        const __m512 d = halves16(xb0, xb1);                                                                           \
        const __m512i s = X16_ISUM(xb0, xb1, y[i].qs);                                                                 \
        const __m512 o = (with_min && !q8) ? halves16(xb0 + 16, xb1 + 16) : d;                                         \
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(y[i].d)), acc);                   \
        off = _mm512_fmadd_ps(o, _mm512_set1_ps(y[i].dsum), off);                                                      \
    } while (0)
            int b = 0;
            for (; b + 2 <= nb; b += 2) {
                X16_BLOCK(acc0, off0, b);
                X16_BLOCK(acc1, off1, b + 1);
            }
            if (b < nb) {
                X16_BLOCK(acc0, off0, b);
            }
#undef X16_BLOCK
#undef X16_ISUM
            /* Q8_0's codes were read as w + 128, the legacy kinds' as unsigned codes. */
            const float offset = q8 ? 128.0f : with_min ? -1.0f : (five ? 16.0f : 8.0f);
            const __m512 r = _mm512_fnmadd_ps(_mm512_set1_ps(offset), _mm512_add_ps(off0, off1),
                                              _mm512_add_ps(acc0, acc1));
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g0, _mm512_castps512_ps256(r));
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g1,
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)));
        }
    }
    if (ng % 2 == 1) {
        const int g = half - 1;
        if (q8) {
            gemv_q8_0x8(n, w + (size_t)g * nb * bsize, 1, a, nt, out + 8 * g, ldo);
        } else {
            gemv_x8(five, with_min, n, w + (size_t)g * nb * bsize, 1, a, nt, out + 8 * g, ldo);
        }
    }
}

/* gemv_q45_Kx8 and gemv_q6_Kx8 on 512-bit registers: two groups (a thread's two streams) per
 * instruction, as gemv_x16 for the legacy kinds; per lane the same arithmetic, and an odd last
 * group takes the 256-bit loop. */
static inline __m512 u8x16_f32(__m128i g0, __m128i g1, int high) {
    const __m128i v = high ? _mm_unpackhi_epi64(g0, g1) : _mm_unpacklo_epi64(g0, g1);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
}

static inline __m512i fifth_bits16(__m512i qh, int s) {
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    return _mm512_and_si512(s >= 0 ? _mm512_slli_epi16(qh, s) : _mm512_srli_epi16(qh, -s), bit4);
}

static inline __attribute__((always_inline)) void gemv_q45_Kx16(int five, int n, const uint8_t *w, int ng,
                                                                const le_block_q8_0x *a, int nt, float *out,
                                                                size_t ldo) {
    const int nsb = n / 256, nb = n / 32;
    const size_t bsize = five ? sizeof(le_block_q5_Kx8) : sizeof(le_block_q4_Kx8);
    const size_t qs_at = five ? offsetof(le_block_q5_Kx8, qs) : offsetof(le_block_q4_Kx8, qs);
    const int half = (ng + 1) / 2;
    const __m512i low4 = _mm512_set1_epi8(0x0f), high4 = _mm512_set1_epi8((char)0xf0);
    for (int jg = 0; jg < ng / 2; jg++) {
        const int g0 = jg, g1 = half + jg;
        const uint8_t *x0 = w + (size_t)g0 * nsb * bsize, *x1 = w + (size_t)g1 * nsb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
            for (int b = 0; b < nsb; b++) {
                const uint8_t *xb0 = x0 + (size_t)b * bsize, *xb1 = x1 + (size_t)b * bsize;
                le_prefetch_ahead(xb0, (int)bsize);
                le_prefetch_ahead(xb1, (int)bsize);
                __m128i sc0[4], mn0[4], sc1[4], mn1[4];
                q4_Kx8_scale_bytes(xb0 + offsetof(le_block_q4_Kx8, scales), sc0, mn0);
                q4_Kx8_scale_bytes(xb1 + offsetof(le_block_q4_Kx8, scales), sc1, mn1);
                const int8_t *qh0 = (const int8_t *)xb0 + offsetof(le_block_q5_Kx8, qh);
                const int8_t *qh1 = (const int8_t *)xb1 + offsetof(le_block_q5_Kx8, qh);
                const le_block_q8_0x *yb = y + 8 * b;
                __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), mins = _mm512_setzero_ps();
                for (int c = 0; c < 4; c++) {
                    const int8_t *q0 = (const int8_t *)xb0 + qs_at + 256 * c;
                    const int8_t *q1 = (const int8_t *)xb1 + qs_at + 256 * c;
                    const int8_t *ya = yb[2 * c].qs, *yh = yb[2 * c + 1].qs;
                    __m512i lo0 = _mm512_setzero_si512(), lo1 = _mm512_setzero_si512();
                    __m512i hi0 = _mm512_setzero_si512(), hi1 = _mm512_setzero_si512();
                    for (int p = 0; p < 8; p += 2) {
                        const __m512i v0 = join256(q0 + 32 * p, q1 + 32 * p);
                        const __m512i v1 = join256(q0 + 32 * p + 32, q1 + 32 * p + 32);
                        __m512i l0 = _mm512_and_si512(v0, low4), l1 = _mm512_and_si512(v1, low4), h0, h1;
                        if (five) {
                            const __m512i b0 = join256(qh0 + 32 * p, qh1 + 32 * p);
                            const __m512i b1 = join256(qh0 + 32 * p + 32, qh1 + 32 * p + 32);
                            l0 = _mm512_or_si512(l0, fifth_bits16(b0, 4 - 2 * c));
                            l1 = _mm512_or_si512(l1, fifth_bits16(b1, 4 - 2 * c));
                            h0 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v0, 4), low4),
                                                 fifth_bits16(b0, 3 - 2 * c));
                            h1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v1, 4), low4),
                                                 fifth_bits16(b1, 3 - 2 * c));
                        } else {
                            h0 = _mm512_and_si512(v0, high4);
                            h1 = _mm512_and_si512(v1, high4);
                        }
                        lo0 = _mm512_dpbusd_epi32(lo0, l0, bcast4z(ya + 4 * p));
                        hi0 = _mm512_dpbusd_epi32(hi0, h0, bcast4z(yh + 4 * p));
                        lo1 = _mm512_dpbusd_epi32(lo1, l1, bcast4z(ya + 4 * p + 4));
                        hi1 = _mm512_dpbusd_epi32(hi1, h1, bcast4z(yh + 4 * p + 4));
                    }
                    const __m512i lo = _mm512_add_epi32(lo0, lo1);
                    const __m512i hsum = _mm512_add_epi32(hi0, hi1);
                    const __m512i hi = five ? hsum : _mm512_srai_epi32(hsum, 4);
                    s0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lo),
                                         _mm512_mul_ps(u8x16_f32(sc0[c], sc1[c], 0), _mm512_set1_ps(yb[2 * c].d)), s0);
                    s1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(hi),
                                         _mm512_mul_ps(u8x16_f32(sc0[c], sc1[c], 1), _mm512_set1_ps(yb[2 * c + 1].d)),
                                         s1);
                    mins = _mm512_fmadd_ps(u8x16_f32(mn0[c], mn1[c], 0), _mm512_set1_ps(yb[2 * c].dsum), mins);
                    mins = _mm512_fmadd_ps(u8x16_f32(mn0[c], mn1[c], 1), _mm512_set1_ps(yb[2 * c + 1].dsum), mins);
                }
                acc = _mm512_fmadd_ps(halves16(xb0, xb1), _mm512_add_ps(s0, s1), acc);
                accm = _mm512_fmadd_ps(halves16(xb0 + offsetof(le_block_q4_Kx8, dmin), xb1 + offsetof(le_block_q4_Kx8, dmin)),
                                       mins, accm);
            }
            const __m512 r = _mm512_sub_ps(acc, accm);
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g0, _mm512_castps512_ps256(r));
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g1,
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r), 1)));
        }
    }
    if (ng % 2 == 1) {
        const int g = half - 1;
        gemv_q45_Kx8(five, n, w + (size_t)g * nsb * bsize, 1, a, nt, out + 8 * g, ldo);
    }
}

static void gemv_q6_Kx16(int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out, size_t ldo) {
    const int nsb = n / 256, nb = n / 32;
    const size_t bsize = sizeof(le_block_q6_Kx8);
    int32_t local[Q6_LOCAL_SUMS];
    int32_t *sums = q8_sums_of_tokens(a, nb, nt, local);
    if (sums == NULL) {
        le_gemv_x8_scalar(LE_TYPE_Q6_K, n, w, ng, a, nt, out, ldo);
        return;
    }
    const __m512i m0f = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const int half = (ng + 1) / 2;
    for (int jg = 0; jg < ng / 2; jg++) {
        const int g0 = jg, g1 = half + jg;
        const uint8_t *x0 = w + (size_t)g0 * nsb * bsize, *x1 = w + (size_t)g1 * nsb * bsize;
        for (int t = 0; t < nt; t++) {
            const le_block_q8_0x *y = a + (size_t)t * nb;
            const int32_t *ys = sums + (size_t)t * nb * 2;
            __m512 acc = _mm512_setzero_ps();
            for (int b = 0; b < nsb; b++) {
                const uint8_t *xb0 = x0 + (size_t)b * bsize, *xb1 = x1 + (size_t)b * bsize;
                le_prefetch_ahead(xb0, (int)bsize);
                le_prefetch_ahead(xb1, (int)bsize);
                const int8_t *ql0 = (const int8_t *)xb0 + offsetof(le_block_q6_Kx8, ql);
                const int8_t *ql1 = (const int8_t *)xb1 + offsetof(le_block_q6_Kx8, ql);
                const int8_t *qh0 = (const int8_t *)xb0 + offsetof(le_block_q6_Kx8, qh);
                const int8_t *qh1 = (const int8_t *)xb1 + offsetof(le_block_q6_Kx8, qh);
                const uint8_t *sc0 = xb0 + offsetof(le_block_q6_Kx8, scales);
                const uint8_t *sc1 = xb1 + offsetof(le_block_q6_Kx8, scales);
                __m512 sb = _mm512_setzero_ps();
                for (int h = 0; h < 2; h++) {
                    __m512i is[4][2];
                    for (int k = 0; k < 4; k++) {
                        is[k][0] = is[k][1] = _mm512_setzero_si512();
                    }
                    for (int p = 0; p < 8; p++) {
                        const size_t at = 32 * (size_t)p;
                        const __m512i qh = join256(qh0 + 256 * h + at, qh1 + 256 * h + at);
                        const __m512i l0 = join256(ql0 + 512 * h + at, ql1 + 512 * h + at);
                        const __m512i l1 = join256(ql0 + 512 * h + 256 + at, ql1 + 512 * h + 256 + at);
                        const __m512i c[4] = {
                            _mm512_or_si512(_mm512_and_si512(l0, m0f), _mm512_and_si512(_mm512_slli_epi16(qh, 4), m30)),
                            _mm512_or_si512(_mm512_and_si512(l1, m0f), _mm512_and_si512(_mm512_slli_epi16(qh, 2), m30)),
                            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l0, 4), m0f), _mm512_and_si512(qh, m30)),
                            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l1, 4), m0f),
                                            _mm512_and_si512(_mm512_srli_epi16(qh, 2), m30))};
                        for (int k = 0; k < 4; k++) {
                            is[k][p / 4] =
                                _mm512_dpbusd_epi32(is[k][p / 4], c[k], bcast4z(y[8 * b + 4 * h + k].qs + 4 * p));
                        }
                    }
                    for (int k = 0; k < 4; k++) {
                        const int j = 8 * b + 4 * h + k, s0 = 8 * h + 2 * k;
                        const __m512 sa = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpacklo_epi64(
                            _mm_loadl_epi64((const __m128i *)(sc0 + 8 * s0)), _mm_loadl_epi64((const __m128i *)(sc1 + 8 * s0)))));
                        const __m512 sbb = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                            _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(sc0 + 8 * s0 + 8)),
                                               _mm_loadl_epi64((const __m128i *)(sc1 + 8 * s0 + 8)))));
                        const __m512 ia = _mm512_cvtepi32_ps(_mm512_sub_epi32(is[k][0], _mm512_set1_epi32(ys[2 * j])));
                        const __m512 ib =
                            _mm512_cvtepi32_ps(_mm512_sub_epi32(is[k][1], _mm512_set1_epi32(ys[2 * j + 1])));
                        sb = _mm512_fmadd_ps(_mm512_fmadd_ps(ia, sa, _mm512_mul_ps(ib, sbb)), _mm512_set1_ps(y[j].d), sb);
                    }
                }
                acc = _mm512_fmadd_ps(halves16(xb0, xb1), sb, acc);
            }
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g0, _mm512_castps512_ps256(acc));
            _mm256_storeu_ps(out + (size_t)t * ldo + 8 * g1,
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
        }
    }
    if (sums != local) {
        free(sums);
    }
    if (ng % 2 == 1) {
        const int g = half - 1;
        gemv_q6_Kx8(n, w + (size_t)g * nsb * bsize, 1, a, nt, out + 8 * g, ldo);
    }
}

/* X8_DISPATCH's body signature for the legacy kinds. */
static inline __attribute__((always_inline)) void gemv_x16_legacy(int five, int with_min, int n, const uint8_t *w,
                                                                  int ng, const le_block_q8_0x *a, int nt,
                                                                  float *out, size_t ldo) {
    gemv_x16(0, five, with_min, n, w, ng, a, nt, out, ldo);
}
#endif

void GEMV_X8_FN(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                size_t ldo) {
#ifdef LE_VNNI
    if (type == LE_TYPE_Q4_K) {
        gemv_q45_Kx16(0, n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q5_K) {
        gemv_q45_Kx16(1, n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q6_K) {
        gemv_q6_Kx16(n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q8_0) {
        gemv_x16(1, 0, 0, n, w, ng, a, nt, out, ldo);
        return;
    }
    X8_DISPATCH(type, gemv_x16_legacy, n, w, ng, a, nt, out, ldo);
#else
    if (type == LE_TYPE_Q4_K || type == LE_TYPE_Q5_K) {
        if (type == LE_TYPE_Q4_K) {
            gemv_q45_Kx8(0, n, w, ng, a, nt, out, ldo);
        } else {
            gemv_q45_Kx8(1, n, w, ng, a, nt, out, ldo);
        }
        return;
    }
    if (type == LE_TYPE_Q6_K) {
        gemv_q6_Kx8(n, w, ng, a, nt, out, ldo);
        return;
    }
    if (type == LE_TYPE_Q8_0) {
        gemv_q8_0x8(n, w, ng, a, nt, out, ldo);
        return;
    }
    X8_DISPATCH(type, gemv_x8, n, w, ng, a, nt, out, ldo);
#endif
}
#endif
