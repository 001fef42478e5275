/* The prefill GEMM's portable half: activations to Q8_0x, weight rows to x8 panels, and the
 * scalar GEMM every SIMD version is tested against. Packing is O(rows * n) per product against
 * the GEMM's O(rows * n * tokens), so one portable version serves every CPU. */
#include <string.h>

#include "llava_kernels.h"
#include "x8_kinds.h"
#include "q3k_scales.h"

#include "half.h"

void le_quantize_row_q8_0x_scalar(const float *x, le_block_q8_0x *y, int n) {
    for (int b = 0; b < n / LE_QK8_0; b++) {
        le_block_q8_0 q;
        le_quantize_row_q8_0_scalar(x + b * LE_QK8_0, &q, LE_QK8_0);
        int sum = 0;
        for (int j = 0; j < LE_QK8_0; j++) {
            y[b].qs[j] = q.qs[j];
            sum += q.qs[j];
        }
        y[b].d = f16_to_f32(q.d);
        y[b].dsum = y[b].d * (float)sum;
    }
}

int le_panel_codes(int type) {
    switch (type) {
    case LE_TYPE_Q4_0:
    case LE_TYPE_Q4_1:
    case LE_TYPE_Q4_K:
        return LE_CODES_U4;
    case LE_TYPE_Q5_0:
    case LE_TYPE_Q5_1:
    case LE_TYPE_Q5_K:
        return LE_CODES_U5;
    case LE_TYPE_Q3_K:
    case LE_TYPE_Q6_K:
        return LE_CODES_S6;
    case LE_TYPE_Q8_0:
        return LE_CODES_S8;
    default:
        return -1;
    }
}

/* Q4_K / Q5_K: the j-th 6-bit scale and min of a super-block. */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Block b (32 values) of a row as codes, scales and offset: w = s[i / 16] * q[i] + o. The
 * products d * sc are exact in f32 (11-bit times 8-bit significands). */
