/* One attention head: softmax(q . K^T * scale) V over n_kv positions, keys and values read in
 * place from the cache (f32, or f16 bits converted as they are read), the softmax computed online
 * a block of positions at a time so no score row is stored. Compiled three times by build.rs:
 * portable (le_attend_head_scalar), with AVX2+FMA+F16C (-DLE_ATTN_AVX2) and for AArch64 NEON
 * (-DLE_ATTN_NEON); the AVX2 source again with AVX-512F (-DLE_ATTN_AVX512) for 8-row tiles. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "llava_kernels.h"

#include "half.h"

/* Positions per block: their scores sit in a small stack array. */
#define BLOCK 32
/* The largest head the kernels take (stack accumulator). */
#define MAX_HEAD_DIM 256
/* Positions a row of pack_kt's transposed key blocks holds: one vector of scores in the tile. */
#ifdef LE_ATTN_AVX512
#define KT_WIDTH 16
#else
#define KT_WIDTH 8
#endif

#if defined(LE_ATTN_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#include <immintrin.h>
#ifdef LE_ATTN_AVX512
/* This build exports only its row tiles; the AVX2 build exports the one-row kernel. */
#define ATTEND_FN attend_head_avx512
#define ATTEND_SCOPE static
#else
#define ATTEND_FN le_attend_head_avx2
#endif
#include "vexp.h"

#include "hsum_x86.h"
#include "transpose_x86.h"

static inline __m256 load8(const void *p, int f16, size_t i) {
    if (f16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    }
    return _mm256_loadu_ps((const float *)p + i);
}

static inline float load1(const void *p, int f16, size_t i) {
    return f16 ? _cvtsh_ss(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* hd values from p + off as f32, eight at a time. */
static inline void row_f32(const void *p, int f16, size_t off, int hd, float *out) {
    int d = 0;
    for (; d + 8 <= hd; d += 8) {
        _mm256_storeu_ps(out + d, load8(p, f16, off + d));
    }
    for (; d < hd; d++) {
        out[d] = load1(p, f16, off + d);
    }
}

/* blk[d * KT_WIDTH + j] = rows[j][d]: 8x8 transposes in registers, the rest element by element. */
static inline void transpose8(const float (*rows)[MAX_HEAD_DIM], int hd, float *blk) {
    int d = 0;
    for (; d + 8 <= hd; d += 8) {
        __m256 r[8];
        for (int j = 0; j < 8; j++) {
            r[j] = _mm256_loadu_ps(rows[j] + d);
        }
        le_transpose8x8_ps(r);
        for (int i = 0; i < 8; i++) {
            _mm256_storeu_ps(blk + (size_t)(d + i) * KT_WIDTH, r[i]);
        }
    }
    for (; d < hd; d++) {
        for (int j = 0; j < 8; j++) {
            blk[(size_t)d * KT_WIDTH + j] = rows[j][d];
        }
    }
}

static float dot_qk(const float *q, const void *k, int f16, size_t off, int hd) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= hd; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(k, f16, off + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), load8(k, f16, off + i + 8), a1);
    }
    for (; i + 8 <= hd; i += 8) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load8(k, f16, off + i), a0);
    }
    float s = hsum8(_mm256_add_ps(a0, a1));
    for (; i < hd; i++) {
        s += q[i] * load1(k, f16, off + i);
    }
    return s;
}

static void exp_block(float *s, int n, float m) {
    int j = 0;
    const __m256 vm = _mm256_set1_ps(m);
    for (; j + 8 <= n; j += 8) {
        _mm256_storeu_ps(s + j, le_exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm)));
    }
    for (; j < n; j++) {
        s[j] = expf(s[j] - m);
    }
}

/* o = o * c + sum_j w[j] v[j]. Up to 64 dimensions of o stay in registers while the keys' rows
 * stream past (one broadcast of w[j] serves eight FMAs), rather than re-reading every row for
 * each 8 dimensions. */
static void accumulate_v(float *o, float c, const float *w, int n, const void *v, int f16, size_t stride, size_t off,
                         int hd) {
    int i0 = 0;
    for (; i0 + 64 <= hd; i0 += 64) {
        __m256 acc[8];
        for (int k = 0; k < 8; k++) {
            acc[k] = _mm256_mul_ps(_mm256_loadu_ps(o + i0 + 8 * k), _mm256_set1_ps(c));
        }
        for (int j = 0; j < n; j++) {
            const __m256 wj = _mm256_set1_ps(w[j]);
            const size_t at = off + (size_t)j * stride + i0;
            for (int k = 0; k < 8; k++) {
                acc[k] = _mm256_fmadd_ps(wj, load8(v, f16, at + 8 * k), acc[k]);
            }
        }
        for (int k = 0; k < 8; k++) {
            _mm256_storeu_ps(o + i0 + 8 * k, acc[k]);
        }
    }
    for (; i0 + 8 <= hd; i0 += 8) {
        __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(o + i0), _mm256_set1_ps(c));
        for (int j = 0; j < n; j++) {
            acc = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), load8(v, f16, off + (size_t)j * stride + i0), acc);
        }
        _mm256_storeu_ps(o + i0, acc);
    }
    for (int i = i0; i < hd; i++) {
        float acc = o[i] * c;
        for (int j = 0; j < n; j++) {
            acc += w[j] * load1(v, f16, off + (size_t)j * stride + i);
        }
        o[i] = acc;
    }
}

