/* x86-64 kernels: AVX2 + FMA + F16C (Haswell and later). Compiled only into this file with
 * those flags; called only after run-time detection. */
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

#include "llava_kernels.h"
#include "q3k_scales.h"

#include "half.h"
#include "hsum_x86.h"
#include "prefetch_x86.h"

/* Signed bytes x signed bytes summed in int32 lanes: maddubs needs one unsigned operand, so
 * move x's sign onto y (|x| * sign(x)*y = x*y). */
static inline __m256i dot_i8(__m256i x, __m256i y) {
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

static inline __m256 q4_0_block(const le_block_q4_0 *w, const le_block_q8_0 *a, __m256 acc) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
    const __m128i q = _mm_loadu_si128((const __m128i *)w->qs);
    /* Bytes 0..15: low nibbles (values j), 16..31: high nibbles (values j + 16). */
    __m256i x = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    x = _mm256_sub_epi8(_mm256_and_si256(x, low4), eight);
    const __m256i y = _mm256_loadu_si256((const __m256i *)a->qs);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(w->d) * _cvtsh_ss(a->d));
    return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(x, y)), acc);
}

float le_vec_dot_q4_0_q8_0_avx2(int n, const le_block_q4_0 *w, const le_block_q8_0 *a) {
    /* Two accumulators: with one, the FMA's latency bounded the loop, not memory. */
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const int nb = n / LE_QK4_0;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        le_prefetch_ahead(w + b, 2 * sizeof *w);
        acc0 = q4_0_block(w + b, a + b, acc0);
        acc1 = q4_0_block(w + b + 1, a + b + 1, acc1);
    }
    if (b < nb) {
        acc0 = q4_0_block(w + b, a + b, acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

float le_vec_dot_q8_0_q8_0_avx2(int n, const le_block_q8_0 *w, const le_block_q8_0 *a) {
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / LE_QK8_0; b++) {
        le_prefetch_ahead(w + b, sizeof *w);
        const __m256i x = _mm256_loadu_si256((const __m256i *)w[b].qs);
        const __m256i y = _mm256_loadu_si256((const __m256i *)a[b].qs);
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(a[b].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(x, y)), acc);
    }
    return hsum8(acc);
}

/* Eight half-width weights to f32: F16 through F16C, BF16 by a shift into the top half. */
static inline __m256 h16x8(int bf, const uint16_t *p) {
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    return bf ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16)) : _mm256_cvtph_ps(v);
}

static inline float h16_1(int bf, uint16_t v) {
    return bf ? bf16_to_f32(v) : _cvtsh_ss(v);
}

static inline float dot_h16(int bf, int n, const uint16_t *w, const float *a) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int i = 0;
    /* Two accumulators hide the FMA latency. */
    for (; i + 16 <= n; i += 16) {
        if (i % 32 == 0) {
            le_prefetch_ahead(w + i, 64);
        }
        acc0 = _mm256_fmadd_ps(h16x8(bf, w + i), _mm256_loadu_ps(a + i), acc0);
        acc1 = _mm256_fmadd_ps(h16x8(bf, w + i + 8), _mm256_loadu_ps(a + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) {
        acc0 = _mm256_fmadd_ps(h16x8(bf, w + i), _mm256_loadu_ps(a + i), acc0);
    }
    float sum = hsum8(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) {
        sum += h16_1(bf, w[i]) * a[i];
    }
    return sum;
}

float le_vec_dot_f16_f32_avx2(int n, const uint16_t *w, const float *a) {
    return dot_h16(0, n, w, a);
}

float le_vec_dot_bf16_f32_avx2(int n, const uint16_t *w, const float *a) {
    return dot_h16(1, n, w, a);
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
/* 32 bits to 32 bytes, 0xFF where the bit is set: byte i looks at bit i of qh. */
static inline __m256i bits_to_bytes(uint32_t qh) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
}

static inline __m256 q5_0_block(const le_block_q5_0 *w, const le_block_q8_0 *a, __m256 acc) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10), sixteen = _mm256_set1_epi8(16);
    const __m128i q = _mm_loadu_si128((const __m128i *)w->qs);
    __m256i x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low4);
    uint32_t qh;
    memcpy(&qh, w->qh, sizeof qh);
    x = _mm256_or_si256(x, _mm256_and_si256(bits_to_bytes(qh), bit4));
    x = _mm256_sub_epi8(x, sixteen);
    const __m256i y = _mm256_loadu_si256((const __m256i *)a->qs);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(w->d) * _cvtsh_ss(a->d));
    return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8(x, y)), acc);
}

