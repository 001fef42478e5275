#version 450
// y[t][r] = sum_k W[r][k] * x[t][k]: the product of a GGUF weight matrix (rows of blocks, in
// the file's own layout) with f32 activations, for one token (matrix-vector) or a tile of
// TILE tokens per workgroup (matrix-matrix: each dequantized chunk serves the whole tile).
//
// One workgroup per output row (and tile of tokens); each thread takes 32-value chunks of the
// row in turn and the partial sums meet in a shared-memory tree, so nothing depends on the
// subgroup size. Variants by define, one per weight type: TYPE_F32, TYPE_F16, TYPE_Q4_0,
// TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1, TYPE_Q8_0, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K. Dequantization
// follows src/quant's reference dequantizers expression for expression; accumulation is f32.
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;   // a power of two (the tree halves it)
#define TILE 8

layout(std430, binding = 0) readonly buffer Weights { uint W[]; };
layout(std430, binding = 1) readonly buffer Input { float X[]; };
layout(std430, binding = 2) writeonly buffer Output { float Y[]; };

layout(push_constant) uniform Push {
    uint rows;      // output rows (weight rows)
    uint cols;      // values per row (a multiple of the type's block; of 32 but for F32, F16)
    uint n_tok;     // tokens
    uint w_off;     // byte offset of row 0 in W (even)
    uint row_bytes; // bytes per weight row
    uint x_off;     // first input value
    uint x_stride;  // values between tokens in X
    uint y_off;     // first output value
    uint y_stride;  // values between tokens in Y
} p;

#include "common.glsl"