#elif defined(LE_ATTN_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define ATTEND_FN le_attend_head_neon
#include "vexp.h"

static inline float32x4_t load4(const void *p, int f16, size_t i) {
    if (f16) {
        return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p + i)));
    }
    return vld1q_f32((const float *)p + i);
}

static inline float load1(const void *p, int f16, size_t i) {
    return f16 ? f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* hd values from p + off as f32, four at a time. */
static inline void row_f32(const void *p, int f16, size_t off, int hd, float *out) {
    int d = 0;
    for (; d + 4 <= hd; d += 4) {
        vst1q_f32(out + d, load4(p, f16, off + d));
    }
    for (; d < hd; d++) {
        out[d] = load1(p, f16, off + d);
    }
}

/* blk[d * 8 + j] = rows[j][d]: 4x4 transposes in registers (two per four dimensions). */
static inline void transpose8(const float (*rows)[MAX_HEAD_DIM], int hd, float *blk) {
    int d = 0;
    for (; d + 4 <= hd; d += 4) {
        for (int h = 0; h < 2; h++) {
            const float32x4_t r0 = vld1q_f32(rows[4 * h] + d), r1 = vld1q_f32(rows[4 * h + 1] + d);
            const float32x4_t r2 = vld1q_f32(rows[4 * h + 2] + d), r3 = vld1q_f32(rows[4 * h + 3] + d);
            const float32x4x2_t a = vtrnq_f32(r0, r1), b = vtrnq_f32(r2, r3);
            vst1q_f32(blk + (size_t)d * 8 + 4 * h, vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0])));
            vst1q_f32(blk + (size_t)(d + 1) * 8 + 4 * h, vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1])));
            vst1q_f32(blk + (size_t)(d + 2) * 8 + 4 * h, vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0])));
            vst1q_f32(blk + (size_t)(d + 3) * 8 + 4 * h, vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1])));
        }
    }
    for (; d < hd; d++) {
        for (int j = 0; j < 8; j++) {
            blk[(size_t)d * 8 + j] = rows[j][d];
        }
    }
}

static float dot_qk(const float *q, const void *k, int f16, size_t off, int hd) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= hd; i += 8) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), load4(k, f16, off + i));
        a1 = vfmaq_f32(a1, vld1q_f32(q + i + 4), load4(k, f16, off + i + 4));
    }
    for (; i + 4 <= hd; i += 4) {
        a0 = vfmaq_f32(a0, vld1q_f32(q + i), load4(k, f16, off + i));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < hd; i++) {
        s += q[i] * load1(k, f16, off + i);
    }
    return s;
}

static void exp_block(float *s, int n, float m) {
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - m);
    }
}

static void accumulate_v(float *o, float c, const float *w, int n, const void *v, int f16, size_t stride, size_t off,
                         int hd) {
    int i = 0;
    for (; i + 4 <= hd; i += 4) {
        float32x4_t acc = vmulq_n_f32(vld1q_f32(o + i), c);
        for (int j = 0; j < n; j++) {
            acc = vfmaq_n_f32(acc, load4(v, f16, off + (size_t)j * stride + i), w[j]);
        }
        vst1q_f32(o + i, acc);
    }
    for (; i < hd; i++) {
        float acc = o[i] * c;
        for (int j = 0; j < n; j++) {
            acc += w[j] * load1(v, f16, off + (size_t)j * stride + i);
        }
        o[i] = acc;
    }
}

#elif !defined(LE_ATTN_AVX2) && !defined(LE_ATTN_NEON)
#define ATTEND_FN le_attend_head_scalar

static inline float load1(const void *p, int f16, size_t i) {
    return f16 ? f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static float dot_qk(const float *q, const void *k, int f16, size_t off, int hd) {
    float s = 0.0f;
    for (int i = 0; i < hd; i++) {
        s += q[i] * load1(k, f16, off + i);
    }
    return s;
}

static void exp_block(float *s, int n, float m) {
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - m);
    }
}

static void accumulate_v(float *o, float c, const float *w, int n, const void *v, int f16, size_t stride, size_t off,
                         int hd) {
    for (int i = 0; i < hd; i++) {
        float acc = o[i] * c;
        for (int j = 0; j < n; j++) {
            acc += w[j] * load1(v, f16, off + (size_t)j * stride + i);
        }
        o[i] = acc;
    }
}
#endif

