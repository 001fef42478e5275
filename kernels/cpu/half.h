/* Half-precision conversions in portable C, shared by the kernels (scalar paths and tails). */
#ifndef LE_HALF_H
#define LE_HALF_H

#include <stdint.h>
#include <string.h>

static inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {
            /* Subnormal: normalise. */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000 | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* bf16 is the top half of an f32. */
static inline float bf16_to_f32(uint16_t v) {
    const uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as AVX512-BF16's vcvtneps2bf16: subnormal inputs become signed zero,
 * NaNs stay NaN (quiet). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7f800000) == 0) {
        return (uint16_t)((x >> 16) & 0x8000);
    }
    if ((x & 0x7fffffff) > 0x7f800000) {
        return (uint16_t)((x >> 16) | 0x40);
    }
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

/* Round to nearest even, as F16C's _cvtss_sh(x, 0). */
static inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000;
    const uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) {
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
    }
    if (ax >= 0x477ff000) { /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00);
    }
    if (ax < 0x38800000) { /* below the smallest normal half: subnormal or zero */
        float a;
        memcpy(&a, &ax, sizeof a);
        /* 2^-24 is the subnormal step; the float add rounds to nearest even for us. */
        const float v = a * 16777216.0f; /* a / 2^-24 */
        const float r = v + 8388608.0f - 8388608.0f;
        return (uint16_t)(sign | (uint32_t)r);
    }
    const uint32_t mant_odd = (ax >> 13) & 1;
    const uint32_t rounded = ax + 0xfff + mant_odd;
    return (uint16_t)(sign | ((rounded - 0x38000000) >> 13));
}

#endif /* LE_HALF_H */
