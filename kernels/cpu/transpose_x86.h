/* An 8x8 transpose of 32-bit lanes in eight AVX registers, shared by the kernels that turn rows
 * into columns (attention's key blocks, the bf16 GEMM's weight panels). The includer has
 * included immintrin.h, built with AVX. */
#ifndef LE_TRANSPOSE_X86_H
#define LE_TRANSPOSE_X86_H

/* r[j] becomes lane j of each of the original r[0..7]. */
static inline void le_transpose8x8_ps(__m256 r[8]) {
    __m256 t[8];
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        r[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
        r[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xee);
        r[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
        r[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xee);
    }
    /* r[0..3] hold lanes {0,4}, {1,5}, {2,6}, {3,7} of rows 0-3, r[4..7] of rows 4-7. */
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = t[i];
    }
}

#endif /* LE_TRANSPOSE_X86_H */