// The 32 values of chunk c of the row starting at byte rb.
void load_chunk(uint rb, uint c, inout float v[32]) {
#if defined(TYPE_F32)
    uint o = (rb + c * 128u) >> 2;
    for (uint i = 0u; i < 32u; i++) v[i] = uintBitsToFloat(W[o + i]);
#elif defined(TYPE_F16)
    uint o = rb + c * 64u;
    for (uint i = 0u; i < 16u; i++) {
        vec2 h = unpackHalf2x16(w_u32(o + 4u * i));
        v[2u * i] = h.x;
        v[2u * i + 1u] = h.y;
    }
#elif defined(TYPE_Q4_0)
    uint o = rb + c * 18u;
    float d = w_f16(o);
    for (uint i = 0u; i < 4u; i++) {
        uint q = w_u32(o + 2u + 4u * i);
        for (uint b = 0u; b < 4u; b++) {
            uint byte = (q >> (8u * b)) & 0xffu;
            v[4u * i + b] = float(int(byte & 15u) - 8) * d;
            v[16u + 4u * i + b] = float(int(byte >> 4) - 8) * d;
        }
    }
#elif defined(TYPE_Q4_1)
    uint o = rb + c * 20u;
    float d = w_f16(o), m = w_f16(o + 2u);
    for (uint i = 0u; i < 4u; i++) {
        uint q = w_u32(o + 4u + 4u * i);
        for (uint b = 0u; b < 4u; b++) {
            uint byte = (q >> (8u * b)) & 0xffu;
            v[4u * i + b] = float(byte & 15u) * d + m;
            v[16u + 4u * i + b] = float(byte >> 4) * d + m;
        }
    }
#elif defined(TYPE_Q5_0) || defined(TYPE_Q5_1)
#if defined(TYPE_Q5_0)
    uint o = rb + c * 22u;
    float d = w_f16(o);
    uint qh = w_u32(o + 2u);
    uint qs = o + 6u;
#else
    uint o = rb + c * 24u;
    float d = w_f16(o), m = w_f16(o + 2u);
    uint qh = w_u32(o + 4u);
    uint qs = o + 8u;
#endif
    for (uint i = 0u; i < 4u; i++) {
        uint q = w_u32(qs + 4u * i);
        for (uint b = 0u; b < 4u; b++) {
            uint j = 4u * i + b;
            uint byte = (q >> (8u * b)) & 0xffu;
            uint h0 = ((qh >> j) << 4) & 0x10u;
            uint h1 = (qh >> (j + 12u)) & 0x10u;
#if defined(TYPE_Q5_0)
            v[j] = float(int((byte & 15u) | h0) - 16) * d;
            v[16u + j] = float(int((byte >> 4) | h1) - 16) * d;
#else
            v[j] = float((byte & 15u) | h0) * d + m;
            v[16u + j] = float((byte >> 4) | h1) * d + m;
#endif
        }
    }
#elif defined(TYPE_Q8_0)
    uint o = rb + c * 34u;
    float d = w_f16(o);
    for (uint i = 0u; i < 8u; i++) {
        uint q = w_u32(o + 2u + 4u * i);
        for (uint b = 0u; b < 4u; b++) v[4u * i + b] = float(sext8((q >> (8u * b)) & 0xffu)) * d;
    }
#elif defined(TYPE_Q4_K) || defined(TYPE_Q5_K)
    // Super-blocks of 256: chunk c is sub-block s of super-block c / 8, with a 6-bit scale
    // and min packed in 12 bytes (ggml's get_scale_min_k4).
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
    float d1 = d * float(sc), m1 = dmin * float(mn);
    uint shift = 4u * (s & 1u);
    for (uint i = 0u; i < 8u; i++) {
        uint q = w_u32(qs + 4u * i);
#if defined(TYPE_Q5_K)
        uint h = w_u32(qh + 4u * i);
#endif
        for (uint b = 0u; b < 4u; b++) {
            uint l = (q >> (8u * b + shift)) & 15u;
#if defined(TYPE_Q5_K)
            l += ((h >> (8u * b + s)) & 1u) << 4;
#endif
            v[4u * i + b] = d1 * float(l) - m1;
        }
    }
#elif defined(TYPE_Q6_K)
    // Sub-block s of a 210-byte super-block: 128-value half n = s / 4, quarter k = s % 4 of it;
    // low nibbles in ql, two high bits in qh, an int8 scale per 16 values.
    uint s = c & 7u, n = s >> 2, k = s & 3u;
    uint o = rb + (c >> 3) * 210u;
    uint ql = o + 64u * n + 32u * (k & 1u), qh = o + 128u + 32u * n, sc = o + 192u + 8u * n + 2u * k;
    uint lshift = 4u * (k >> 1), hshift = 2u * k;
    float d = w_f16(o + 208u);
    float d0 = d * float(sext8(w_u8(sc))), d1 = d * float(sext8(w_u8(sc + 1u)));
    for (uint i = 0u; i < 8u; i++) {
        uint lo = w_u32(ql + 4u * i), hi = w_u32(qh + 4u * i);
        for (uint b = 0u; b < 4u; b++) {
            int q = int(((lo >> (8u * b + lshift)) & 15u) | (((hi >> (8u * b + hshift)) & 3u) << 4)) - 32;
            v[4u * i + b] = (i < 4u ? d0 : d1) * float(q);
        }
    }
#else
#error "define the weight type"
#endif
}

shared float partial[TILE][WG];

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.rows) return; // uniform: the whole workgroup leaves
    uint t0 = gl_WorkGroupID.z * TILE;
    uint nt = min(TILE, p.n_tok - t0);
    uint tid = gl_LocalInvocationID.x;
    uint rb = p.w_off + row * p.row_bytes;

    float acc[TILE];
    for (uint t = 0u; t < TILE; t++) acc[t] = 0.0;
    float v[32];
    for (uint c = tid; c < p.cols / 32u; c += WG) {
        load_chunk(rb, c, v);
        for (uint t = 0u; t < nt; t++) {
            uint xb = p.x_off + (t0 + t) * p.x_stride + c * 32u;
            float s = 0.0;
            for (uint i = 0u; i < 32u; i++) s += v[i] * X[xb + i];
            acc[t] += s;
        }
    }
#if defined(TYPE_F32) || defined(TYPE_F16)
    // Rows of F32 / F16 values need not be whole chunks (SigLIP's 4304-wide MLP): the last
    // cols % 32 values one at a time.
    for (uint k = (p.cols / 32u) * 32u + tid; k < p.cols; k += WG) {
#if defined(TYPE_F32)
        float wk = uintBitsToFloat(W[(rb >> 2) + k]);
#else
        float wk = w_f16(rb + 2u * k);
#endif
        for (uint t = 0u; t < nt; t++) acc[t] += wk * X[p.x_off + (t0 + t) * p.x_stride + k];
    }
#endif
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