static void block_codes(int type, const uint8_t *row, int b, int8_t q[32], float s[2], float *o) {
    switch (type) {
    case LE_TYPE_Q4_0:
    case LE_TYPE_Q4_1: {
        const uint8_t *qs;
        float d, off;
        if (type == LE_TYPE_Q4_0) {
            const le_block_q4_0 *x = (const le_block_q4_0 *)row + b;
            d = f16_to_f32(x->d);
            off = -8.0f * d;
            qs = x->qs;
        } else {
            const le_block_q4_1 *x = (const le_block_q4_1 *)row + b;
            d = f16_to_f32(x->d);
            off = f16_to_f32(x->m);
            qs = x->qs;
        }
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(qs[j] & 0x0f);
            q[j + 16] = (int8_t)(qs[j] >> 4);
        }
        s[0] = s[1] = d;
        *o = off;
        return;
    }
    case LE_TYPE_Q5_0:
    case LE_TYPE_Q5_1: {
        const uint8_t *qs, *qhp;
        float d, off;
        if (type == LE_TYPE_Q5_0) {
            const le_block_q5_0 *x = (const le_block_q5_0 *)row + b;
            d = f16_to_f32(x->d);
            off = -16.0f * d;
            qs = x->qs;
            qhp = x->qh;
        } else {
            const le_block_q5_1 *x = (const le_block_q5_1 *)row + b;
            d = f16_to_f32(x->d);
            off = f16_to_f32(x->m);
            qs = x->qs;
            qhp = x->qh;
        }
        uint32_t qh;
        memcpy(&qh, qhp, sizeof qh);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)((qs[j] & 0x0f) | (((qh >> j) & 1) << 4));
            q[j + 16] = (int8_t)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
        s[0] = s[1] = d;
        *o = off;
        return;
    }
    case LE_TYPE_Q8_0: {
        const le_block_q8_0 *x = (const le_block_q8_0 *)row + b;
        memcpy(q, x->qs, 32);
        s[0] = s[1] = f16_to_f32(x->d);
        *o = 0.0f;
        return;
    }
    case LE_TYPE_Q4_K:
    case LE_TYPE_Q5_K: {
        const int j = b % 8, g = j / 2, high = j % 2;
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        if (type == LE_TYPE_Q4_K) {
            const le_block_q4_K *x = (const le_block_q4_K *)row + b / 8;
            d = f16_to_f32(x->d);
            dmin = f16_to_f32(x->dmin);
            scales = x->scales;
            qs = x->qs;
        } else {
            const le_block_q5_K *x = (const le_block_q5_K *)row + b / 8;
            d = f16_to_f32(x->d);
            dmin = f16_to_f32(x->dmin);
            scales = x->scales;
            qs = x->qs;
            qh = x->qh;
        }
        int sc, m;
        scale_min_k4(j, scales, &sc, &m);
        for (int l = 0; l < 32; l++) {
            int v = high ? qs[32 * g + l] >> 4 : qs[32 * g + l] & 0x0f;
            if (qh != NULL && (qh[l] >> j) & 1) {
                v += 16;
            }
            q[l] = (int8_t)v;
        }
        s[0] = s[1] = d * (float)sc;
        *o = -(dmin * (float)m);
        return;
    }
    case LE_TYPE_Q3_K: {
        /* ggml's Q3_K: 2 low bits in qs (four shifts), a high bit in hmask that, when clear,
         * takes 4 off; sixteen 6-bit scales packed in 12 bytes, stored with a +32 bias. */
        const le_block_q3_K *x = (const le_block_q3_K *)row + b / 8;
        const int j = b % 8, h = j / 4, k = j % 4;
        int8_t sc[16];
        q3_K_scales(x->scales, sc);
        const uint8_t *qs = x->qs + 32 * h, bit = (uint8_t)(1u << (4 * h + k));
        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((qs[l] >> (2 * k)) & 3) - ((x->hmask[l] & bit) ? 0 : 4));
        }
        const float d = f16_to_f32(x->d);
        s[0] = d * (float)sc[8 * h + 2 * k];
        s[1] = d * (float)sc[8 * h + 2 * k + 1];
        *o = 0.0f;
        return;
    }
    case LE_TYPE_Q6_K: {
        const le_block_q6_K *x = (const le_block_q6_K *)row + b / 8;
        const int j = b % 8, h = j / 4, k = j % 4;
        const uint8_t *ql = x->ql + 64 * h + (k & 1) * 32, *qh = x->qh + 32 * h;
        const float d = f16_to_f32(x->d);
        for (int l = 0; l < 32; l++) {
            const int lo = k < 2 ? ql[l] & 0x0f : ql[l] >> 4;
            q[l] = (int8_t)((lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32);
        }
        s[0] = d * (float)x->scales[8 * h + 2 * k];
        s[1] = d * (float)x->scales[8 * h + 2 * k + 1];
        *o = 0.0f;
        return;
    }
    default:
        return;
    }
}

int le_pack_x8(int type, const uint8_t *rows, size_t row_bytes, int nrows, int n, le_block_x8 *out) {
    if (le_panel_codes(type) < 0) {
        return -1;
    }
    const int nb = n / 32;
    if (nrows < 8) {
        /* Missing rows must read as zero; full panels overwrite every byte below. */
        memset(out, 0, (size_t)nb * sizeof *out);
    }
    if (type == LE_TYPE_Q4_0) {
        /* The common case without the per-block dispatch: packing was a tenth of a 7B prefill. */
        for (int r = 0; r < nrows; r++) {
            const le_block_q4_0 *x = (const le_block_q4_0 *)(rows + (size_t)r * row_bytes);
            for (int b = 0; b < nb; b++) {
                le_block_x8 *p = out + b;
                const float d = f16_to_f32(x[b].d);
                p->s[0][r] = p->s[1][r] = d;
                p->o[r] = -8.0f * d;
                for (int c = 0; c < 4; c++) {
                    int8_t *lo = p->q + 32 * c + 4 * r, *hi = p->q + 32 * (c + 4) + 4 * r;
                    for (int j = 0; j < 4; j++) {
                        lo[j] = (int8_t)(x[b].qs[4 * c + j] & 0x0f);
                        hi[j] = (int8_t)(x[b].qs[4 * c + j] >> 4);
                    }
                }
            }
        }
        return 0;
    }
    for (int r = 0; r < nrows; r++) {
        const uint8_t *row = rows + (size_t)r * row_bytes;
        for (int b = 0; b < nb; b++) {
            int8_t q[32] = {0};
            float s[2] = {0.0f, 0.0f}, o = 0.0f;
            block_codes(type, row, b, q, s, &o);
            le_block_x8 *p = out + b;
            p->s[0][r] = s[0];
            p->s[1][r] = s[1];
            p->o[r] = o;
            for (int c = 0; c < 8; c++) {
                memcpy(p->q + 32 * c + 4 * r, q + 4 * c, 4);
            }
        }
    }
    return 0;
}

