#version 450
// f32 activations to blocks of 32 int8 with an f32 scale (amax / 127, rounded half away from
// zero as ggml's Q8 quantizers do), for the integer matrix products of mul_mat_q8.comp.
// Output block b is 9 words: the scale's bits, then the 32 values packed four to a word.

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 0) readonly buffer Input { float X[]; };
layout(std430, binding = 1) writeonly buffer Blocks { uint XQ[]; };

layout(push_constant) uniform Push {
    uint n_blocks;
    uint x_off;
} p;

void main() {
    uint b = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
    if (b >= p.n_blocks) return;
    uint base = p.x_off + b * 32u;
    float amax = 0.0;
    for (uint i = 0u; i < 32u; i++) amax = max(amax, abs(X[base + i]));
    float d = amax / 127.0;
    float id = d != 0.0 ? 1.0 / d : 0.0;
    XQ[b * 9u] = floatBitsToUint(d);
    for (uint w = 0u; w < 8u; w++) {
        uint packed = 0u;
        for (uint k = 0u; k < 4u; k++) {
            float v = X[base + 4u * w + k] * id;
            int q = clamp(int(trunc(v + (v < 0.0 ? -0.5 : 0.5))), -127, 127);
            packed |= (uint(q) & 0xffu) << (8u * k);
        }
        XQ[b * 9u + 1u + w] = packed;
    }
}
