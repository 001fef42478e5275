#version 450
// The vision encoder's embeddings in one pass, from the normalised pixels [3][s][s]: row 0 is
// the class token (when the tower has one), then one row per patch, row-major over the g x g
// grid: the patch convolution (stride = kernel, so a product with the patch's 3 x p x p pixels
// in (channel, row, column) order, the weight's own order), plus its bias, plus the row's
// position embedding. One invocation per output value; the product is one f32 sum in column
// order. The patch width 3 p^2 (588 for p = 14) need not be whole 32-value chunks, which is
// why this is not mul_mat. Variants TYPE_F32, TYPE_F16 (the weight types a patch kernel is
// stored in: its rows are not whole quantization blocks).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 0) readonly buffer Weights { uint W[]; };
layout(std430, binding = 1) readonly buffer Pixels { float P[]; };
// bias [d], class token [d] (zeros when absent), positions [n][d]
layout(std430, binding = 2) readonly buffer Table { float T[]; };
layout(std430, binding = 3) writeonly buffer Out { float O[]; };

layout(push_constant) uniform Push {
    uint d;         // hidden size (weight rows)
    uint p;         // patch side
    uint s;         // image side
    uint g;         // patches per side
    uint cls;       // 1: row 0 is the class token
    uint row_bytes; // bytes per weight row
} p;

#include "common.glsl"

float weight(uint rb, uint k) {
#if defined(TYPE_F32)
    return uintBitsToFloat(W[(rb >> 2) + k]);
#elif defined(TYPE_F16)
    return w_f16(rb + 2u * k);
#else
#error "define the weight type"
#endif
}

void main() {
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
    uint n = p.g * p.g + p.cls;
    if (id >= n * p.d) return;
    uint r = id / p.d, c = id % p.d;
    float pos = T[2u * p.d + id];
    if (r < p.cls) {
        O[id] = T[p.d + c] + pos;
        return;
    }
    uint at = r - p.cls;
    uint py = at / p.g, px = at % p.g;
    uint rb = c * p.row_bytes;
    float acc = 0.0;
    uint k = 0u;
    for (uint ch = 0u; ch < 3u; ch++) {
        for (uint y = 0u; y < p.p; y++) {
            uint src = ch * p.s * p.s + (py * p.p + y) * p.s + px * p.p;
            for (uint x = 0u; x < p.p; x++) {
                acc += weight(rb, k) * P[src + x];
                k++;
            }
        }
    }
    O[id] = (acc + T[c]) + pos;
}