void le_gemm_x8_scalar(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a, int nt,
                       float *out, size_t ldo) {
    const int nb = n / 32;
    for (int p = 0; p < np; p++) {
        for (int t = 0; t < nt; t++) {
            for (int r = 0; r < 8 && 8 * p + r < nrows; r++) {
                float acc = 0.0f;
                for (int b = 0; b < nb; b++) {
                    const le_block_x8 *x = w + (size_t)p * nb + b;
                    const le_block_q8_0x *y = a + (size_t)t * nb + b;
                    int isum[2] = {0, 0};
                    for (int c = 0; c < 8; c++) {
                        for (int j = 0; j < 4; j++) {
                            isum[c / 4] += x->q[32 * c + 4 * r + j] * y->qs[4 * c + j];
                        }
                    }
                    if (codes == LE_CODES_S6) {
                        acc = acc + (float)isum[0] * (x->s[0][r] * y->d);
                        acc = acc + (float)isum[1] * (x->s[1][r] * y->d);
                    } else {
                        acc = acc + (float)(isum[0] + isum[1]) * (x->s[0][r] * y->d);
                    }
                    if (codes == LE_CODES_U4 || codes == LE_CODES_U5) {
                        acc = acc + x->o[r] * y->dsum;
                    }
                }
                out[(size_t)t * ldo + 8 * p + r] = acc;
            }
        }
    }
}

float le_vec_dot_q4_0_q8_0x_scalar(int n, const le_block_q4_0 *w, const le_block_q8_0x *a) {
    float sum = 0.0f, off = 0.0f;
    for (int b = 0; b < n / LE_QK4_0; b++) {
        int isum = 0;
        for (int j = 0; j < LE_QK4_0 / 2; j++) {
            isum += (w[b].qs[j] & 0x0f) * a[b].qs[j] + (w[b].qs[j] >> 4) * a[b].qs[j + LE_QK4_0 / 2];
        }
        const float dw = f16_to_f32(w[b].d);
        sum += (float)isum * (dw * a[b].d);
        off += dw * a[b].dsum;
    }
    return sum - 8.0f * off;
}

/* The legacy kinds by their two traits: a fifth bit (Q5_*) and a minimum (Q*_1) in place of
 * the offset (-8 / -16 times d). In both the plain and the interleaved block the scales come
 * first, the minimums next, then qh, and qs (16 bytes a row) last. */
static int x8_kind(int type, int *five, int *with_min) {
    switch (type) {
    case LE_TYPE_Q4_0:
        *five = 0, *with_min = 0;
        return 1;
    case LE_TYPE_Q4_1:
        *five = 0, *with_min = 1;
        return 1;
    case LE_TYPE_Q5_0:
        *five = 1, *with_min = 0;
        return 1;
    case LE_TYPE_Q5_1:
        *five = 1, *with_min = 1;
        return 1;
    default:
        return 0;
    }
}

static inline size_t plain_bytes(int five, int with_min) {
    return X8_PLAIN_BYTES(five, with_min);
}

int le_x8_block_bytes(int type) {
    int five, with_min;
    if (type == LE_TYPE_Q8_0) {
        return (int)sizeof(le_block_q8_0x8);
    }
    if (type == LE_TYPE_Q4_K) {
        return (int)sizeof(le_block_q4_Kx8) / 8;
    }
    if (type == LE_TYPE_Q5_K) {
        return (int)sizeof(le_block_q5_Kx8) / 8;
    }
    if (type == LE_TYPE_Q6_K) {
        return (int)sizeof(le_block_q6_Kx8) / 8;
    }
    return x8_kind(type, &five, &with_min) ? 8 * (int)plain_bytes(five, with_min) : 0;
}

/* Q8_0 is interleaved apart from the four nibble kinds: whole signed bytes, no qh, no offset. */
static void interleave_q8_0(const uint8_t *rows, size_t row_bytes, int n, uint8_t *out) {
    for (int b = 0; b < n / 32; b++) {
        uint8_t *o = out + (size_t)b * sizeof(le_block_q8_0x8);
        for (int r = 0; r < 8; r++) {
            const uint8_t *x = rows + (size_t)r * row_bytes + (size_t)b * sizeof(le_block_q8_0);
            memcpy(o + 2 * r, x, 2);
            for (int c = 0; c < 8; c++) {
                memcpy(o + 16 + 32 * c + 4 * r, x + 2 + 4 * c, 4);
            }
        }
    }
}

