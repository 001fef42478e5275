#version 450
// y[t][r] = sum_k W[r][k] * x[t][k] with the activations quantized to int8 blocks
// (quantize_q8.comp), as the CPU's quantized products do: each 32-value chunk of weights is
// integer levels q with value a * (q - ZERO) + m (a per 16 values for Q6_K), so its dot with
// a block is dx * (a * (sum q qx - ZERO sum qx) + m sum qx), the sums exact in integers.
// Variants: the weight type (TYPE_Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and INT_DOT
// (the packed 4x8-bit dot product of SPV_KHR_integer_dot_product, for devices that have it)
// or not (bytes unpacked and multiplied: the same integers, so the same results anywhere).
// Workgroups, tiles and the reduction are mul_mat.comp's.
#extension GL_GOOGLE_include_directive : require
#if defined(INT_DOT)
#extension GL_EXT_spirv_intrinsics : require
// OpSDot (4450) on two words of four packed int8 (packed vector format 0); capabilities
// DotProduct (6019) and DotProductInput4x8BitPacked (6018). Debian 12's glslc predates
// GL_EXT_integer_dot_product, so the instruction is spelled out.
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018], id = 4450)
int sdot4x8(uint a, uint b, spirv_literal int packed_format);
int dot4(uint a, uint b) { return sdot4x8(a, b, 0); }
#else
int dot4(uint a, uint b) {
    int s = 0;
    for (uint k = 0u; k < 32u; k += 8u) s += bitfieldExtract(int(a), int(k), 8) * bitfieldExtract(int(b), int(k), 8);
    return s;
}
#endif

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;   // a power of two
#define TILE 8

layout(std430, binding = 0) readonly buffer Weights { uint W[]; };
layout(std430, binding = 1) readonly buffer Input { uint XQ[]; };
layout(std430, binding = 2) writeonly buffer Output { float Y[]; };

layout(push_constant) uniform Push {
    uint rows;
    uint cols;
    uint n_tok;
    uint w_off;
    uint row_bytes;
    uint x_off;     // first input block
    uint x_stride;  // blocks between tokens
    uint y_off;
    uint y_stride;
} p;

#include "common.glsl"

// Bits 0..3 of h4 to bit 4 of bytes 0..3 (Q5's fifth bit).
uint spread5(uint h4) {
    return ((h4 & 1u) | ((h4 & 2u) << 7) | ((h4 & 4u) << 14) | ((h4 & 8u) << 21)) << 4;
}

