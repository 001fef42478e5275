/* Loads shared by the x86 integer kernels (gemm_x86.c, gemv_x86.c): a token's four activation
 * bytes broadcast to every lane, and two 256-bit halves joined into one 512-bit register.
 * The includer has included immintrin.h and string.h with the instruction sets enabled. */
#ifndef LE_BYTES_X86_H
#define LE_BYTES_X86_H

static inline __m256i bcast4(const int8_t *p) {
    int v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

#ifdef LE_VNNI
static inline __m512i join256(const int8_t *lo, const int8_t *hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)lo)),
                              _mm256_loadu_si256((const __m256i *)hi), 1);
}

static inline __m512 join8f(const float *lo, const float *hi) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(lo))),
                                               _mm256_castps_pd(_mm256_loadu_ps(hi)), 1));
}

static inline __m512i bcast4z(const int8_t *p) {
    int v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}
#endif

#endif
