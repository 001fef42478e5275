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

/* Random bytes for whole blocks, with each f16 field at `dpos` made a small normal scale. */
static void random_blocks(uint8_t *p, size_t bytes, size_t block, const int *dpos, int nd) {
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)(frand() * 128 + 128);
    for (size_t b = 0; b < bytes / block; b++) {
        for (int k = 0; k < nd; k++) {
            const uint16_t d = half_bits(0.001f + 0.01f * fabsf(frand()));
            memcpy(p + b * block + dpos[k], &d, 2);
        }
    }
}

/* The SDOT GEMM against the scalar GEMM over panels of every packable type. */
static void test_gemm(int has_dotprod) {
    struct { int type; size_t block_bytes; int per_block; int dpos[2]; int nd; } types[] = {
        {LE_TYPE_Q4_0, sizeof(le_block_q4_0), 32, {0}, 1},
        {LE_TYPE_Q5_1, sizeof(le_block_q5_1), 32, {0, 2}, 2},
        {LE_TYPE_Q8_0, sizeof(le_block_q8_0), 32, {0}, 1},
        {LE_TYPE_Q4_K, sizeof(le_block_q4_K), 256, {0, 2}, 2},
        {LE_TYPE_Q6_K, sizeof(le_block_q6_K), 256, {208}, 1},
    };
    const int shapes[][3] = {{256, 8, 4}, {512, 13, 5}, {768, 3, 1}, {256, 24, 9}}; /* n, rows, tokens */
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
            const int n = shapes[si][0], nrows = shapes[si][1], nt = shapes[si][2], nb = n / 32;
            const size_t row_bytes = (size_t)n / types[ti].per_block * types[ti].block_bytes;
            uint8_t *w = malloc(row_bytes * nrows);
            random_blocks(w, row_bytes * nrows, types[ti].block_bytes, types[ti].dpos, types[ti].nd);
            const int np = (nrows + 7) / 8;
            le_block_x8 *panels = malloc(sizeof *panels * nb * np);
            for (int p = 0; p < np; p++) {
                const int rows = nrows - 8 * p < 8 ? nrows - 8 * p : 8;
                le_pack_x8(types[ti].type, w + row_bytes * 8 * p, row_bytes, rows, n, panels + (size_t)p * nb);
            }
            le_block_q8_0x *a = malloc(sizeof *a * nb * nt);
            float *x = malloc(sizeof *x * n);
            for (int t = 0; t < nt; t++) {
                for (int i = 0; i < n; i++) x[i] = frand() * 3.0f;
                le_quantize_row_q8_0x_scalar(x, a + (size_t)t * nb, n);
            }
            float *want = malloc(sizeof *want * nt * nrows), *got = malloc(sizeof *got * nt * nrows);
            const le_codes codes = (le_codes)le_panel_codes(types[ti].type);
            le_gemm_x8_scalar(codes, n, panels, np, nrows, a, nt, want, nrows);
            for (int variant = 0; variant < 2; variant++) {
                if (variant == 1 && !has_dotprod) break;
                if (variant == 0) le_gemm_x8_neon(codes, n, panels, np, nrows, a, nt, got, nrows);
                else le_gemm_x8_dotprod(codes, n, panels, np, nrows, a, nt, got, nrows);
                for (int i = 0; i < nt * nrows; i++) {
                    /* Bound from the magnitude of the row's terms. */
                    const int t = i / nrows, r = i % nrows;
                    double mag = 0;
                    for (int b = 0; b < nb; b++) {
                        const le_block_x8 *pb = panels + (size_t)(r / 8) * nb + b;
                        for (int j = 0; j < 32; j++) {
                            mag += fabs((double)pb->s[j / 16][r % 8] * pb->q[32 * (j / 4) + 4 * (r % 8) + j % 4] *
                                        a[t * nb + b].d * a[t * nb + b].qs[j]);
                        }
                        mag += fabs((double)pb->o[r % 8] * a[t * nb + b].dsum);
                    }
                    check(fabs(got[i] - want[i]) <= 1.1920929e-07 * (3 * nb + 4) * mag + 1e-30, variant ? "gemm dotprod" : "gemm neon", n);
                }
            }
            free(w); free(panels); free(a); free(x); free(want); free(got);
        }
    }
}

