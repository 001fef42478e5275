#version 450
// y[t][r] = sum_k W[r][k] * x[t][k] with the activations quantized to int8 blocks
// (quantize_q8.comp): each 32-value chunk is an exact integer dot product times the two
// scales, as the CPU's Q8_0/Q4_0 products do. Variants: TYPE_Q8_0 or TYPE_Q4_0, and INT_DOT
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
    for (uint c = tid; c < p.cols / 32u; c += WG) {
#if defined(TYPE_Q8_0)
        uint o = rb + c * 34u;
        for (uint i = 0u; i < 8u; i++) wq[i] = w_u32(o + 2u + 4u * i);
#elif defined(TYPE_Q4_0)
        // Values 0..15 (the -8 comes off through the activations' sum below): low nibbles
        // are values 0..15 of the block, high nibbles 16..31.
        uint o = rb + c * 18u;
        for (uint i = 0u; i < 4u; i++) {
            uint q = w_u32(o + 2u + 4u * i);
            wq[i] = q & 0x0f0f0f0fu;
            wq[4u + i] = (q >> 4) & 0x0f0f0f0fu;
        }
#else
#error "define TYPE_Q8_0 or TYPE_Q4_0"
#endif
        float dw = w_f16(o);
        for (uint t = 0u; t < nt; t++) {
            uint xb = (p.x_off + (t0 + t) * p.x_stride + c) * 9u;
            int s = 0;
            for (uint i = 0u; i < 8u; i++) s += dot4(wq[i], XQ[xb + 1u + i]);
#if defined(TYPE_Q4_0)
            int sx = 0;
            for (uint i = 0u; i < 8u; i++) sx += dot4(0x01010101u, XQ[xb + 1u + i]);
            s -= 8 * sx;
#endif
            acc[t] += float(s) * (dw * uintBitsToFloat(XQ[xb]));
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