static void deinterleave_q8_0(const uint8_t *w, int n, uint8_t *rows, size_t row_bytes) {
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *x = w + (size_t)b * sizeof(le_block_q8_0x8);
        for (int r = 0; r < 8; r++) {
            uint8_t *o = rows + (size_t)r * row_bytes + (size_t)b * sizeof(le_block_q8_0);
            memcpy(o, x + 2 * r, 2);
            for (int c = 0; c < 8; c++) {
                memcpy(o + 2 + 4 * c, x + 16 + 32 * c + 4 * r, 4);
            }
        }
    }
}

static inline uint16_t get16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Q4_K and Q5_K (le_block_q4_Kx8, le_block_q5_Kx8; five selects Q5_K): byte offsets of their
 * parts in an interleaved and a plain block. */
#define Q4KX8_DMIN 16
#define Q4KX8_SCALES 32
#define Q5KX8_QH 128
#define KX8_QS(five) ((five) ? 384 : 128)
#define KX8_BYTES(five) ((five) ? sizeof(le_block_q5_Kx8) : sizeof(le_block_q4_Kx8))
#define Q4K_SCALES 4
#define Q5K_QH 16
#define K_QS(five) ((five) ? 48 : 16)
#define K_BYTES(five) ((five) ? sizeof(le_block_q5_K) : sizeof(le_block_q4_K))

/* Copies between a plain Q4_K / Q5_K block and row r of an interleaved one (to_x8: plain -> x8). */
static void q45_K_row_x8(int five, int to_x8, uint8_t *x8, int r, uint8_t *plain) {
#define K_MOVE(a, b, len) (to_x8 ? memcpy((a), (b), (len)) : memcpy((b), (a), (len)))
    K_MOVE(x8 + 2 * r, plain, 2);
    K_MOVE(x8 + Q4KX8_DMIN + 2 * r, plain + 2, 2);
    for (int k = 0; k < 12; k++) {
        K_MOVE(x8 + Q4KX8_SCALES + 8 * k + r, plain + Q4K_SCALES + k, 1);
    }
    for (int p = 0; p < 8; p++) {
        for (int c = 0; c < 4; c++) {
            K_MOVE(x8 + KX8_QS(five) + 256 * c + 32 * p + 4 * r, plain + K_QS(five) + 32 * c + 4 * p, 4);
        }
        if (five) {
            K_MOVE(x8 + Q5KX8_QH + 32 * p + 4 * r, plain + Q5K_QH + 4 * p, 4);
        }
    }
#undef K_MOVE
}

static void interleave_q45_K(int five, const uint8_t *rows, size_t row_bytes, int n, uint8_t *out) {
    for (int b = 0; b < n / 256; b++) {
        for (int r = 0; r < 8; r++) {
            q45_K_row_x8(five, 1, out + (size_t)b * KX8_BYTES(five), r,
                         (uint8_t *)(rows + (size_t)r * row_bytes + (size_t)b * K_BYTES(five)));
        }
    }
}

static void deinterleave_q45_K(int five, const uint8_t *w, int n, uint8_t *rows, size_t row_bytes) {
    for (int b = 0; b < n / 256; b++) {
        for (int r = 0; r < 8; r++) {
            q45_K_row_x8(five, 0, (uint8_t *)(w + (size_t)b * KX8_BYTES(five)), r,
                         rows + (size_t)r * row_bytes + (size_t)b * K_BYTES(five));
        }
    }
}

/* Q6_K (le_block_q6_Kx8): offsets in an interleaved and a plain block. */
#define Q6KX8_SCALES 16
#define Q6KX8_QL 144
#define Q6KX8_QH 1168
#define Q6K_QH 128
#define Q6K_SCALES 192
#define Q6K_D 208