/* NEON attention against the scalar kernel, f32 and f16 keys and values. */
static void test_attention(void) {
    const int hds[] = {8, 20, 64, 72, 128}, nkvs[] = {1, 31, 33, 100};
    for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++) {
        for (size_t ki = 0; ki < sizeof nkvs / sizeof *nkvs; ki++) {
            const int hd = hds[hi], n_kv = nkvs[ki];
            const size_t stride = 2 * (size_t)hd, len = stride * n_kv;
            float *q = malloc(sizeof *q * hd), *k = malloc(sizeof *k * len), *v = malloc(sizeof *v * len);
            uint16_t *k16 = malloc(2 * len), *v16 = malloc(2 * len);
            for (int i = 0; i < hd; i++) q[i] = frand() * 2;
            for (size_t i = 0; i < len; i++) {
                k16[i] = half_bits((frand() > 0 ? 1.0f : -1.0f) * (0.25f + fabsf(frand())));
                v16[i] = half_bits((frand() > 0 ? 1.0f : -1.0f) * (0.25f + fabsf(frand())));
                k[i] = (float)h2d(k16[i]);
                v[i] = (float)h2d(v16[i]);
            }
            float want[128], got[128], got16[128];
            le_attend_head_scalar(n_kv, hd, q, k + hd, v + hd, 0, stride, 0.125f, want);
            le_attend_head_neon(n_kv, hd, q, k + hd, v + hd, 0, stride, 0.125f, got);
            le_attend_head_neon(n_kv, hd, q, k16 + hd, v16 + hd, 1, stride, 0.125f, got16);
            for (int i = 0; i < hd; i++) {
                check(fabs(got[i] - want[i]) <= 2e-6 * 1.25, "attention neon f32", hd);
                check(fabs(got16[i] - want[i]) <= 2e-6 * 1.25, "attention neon f16", hd);
            }
            free(q); free(k); free(v); free(k16); free(v16);
        }
    }
}

/* NEON F16 GEMM against the scalar one. */
static void test_gemm_f16(void) {
    const int shapes[][3] = {{1, 1, 1}, {72, 17, 7}, {64, 16, 6}, {300, 35, 13}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const int k = shapes[si][0], nrows = shapes[si][1], nt = shapes[si][2];
        uint16_t *w = malloc(2 * (size_t)k * nrows);
        float *pack = malloc(sizeof *pack * LE_F16_PACK_FLOATS * (size_t)k);
        float *x = malloc(sizeof *x * k * nt), *want = malloc(sizeof *want * nt * nrows), *got = malloc(sizeof *got * nt * nrows);
        for (int i = 0; i < k * nrows; i++) w[i] = half_bits((frand() > 0 ? 1.0f : -1.0f) * (0.25f + fabsf(frand())));
        for (int i = 0; i < k * nt; i++) x[i] = frand();
        le_gemm_f16_scalar(k, w, k, nrows, x, k, nt, want, nrows, pack);
        le_gemm_f16_neon(k, w, k, nrows, x, k, nt, got, nrows, pack);
        for (int i = 0; i < nt * nrows; i++) {
            const int t = i / nrows, r = i % nrows;
            double mag = 0;
            for (int j = 0; j < k; j++) mag += fabs(h2d(w[r * k + j]) * x[t * k + j]);
            check(fabs(got[i] - want[i]) <= 1.1920929e-07 * (k + 2) * mag + 1e-30, "gemm f16 neon", k);
        }
        free(w); free(pack); free(x); free(want); free(got);
    }
}

/* NEON activations against the scalar ones (expf), relative to |z| as in the Rust test. */
static void test_activations(void) {
    float x[1000], y[1000], mul[1000];
    for (int kind = 0; kind < 3; kind++) {
        for (int i = 0; i < 1000; i++) {
            x[i] = frand() * 12.0f;
            mul[i] = frand() * 2.0f;
        }
        for (int m = 0; m < 2; m++) {
            for (int i = 0; i < 1000; i++) y[i] = x[i];
            le_activation_neon(kind, y, m ? mul : NULL, 1000);
            for (int i = 0; i < 1000; i++) {
                float w = x[i];
                le_activation_scalar(kind, &w, m ? mul + i : NULL, 1);
                const double z = kind == 0 ? x[i] : kind == 1 ? 1.702 * x[i] : 1.5957691 * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
                check(fabs(y[i] - w) <= 1e-6 * fabs(w) * (fabs(z) > 1 ? fabs(z) : 1) + 1e-34, "activation neon", kind);
            }
        }
    }
}

