/* Scalar reference kernels: plain C that every SIMD version is tested against. */
#include <math.h>
#include <string.h>

#include "llava_kernels.h"

#include "half.h"
#include "q3k_scales.h"

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

static inline float dot_h16(int bf, int n, const uint16_t *w, const float *a) {
    /* Eight partial sums, like the SIMD versions, so rounding differs only by order. */
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            acc[k] += (bf ? bf16_to_f32(w[i + k]) : f16_to_f32(w[i + k])) * a[i + k];
        }
    }
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) {
        sum += acc[k];
    }
    for (; i < n; i++) {
        sum += (bf ? bf16_to_f32(w[i]) : f16_to_f32(w[i])) * a[i];
    }
    return sum;
}

float le_vec_dot_f16_f32_scalar(int n, const uint16_t *w, const float *a) {
    return dot_h16(0, n, w, a);
}

float le_vec_dot_bf16_f32_scalar(int n, const uint16_t *w, const float *a) {
    return dot_h16(1, n, w, a);
}

/* ggml's round-to-nearest by adding 1.5 * 2^23 (valid for |x| < 2^22). */
static int nearest_int(float x) {
    const float v = x + 12582912.0f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

void le_quantize_row_q8_K_scalar(const float *x, le_block_q8_K *y, int n) {
    for (int b = 0; b < n / LE_QK_K; b++, x += LE_QK_K) {
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < LE_QK_K; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        memset(&y[b], 0, sizeof y[b]);
        if (amax == 0.0f) {
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < LE_QK_K; j++) {
            const int v = nearest_int(iscale * x[j]);
            y[b].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < LE_QK_K / 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) {
                sum += y[b].qs[16 * j + i];
            }
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

float le_vec_dot_q5_0_q8_0_scalar(int n, const le_block_q5_0 *w, const le_block_q8_0 *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK5_0; b++) {
        uint32_t qh;
        memcpy(&qh, w[b].qh, sizeof qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            const int lo = ((w[b].qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10)) - 16;
            const int hi = ((w[b].qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16;
            isum += lo * a[b].qs[j] + hi * a[b].qs[j + 16];
        }
        sum += (float)isum * (f16_to_f32(w[b].d) * f16_to_f32(a[b].d));
    }
    return sum;
}

/* Q4_K's j-th 6-bit scale and min. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

float le_vec_dot_q4_K_q8_K_scalar(int n, const le_block_q4_K *w, const le_block_q8_K *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++) {
            for (int half = 0; half < 2; half++) {
                int sc, m, dot = 0;
                scale_min_k4(2 * c + half, w[b].scales, &sc, &m);
                for (int l = 0; l < 32; l++) {
                    const int q = half ? (w[b].qs[32 * c + l] >> 4) : (w[b].qs[32 * c + l] & 0x0f);
                    dot += q * a[b].qs[64 * c + 32 * half + l];
                }
                sumi += sc * dot;
                summ += m * (a[b].bsums[4 * c + 2 * half] + a[b].bsums[4 * c + 2 * half + 1]);
            }
        }
        sum += f16_to_f32(w[b].d) * a[b].d * (float)sumi - f16_to_f32(w[b].dmin) * a[b].d * (float)summ;
    }
    return sum;
}

float le_vec_dot_q6_K_q8_K_scalar(int n, const le_block_q6_K *w, const le_block_q8_K *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[b].ql + 64 * h, *qh = w[b].qh + 32 * h;
            const int8_t *sc = w[b].scales + 8 * h, *y = a[b].qs + 128 * h;
            for (int l = 0; l < 32; l++) {
                const int q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                const int is = l / 16;
                sumi += sc[is] * q1 * y[l] + sc[is + 2] * q2 * y[l + 32] + sc[is + 4] * q3 * y[l + 64] +
                        sc[is + 6] * q4 * y[l + 96];
            }
        }
        sum += f16_to_f32(w[b].d) * a[b].d * (float)sumi;
    }
    return sum;
}

void le_f16_to_f32_scalar(const uint16_t *x, float *y, int n) {
    for (int i = 0; i < n; i++) {
        y[i] = f16_to_f32(x[i]);
    }
}

float le_vec_dot_q5_K_q8_K_scalar(int n, const le_block_q5_K *w, const le_block_q8_K *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int c = 0; c < 4; c++) {
            for (int half = 0; half < 2; half++) {
                const int j = 2 * c + half;
                int sc, m, dot = 0;
                scale_min_k4(j, w[b].scales, &sc, &m);
                for (int l = 0; l < 32; l++) {
                    const int lo = half ? (w[b].qs[32 * c + l] >> 4) : (w[b].qs[32 * c + l] & 0x0f);
                    const int q = lo + (((w[b].qh[l] >> j) & 1) << 4);
                    dot += q * a[b].qs[32 * j + l];
                }
                sumi += sc * dot;
                summ += m * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
            }
        }
        sum += f16_to_f32(w[b].d) * a[b].d * (float)sumi - f16_to_f32(w[b].dmin) * a[b].d * (float)summ;
    }
    return sum;
}

float le_vec_dot_q3_K_q8_K_scalar(int n, const le_block_q3_K *w, const le_block_q8_K *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int8_t sc[16];
        q3_K_scales(w[b].scales, sc);
        int sumi = 0;
        for (int j = 0; j < 8; j++) {
            const int h = j / 4, k = j % 4;
            for (int half = 0; half < 2; half++) {
                int dot = 0;
                for (int l = 16 * half; l < 16 * half + 16; l++) {
                    const int q = ((w[b].qs[32 * h + l] >> (2 * k)) & 3) - (((w[b].hmask[l] >> (4 * h + k)) & 1) ? 0 : 4);
                    dot += q * a[b].qs[32 * j + l];
                }
                sumi += sc[8 * h + 2 * k + half] * dot;
            }
        }
        sum += f16_to_f32(w[b].d) * a[b].d * (float)sumi;
    }
    return sum;
}

/* Q2_K: sixteen 16-value sub-blocks, each d * scale * code - dmin * min (4-bit scale and min in
 * one byte); the codes sit as Q3_K's low bits do. The min term uses the activations' bsums. */
float le_vec_dot_q2_K_q8_K_scalar(int n, const le_block_q2_K *w, const le_block_q8_K *a) {
    float sum = 0.0f;
    for (int b = 0; b < n / LE_QK_K; b++) {
        int sumi = 0, summ = 0;
        for (int j = 0; j < 16; j++) {
            summ += (w[b].scales[j] >> 4) * a[b].bsums[j];
        }
        for (int j = 0; j < 8; j++) {
            const int h = j / 4, k = j % 4;
            for (int half = 0; half < 2; half++) {
                int dot = 0;
                for (int l = 16 * half; l < 16 * half + 16; l++) {
                    dot += ((w[b].qs[32 * h + l] >> (2 * k)) & 3) * a[b].qs[32 * j + l];
                }
                sumi += (w[b].scales[2 * j + half] & 0x0f) * dot;
            }
        }
        sum += a[b].d * (f16_to_f32(w[b].d) * (float)sumi - f16_to_f32(w[b].dmin) * (float)summ);
    }
    return sum;
}