/* Copies between a plain Q6_K block and row r of an interleaved one (to_x8: plain -> x8). */
static void q6_K_row_x8(int to_x8, uint8_t *x8, int r, uint8_t *plain) {
#define Q6K_MOVE(a, b, len) (to_x8 ? memcpy((a), (b), (len)) : memcpy((b), (a), (len)))
    Q6K_MOVE(x8 + 2 * r, plain + Q6K_D, 2);
    for (int k = 0; k < 16; k++) {
        Q6K_MOVE(x8 + Q6KX8_SCALES + 8 * k + r, plain + Q6K_SCALES + k, 1);
    }
    for (int p = 0; p < 8; p++) {
        for (int c = 0; c < 4; c++) {
            Q6K_MOVE(x8 + Q6KX8_QL + 256 * c + 32 * p + 4 * r, plain + 32 * c + 4 * p, 4);
        }
        for (int c = 0; c < 2; c++) {
            Q6K_MOVE(x8 + Q6KX8_QH + 256 * c + 32 * p + 4 * r, plain + Q6K_QH + 32 * c + 4 * p, 4);
        }
    }
#undef Q6K_MOVE
}

static void interleave_q6_K(const uint8_t *rows, size_t row_bytes, int n, uint8_t *out) {
    for (int b = 0; b < n / 256; b++) {
        for (int r = 0; r < 8; r++) {
            q6_K_row_x8(1, out + (size_t)b * sizeof(le_block_q6_Kx8), r,
                        (uint8_t *)(rows + (size_t)r * row_bytes + (size_t)b * sizeof(le_block_q6_K)));
        }
    }
}

static void deinterleave_q6_K(const uint8_t *w, int n, uint8_t *rows, size_t row_bytes) {
    for (int b = 0; b < n / 256; b++) {
        for (int r = 0; r < 8; r++) {
            q6_K_row_x8(0, (uint8_t *)(w + (size_t)b * sizeof(le_block_q6_Kx8)), r,
                        rows + (size_t)r * row_bytes + (size_t)b * sizeof(le_block_q6_K));
        }
    }
}

/* Row r's twelve packed scale bytes of an interleaved Q4_K block. */
static inline void q4_Kx8_scales(const uint8_t *x, int r, uint8_t q[12]) {
    for (int k = 0; k < 12; k++) {
        q[k] = x[Q4KX8_SCALES + 8 * k + r];
    }
}

/* Value v (0..31) of row r of an interleaved block, as the unsigned code the kernels use. */
static inline int x8_code(int five, const uint8_t *x, size_t bsize, int r, int v) {
    const int h = v / 16, c = (v % 16) / 4, i = v % 4;
    const uint8_t q = x[bsize - 128 + 32 * c + 4 * r + i];
    const int low = h ? q >> 4 : q & 0x0f;
    return five ? low | ((x[bsize - 160 + 4 * r + i] >> (4 * h + c)) & 1) << 4 : low;
}

void le_interleave_x8(int type, const uint8_t *rows, size_t row_bytes, int n, uint8_t *out) {
    int five, with_min;
    if (type == LE_TYPE_Q8_0) {
        interleave_q8_0(rows, row_bytes, n, out);
        return;
    }
    if (type == LE_TYPE_Q4_K || type == LE_TYPE_Q5_K) {
        interleave_q45_K(type == LE_TYPE_Q5_K, rows, row_bytes, n, out);
        return;
    }
    if (type == LE_TYPE_Q6_K) {
        interleave_q6_K(rows, row_bytes, n, out);
        return;
    }
    if (!x8_kind(type, &five, &with_min)) {
        return;
    }
    const size_t ps = plain_bytes(five, with_min), bsize = 8 * ps;
    for (int b = 0; b < n / 32; b++) {
        uint8_t *o = out + (size_t)b * bsize;
        if (five) {
            memset(o + bsize - 160, 0, 32);
        }
        for (int r = 0; r < 8; r++) {
            const uint8_t *x = rows + (size_t)r * row_bytes + (size_t)b * ps;
            memcpy(o + 2 * r, x, 2);
            if (with_min) {
                memcpy(o + 16 + 2 * r, x + 2, 2);
            }
            for (int c = 0; c < 4; c++) {
                memcpy(o + bsize - 128 + 32 * c + 4 * r, x + ps - 16 + 4 * c, 4);
            }
            if (five) {
                uint32_t qh;
                memcpy(&qh, x + 2 + 2 * with_min, sizeof qh);
                for (int v = 0; v < 32; v++) {
                    const int h = v / 16, c = (v % 16) / 4, i = v % 4;
                    o[bsize - 160 + 4 * r + i] |= (uint8_t)(((qh >> v) & 1) << (4 * h + c));
                }
            }
        }
    }
}

