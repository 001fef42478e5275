/*
 * llava-edge kernels: quant block layouts and kernel signatures.
 *
 * This header is the single declaration of every block layout. The C kernels include it and
 * build.rs runs bindgen over it, so Rust and C can never disagree on a layout. The layouts are
 * ggml's on-disk formats (GGUF tensor data), so sizes are fixed and checked below.
 * Half-precision scales are stored as their raw IEEE binary16 bits (uint16_t).
 *
 * Which source file and which compiler flags give each symbol, and how the Rust names map to
 * the `x8` ones here: kernels/README.md.
 */
#ifndef LLAVA_KERNELS_H
#define LLAVA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define LE_QK4_0 32
#define LE_QK4_1 32
#define LE_QK5_0 32
#define LE_QK5_1 32
#define LE_QK8_0 32
#define LE_QK8_1 32
/* Super-block size of the K-quants. */
#define LE_QK_K 256
/* Bytes of packed 6-bit scales/mins in Q4_K and Q5_K, and of 6-bit scales in Q3_K. */
#define LE_K_SCALE_SIZE 12

/* 4-bit, scale only: x = d * (q - 8). */
typedef struct {
    uint16_t d;
    uint8_t qs[LE_QK4_0 / 2];
} le_block_q4_0;

/* 4-bit, scale and min: x = d * q + m. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qs[LE_QK4_1 / 2];
} le_block_q4_1;

/* 5-bit, scale only: the fifth bits sit in qh. */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[LE_QK5_0 / 2];
} le_block_q5_0;

/* 5-bit, scale and min. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[LE_QK5_1 / 2];
} le_block_q5_1;

/* 8-bit, scale only. */
typedef struct {
    uint16_t d;
    int8_t qs[LE_QK8_0];
} le_block_q8_0;

/* 8-bit activations for Q4_1/Q5_1 dots: s = d * sum(qs). */
typedef struct {
    uint16_t d;
    uint16_t s;
    int8_t qs[LE_QK8_1];
} le_block_q8_1;

/* 2-bit K-quant: 16 sub-blocks of 16, 4-bit scales and mins. */
typedef struct {
    uint8_t scales[LE_QK_K / 16];
    uint8_t qs[LE_QK_K / 4];
    uint16_t d;
    uint16_t dmin;
} le_block_q2_K;

/* 3-bit K-quant: 16 sub-blocks of 16, 6-bit signed scales, high bits in hmask. */
typedef struct {
    uint8_t hmask[LE_QK_K / 8];
    uint8_t qs[LE_QK_K / 4];
    uint8_t scales[LE_K_SCALE_SIZE];
    uint16_t d;
} le_block_q3_K;

/* 4-bit K-quant: 8 sub-blocks of 32, 6-bit scales and mins. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[LE_K_SCALE_SIZE];
    uint8_t qs[LE_QK_K / 2];
} le_block_q4_K;

/* 5-bit K-quant: as Q4_K plus one high bit per weight. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[LE_K_SCALE_SIZE];
    uint8_t qh[LE_QK_K / 8];
    uint8_t qs[LE_QK_K / 2];
} le_block_q5_K;

/* 6-bit K-quant: 16 sub-blocks of 16, 8-bit signed scales. */
typedef struct {
    uint8_t ql[LE_QK_K / 2];
    uint8_t qh[LE_QK_K / 4];
    int8_t scales[LE_QK_K / 16];
    uint16_t d;
} le_block_q6_K;

/* 8-bit activations for K-quant dots: f32 scale, sums of each 16 for the min terms. */
typedef struct {
    float d;
    int8_t qs[LE_QK_K];
    int16_t bsums[LE_QK_K / 16];
} le_block_q8_K;