float le_vec_dot_q5_0_q8_0_avx2(int n, const le_block_q5_0 *w, const le_block_q8_0 *a) {
    /* Two accumulators hide the FMA latency. */
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    const int nb = n / LE_QK5_0;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        le_prefetch_ahead(w + b, 2 * sizeof *w);
        acc0 = q5_0_block(w + b, a + b, acc0);
        acc1 = q5_0_block(w + b + 1, a + b + 1, acc1);
    }
    if (b < nb) {
        acc0 = q5_0_block(w + b, a + b, acc0);
    }
    return hsum8(_mm256_add_ps(acc0, acc1));
}

static inline int hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The 6-bit scales and mins of a Q4_K/Q5_K super-block, four at a time as 32-bit words:
 * sc[0..3] and m[0..3] are the low 6 bits of bytes 0..3 and 4..7; sc[4..7] and m[4..7] take
 * their low 4 bits from the nibbles of bytes 8..11 and their top 2 from bits 6..7 of bytes 0..3
 * and 4..7. */
static inline void scales_mins_k4(const uint8_t *q, uint32_t s[2], uint32_t mm[2]) {
    uint32_t u[3];
    memcpy(u, q, 12);
    s[0] = u[0] & 0x3f3f3f3fu;
    mm[0] = u[1] & 0x3f3f3f3fu;
    s[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    mm[1] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
}

/* Q4_K and Q5_K share their super-block (d, dmin, 6-bit scales and mins, nibbles); Q5_K adds
 * a fifth bit per value in qh (bit j of qh[l] for sub-block j). One body, inlined twice with qh
 * present or not (NULL folds away). */
static inline __attribute__((always_inline)) float dot_k45(int n, size_t stride, const uint16_t *d0, const uint16_t *dmin0,
                                                            const uint8_t *scales0, const uint8_t *qs0,
                                                            const uint8_t *qh0, const le_block_q8_K *a) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    /* Float sums stay in vectors across super-blocks (one horizontal sum at the end). */
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
/* Field p of super-block b (the fields of block 0 are passed in; blocks are stride apart). */
#define AT(p, b) ((const void *)((const uint8_t *)(p) + (size_t)(b) * stride))
    for (int b = 0; b < n / LE_QK_K; b++) {
        le_prefetch_ahead(AT(qs0, b), (int)stride);
        const uint8_t *qs = AT(qs0, b);
        /* Scales and mins stay in registers: bytes stored and read back as one wider load
         * would stall on store forwarding every super-block. */
        uint32_t sw[2], mw[2];
        scales_mins_k4(AT(scales0, b), sw, mw);
        /* Mins against the sums of each 32 activations (pairs of the 16-sums). */
        const __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)a[b].bsums),
                                          _mm_loadu_si128((const __m128i *)(a[b].bsums + 8)));
        const __m128i mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, (int)mw[1], (int)mw[0]));
        const __m128i pm = _mm_madd_epi16(mins, bs);
        /* Shifting the 16-bit lanes right by 2 a step keeps each byte's bit 0 its own for the
         * seven shifts used (bits from the upper byte only reach bits 2..7 of the lower). */
        __m256i hb = qh0 ? _mm256_loadu_si256((const __m256i *)AT(qh0, b)) : _mm256_setzero_si256();
        __m256i iacc = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, low4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (qh0) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hb, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 1), one), 4));
                hb = _mm256_srli_epi16(hb, 2);
            }
            const __m256i y0 = _mm256_loadu_si256((const __m256i *)(a[b].qs + 64 * c));
            const __m256i y1 = _mm256_loadu_si256((const __m256i *)(a[b].qs + 64 * c + 32));
            /* Unsigned 4- or 5-bit x signed 8-bit pairs fit int16 (2 * 31 * 127); then scale and
             * widen. */
            const int s0 = (int)(sw[c / 2] >> (16 * (c % 2))) & 0xff, s1 = (int)(sw[c / 2] >> (16 * (c % 2) + 8)) & 0xff;
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), _mm256_set1_epi16((short)s0));
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), _mm256_set1_epi16((short)s1));
            iacc = _mm256_add_epi32(iacc, _mm256_add_epi32(p0, p1));
        }
        const float d = _cvtsh_ss(*(const uint16_t *)AT(d0, b)) * a[b].d;
        const float dmin = _cvtsh_ss(*(const uint16_t *)AT(dmin0, b)) * a[b].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(iacc), acc);
        accm = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(pm), accm);
    }
#undef AT
    __m128 m4 = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
    m4 = _mm_add_ss(m4, _mm_movehdup_ps(m4));
    return hsum8(acc) - _mm_cvtss_f32(m4);
}