void le_deinterleave_x8(int type, const uint8_t *w, int n, uint8_t *rows, size_t row_bytes) {
    int five, with_min;
    if (type == LE_TYPE_Q8_0) {
        deinterleave_q8_0(w, n, rows, row_bytes);
        return;
    }
    if (type == LE_TYPE_Q4_K || type == LE_TYPE_Q5_K) {
        deinterleave_q45_K(type == LE_TYPE_Q5_K, w, n, rows, row_bytes);
        return;
    }
    if (type == LE_TYPE_Q6_K) {
        deinterleave_q6_K(w, n, rows, row_bytes);
        return;
    }
    if (!x8_kind(type, &five, &with_min)) {
        return;
    }
    const size_t ps = plain_bytes(five, with_min), bsize = 8 * ps;
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *x = w + (size_t)b * bsize;
        for (int r = 0; r < 8; r++) {
            uint8_t *o = rows + (size_t)r * row_bytes + (size_t)b * ps;
            memcpy(o, x + 2 * r, 2);
            if (with_min) {
                memcpy(o + 2, x + 16 + 2 * r, 2);
            }
            for (int c = 0; c < 4; c++) {
                memcpy(o + ps - 16 + 4 * c, x + bsize - 128 + 32 * c + 4 * r, 4);
            }
            if (five) {
                uint32_t qh = 0;
                for (int v = 0; v < 32; v++) {
                    const int h = v / 16, c = (v % 16) / 4, i = v % 4;
                    qh |= (uint32_t)((x[bsize - 160 + 4 * r + i] >> (4 * h + c)) & 1) << v;
                }
                memcpy(o + 2 + 2 * with_min, &qh, sizeof qh);
            }
        }
    }
}

/* The panel's code j (< 128) sits where the interleaved qs byte j does (low nibble; its high
 * nibble is code 128 + j), and qh byte j % 32 holds both fifth bits of that byte at bits c and
 * 4 + c (c = j / 32): one pass over the bytes, which the compiler vectorises. */
static inline __attribute__((always_inline)) void pack_x8_kind(int five, int with_min, const uint8_t *w, int n,
                                                               le_block_x8 *out) {
    const size_t bsize = 8 * plain_bytes(five, with_min);
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *x = w + (size_t)b * bsize, *qs = x + bsize - 128, *qh = x + bsize - 160;
        for (int r = 0; r < 8; r++) {
            const float d = f16_to_f32(get16(x + 2 * r));
            out[b].s[0][r] = out[b].s[1][r] = d;
            out[b].o[r] = with_min ? f16_to_f32(get16(x + 16 + 2 * r)) : (five ? -16.0f : -8.0f) * d;
        }
        for (int c = 0; c < 4; c++) {
            for (int k = 0; k < 32; k++) {
                const uint8_t q = qs[32 * c + k];
                const uint8_t lo5 = five ? (uint8_t)(((qh[k] >> c) & 1) << 4) : 0;
                const uint8_t hi5 = five ? (uint8_t)(((qh[k] >> (4 + c)) & 1) << 4) : 0;
                out[b].q[32 * c + k] = (int8_t)((q & 0x0f) | lo5);
                out[b].q[128 + 32 * c + k] = (int8_t)((q >> 4) | hi5);
            }
        }
    }
}