#ifdef ATTEND_FN
#ifndef ATTEND_SCOPE
#define ATTEND_SCOPE
#endif
ATTEND_SCOPE int ATTEND_FN(int n_kv, int hd, const float *q, const void *k, const void *v, int f16, size_t stride, float scale,
              float *out) {
    if (hd <= 0 || hd > MAX_HEAD_DIM) {
        return -1;
    }
    float o[MAX_HEAD_DIM];
    memset(o, 0, (size_t)hd * sizeof(float));
    float m = -INFINITY, l = 0.0f;
    for (int p0 = 0; p0 < n_kv; p0 += BLOCK) {
        const int nb = n_kv - p0 < BLOCK ? n_kv - p0 : BLOCK;
        float s[BLOCK];
        float bm = -INFINITY;
        for (int j = 0; j < nb; j++) {
            s[j] = dot_qk(q, k, f16, (size_t)(p0 + j) * stride, hd) * scale;
            bm = s[j] > bm ? s[j] : bm;
        }
        /* A new maximum rescales what was accumulated under the old one (c = 0 at the start). */
        const float nm = bm > m ? bm : m;
        const float c = m == -INFINITY ? 0.0f : expf(m - nm);
        m = nm;
        exp_block(s, nb, m);
        float bl = 0.0f;
        for (int j = 0; j < nb; j++) {
            bl += s[j];
        }
        l = l * c + bl;
        accumulate_v(o, c, s, nb, v, f16, stride, (size_t)p0 * stride, hd);
    }
    const float inv = n_kv > 0 ? 1.0f / l : 0.0f;
    for (int i = 0; i < hd; i++) {
        out[i] = o[i] * inv;
    }
    return 0;
}
#endif

/* Query rows of one head at a time. Row i sees n_kv positions, or with `causal` the first
 * kv0 + i + 1. */
static inline int row_kv(int i, int n_kv, int causal, int kv0) {
    return causal ? kv0 + i + 1 : n_kv;
}

#if defined(LE_ATTN_AVX2) || defined(LE_ATTN_NEON)
/* Keys transposed into blocks of KT_WIDTH positions, kt[b][d][KT_WIDTH] (f32), so a query value
 * broadcast against one load advances a vector of scores: the QK^T part is then a small GEMM
 * with no horizontal sums. Positions from n up to the next multiple of 16 are zero. */
static void pack_kt(int n, int hd, const void *k, int f16, size_t stride, float *kt) {
    float rows[8][MAX_HEAD_DIM];
    const int halves = KT_WIDTH / 8; /* eight-position transposes a block */
    for (int b = 0; b < (n + 15) / 16 * 2; b++) {
        for (int j = 0; j < 8; j++) {
            const int p = 8 * b + j;
            if (p < n) {
                row_f32(k, f16, (size_t)p * stride, hd, rows[j]);
            } else {
                memset(rows[j], 0, (size_t)hd * sizeof(float));
            }
        }
        transpose8((const float (*)[MAX_HEAD_DIM])rows, hd,
                   kt + (size_t)(b / halves) * hd * KT_WIDTH + (size_t)(b % halves) * 8);
    }
}

/* A tile's rows start with no mass (m = -inf, l = 0, o = 0); the positions it visits are the
 * most any row sees. */
static inline int tile_begin(int rows, int hd, const int *lim, float *m, float *l, float *const *o) {
    int n = 0;
    for (int i = 0; i < rows; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        memset(o[i], 0, (size_t)hd * sizeof(float));
        n = lim[i] > n ? lim[i] : n;
    }
    return n;
}

/* Each row's weighted sum divided by its softmax denominator. */
static inline void tile_end(int rows, int hd, const float *l, float *const *o) {
    for (int i = 0; i < rows; i++) {
        const float inv = 1.0f / l[i];
        for (int d = 0; d < hd; d++) {
            o[i][d] *= inv;
        }
    }
}

/* The values every row sees, as f32 rows of hd back to back. In place the rows lie a head
 * stride apart (several KiB), so the sixteen a tile reads fall into the same few L1 sets and
 * evict each other; packed, they are one contiguous run. */
static void pack_v(int n, int hd, const void *v, int f16, size_t stride, float *vp) {
    for (int p = 0; p < n; p++) {
        row_f32(v, f16, (size_t)p * stride, hd, vp + (size_t)p * hd);
    }
}

/* A tile's keys of positions p0..p0 + keys (p0 a multiple of 16): in the packed kt, or, given
 * the cache itself (k_raw), transposed now into kblk (hd * keys floats), which stays in L1. A
 * call of one tile (decode's grouped heads) does this instead of packing the whole cache: that
 * wrote and re-read 2 MiB a key/value head at 4096 positions, which took longer than the tile. */
static inline const float *block_keys(const float *kt, const void *k_raw, const void *v_raw, int f16, size_t stride,
                                      int hd, int p0, int n, int keys, float *kblk) {
    if (!k_raw) {
        return kt + (size_t)p0 * hd;
    }
    /* The next block's key and value rows, requested now: in decode the cache comes from DRAM
     * (a token streams hundreds of MB of weights through the caches between two visits to a
     * layer), and rows a head stride apart are not one stream to the hardware prefetcher. */
    const int esz = f16 ? 2 : 4;
    const int next_end = p0 + 2 * keys < n ? p0 + 2 * keys : n;
    for (int p = p0 + keys; p < next_end; p++) {
        const char *kr = (const char *)k_raw + (size_t)p * stride * esz;
        const char *vr = (const char *)v_raw + (size_t)p * stride * esz;
        for (int b = 0; b < hd * esz; b += 64) {
            __builtin_prefetch(kr + b, 0, 2);
            __builtin_prefetch(vr + b, 0, 2);
        }
    }
    const size_t off = (size_t)p0 * stride;
    const void *at = f16 ? (const void *)((const uint16_t *)k_raw + off) : (const void *)((const float *)k_raw + off);
    pack_kt(n - p0 < keys ? n - p0 : keys, hd, at, f16, stride, kblk);
    return kblk;
}

