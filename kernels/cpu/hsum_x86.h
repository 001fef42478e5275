/* Horizontal sum of eight floats, shared by the x86 kernels (the includer has included
 * immintrin.h with AVX enabled). */
#ifndef LE_HSUM_X86_H
#define LE_HSUM_X86_H

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif /* LE_HSUM_X86_H */