/* SDOT dots for Q5_0, Q4_K and Q6_K against the scalar ones, random blocks of every byte. */
static void test_sdot_dots(int has_dotprod) {
    const int sizes[] = {256, 768, 4096 + 256};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        const int n = sizes[si];
        float *x = malloc(sizeof *x * n);
        le_block_q8_0 *a0 = malloc(sizeof *a0 * (n / 32));
        le_block_q8_K *ak = malloc(sizeof *ak * (n / 256));
        le_block_q5_0 *w5 = malloc(sizeof *w5 * (n / 32));
        le_block_q4_K *w4 = malloc(sizeof *w4 * (n / 256));
        le_block_q6_K *w6 = malloc(sizeof *w6 * (n / 256));
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < n; i++) x[i] = frand() * 3.0f;
            le_quantize_row_q8_0_scalar(x, a0, n);
            le_quantize_row_q8_K_scalar(x, ak, n);
            const int d5[] = {0}, d4[] = {0, 2}, d6[] = {208};
            random_blocks((uint8_t *)w5, sizeof *w5 * (n / 32), sizeof *w5, d5, 1);
            random_blocks((uint8_t *)w4, sizeof *w4 * (n / 256), sizeof *w4, d4, 2);
            random_blocks((uint8_t *)w6, sizeof *w6 * (n / 256), sizeof *w6, d6, 1);
            /* Integer sums are exact in both; only the float order of the block terms differs. */
            const float s5 = le_vec_dot_q5_0_q8_0_scalar(n, w5, a0), g5 = has_dotprod ? le_vec_dot_q5_0_q8_0_dotprod(n, w5, a0) : 0.0f;
            const float s4 = le_vec_dot_q4_K_q8_K_scalar(n, w4, ak), g4 = has_dotprod ? le_vec_dot_q4_K_q8_K_dotprod(n, w4, ak) : 0.0f;
            const float s6 = le_vec_dot_q6_K_q8_K_scalar(n, w6, ak), g6 = has_dotprod ? le_vec_dot_q6_K_q8_K_dotprod(n, w6, ak) : 0.0f;
            if (has_dotprod) {
                check(fabs(g5 - s5) <= 1e-4 * (fabs(s5) + 1.0), "q5_0 dotprod", n);
                check(g4 == s4, "q4_K dotprod (same order as scalar)", n);
                check(g6 == s6, "q6_K dotprod (same order as scalar)", n);
            }
            /* Without SDOT: the same integers through widening multiplies. */
            check(le_vec_dot_q5_0_q8_0_neon(n, w5, a0) == g5 || !has_dotprod, "q5_0 neon = dotprod", n);
            check(fabs(le_vec_dot_q5_0_q8_0_neon(n, w5, a0) - s5) <= 1e-4 * (fabs(s5) + 1.0), "q5_0 neon", n);
            check(le_vec_dot_q4_K_q8_K_neon(n, w4, ak) == s4, "q4_K neon (same order as scalar)", n);
            check(le_vec_dot_q6_K_q8_K_neon(n, w6, ak) == s6, "q6_K neon (same order as scalar)", n);
        }
        free(x); free(a0); free(ak); free(w5); free(w4); free(w6);
    }
}

int main(void) {
    const int has_dotprod = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    test_gemm(has_dotprod);
    test_attention();
    test_gemm_f16();
    test_activations();
    test_sdot_dots(has_dotprod);
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
            /* NEON quantizers: the same bytes (exact halves exercise roundf's ties). */
            if (rep % 3 == 0) for (int i = 0; i < n; i++) x[i] = (float)(i % 64) - 31.5f;
            le_quantize_row_q8_0_scalar(x, a, n);
            le_quantize_row_q8_0_neon(x, a2, n);
            check(memcmp(a, a2, sizeof *a * nb) == 0, "quantize q8_0 neon", n);
            {
                le_block_q8_0x *c = malloc(sizeof *c * nb), *c2 = malloc(sizeof *c2 * nb);
                le_quantize_row_q8_0x_scalar(x, c, n);
                le_quantize_row_q8_0x_neon(x, c2, n);
                check(memcmp(c, c2, sizeof *c * nb) == 0, "quantize q8_0x neon", n);
                free(c);
                free(c2);
            }
        }
        free(w4); free(w8); free(a); free(a2); free(x); free(wh);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