#endif

#if defined(LE_ATTN_AVX2) && (defined(__x86_64__) || defined(_M_X64))
#ifdef LE_ATTN_AVX512
#define ROWS_FN le_attend_rows_avx512
#define KEYS 32  /* positions per block: two zmm of scores a row */
#define QROWS 8 /* query rows per tile */
#define PAD_ROWS 4 /* fewest rows a call runs as a tile (the rest of eight are copies) */
#else
#define ROWS_FN le_attend_rows_avx2
#define KEYS 16 /* two ymm of scores a row */
#define QROWS 4
#define PAD_ROWS 2
#endif

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

#ifndef LE_ATTN_AVX512
/* Four query rows against every key block they see: scores of 16 positions in registers,
 * online softmax per row, then the 16 value rows accumulated into the four outputs 16
 * dimensions at a time (each value load serves four rows). */
static void tile4(int hd, const float *const qr[QROWS], const int lim[QROWS], const float *kt, const void *v, int f16,
                  size_t stride, float scale, float *const o[QROWS], const void *k_raw) {
    float m[QROWS], l[QROWS], kblk[MAX_HEAD_DIM * KEYS];
    const int n = tile_begin(QROWS, hd, lim, m, l, o);
    float p[QROWS][KEYS];
    for (int p0 = 0; p0 < n; p0 += KEYS) {
        const float *k0 = block_keys(kt, k_raw, v, f16, stride, hd, p0, n, KEYS, kblk), *k1 = k0 + (size_t)hd * 8;
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
        for (int d = 0; d < hd; d++) {
            const __m256 a = _mm256_loadu_ps(k0 + 8 * d), b = _mm256_loadu_ps(k1 + 8 * d);
            __m256 x = _mm256_broadcast_ss(qr[0] + d);
            s00 = _mm256_fmadd_ps(x, a, s00);
            s01 = _mm256_fmadd_ps(x, b, s01);
            x = _mm256_broadcast_ss(qr[1] + d);
            s10 = _mm256_fmadd_ps(x, a, s10);
            s11 = _mm256_fmadd_ps(x, b, s11);
            x = _mm256_broadcast_ss(qr[2] + d);
            s20 = _mm256_fmadd_ps(x, a, s20);
            s21 = _mm256_fmadd_ps(x, b, s21);
            x = _mm256_broadcast_ss(qr[3] + d);
            s30 = _mm256_fmadd_ps(x, a, s30);
            s31 = _mm256_fmadd_ps(x, b, s31);
        }
        const __m256 sc[QROWS][2] = {{s00, s01}, {s10, s11}, {s20, s21}, {s30, s31}};
        const int nk = n - p0 < KEYS ? n - p0 : KEYS;
        float c[QROWS];
        for (int i = 0; i < QROWS; i++) {
            /* Scores past the row's limit (causal mask, or the end of the keys) are -inf. */
            const __m256 idx0 = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), idx1 = _mm256_add_ps(idx0, _mm256_set1_ps(8));
            const __m256 room = _mm256_set1_ps((float)(lim[i] - p0));
            const __m256 ninf = _mm256_set1_ps(-INFINITY);
            const __m256 x0 = _mm256_blendv_ps(ninf, _mm256_mul_ps(sc[i][0], _mm256_set1_ps(scale)),
                                               _mm256_cmp_ps(idx0, room, _CMP_LT_OQ));
            const __m256 x1 = _mm256_blendv_ps(ninf, _mm256_mul_ps(sc[i][1], _mm256_set1_ps(scale)),
                                               _mm256_cmp_ps(idx1, room, _CMP_LT_OQ));
            const float bm = hmax8(_mm256_max_ps(x0, x1));
            const float nm = bm > m[i] ? bm : m[i];
            /* Block 0 always holds position 0, which every row sees: nm is finite from then on. */
            c[i] = m[i] == -INFINITY ? 0.0f : expf(m[i] - nm);
            m[i] = nm;
            const __m256 e0 = le_exp_neg_avx2(_mm256_sub_ps(x0, _mm256_set1_ps(nm)));
            const __m256 e1 = le_exp_neg_avx2(_mm256_sub_ps(x1, _mm256_set1_ps(nm)));
            _mm256_storeu_ps(p[i], e0);
            _mm256_storeu_ps(p[i] + 8, e1);
            l[i] = l[i] * c[i] + hsum8(_mm256_add_ps(e0, e1));
        }
        /* o_i = o_i * c_i + sum_j p_ij v_j, 16 dimensions at a time, then 8, then single. */
        int d0 = 0;
        for (; d0 + 16 <= hd; d0 += 16) {
            __m256 acc[QROWS][2];
            for (int i = 0; i < QROWS; i++) {
                acc[i][0] = _mm256_mul_ps(_mm256_loadu_ps(o[i] + d0), _mm256_set1_ps(c[i]));
                acc[i][1] = _mm256_mul_ps(_mm256_loadu_ps(o[i] + d0 + 8), _mm256_set1_ps(c[i]));
            }
            for (int j = 0; j < nk; j++) {
                const size_t at = (size_t)(p0 + j) * stride + d0;
                const __m256 va = load8(v, f16, at), vb = load8(v, f16, at + 8);
                for (int i = 0; i < QROWS; i++) {
                    const __m256 w = _mm256_broadcast_ss(&p[i][j]);
                    acc[i][0] = _mm256_fmadd_ps(w, va, acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(w, vb, acc[i][1]);
                }
            }
            for (int i = 0; i < QROWS; i++) {
                _mm256_storeu_ps(o[i] + d0, acc[i][0]);
                _mm256_storeu_ps(o[i] + d0 + 8, acc[i][1]);
            }
        }
        for (; d0 + 8 <= hd; d0 += 8) {
            __m256 acc[QROWS];
            for (int i = 0; i < QROWS; i++) {
                acc[i] = _mm256_mul_ps(_mm256_loadu_ps(o[i] + d0), _mm256_set1_ps(c[i]));
            }
            for (int j = 0; j < nk; j++) {
                const __m256 va = load8(v, f16, (size_t)(p0 + j) * stride + d0);
                for (int i = 0; i < QROWS; i++) {
                    acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(&p[i][j]), va, acc[i]);
                }
            }
            for (int i = 0; i < QROWS; i++) {
                _mm256_storeu_ps(o[i] + d0, acc[i]);
            }
        }
        for (; d0 < hd; d0++) {
            for (int i = 0; i < QROWS; i++) {
                float acc = o[i][d0] * c[i];
                for (int j = 0; j < nk; j++) {
                    acc += p[i][j] * load1(v, f16, (size_t)(p0 + j) * stride + d0);
                }
                o[i][d0] = acc;
            }
        }
    }
    tile_end(QROWS, hd, l, o);
}

