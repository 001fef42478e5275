/* Scalar reference kernels: plain C that every SIMD version is tested against. */
#include <math.h>
#include <string.h>

#include "llava_kernels.h"

static float f16_to_f32(uint16_t h) {
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

/* Round to nearest even, as F16C's _cvtss_sh(x, 0). */
static uint16_t f32_to_f16(float f) {
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

void le_quantize_row_q8_0_scalar(const float *x, le_block_q8_0 *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        float amax = 0.0f;
        for (int j = 0; j < LE_QK8_0; j++) {
            const float v = fabsf(x[b * LE_QK8_0 + j]);
            amax = v > amax ? v : amax;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < LE_QK8_0; j++) {
            y[b].qs[j] = (int8_t)roundf(x[b * LE_QK8_0 + j] * id);
        }
    }
}

float le_vec_dot_q4_0_q8_0_scalar(int n, const le_block_q4_0 *w, const le_block_q8_0 *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK4_0; b++) {
        int isum = 0;
        for (int j = 0; j < LE_QK4_0 / 2; j++) {
            const int lo = (w[b].qs[j] & 0x0f) - 8;
            const int hi = (w[b].qs[j] >> 4) - 8;
            isum += lo * a[b].qs[j] + hi * a[b].qs[j + LE_QK4_0 / 2];
        }
        sum += (float)isum * (f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
    }
    return sum;
}

float le_vec_dot_q8_0_q8_0_scalar(int n, const le_block_q8_0 *w, const le_block_q8_0 *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK8_0; b++) {
        int isum = 0;
        for (int j = 0; j < LE_QK8_0; j++) {
            isum += w[b].qs[j] * a[b].qs[j];
        }
        sum += (float)isum * (f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
    }
    return sum;
}

float le_vec_dot_f16_f32_scalar(int n, const uint16_t *w, const float *a) {
    /* Eight partial sums, like the SIMD versions, so rounding differs only by order. */
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            acc[k] += f16_to_f32(w[i + k]) * a[i + k];
        }
    }
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) {
        sum += acc[k];
    }
    for (; i < n; i++) {
        sum += f16_to_f32(w[i]) * a[i];
    }
    return sum;
}