float le_vec_dot_q4_K_q8_K_avx2(int n, const le_block_q4_K *w, const le_block_q8_K *a) {
    return dot_k45(n, sizeof *w, &w->d, &w->dmin, w->scales, w->qs, NULL, a);
}

float le_vec_dot_q5_K_q8_K_avx2(int n, const le_block_q5_K *w, const le_block_q8_K *a) {
    return dot_k45(n, sizeof *w, &w->d, &w->dmin, w->scales, w->qs, w->qh, a);
}

/* Q3_K: two low bits from qs, minus 4 where the hmask bit is clear, as two unsigned products
 * (q2 * y - 4 * y) so vpmaddubsw applies. The sixteen scales are widened to int16 once; a
 * byte shuffle then gives each 32-value step its two scales (one per 128-bit half). */
static const uint8_t q3_pick[4][32] = {
#define Q3_PICK(k)                                                                                       \
    {4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k,           \
     4 * k + 1, 4 * k, 4 * k + 1, 4 * k, 4 * k + 1, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2,     \
     4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3, 4 * k + 2, 4 * k + 3,       \
     4 * k + 2, 4 * k + 3}
    Q3_PICK(0), Q3_PICK(1), Q3_PICK(2), Q3_PICK(3),
#undef Q3_PICK
};

float le_vec_dot_q3_K_q8_K_avx2(int n, const le_block_q3_K *w, const le_block_q8_K *a) {
    const __m256i three = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / LE_QK_K; b++) {
        le_prefetch_ahead(w + b, sizeof *w);
        /* The scales straight into a register (storing them as bytes and loading 16 back
         * would stall on store forwarding every super-block). */
        uint32_t aux[4];
        q3_K_scale_words(w[b].scales, aux);
        const __m128i sc = _mm_sub_epi8(_mm_set_epi32((int)aux[3], (int)aux[2], (int)aux[1], (int)aux[0]),
                                        _mm_set1_epi8(32));
        const __m256i s16 = _mm256_cvtepi8_epi16(sc);
        __m256i hb = _mm256_loadu_si256((const __m256i *)w[b].hmask);
        __m256i iacc0 = _mm256_setzero_si256(), iacc1 = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            /* Scales 8h..8h+7 in both halves. */
            const __m128i half = h ? _mm256_extracti128_si256(s16, 1) : _mm256_castsi256_si128(s16);
            const __m256i sh = _mm256_set_m128i(half, half);
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                const int j = 4 * h + k;
                const __m256i q2 = _mm256_and_si256(q, three);
                const __m256i m4 = _mm256_andnot_si256(_mm256_slli_epi16(_mm256_and_si256(hb, one), 2), four);
                q = _mm256_srli_epi16(q, 2);
                hb = _mm256_srli_epi16(hb, 1);
                const __m256i y = _mm256_loadu_si256((const __m256i *)(a[b].qs + 32 * j));
                const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q2, y), _mm256_maddubs_epi16(m4, y));
                /* int16 #2k in the low half, #2k + 1 in the high half, in every lane. */
                const __m256i pick = _mm256_loadu_si256((const __m256i *)q3_pick[k]);
                const __m256i prod = _mm256_madd_epi16(p, _mm256_shuffle_epi8(sh, pick));
                if (k & 1) {
                    iacc1 = _mm256_add_epi32(iacc1, prod);
                } else {
                    iacc0 = _mm256_add_epi32(iacc0, prod);
                }
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * a[b].d),
                              _mm256_cvtepi32_ps(_mm256_add_epi32(iacc0, iacc1)), acc);
    }
    return hsum8(acc);
}

/* Q2_K: the codes as Q3_K's low bits (no offset), the scales through the same shuffle; the
 * mins meet the activations' bsums in one vpmaddwd a super-block. */