#else
static inline __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* One query value of row r against the key vector(s) of a block: the scores' FMAs. */
#define QK1(r) a##r = _mm512_fmadd_ps(_mm512_set1_ps(qr[r][d]), ka, a##r)
#define QK2(r)                                                                                                         \
    do {                                                                                                               \
        const __m512 x = _mm512_set1_ps(qr[r][d]);                                                                     \
        a##r = _mm512_fmadd_ps(x, ka, a##r);                                                                           \
        b##r = _mm512_fmadd_ps(x, kb, b##r);                                                                           \
    } while (0)

/* Score rows of the AVX-512 tile lie n rounded up to 32, plus 16, floats apart: never a
 * multiple of 4 KiB, so the eight rows' entries for one position do not all fall into one L1
 * set. */
static inline size_t score_stride(int n) {
    return (size_t)(n + KEYS - 1) / KEYS * KEYS + 16;
}

/* o_i[d0..d0 + 16 * nv) = (sum_j p_ij v_j) / l_i for the tile's rows over positions 0..n, lanes
 * past `left` masked off; each value load serves eight rows. */
static inline __attribute__((always_inline)) void pv_stripe(int nv, int left, int hd, int n, const float *vp,
                                                            const float *p, size_t ps, const float *inv_l,
                                                            float *const o[QROWS], int d0, const uint16_t *v16,
                                                            size_t stride) {
    const __mmask16 ma = lanes(left), mb = lanes(left - 16);
    __m512 acc[QROWS][2];
    for (int i = 0; i < QROWS; i++) {
        acc[i][0] = _mm512_setzero_ps();
        acc[i][1] = _mm512_setzero_ps();
    }
    for (int j = 0; j < n; j++) {
        __m512 va, vb;
        if (v16) {
            /* f16 values in place (whole stripes only: the caller checks hd % 32 == 0). */
            const uint16_t *vr = v16 + (size_t)j * stride + d0;
            va = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)vr));
            vb = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vr + 16)));
        } else {
            const float *vr = vp + (size_t)j * hd + d0;
            va = _mm512_maskz_loadu_ps(ma, vr);
            vb = nv == 2 ? _mm512_maskz_loadu_ps(mb, vr + 16) : va;
        }
        for (int i = 0; i < QROWS; i++) {
            const __m512 w = _mm512_set1_ps(p[(size_t)i * ps + j]);
            acc[i][0] = _mm512_fmadd_ps(w, va, acc[i][0]);
            if (nv == 2) {
                acc[i][1] = _mm512_fmadd_ps(w, vb, acc[i][1]);
            }
        }
    }
    for (int i = 0; i < QROWS; i++) {
        const __m512 s = _mm512_set1_ps(inv_l[i]);
        _mm512_mask_storeu_ps(o[i] + d0, ma, _mm512_mul_ps(acc[i][0], s));
        if (nv == 2) {
            _mm512_mask_storeu_ps(o[i] + d0 + 16, mb, _mm512_mul_ps(acc[i][1], s));
        }
    }
}