void le_pack_x8_interleaved(int type, const uint8_t *w, int n, le_block_x8 *out) {
    if (type == LE_TYPE_Q8_0) {
        for (int b = 0; b < n / 32; b++) {
            const uint8_t *x = w + (size_t)b * sizeof(le_block_q8_0x8);
            for (int r = 0; r < 8; r++) {
                out[b].s[0][r] = out[b].s[1][r] = f16_to_f32(get16(x + 2 * r));
                out[b].o[r] = 0.0f;
            }
            memcpy(out[b].q, x + 16, sizeof out[b].q);
        }
        return;
    }
    if (type == LE_TYPE_Q4_K || type == LE_TYPE_Q5_K) {
        /* Sub-block j's panel codes are the nibbles of qs[256 (j / 2) ..] in their order (low
         * for even j, high for odd), and Q5_K's bit j of qh[k]: one pass the compiler
         * vectorises, as the legacy kinds. */
        const int five = type == LE_TYPE_Q5_K;
        for (int b = 0; b < n / 256; b++) {
            const uint8_t *x = w + (size_t)b * KX8_BYTES(five);
            le_block_x8 *p = out + 8 * b;
            for (int r = 0; r < 8; r++) {
                uint8_t q[12];
                q4_Kx8_scales(x, r, q);
                const float d = f16_to_f32(get16(x + 2 * r)), dmin = f16_to_f32(get16(x + Q4KX8_DMIN + 2 * r));
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    scale_min_k4(j, q, &sc, &m);
                    p[j].s[0][r] = p[j].s[1][r] = d * (float)sc;
                    p[j].o[r] = -(dmin * (float)m);
                }
            }
            for (int c = 0; c < 4; c++) {
                const uint8_t *qs = x + KX8_QS(five) + 256 * c, *qh = x + Q5KX8_QH;
                for (int k = 0; k < 256; k++) {
                    const int lo5 = five ? ((qh[k] >> (2 * c)) & 1) << 4 : 0;
                    const int hi5 = five ? ((qh[k] >> (2 * c + 1)) & 1) << 4 : 0;
                    p[2 * c].q[k] = (int8_t)((qs[k] & 0x0f) | lo5);
                    p[2 * c + 1].q[k] = (int8_t)((qs[k] >> 4) | hi5);
                }
            }
        }
        return;
    }
    if (type == LE_TYPE_Q6_K) {
        /* Signed codes (code - 32), two scales a block, as block_codes; sub-block j's codes in
         * panel order are bytes of ql chunk 2h + (k & 1) and qh chunk h in theirs. */
        for (int b = 0; b < n / 256; b++) {
            const uint8_t *x = w + (size_t)b * sizeof(le_block_q6_Kx8);
            le_block_x8 *p = out + 8 * b;
            for (int r = 0; r < 8; r++) {
                const float d = f16_to_f32(get16(x + 2 * r));
                for (int j = 0; j < 8; j++) {
                    const int s0 = 8 * (j / 4) + 2 * (j % 4);
                    p[j].s[0][r] = d * (float)(int8_t)x[Q6KX8_SCALES + 8 * s0 + r];
                    p[j].s[1][r] = d * (float)(int8_t)x[Q6KX8_SCALES + 8 * (s0 + 1) + r];
                    p[j].o[r] = 0.0f;
                }
            }
            for (int j = 0; j < 8; j++) {
                const int h = j / 4, k = j % 4;
                const uint8_t *ql = x + Q6KX8_QL + 256 * (2 * h + (k & 1)), *qh = x + Q6KX8_QH + 256 * h;
                for (int i = 0; i < 256; i++) {
                    const int lo = k < 2 ? ql[i] & 0x0f : ql[i] >> 4;
                    p[j].q[i] = (int8_t)((lo | ((qh[i] >> (2 * k)) & 3) << 4) - 32);
                }
            }
        }
        return;
    }
    X8_DISPATCH(type, pack_x8_kind, w, n, out);
}

/* The scalar decode: the same sums as the SIMD drivers (integer code sums a block, scaled; the
 * offset or minimum through the activations' dsum). */
