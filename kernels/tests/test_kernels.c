/* The NEON kernels against the scalar reference, for running under qemu-aarch64 (CI has no ARM
 * machine). Random weights and activations at awkward sizes; block dot products are compared
 * within a bound set by the sum of the element products' magnitudes (SIMD lanes reorder the
 * float sums); the activation quantizer is compared byte for byte. Prints "N passed, M failed". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>

#include "llava_kernels.h"

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif

static int passed, failed;

static void check(int ok, const char *what, int n) {
    if (ok) {
        passed++;
    } else {
        failed++;
        if (failed < 20) printf("FAILED: %s (n=%d)\n", what, n);
    }
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* Random valid blocks: scales are small normal halves, quants anything. */
static uint16_t half_bits(float f) {
    /* Only values in the normal half range are made here: exponent re-bias is enough. */
    uint32_t x; memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000, e = ((x >> 23) & 0xff) - 127 + 15, m = (x >> 13) & 0x3ff;
    return (uint16_t)(sign | (e << 10) | m);
}

static double h2d(uint16_t h) {
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    const double v = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m / 1024.0, -14);
    return (h & 0x8000) ? -v : v;
}

int main(void) {
    const int has_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    printf("aarch64 kernels vs scalar; dotprod %s\n", has_dotprod ? "present" : "absent");
    const int sizes[] = {32, 64, 96, 256, 4096 + 32, 11008};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int n = sizes[si], nb = n / 32;
        le_block_q4_0 *w4 = malloc(sizeof *w4 * nb);
        le_block_q8_0 *w8 = malloc(sizeof *w8 * nb), *a = malloc(sizeof *a * nb), *a2 = malloc(sizeof *a2 * nb);
        float *x = malloc(sizeof *x * n);
        uint16_t *wh = malloc(sizeof *wh * n);
        for (int rep = 0; rep < 30; rep++) {
            for (int i = 0; i < n; i++) {
                x[i] = frand() * 3.0f;
                /* Magnitudes in [0.25, 1.25]: normal halves, which half_bits can make. */
                wh[i] = half_bits((frand() > 0 ? 1.0f : -1.0f) * (0.25f + fabsf(frand())));
            }
            le_quantize_row_q8_0_scalar(x, a, n);
            double mag4 = 0, mag8 = 0, magh = 0;
            for (int b = 0; b < nb; b++) {
                w4[b].d = half_bits(0.01f + 0.01f * fabsf(frand()));
                w8[b].d = half_bits(0.001f + 0.001f * fabsf(frand()));
                for (int j = 0; j < 16; j++) w4[b].qs[j] = (uint8_t)(rng >> (j % 8 * 8));
                for (int j = 0; j < 32; j++) w8[b].qs[j] = (int8_t)(frand() * 127);
                for (int j = 0; j < 32; j++) {
                    const int q4 = (j < 16 ? (w4[b].qs[j] & 15) : (w4[b].qs[j - 16] >> 4)) - 8;
                    mag4 += fabs((double)q4 * a[b].qs[j]) * h2d(w4[b].d) * h2d(a[b].d);
                    mag8 += fabs((double)w8[b].qs[j] * a[b].qs[j]) * h2d(w8[b].d) * h2d(a[b].d);
                }
            }
            for (int i = 0; i < n; i++) magh += fabs(h2d(wh[i]) * x[i]);
            const double eps = 1.1920929e-07 * 16;
            const float s4 = le_vec_dot_q4_0_q8_0_scalar(n, w4, a);
            const float s8 = le_vec_dot_q8_0_q8_0_scalar(n, w8, a);
            const float sh = le_vec_dot_f16_f32_scalar(n, wh, x);
            check(fabs(le_vec_dot_q4_0_q8_0_neon(n, w4, a) - s4) <= eps * mag4 + 1e-30, "q4_0 neon", n);
            check(fabs(le_vec_dot_q8_0_q8_0_neon(n, w8, a) - s8) <= eps * mag8 + 1e-30, "q8_0 neon", n);
            { const float g = le_vec_dot_f16_f32_neon(n, wh, x); if (!(fabs(g - sh) <= eps * magh + 1e-30)) printf("f16 n=%d neon %.9g scalar %.9g mag %.9g\n", n, g, sh, magh); check(fabs(g - sh) <= eps * magh + 1e-30, "f16 neon", n); }
            if (has_dotprod) {
                check(fabs(le_vec_dot_q4_0_q8_0_dotprod(n, w4, a) - s4) <= eps * mag4 + 1e-30, "q4_0 dotprod", n);
                check(fabs(le_vec_dot_q8_0_q8_0_dotprod(n, w8, a) - s8) <= eps * mag8 + 1e-30, "q8_0 dotprod", n);
            }
            /* Half to float is exact: NEON and scalar must agree bit for bit. */
            {
                float *f1 = malloc(sizeof *f1 * n), *f2 = malloc(sizeof *f2 * n);
                le_f16_to_f32_scalar(wh, f1, n);
                le_f16_to_f32_neon(wh, f2, n);
                check(memcmp(f1, f2, sizeof *f1 * n) == 0, "f16_to_f32 neon", n);
                free(f1);
                free(f2);
            }
            /* The quantizer is deterministic: the same input gives the same bytes. */
            le_quantize_row_q8_0_scalar(x, a2, n);
            check(memcmp(a, a2, sizeof *a * nb) == 0, "quantize q8_0 deterministic", n);
        }
        free(w4); free(w8); free(a); free(a2); free(x); free(wh);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