/* Eight query rows against every position they see, on 512-bit registers, softmax in two plain
 * passes over whole score rows kept in `p` (QROWS * score_stride(n) floats of scratch). First
 * the scores, 32 positions at a time: two zmm a row (sixteen accumulators while d runs, each
 * broadcast query value serving two FMAs). Then each row's max, exponentials and sum: one max
 * and one sum a row, where an online softmax pays them, and a rescale of the outputs, per
 * block (a CLIP-L tile: 134 -> 166 GFLOP/s). Then the values (packed f32, hd apart) go into
 * the eight rows' outputs 32 dimensions at a time, the sums in registers over every position,
 * then a last stripe of 16 or 32 under lane masks. Rows past their limit (a causal mask) see
 * -inf scores, so zero weights. */
static void tile8(int hd, const float *const qr[QROWS], const int lim[QROWS], const float *kt, const float *vp,
                  float scale, float *const o[QROWS], float *p, const void *k_raw, const uint16_t *v16,
                  size_t stride) {
    /* With k_raw/v16 (an f16 cache, one tile a call) keys and values are read in place. */
    float kblk[MAX_HEAD_DIM * KEYS];
    int n = 0;
    for (int i = 0; i < QROWS; i++) {
        n = lim[i] > n ? lim[i] : n;
    }
    const size_t ps = score_stride(n);
    const __m512 ninf = _mm512_set1_ps(-INFINITY), vscale = _mm512_set1_ps(scale);
    const int n_pad = (n + KEYS - 1) / KEYS * KEYS;
    for (int p0 = 0; p0 < n; p0 += KEYS) {
        const float *k0 = block_keys(kt, k_raw, v16, 1, stride, hd, p0, n, KEYS, kblk), *k1 = k0 + (size_t)hd * 16;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0, b6 = a0, b7 = a0;
        if (n - p0 > 16) {
            for (int d = 0; d < hd; d++) {
                const __m512 ka = _mm512_loadu_ps(k0 + (size_t)d * 16), kb = _mm512_loadu_ps(k1 + (size_t)d * 16);
                QK2(0);
                QK2(1);
                QK2(2);
                QK2(3);
                QK2(4);
                QK2(5);
                QK2(6);
                QK2(7);
            }
        } else {
            for (int d = 0; d < hd; d++) {
                const __m512 ka = _mm512_loadu_ps(k0 + (size_t)d * 16);
                QK1(0);
                QK1(1);
                QK1(2);
                QK1(3);
                QK1(4);
                QK1(5);
                QK1(6);
                QK1(7);
            }
        }
        const __m512 sa[QROWS] = {a0, a1, a2, a3, a4, a5, a6, a7}, sb[QROWS] = {b0, b1, b2, b3, b4, b5, b6, b7};
        for (int i = 0; i < QROWS; i++) {
            /* Scores past the row's limit (causal mask, or the end of the keys) are -inf. */
            const int room = lim[i] - p0;
            _mm512_storeu_ps(p + (size_t)i * ps + p0, _mm512_mask_mul_ps(ninf, lanes(room), sa[i], vscale));
            _mm512_storeu_ps(p + (size_t)i * ps + p0 + 16,
                            _mm512_mask_mul_ps(ninf, lanes(room - 16), sb[i], vscale));
        }
    }
    float inv_l[QROWS];
    for (int i = 0; i < QROWS; i++) {
        float *row = p + (size_t)i * ps;
        __m512 mx = ninf;
        for (int j = 0; j < n_pad; j += 16) {
            mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + j));
        }
        /* Position 0 is seen by every row, so the max is finite. */
        const __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < n_pad; j += 16) {
            const __m512 e = le_exp_neg_avx512(_mm512_sub_ps(_mm512_loadu_ps(row + j), vm));
            _mm512_storeu_ps(row + j, e);
            sum = _mm512_add_ps(sum, e);
        }
        inv_l[i] = 1.0f / _mm512_reduce_add_ps(sum);
    }
    int d0 = 0;
    for (; d0 + 32 <= hd; d0 += 32) {
        pv_stripe(2, 32, hd, n, vp, p, ps, inv_l, o, d0, v16, stride);
    }
    if (hd - d0 > 16) {
        pv_stripe(2, hd - d0, hd, n, vp, p, ps, inv_l, o, d0, NULL, 0);
    } else if (hd - d0 > 0) {
        pv_stripe(1, hd - d0, hd, n, vp, p, ps, inv_l, o, d0, NULL, 0);
    }
}

#define RUN_TILE(hd, qr, lim, kt, vp, scale, o, sp) tile8(hd, qr, lim, kt, vp, scale, o, sp, NULL, NULL, 0)
/* One tile a call from an f16 cache with whole 32-wide value stripes: read in place. */
#define IN_PLACE_OK(nq, hd, f16) ((nq) <= QROWS && (f16) && (hd) % 32 == 0)
#define RUN_TILE_IN_PLACE(hd, qr, lim, k, v, f16, stride, scale, o, sp)                                               \
    tile8(hd, qr, lim, NULL, NULL, scale, o, sp, k, (const uint16_t *)(v), stride)
