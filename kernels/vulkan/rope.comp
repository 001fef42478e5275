#version 450
// Rotary position embeddings in place, one invocation per rotated pair. The angles come in as
// each token's cos/sin table (src/ops/rope.rs's RopeTable, computed once on the host exactly as
// the CPU computes it), so no GPU sin/cos of large arguments is involved. Variants: NEOX
// (pairs i, i + rot/2: GPT-NeoX, Qwen2) or neither (adjacent pairs 2i, 2i+1: llama.cpp's LLaMA).

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 0) buffer Heads { float X[]; };
// Token t's table: cos at t * 2 * half, then sin at t * 2 * half + half.
layout(std430, binding = 1) readonly buffer Table { float T[]; };

layout(push_constant) uniform Push {
    uint head_dim;
    uint half_rot;  // rotated pairs per head (rot_dim / 2)
    uint n_head;
    uint n_tok;
    uint x_off;
    uint x_stride;  // values between tokens
} p;

void main() {
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
    uint per_tok = p.n_head * p.half_rot;
    if (id >= per_tok * p.n_tok) return;
    uint t = id / per_tok, r = id % per_tok;
    uint h = r / p.half_rot, i = r % p.half_rot;
    uint base = p.x_off + t * p.x_stride + h * p.head_dim;
#if defined(NEOX)
    uint a = base + i, b = base + i + p.half_rot;
#else
    uint a = base + 2u * i, b = a + 1u;
#endif
    float c = T[t * 2u * p.half_rot + i], s = T[t * 2u * p.half_rot + p.half_rot + i];
    float x0 = X[a], x1 = X[b];
    X[a] = x0 * c - x1 * s;
    X[b] = x0 * s + x1 * c;
}