void le_gemv_x8_scalar(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                       size_t ldo) {
    int five, with_min;
    const int nb = n / 32;
    if (type == LE_TYPE_Q8_0) {
        for (int g = 0; g < ng; g++) {
            for (int t = 0; t < nt; t++) {
                float acc[8] = {0};
                for (int b = 0; b < nb; b++) {
                    const uint8_t *xb = w + ((size_t)g * nb + b) * sizeof(le_block_q8_0x8);
                    const le_block_q8_0x *y = a + (size_t)t * nb + b;
                    for (int r = 0; r < 8; r++) {
                        int s = 0;
                        for (int v = 0; v < 32; v++) {
                            s += (int8_t)xb[16 + 32 * (v / 4) + 4 * r + v % 4] * y->qs[v];
                        }
                        acc[r] += f16_to_f32(get16(xb + 2 * r)) * y->d * (float)s;
                    }
                }
                memcpy(out + (size_t)t * ldo + 8 * g, acc, sizeof acc);
            }
        }
        return;
    }
    if (type == LE_TYPE_Q4_K || type == LE_TYPE_Q5_K || type == LE_TYPE_Q6_K) {
        /* The K kinds through their plain form: each super-block back to eight plain blocks,
         * then the tail rows' dot (block_codes), so this reference shares no decoding with the
         * SIMD kernels, which read the interleaved bytes. */
        const size_t plain = type == LE_TYPE_Q6_K ? sizeof(le_block_q6_K) : K_BYTES(type == LE_TYPE_Q5_K);
        const int nsb = n / 256;
        uint8_t rows[8 * sizeof(le_block_q6_K)];
        for (int g = 0; g < ng; g++) {
            for (int t = 0; t < nt; t++) {
                float acc[8] = {0};
                for (int b = 0; b < nsb; b++) {
                    le_deinterleave_x8(type, w + ((size_t)g * nsb + b) * 8 * plain, 256, rows, plain);
                    for (int r = 0; r < 8; r++) {
                        acc[r] += le_vec_dot_legacy_q8_0x_scalar(type, 256, rows + r * plain, a + (size_t)t * nb + 8 * b);
                    }
                }
                memcpy(out + (size_t)t * ldo + 8 * g, acc, sizeof acc);
            }
        }
        return;
    }
    if (!x8_kind(type, &five, &with_min)) {
        return;
    }
    const size_t bsize = 8 * plain_bytes(five, with_min);
    const float offset = with_min ? -1.0f : (five ? 16.0f : 8.0f);
    for (int g = 0; g < ng; g++) {
        for (int t = 0; t < nt; t++) {
            float acc[8] = {0}, off[8] = {0};
            for (int b = 0; b < nb; b++) {
                const uint8_t *x = w + ((size_t)g * nb + b) * bsize;
                const le_block_q8_0x *y = a + (size_t)t * nb + b;
                for (int r = 0; r < 8; r++) {
                    int s = 0;
                    for (int v = 0; v < 32; v++) {
                        s += x8_code(five, x, bsize, r, v) * y->qs[v];
                    }
                    const float d = f16_to_f32(get16(x + 2 * r));
                    acc[r] += d * y->d * (float)s;
                    off[r] += (with_min ? f16_to_f32(get16(x + 16 + 2 * r)) : d) * y->dsum;
                }
            }
            for (int r = 0; r < 8; r++) {
                out[(size_t)t * ldo + 8 * g + r] = acc[r] - offset * off[r];
            }
        }
    }
}

float le_vec_dot_legacy_q8_0x_scalar(int type, int n, const uint8_t *w, const le_block_q8_0x *a) {
    int five, with_min;
    if (type == LE_TYPE_Q8_0) {
        float sum = 0.0f;
        for (int b = 0; b < n / 32; b++) {
            const uint8_t *x = w + (size_t)b * sizeof(le_block_q8_0);
            int isum = 0;
            for (int j = 0; j < 32; j++) {
                isum += (int8_t)x[2 + j] * a[b].qs[j];
            }
            sum += (float)isum * (f16_to_f32(get16(x)) * a[b].d);
        }
        return sum;
    }
    if (type == LE_TYPE_Q4_K || type == LE_TYPE_Q5_K || type == LE_TYPE_Q6_K) {
        /* w = s[l / 16] * q[l] + o per value (block_codes); o meets the block's dsum. */
        float sum = 0.0f;
        for (int b = 0; b < n / 32; b++) {
            int8_t q[32];
            float sc[2], o;
            block_codes(type, w, b, q, sc, &o);
            int isum[2] = {0, 0};
            for (int l = 0; l < 32; l++) {
                isum[l / 16] += q[l] * a[b].qs[l];
            }
            sum += a[b].d * (sc[0] * (float)isum[0] + sc[1] * (float)isum[1]) + o * a[b].dsum;
        }
        return sum;
    }
    if (!x8_kind(type, &five, &with_min)) {
        return 0.0f;
    }
    const size_t ps = plain_bytes(five, with_min);
    float sum = 0.0f, off = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *x = w + (size_t)b * ps, *qs = x + ps - 16;
        uint32_t qh = 0;
        if (five) {
            memcpy(&qh, x + 2 + 2 * with_min, sizeof qh);
        }
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            isum += ((qs[j] & 0x0f) | ((qh >> j) & 1) << 4) * a[b].qs[j] +
                    ((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) * a[b].qs[j + 16];
        }
        const float dw = f16_to_f32(get16(x));
        sum += (float)isum * (dw * a[b].d);
        off += (with_min ? f16_to_f32(get16(x + 2)) : dw) * a[b].dsum;
    }
    return with_min ? sum + off : sum - (five ? 16.0f : 8.0f) * off;
}