#undef QK1
#undef QK2
#endif

#endif

#if defined(LE_ATTN_NEON) && defined(__aarch64__)
#define ROWS_FN le_attend_rows_neon
#define KEYS 16
#define QROWS 4
#define PAD_ROWS 2

/* The AVX2 tile's algorithm on NEON: four query rows against blocks of 16 positions, scores in
 * sixteen registers, online softmax, each value row shared by the four rows. */
static void tile4(int hd, const float *const qr[QROWS], const int lim[QROWS], const float *kt,
                       const void *v, int f16, size_t stride, float scale, float *const o[QROWS],
                       const void *k_raw) {
    float m[QROWS], l[QROWS], kblk[MAX_HEAD_DIM * KEYS];
    const int n = tile_begin(QROWS, hd, lim, m, l, o);
    float p[QROWS][KEYS];
    for (int p0 = 0; p0 < n; p0 += KEYS) {
        const float *k0 = block_keys(kt, k_raw, v, f16, stride, hd, p0, n, KEYS, kblk), *k1 = k0 + (size_t)hd * 8;
        float32x4_t s[QROWS][4];
        for (int i = 0; i < QROWS; i++) {
            for (int c = 0; c < 4; c++) {
                s[i][c] = vdupq_n_f32(0.0f);
            }
        }
        for (int d = 0; d < hd; d++) {
            const float32x4_t a0 = vld1q_f32(k0 + 8 * d), a1 = vld1q_f32(k0 + 8 * d + 4);
            const float32x4_t b0 = vld1q_f32(k1 + 8 * d), b1 = vld1q_f32(k1 + 8 * d + 4);
            for (int i = 0; i < QROWS; i++) {
                const float x = qr[i][d];
                s[i][0] = vfmaq_n_f32(s[i][0], a0, x);
                s[i][1] = vfmaq_n_f32(s[i][1], a1, x);
                s[i][2] = vfmaq_n_f32(s[i][2], b0, x);
                s[i][3] = vfmaq_n_f32(s[i][3], b1, x);
            }
        }
        const int nk = n - p0 < KEYS ? n - p0 : KEYS;
        float c[QROWS];
        for (int i = 0; i < QROWS; i++) {
            float32x4_t x[4];
            float32x4_t mx = vdupq_n_f32(-INFINITY);
            for (int q = 0; q < 4; q++) {
                /* Positions past the row's limit are -inf. */
                const float32x4_t idx = vaddq_f32(vdupq_n_f32((float)(4 * q)), (float32x4_t){0.0f, 1.0f, 2.0f, 3.0f});
                const uint32x4_t seen = vcltq_f32(idx, vdupq_n_f32((float)(lim[i] - p0)));
                x[q] = vbslq_f32(seen, vmulq_n_f32(s[i][q], scale), vdupq_n_f32(-INFINITY));
                mx = vmaxq_f32(mx, x[q]);
            }
            const float bm = vmaxvq_f32(mx);
            const float nm = bm > m[i] ? bm : m[i];
            c[i] = m[i] == -INFINITY ? 0.0f : expf(m[i] - nm);
            m[i] = nm;
            float32x4_t sum = vdupq_n_f32(0.0f);
            for (int q = 0; q < 4; q++) {
                const float32x4_t e = le_exp_neg_neon(vsubq_f32(x[q], vdupq_n_f32(nm)));
                vst1q_f32(p[i] + 4 * q, e);
                sum = vaddq_f32(sum, e);
            }
            l[i] = l[i] * c[i] + vaddvq_f32(sum);
        }
        int d0 = 0;
        for (; d0 + 8 <= hd; d0 += 8) {
            float32x4_t acc[QROWS][2];
            for (int i = 0; i < QROWS; i++) {
                acc[i][0] = vmulq_n_f32(vld1q_f32(o[i] + d0), c[i]);
                acc[i][1] = vmulq_n_f32(vld1q_f32(o[i] + d0 + 4), c[i]);
            }
            for (int j = 0; j < nk; j++) {
                const size_t at = (size_t)(p0 + j) * stride + d0;
                const float32x4_t va = load4(v, f16, at), vb = load4(v, f16, at + 4);
                for (int i = 0; i < QROWS; i++) {
                    acc[i][0] = vfmaq_n_f32(acc[i][0], va, p[i][j]);
                    acc[i][1] = vfmaq_n_f32(acc[i][1], vb, p[i][j]);
                }
            }
            for (int i = 0; i < QROWS; i++) {
                vst1q_f32(o[i] + d0, acc[i][0]);
                vst1q_f32(o[i] + d0 + 4, acc[i][1]);
            }
        }
        for (; d0 < hd; d0++) {
            for (int i = 0; i < QROWS; i++) {
                float acc = o[i][d0] * c[i];
                for (int j = 0; j < nk; j++) {
                    acc += p[i][j] * load1(v, f16, (size_t)(p0 + j) * stride + d0);
                }
                o[i][d0] = acc;
            }
        }
    }
    tile_end(QROWS, hd, l, o);
}