// Chunk c of the row at byte rb: its 32 levels packed four to a word (value order), and the
// chunk's a (a0 for values 0..15, a1 for 16..31) and m.
void load_levels(uint rb, uint c, inout uint wq[8], out float a0, out float a1, out float m) {
    m = 0.0;
#if defined(TYPE_Q8_0)
#define ZERO 0
    uint o = rb + c * 34u;
    for (uint i = 0u; i < 8u; i++) wq[i] = w_u32(o + 2u + 4u * i);
    a0 = w_f16(o);
#elif defined(TYPE_Q4_0) || defined(TYPE_Q4_1)
    // Low nibbles are values 0..15 of the block, high nibbles 16..31.
#if defined(TYPE_Q4_0)
#define ZERO 8
    uint o = rb + c * 18u, qs = o + 2u;
#else
#define ZERO 0
#define HAS_MIN
    uint o = rb + c * 20u, qs = o + 4u;
    m = w_f16(o + 2u);
#endif
    for (uint i = 0u; i < 4u; i++) {
        uint q = w_u32(qs + 4u * i);
        wq[i] = q & 0x0f0f0f0fu;
        wq[4u + i] = (q >> 4) & 0x0f0f0f0fu;
    }
    a0 = w_f16(o);
#elif defined(TYPE_Q5_0) || defined(TYPE_Q5_1)
    // Value j's fifth bit is bit j of qh (values 16..31: bits 16..31).
#if defined(TYPE_Q5_0)
#define ZERO 16
    uint o = rb + c * 22u, qh = w_u32(o + 2u), qs = o + 6u;
#else
#define ZERO 0
#define HAS_MIN
    uint o = rb + c * 24u, qh = w_u32(o + 4u), qs = o + 8u;
    m = w_f16(o + 2u);
#endif
    for (uint i = 0u; i < 4u; i++) {
        uint q = w_u32(qs + 4u * i);
        wq[i] = (q & 0x0f0f0f0fu) | spread5((qh >> (4u * i)) & 15u);
        wq[4u + i] = ((q >> 4) & 0x0f0f0f0fu) | spread5((qh >> (16u + 4u * i)) & 15u);
    }
    a0 = w_f16(o);
#elif defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
#define ZERO 0
#define HAS_MIN
    uint s = c & 7u;
#if defined(TYPE_Q4_K)
    uint o = rb + (c >> 3) * 144u;
    uint qs = o + 16u + 32u * (s >> 1);
#else
    uint o = rb + (c >> 3) * 176u;
    uint qs = o + 48u + 32u * (s >> 1);
    uint qh = o + 16u;
#endif
    float d = w_f16(o), dmin = w_f16(o + 2u);
    uint sc, mn;
    if (s < 4u) {
        sc = w_u8(o + 4u + s) & 63u;
        mn = w_u8(o + 8u + s) & 63u;
    } else {
        sc = (w_u8(o + 8u + s) & 15u) | ((w_u8(o + s) >> 6) << 4);
        mn = (w_u8(o + 8u + s) >> 4) | ((w_u8(o + 4u + s) >> 6) << 4);
    }
    a0 = d * float(sc);
    m = -(dmin * float(mn));
    uint shift = 4u * (s & 1u);
    for (uint i = 0u; i < 8u; i++) {
        wq[i] = (w_u32(qs + 4u * i) >> shift) & 0x0f0f0f0fu;
#if defined(TYPE_Q5_K)
        wq[i] |= ((w_u32(qh + 4u * i) >> s) & 0x01010101u) << 4;
#endif
    }
#elif defined(TYPE_Q6_K)
#define ZERO 32
    uint s = c & 7u, n = s >> 2, k = s & 3u;
    uint o = rb + (c >> 3) * 210u;
    uint ql = o + 64u * n + 32u * (k & 1u), qh = o + 128u + 32u * n, sc = o + 192u + 8u * n + 2u * k;
    uint lshift = 4u * (k >> 1), hshift = 2u * k;
    float d = w_f16(o + 208u);
    a0 = d * float(sext8(w_u8(sc)));
    a1 = d * float(sext8(w_u8(sc + 1u)));
    for (uint i = 0u; i < 8u; i++) {
        wq[i] = ((w_u32(ql + 4u * i) >> lshift) & 0x0f0f0f0fu) | (((w_u32(qh + 4u * i) >> hshift) & 0x03030303u) << 4);
    }
#else
#error "define the weight type"
#endif
#if !defined(TYPE_Q6_K)
    a1 = a0;
#endif
}

shared float partial[TILE][WG];

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.rows) return;
    uint t0 = gl_WorkGroupID.z * TILE;
    uint nt = min(TILE, p.n_tok - t0);
    uint tid = gl_LocalInvocationID.x;
    uint rb = p.w_off + row * p.row_bytes;

    float acc[TILE];
    for (uint t = 0u; t < TILE; t++) acc[t] = 0.0;
    uint wq[8];
    float a0, a1, m;
    for (uint c = tid; c < p.cols / 32u; c += WG) {
        load_levels(rb, c, wq, a0, a1, m);
        for (uint t = 0u; t < nt; t++) {
            uint xb = (p.x_off + (t0 + t) * p.x_stride + c) * 9u;
            int s0 = 0, s1 = 0;
            for (uint i = 0u; i < 4u; i++) s0 += dot4(wq[i], XQ[xb + 1u + i]);
            for (uint i = 4u; i < 8u; i++) s1 += dot4(wq[i], XQ[xb + 1u + i]);
#if ZERO != 0 || defined(HAS_MIN)
            int x0 = 0, x1 = 0;
            for (uint i = 0u; i < 4u; i++) x0 += dot4(0x01010101u, XQ[xb + 1u + i]);
            for (uint i = 4u; i < 8u; i++) x1 += dot4(0x01010101u, XQ[xb + 1u + i]);
            s0 -= ZERO * x0;
            s1 -= ZERO * x1;
#endif
#if defined(TYPE_Q6_K)
            float r = a0 * float(s0) + a1 * float(s1);
#else
            float r = a0 * float(s0 + s1);
#endif
#if defined(HAS_MIN)
            r += m * float(x0 + x1);
#endif
            acc[t] += r * uintBitsToFloat(XQ[xb]);
        }
    }
    for (uint t = 0u; t < TILE; t++) partial[t][tid] = acc[t];
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (tid < h) {
            for (uint t = 0u; t < TILE; t++) partial[t][tid] += partial[t][tid + h];
        }
        barrier();
    }
    if (tid < nt) Y[p.y_off + (t0 + tid) * p.y_stride + row] = partial[tid][0];
}