float le_vec_dot_q2_K_q8_K_avx2(int n, const le_block_q2_K *w, const le_block_q8_K *a) {
    const __m256i three = _mm256_set1_epi8(3);
    const __m128i low4 = _mm_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / LE_QK_K; b++) {
        le_prefetch_ahead(w + b, sizeof *w);
        const __m128i sm = _mm_loadu_si128((const __m128i *)w[b].scales);
        const __m256i s16 = _mm256_cvtepu8_epi16(_mm_and_si128(sm, low4));
        const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), low4));
        const __m256i mins = _mm256_madd_epi16(m16, _mm256_loadu_si256((const __m256i *)a[b].bsums));
        __m256i iacc0 = _mm256_setzero_si256(), iacc1 = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m128i half = h ? _mm256_extracti128_si256(s16, 1) : _mm256_castsi256_si128(s16);
            const __m256i sh = _mm256_set_m128i(half, half);
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                const __m256i q2 = _mm256_and_si256(q, three);
                q = _mm256_srli_epi16(q, 2);
                const __m256i y = _mm256_loadu_si256((const __m256i *)(a[b].qs + 32 * (4 * h + k)));
                const __m256i pick = _mm256_loadu_si256((const __m256i *)q3_pick[k]);
                const __m256i prod = _mm256_madd_epi16(_mm256_maddubs_epi16(q2, y), _mm256_shuffle_epi8(sh, pick));
                if (k & 1) {
                    iacc1 = _mm256_add_epi32(iacc1, prod);
                } else {
                    iacc0 = _mm256_add_epi32(iacc0, prod);
                }
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * a[b].d),
                              _mm256_cvtepi32_ps(_mm256_add_epi32(iacc0, iacc1)), acc);
        acc = _mm256_fnmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].dmin) * a[b].d), _mm256_cvtepi32_ps(mins), acc);
    }
    return hsum8(acc);
}

float le_vec_dot_q6_K_q8_K_avx2(int n, const le_block_q6_K *w, const le_block_q8_K *a) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    __m256 vacc = _mm256_setzero_ps();
    for (int b = 0; b < n / LE_QK_K; b++) {
        le_prefetch_ahead(w + b, sizeof *w);
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[b].ql + 64 * h, *qhp = w[b].qh + 32 * h;
            const int8_t *sc = w[b].scales + 8 * h, *yq = a[b].qs + 128 * h;
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, two), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, low4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4));
            for (int k = 0; k < 4; k++) {
                const __m256i y = _mm256_loadu_si256((const __m256i *)(yq + 32 * k));
                /* (q - 32) * y = q * y - 32 * y, both in int16 pairs: 2 * 63 * 127 fits. */
                const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[k], y), _mm256_maddubs_epi16(k32, y));
                const __m256i s = _mm256_set_m128i(_mm_set1_epi16(sc[2 * k + 1]), _mm_set1_epi16(sc[2 * k]));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
            }
        }
        vacc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * a[b].d), _mm256_cvtepi32_ps(acc), vacc);
    }
    return hsum8(vacc);
}
#endif

#if defined(__x86_64__) || defined(_M_X64)
void le_f16_to_f32_avx2(const uint16_t *x, float *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    }
    for (; i < n; i++) {
        y[i] = _cvtsh_ss(x[i]);
    }
}
#endif


#if defined(__x86_64__) || defined(_M_X64)
/* roundf (halves away from zero) on 8 lanes: truncate, then step away from zero where the
 * dropped fraction is at least one half. Exact, so the bytes equal the scalar quantizer's. */
static inline __m256 round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
    const __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, t));
    const __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_or_ps(step, sign));
}

/* One block of 32: codes into q, returns the f16-rounded scale widened to f32 and the code sum. */
static inline float quantize_block(const float *x, int8_t *q, uint16_t *dbits, int *sum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 v[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        m = _mm256_max_ps(m, _mm256_and_ps(v[k], absmask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float d = _mm_cvtss_f32(m4) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256i i32[4];
    for (int k = 0; k < 4; k++) {
        i32[k] = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(v[k], _mm256_set1_ps(id))));
    }
    /* Keep the low byte of each int32, as the scalar (int8_t) conversion does: equal to
     * saturation for every code in -127..127, and also for the scalar's result when a denormal
     * scale makes x * id infinite (the "integer indefinite" 0x80000000 keeps byte 0). */
    __m256i s32 = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        i32[k] = _mm256_srai_epi32(_mm256_slli_epi32(i32[k], 24), 24);
        s32 = _mm256_add_epi32(s32, i32[k]);
    }
    /* Pack to bytes; the packs interleave 128-bit lanes, the permute restores the order. */
    const __m256i p16a = _mm256_packs_epi32(i32[0], i32[1]), p16b = _mm256_packs_epi32(i32[2], i32[3]);
    __m256i p8 = _mm256_packs_epi16(p16a, p16b);
    p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p8);
    *sum = hsum_i32(s32);
    *dbits = _cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
    return _cvtsh_ss(*dbits);
}

void le_quantize_row_q8_0_avx2(const float *x, le_block_q8_0 *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int sum;
        quantize_block(x + b * LE_QK8_0, y[b].qs, &y[b].d, &sum);
    }
}

void le_quantize_row_q8_0x_avx2(const float *x, le_block_q8_0x *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int sum;
        uint16_t bits;
        y[b].d = quantize_block(x + b * LE_QK8_0, y[b].qs, &bits, &sum);
        y[b].dsum = y[b].d * (float)sum;
    }
}
#endif