#ifndef __cplusplus
_Static_assert(sizeof(le_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(le_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(le_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(le_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(le_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(le_block_q8_1) == 36, "q8_1 layout");
_Static_assert(sizeof(le_block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(le_block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(le_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(le_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(le_block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(le_block_q8_K) == 292, "q8_K layout");
#endif

/*
 * Kernels. Each exists as a scalar reference (le_*_scalar, kernels/cpu/scalar.c) and, where the
 * CPU allows, SIMD versions that the tests hold to it: _avx2 (avx2.c: AVX2, FMA, F16C), _neon
 * (neon.c: base ARMv8 NEON, e.g. Cortex-A53/A72 on Pi 3/4 and Jetson Nano) and _dotprod
 * (neon_dotprod.c: ARMv8.2 SDOT, e.g. Cortex-A76 on Pi 5, Jetson Orin).
 * n is the number of values (a multiple of the block size).
 */

/* Activations to Q8_0: d = amax/127, q = roundf(x/d), as ggml's quantize_row_q8_0_reference.
 * O(n) per product against O(rows * n) dots, so one portable version serves every CPU. */
void le_quantize_row_q8_0_scalar(const float *x, le_block_q8_0 *y, int n);
/* The same bytes with SIMD (its rounding reproduces roundf exactly). */
void le_quantize_row_q8_0_avx2(const float *x, le_block_q8_0 *y, int n);
void le_quantize_row_q8_0_neon(const float *x, le_block_q8_0 *y, int n);

/* sum_i w_i * a_i for Q4_0 weights and Q8_0 activations. */
float le_vec_dot_q4_0_q8_0_scalar(int n, const le_block_q4_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q4_0_q8_0_avx2(int n, const le_block_q4_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q4_0_q8_0_neon(int n, const le_block_q4_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q4_0_q8_0_dotprod(int n, const le_block_q4_0 *w, const le_block_q8_0 *a);

/* sum_i w_i * a_i for Q8_0 weights and Q8_0 activations. */
float le_vec_dot_q8_0_q8_0_scalar(int n, const le_block_q8_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q8_0_q8_0_avx2(int n, const le_block_q8_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q8_0_q8_0_neon(int n, const le_block_q8_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q8_0_q8_0_dotprod(int n, const le_block_q8_0 *w, const le_block_q8_0 *a);

/* Activations to Q8_K: d = max/-127 of the signed extreme, q = nearest(x/d), with the sums of
 * each 16 (the K-quant dots use them for the min terms), as ggml's quantize_row_q8_K. */
void le_quantize_row_q8_K_scalar(const float *x, le_block_q8_K *y, int n);

/* sum_i w_i * a_i for Q5_0 weights and Q8_0 activations (NEON: widening multiplies; dotprod: SDOT). */
float le_vec_dot_q5_0_q8_0_scalar(int n, const le_block_q5_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q5_0_q8_0_avx2(int n, const le_block_q5_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q5_0_q8_0_dotprod(int n, const le_block_q5_0 *w, const le_block_q8_0 *a);
float le_vec_dot_q5_0_q8_0_neon(int n, const le_block_q5_0 *w, const le_block_q8_0 *a);

/* sum_i w_i * a_i for Q4_K / Q6_K weights and Q8_K activations (NEON: widening multiplies; dotprod: SDOT). */
/* Q5_K, Q3_K and Q2_K against Q8_K activations (decode of Q5_K_M / Q3_K_M / Q2_K files). */
float le_vec_dot_q5_K_q8_K_scalar(int n, const le_block_q5_K *w, const le_block_q8_K *a);
float le_vec_dot_q5_K_q8_K_avx2(int n, const le_block_q5_K *w, const le_block_q8_K *a);
float le_vec_dot_q5_K_q8_K_dotprod(int n, const le_block_q5_K *w, const le_block_q8_K *a);
float le_vec_dot_q5_K_q8_K_neon(int n, const le_block_q5_K *w, const le_block_q8_K *a);
float le_vec_dot_q2_K_q8_K_scalar(int n, const le_block_q2_K *w, const le_block_q8_K *a);
float le_vec_dot_q2_K_q8_K_avx2(int n, const le_block_q2_K *w, const le_block_q8_K *a);
float le_vec_dot_q2_K_q8_K_dotprod(int n, const le_block_q2_K *w, const le_block_q8_K *a);
float le_vec_dot_q2_K_q8_K_neon(int n, const le_block_q2_K *w, const le_block_q8_K *a);
float le_vec_dot_q3_K_q8_K_scalar(int n, const le_block_q3_K *w, const le_block_q8_K *a);
float le_vec_dot_q3_K_q8_K_avx2(int n, const le_block_q3_K *w, const le_block_q8_K *a);
float le_vec_dot_q3_K_q8_K_dotprod(int n, const le_block_q3_K *w, const le_block_q8_K *a);
float le_vec_dot_q3_K_q8_K_neon(int n, const le_block_q3_K *w, const le_block_q8_K *a);

float le_vec_dot_q4_K_q8_K_scalar(int n, const le_block_q4_K *w, const le_block_q8_K *a);
float le_vec_dot_q4_K_q8_K_avx2(int n, const le_block_q4_K *w, const le_block_q8_K *a);
float le_vec_dot_q4_K_q8_K_dotprod(int n, const le_block_q4_K *w, const le_block_q8_K *a);
float le_vec_dot_q4_K_q8_K_neon(int n, const le_block_q4_K *w, const le_block_q8_K *a);
float le_vec_dot_q6_K_q8_K_scalar(int n, const le_block_q6_K *w, const le_block_q8_K *a);
float le_vec_dot_q6_K_q8_K_avx2(int n, const le_block_q6_K *w, const le_block_q8_K *a);
float le_vec_dot_q6_K_q8_K_dotprod(int n, const le_block_q6_K *w, const le_block_q8_K *a);
float le_vec_dot_q6_K_q8_K_neon(int n, const le_block_q6_K *w, const le_block_q8_K *a);

/* Half bits to f32 (the F16 KV cache is read this way every step). */
void le_f16_to_f32_scalar(const uint16_t *x, float *y, int n);
void le_f16_to_f32_avx2(const uint16_t *x, float *y, int n);
void le_f16_to_f32_neon(const uint16_t *x, float *y, int n);

/* sum_i w_i * a_i for F16 weights (raw half bits) and F32 activations. */
float le_vec_dot_f16_f32_scalar(int n, const uint16_t *w, const float *a);
float le_vec_dot_f16_f32_avx2(int n, const uint16_t *w, const float *a);
float le_vec_dot_f16_f32_neon(int n, const uint16_t *w, const float *a);

/* A BF16 weight row against f32 activations (bf16 is the top half of an f32). */
float le_vec_dot_bf16_f32_scalar(int n, const uint16_t *w, const float *a);
float le_vec_dot_bf16_f32_avx2(int n, const uint16_t *w, const float *a);
float le_vec_dot_bf16_f32_neon(int n, const uint16_t *w, const float *a);

/*
 * Prefill GEMM. A matrix product over many tokens re-reads every weight row once per token, so
 * the row-at-a-time dots above leave most of the CPU idle on prefill. Here eight weight rows
 * are first repacked ("panels", built per call in a small buffer, never stored) so that one
 * SIMD register holds four consecutive values of each of the eight rows: one integer
 * multiply-add against four broadcast activation values then advances eight dot products at
 * once, and the per-block scale is applied to the eight rows in one vector operation.
 *
 * Every supported weight type becomes integer codes q with a float scale s (per 32 values, or
 * per 16 for the K-quants with 16-value sub-blocks) and a float offset o per 32, so that
 * w = s * q + o. Then sum_i w_i x_i over a block = s * da * sum(q * qa) + o * da * sum(qa),
 * with the activations quantized as Q8_0 (x = da * qa).
 */

/* Integer codes of a panel: how many bits, and whether signed. Decides how far the int16 sums of
 * the x86 maddubs path may run before they must be widened. */
typedef enum {
    LE_CODES_U4 = 0, /* 0..15: Q4_0, Q4_1, Q4_K */
    LE_CODES_U5 = 1, /* 0..31: Q5_0, Q5_1, Q5_K */
    LE_CODES_S6 = 2, /* -32..31, two scales per block: Q6_K (and Q3_K's -4..3) */
    LE_CODES_S8 = 3, /* -127..127: Q8_0 */
} le_codes;

/* One 32-value block of eight rows. Row r's values 4c..4c+3 are q[32c + 4r .. 32c + 4r + 3]
 * (c = 0..7). s[h][r] scales values 16h..16h+15 of row r (s[0] == s[1] for one scale a block). */
typedef struct {
    float s[2][8];
    float o[8];
    int8_t q[256];
} le_block_x8;

/* Activations for the GEMM: Q8_0 codes with d widened to f32 (the same f16-rounded value as
 * le_block_q8_0's) and dsum = d * sum(qs) for the offset term. */
typedef struct {
    float d;
    float dsum;
    int8_t qs[32];
} le_block_q8_0x;

#ifndef __cplusplus
_Static_assert(sizeof(le_block_x8) == 352, "x8 panel block layout");
_Static_assert(sizeof(le_block_q8_0x) == 40, "q8_0x layout");
#endif

/* x (n values, a multiple of 32) to GEMM activations; codes and d equal
 * le_quantize_row_q8_0_scalar's. */
void le_quantize_row_q8_0x_scalar(const float *x, le_block_q8_0x *y, int n);
void le_quantize_row_q8_0x_avx2(const float *x, le_block_q8_0x *y, int n);
void le_quantize_row_q8_0x_neon(const float *x, le_block_q8_0x *y, int n);

/* Decode dot of Q4_0 weights with GEMM-style activations: unsigned nibbles and the -8 offset
 * applied through dsum (x86; other CPUs use le_vec_dot_q4_0_q8_0). */
float le_vec_dot_q4_0_q8_0x_scalar(int n, const le_block_q4_0 *w, const le_block_q8_0x *a);
float le_vec_dot_q4_0_q8_0x_avx2(int n, const le_block_q4_0 *w, const le_block_q8_0x *a);
float le_vec_dot_q4_0_q8_0x_vnni(int n, const le_block_q4_0 *w, const le_block_q8_0x *a);

/* The legacy 4- and 5-bit types with their rows interleaved eight at a time for decode, in
 * place of the eight rows' blocks (the same bytes: 8 x 18, 20, 22, 24). Block b of rows
 * 8g..8g+7: d[r] (and m[r]) are row r's scale (and minimum); qs[32c + 4r + i] is byte 4c + i
 * of row r's block (c = 0..3), so one 32-byte load holds four values of each of the eight rows
 * (low nibbles: values 4c..4c+3, high nibbles: 16 + 4c..) and one broadcast activation word
 * meets all eight rows in a single SDOT / vpdpbusd. The fifth bits are regrouped so that a shift
 * and a mask put them under the nibbles they belong to: bit 4h + c of qh[4r + i] is the fifth bit
 * of value 16h + 4c + i of row r (h = 0, 1), i.e. byte k of qh lines up with byte k of every
 * 32-byte qs chunk. llama.cpp repacks Q4_0 at load for the same reason; these layouts are ours. */
typedef struct {
    uint16_t d[8];
    uint8_t qs[128];
} le_block_q4_0x8;

typedef struct {
    uint16_t d[8];
    uint16_t m[8];
    uint8_t qs[128];
} le_block_q4_1x8;

typedef struct {
    uint16_t d[8];
    uint8_t qh[32];
    uint8_t qs[128];
} le_block_q5_0x8;

typedef struct {
    uint16_t d[8];
    uint16_t m[8];
    uint8_t qh[32];
    uint8_t qs[128];
} le_block_q5_1x8;

/* Q8_0 interleaved the same way, with all eight 4-byte chunks of each row: qs[32c + 4r + i] is
 * code 4c + i of row r (c = 0..7), the order of a GEMM panel's codes, so packing is a copy. The
 * codes stay as the file has them (signed); the x86 VNNI decode flips their sign bit to meet
 * vpdpbusd's unsigned operand and takes 128 * d * dsum off once at the end, as Q4_0 takes 8. */
typedef struct {
    uint16_t d[8];
    int8_t qs[256];
} le_block_q8_0x8;

/* Q4_K interleaved the same way per super-block of 256 values: the eight rows' d, dmin and
 * packed 6-bit scale bytes side by side (scales[8k + r] is byte k of row r's twelve, so one
 * 8-byte load holds a byte of every row and the scales unpack for all eight rows at once), and
 * qs[256c + 32p + 4r + i] = byte 32c + 4p + i of row r's qs (c = 0..3, p = 0..7): one 32-byte
 * load is four bytes of every row, low nibbles values 64c + 4p.., high nibbles 64c + 32 + 4p.. */
typedef struct {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t scales[96];
    uint8_t qs[1024];
} le_block_q4_Kx8;

/* Q5_K: le_block_q4_Kx8 with the fifth bits between the scales and the codes:
 * qh[32p + 4r + i] = qh byte 4p + i of row r, whose bit j is the fifth bit of value 32j + 4p + i
 * (sub-block j), so one 32-byte load serves the eight sub-blocks of four values of all rows. */
typedef struct {
    uint16_t d[8];
    uint16_t dmin[8];
    uint8_t scales[96];
    uint8_t qh[256];
    uint8_t qs[1024];
} le_block_q5_Kx8;

/* Q6_K interleaved likewise: the eight rows' d, their sixteen scales side by side (scales[8s + r]
 * is scale s of row r), ql[256c + 32p + 4r + i] = ql byte 32c + 4p + i of row r (c = 0..3) and
 * qh[256c + 32p + 4r + i] = qh byte 32c + 4p + i (c = 0..1). Sub-block j (32 values, h = j / 4,
 * k = j % 4) takes ql chunk 2h + (k & 1) (low nibbles for k < 2, high for k >= 2) and bits
 * 2k..2k+1 of qh chunk h, as in ggml's dequantize_row_q6_K. */
typedef struct {
    uint16_t d[8];
    int8_t scales[128];
    uint8_t ql[1024];
    uint8_t qh[512];
} le_block_q6_Kx8;

#ifndef __cplusplus
_Static_assert(sizeof(le_block_q8_0x8) == 8 * sizeof(le_block_q8_0), "q8_0x8 is eight Q8_0 blocks");
_Static_assert(sizeof(le_block_q4_Kx8) == 8 * sizeof(le_block_q4_K), "q4_Kx8 is eight Q4_K blocks");
_Static_assert(sizeof(le_block_q6_Kx8) == 8 * sizeof(le_block_q6_K), "q6_Kx8 is eight Q6_K blocks");
_Static_assert(sizeof(le_block_q5_Kx8) == 8 * sizeof(le_block_q5_K), "q5_Kx8 is eight Q5_K blocks");
_Static_assert(sizeof(le_block_q4_0x8) == 8 * sizeof(le_block_q4_0), "q4_0x8 is eight Q4_0 blocks");
_Static_assert(sizeof(le_block_q4_1x8) == 8 * sizeof(le_block_q4_1), "q4_1x8 is eight Q4_1 blocks");
_Static_assert(sizeof(le_block_q5_0x8) == 8 * sizeof(le_block_q5_0), "q5_0x8 is eight Q5_0 blocks");
_Static_assert(sizeof(le_block_q5_1x8) == 8 * sizeof(le_block_q5_1), "q5_1x8 is eight Q5_1 blocks");
#endif

/* The functions below take the weight type by its GGUF id (LE_TYPE_Q4_0, _Q4_1, _Q5_0, _Q5_1, _Q8_0,
 * _Q4_K, _Q5_K, _Q6_K) and the interleaved blocks as bytes. Bytes of eight rows' 32 values in the
 * interleaved form (one interleaved block; an eighth of one for the K types, whose blocks are
 * 256 values), 0 for a type that has no interleaved form. */
int le_x8_block_bytes(int type);

/* Eight rows (each row_bytes long, n values) to n / 32 interleaved blocks (n / 256 for the K
 * types), and back. */
void le_interleave_x8(int type, const uint8_t *rows, size_t row_bytes, int n, uint8_t *out);
void le_deinterleave_x8(int type, const uint8_t *w, int n, uint8_t *rows, size_t row_bytes);

/* One group of interleaved rows as a GEMM panel (what le_pack_x8 makes of the same eight rows
 * before interleaving, byte for byte). */
void le_pack_x8_interleaved(int type, const uint8_t *w, int n, le_block_x8 *out);

/* out[t * ldo + 8g + r] = row 8g + r . token t for ng groups of interleaved rows (each n / 32
 * blocks, consecutive) and nt tokens of GEMM activations (each n / 32 blocks, consecutive). */
void le_gemv_x8_scalar(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                       size_t ldo);
void le_gemv_x8_avx2(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                     size_t ldo);
void le_gemv_x8_vnni(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                     size_t ldo);
void le_gemv_x8_neon(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                     size_t ldo);
void le_gemv_x8_dotprod(int type, int n, const uint8_t *w, int ng, const le_block_q8_0x *a, int nt, float *out,
                        size_t ldo);

/* A plain row of one of those types against GEMM activations (the rows after an interleaved
 * matrix's last group of eight). */
float le_vec_dot_legacy_q8_0x_scalar(int type, int n, const uint8_t *w, const le_block_q8_0x *a);

/* Weight types the panels take, by their GGUF type id. */
#define LE_TYPE_Q4_0 2
#define LE_TYPE_Q4_1 3
#define LE_TYPE_Q5_0 6
#define LE_TYPE_Q5_1 7
#define LE_TYPE_Q8_0 8
#define LE_TYPE_Q3_K 11
#define LE_TYPE_Q4_K 12
#define LE_TYPE_Q5_K 13
#define LE_TYPE_Q6_K 14

/* The codes a weight type packs to; -1 when panels do not take it. */
int le_panel_codes(int type);

/* Packs nrows (1..8) rows of `type` (each row_bytes long, n values) into n / 32 panel blocks;
 * missing rows are zero. Returns 0, or -1 for a type panels do not take. */
int le_pack_x8(int type, const uint8_t *rows, size_t row_bytes, int nrows, int n, le_block_x8 *out);

/* out[t * ldo + 8p + r] = row 8p + r of the panels . token t, for np panels (each n / 32 blocks,
 * consecutive) and nt tokens (each n / 32 blocks, consecutive); rows at or past nrows are not
 * written. */
void le_gemm_x8_scalar(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a, int nt,
                       float *out, size_t ldo);
void le_gemm_x8_avx2(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a, int nt,
                     float *out, size_t ldo);
/* x86 with AVX512-VNNI and VL (Ice Lake, Zen 4): vpdpbusd on 256-bit registers. */
void le_gemm_x8_vnni(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a, int nt,
                     float *out, size_t ldo);
/* AArch64 without SDOT: the same tiles through widening multiplies. */
void le_gemm_x8_neon(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a, int nt,
                     float *out, size_t ldo);
void le_gemm_x8_dotprod(le_codes codes, int n, const le_block_x8 *w, int np, int nrows, const le_block_q8_0x *a,
                        int nt, float *out, size_t ldo);

/* One attention head: out = softmax(q . k_p * scale over p < n_kv) . v_p, head dimension hd
 * (at most 256). Position p's key and value start at element p * stride of k and v, which hold
 * f32 values, or f16 bits when f16 != 0 (the KV cache, read in place). The softmax runs online
 * over blocks of positions, so no score row is stored. Returns -1 for an unsupported hd. */
int le_attend_head_scalar(int n_kv, int hd, const float *q, const void *k, const void *v, int f16, size_t stride,
                          float scale, float *out);
int le_attend_head_avx2(int n_kv, int hd, const float *q, const void *k, const void *v, int f16, size_t stride,
                        float scale, float *out);
int le_attend_head_neon(int n_kv, int hd, const float *q, const void *k, const void *v, int f16, size_t stride,
                        float scale, float *out);

/* Bytes ahead of the weight being read that the x86 decode products prefetch (see
 * cpu/prefetch_x86.h); the bench reads its bandwidth bound the same way. */
#define LE_PREFETCH_AHEAD 4096

/* F16 weights times f32 activations for many tokens (the vision encoder): out[t * ldo + r] =
 * w_r . x_t for nrows rows of k halves (ldw apart) and nt tokens of k floats (ldx apart).
 * `pack` is scratch for LE_F16_PACK_FLOATS * k floats (the largest panel of any build). */
#define LE_F16_PACK_FLOATS 32
void le_gemm_f16_scalar(int k, const uint16_t *w, size_t ldw, int nrows, const float *x, size_t ldx, int nt,
                        float *out, size_t ldo, float *pack);
void le_gemm_f16_avx2(int k, const uint16_t *w, size_t ldw, int nrows, const float *x, size_t ldx, int nt,
                      float *out, size_t ldo, float *pack);
void le_gemm_f16_neon(int k, const uint16_t *w, size_t ldw, int nrows, const float *x, size_t ldx, int nt,
                      float *out, size_t ldo, float *pack);

/* The AVX-512 build takes its tokens packed once per product, LE_F16_TILE_TOKENS a tile:
 * xp[(tile * k + i) * LE_F16_TILE_TOKENS + t] = value i of token tile * LE_F16_TILE_TOKENS + t,
 * tokens past nt zero (le_f16_pack_tokens_avx512; xp holds ceil(nt / 12) * 12 * k floats). Its sums
 * are the other SIMD builds' bit for bit. */
#define LE_F16_TILE_TOKENS 12
void le_f16_pack_tokens_avx512(int k, int nt, const float *x, size_t ldx, float *xp);
void le_gemm_f16_packed_avx512(int k, const uint16_t *w, size_t ldw, int nrows, const float *xp, int nt, float *out,
                               size_t ldo, float *pack, const float *bias);

/* The same product with bfloat16 pairs (vdpbf16ps): weights and activations rounded to bf16
 * (nearest even, subnormals to zero), products summed in f32. Tokens are first packed by
 * le_bf16_pack_tokens into tiles of LE_BF16_TILE_TOKENS: xp holds
 * ceil(nt / 12) * ceil(k / 2) * 12 dwords. `pack` is scratch for LE_BF16_PANEL_ROWS * ceil(k / 2)
 * dwords. The scalar build is the reference; the AVX512 one needs AVX512-BF16, the NEON one
 * Armv8.6 BF16 (BFDOT). */
#define LE_BF16_PANEL_ROWS 32
#define LE_BF16_TILE_TOKENS 12
void le_bf16_pack_tokens_scalar(int k, int nt, const float *x, size_t ldx, uint32_t *xp);
void le_bf16_pack_tokens_avx512(int k, int nt, const float *x, size_t ldx, uint32_t *xp);
void le_bf16_pack_tokens_neon(int k, int nt, const float *x, size_t ldx, uint32_t *xp);
void le_gemm_bf16_scalar(int k, const uint16_t *w, size_t ldw, int nrows, const uint32_t *xp, int nt, float *out,
                         size_t ldo, uint32_t *pack);
void le_gemm_bf16_avx512(int k, const uint16_t *w, size_t ldw, int nrows, const uint32_t *xp, int nt, float *out,
                         size_t ldo, uint32_t *pack);
void le_gemm_bf16_neon(int k, const uint16_t *w, size_t ldw, int nrows, const uint32_t *xp, int nt, float *out,
                       size_t ldo, uint32_t *pack);

/* nq query rows of one head (row i at q + i * q_stride, its output at out + i * o_stride) over
 * the keys and values as le_attend_head takes them. Row i sees n_kv positions, or with causal
 * != 0 the first kv0 + i + 1 (kv0 + nq <= n_kv). scratch: 2 * (n + 15) / 16 * 16 * hd
 * + 8 * ((n + 31) / 32 * 32 + 16) floats, n the positions seen, whenever nq >= 2 (NULL will do
 * for one row). The AVX2 and NEON builds tile four rows against blocks of 16 positions (flash
 * attention); the AVX-512 build eight rows over whole score rows (the last part of scratch); a
 * tail of at least half a tile runs as a tile with its last row repeated. The portable build
 * runs le_attend_head row by row. Returns -1 for an unsupported hd. */
int le_attend_rows_scalar(int nq, int hd, const float *q, size_t q_stride, const void *k, const void *v, int f16,
                          size_t stride, int n_kv, int causal, int kv0, float scale, float *out, size_t o_stride,
                          float *scratch);
int le_attend_rows_avx2(int nq, int hd, const float *q, size_t q_stride, const void *k, const void *v, int f16,
                        size_t stride, int n_kv, int causal, int kv0, float scale, float *out, size_t o_stride,
                        float *scratch);
int le_attend_rows_avx512(int nq, int hd, const float *q, size_t q_stride, const void *k, const void *v, int f16,
                        size_t stride, int n_kv, int causal, int kv0, float scale, float *out, size_t o_stride,
                        float *scratch);
int le_attend_rows_neon(int nq, int hd, const float *q, size_t q_stride, const void *k, const void *v, int f16,
                        size_t stride, int n_kv, int causal, int kv0, float scale, float *out, size_t o_stride,
                        float *scratch);

/* Sigmoid-gated activations in place: x = x * sigmoid(z(x)) (times mul[i] when mul is not
 * NULL: SwiGLU's silu(gate) * up). */
/* One row of n values in place: RMSNorm x / sqrt(mean(x^2) + eps) * w, and LayerNorm
 * (x - mean) / sqrt(var + eps) * w + b, statistics in f64 (kernels/cpu/norm_rope.c). */
void le_rms_norm_scalar(float *x, const float *w, int n, float eps);
void le_rms_norm_avx2(float *x, const float *w, int n, float eps);
void le_rms_norm_neon(float *x, const float *w, int n, float eps);
void le_layer_norm_scalar(float *x, const float *w, const float *b, int n, float eps);
void le_layer_norm_avx2(float *x, const float *w, const float *b, int n, float eps);
void le_layer_norm_neon(float *x, const float *w, const float *b, int n, float eps);

/* Rotary embedding of n_heads heads of head_dim values (back to back in x) by the angles whose
 * cosines and sines are cs[i], sn[i], i < half: dimensions (i, i + half) rotate together with
 * neox != 0 (GPT-NeoX / Qwen2), (2i, 2i + 1) otherwise (llama.cpp's LLaMA layout). Dimensions
 * past 2 * half are left as they are. */
void le_rope_scalar(float *x, int head_dim, int n_heads, const float *cs, const float *sn, int half, int neox);
void le_rope_avx2(float *x, int head_dim, int n_heads, const float *cs, const float *sn, int half, int neox);
void le_rope_neon(float *x, int head_dim, int n_heads, const float *cs, const float *sn, int half, int neox);

#define LE_ACT_SILU 0
#define LE_ACT_QUICK_GELU 1
#define LE_ACT_GELU_TANH 2
#define LE_ACT_GELU_ERF 3 /* x * Phi(x), the exact GELU; not sigmoid-gated, `mul` unused */
void le_activation_scalar(int kind, float *x, const float *mul, int n);
void le_activation_avx2(int kind, float *x, const float *mul, int n);
void le_activation_neon(int kind, float *x, const float *mul, int n);

#endif /* LLAVA_KERNELS_H */