#endif

#if defined(QROWS) && QROWS == 4
/* The four-row tiles (AVX2, NEON) keep no score rows (flash attention); calls of up to two
 * tiles read the cache in place (values as they lie, keys a block at a time). */
#define RUN_TILE(hd, qr, lim, kt, vp, scale, o, sp)                                                                  \
    do {                                                                                                               \
        (void)(sp); /* the flash tile keeps no score rows */                                                           \
        tile4(hd, qr, lim, kt, vp, 0, (size_t)(hd), scale, o, NULL);                                                   \
    } while (0)
#define IN_PLACE_OK(nq, hd, f16) ((nq) <= 2 * QROWS)
#define RUN_TILE_IN_PLACE(hd, qr, lim, k, v, f16, stride, scale, o, sp)                                               \
    do {                                                                                                               \
        (void)(sp);                                                                                                    \
        tile4(hd, qr, lim, NULL, v, f16, stride, scale, o, k);                                                         \
    } while (0)
#endif

/* The tiled builds: whole tiles of QROWS rows, then a tail of at least PAD_ROWS as one more tile
 * (its last row repeated, the copies written to `spare`), the rest row by row. */
#ifdef ROWS_FN
static inline void tile_rows(int i, int nq, const float *q, size_t q_stride, float *out, size_t o_stride, int n_kv,
                             int causal, int kv0, const float *qr[QROWS], float *o[QROWS], int lim[QROWS],
                             float (*spare)[MAX_HEAD_DIM]) {
    for (int r = 0; r < QROWS; r++) {
        const int row = i + r < nq ? i + r : nq - 1;
        qr[r] = q + (size_t)row * q_stride;
        o[r] = i + r < nq ? out + (size_t)row * o_stride : spare[r];
        lim[r] = row_kv(row, n_kv, causal, kv0);
    }
}

int ROWS_FN(int nq, int hd, const float *q, size_t q_stride, const void *k, const void *v, int f16, size_t stride,
            int n_kv, int causal, int kv0, float scale, float *out, size_t o_stride, float *scratch) {
    if (hd <= 0 || hd > MAX_HEAD_DIM) {
        return -1;
    }
    float spare[QROWS][MAX_HEAD_DIM];
    const float *qr[QROWS];
    float *o[QROWS];
    int lim[QROWS];
    int i = 0;
#ifdef IN_PLACE_OK
    if (nq >= PAD_ROWS && IN_PLACE_OK(nq, hd, f16)) {
        /* A tile or two: packing the whole cache first would serve little else. Decode's query
         * heads of one key/value head (7 for Qwen2, 4 for Mistral) come here as one call. */
        for (; i < nq; i += QROWS) {
            tile_rows(i, nq, q, q_stride, out, o_stride, n_kv, causal, kv0, qr, o, lim, spare);
            RUN_TILE_IN_PLACE(hd, qr, lim, k, v, f16, stride, scale, o, scratch);
        }
        return 0;
    }
#endif
    if (nq >= PAD_ROWS) {
        /* Every position any row of this call sees, keys transposed and values packed once for
         * all of them. */
        const int n_need = causal ? kv0 + nq : n_kv;
        float *vp = scratch + (size_t)(n_need + 15) / 16 * 16 * hd;
        float *sp = vp + (size_t)(n_need + 15) / 16 * 16 * hd; /* the AVX-512 tile's score rows */
        pack_kt(n_need, hd, k, f16, stride, scratch);
        pack_v(n_need, hd, v, f16, stride, vp);
        for (; nq - i >= PAD_ROWS; i += QROWS) {
            tile_rows(i, nq, q, q_stride, out, o_stride, n_kv, causal, kv0, qr, o, lim, spare);
            RUN_TILE(hd, qr, lim, scratch, vp, scale, o, sp);
        }
    }
    for (; i < nq; i++) {
        ATTEND_FN(row_kv(i, n_kv, causal, kv0), hd, q + (size_t)i * q_stride, k, v, f16, stride, scale,
                  out + (size_t)i * o_stride);
    }
    return 0;
}
#endif

/* The portable build: the one-row kernel row by row. */
#if !defined(LE_ATTN_AVX2) && !defined(LE_ATTN_NEON)
#define ROWS_ONE_FN le_attend_rows_scalar
#endif

#ifdef ROWS_ONE_FN
int ROWS_ONE_FN(int nq, int hd, const float *q, size_t q_stride, const void *k, const void *v, int f16,
                size_t stride, int n_kv, int causal, int kv0, float scale, float *out, size_t o_stride,
                float *scratch) {
    (void)scratch;
    if (hd <= 0 || hd > MAX_HEAD_DIM) {
        return -1;
    }
    for (int i = 0; i < nq; i++) {
        ATTEND_FN(row_kv(i, n_kv, causal, kv0), hd, q + (size_t)i * q_stride, k, v, f16, stride, scale,
                  out + (size_t)i * o_stride);
    }
    return 0;
}
#endif
