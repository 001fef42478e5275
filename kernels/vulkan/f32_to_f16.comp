#version 450
// f32 values into F16 storage (the key/value cache append): one invocation per pair of
// values, so each 32-bit word of the destination has one writer. Destination offsets are in
// halves and even (a cache row is n_kv_head * head_dim halves, head_dim even).

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 0) readonly buffer Src { float X[]; };
layout(std430, binding = 1) buffer Dst { uint H[]; };

layout(push_constant) uniform Push {
    uint n_pairs;
    uint src_off;  // values
    uint dst_off;  // halves (even)
} p;

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
    if (i >= p.n_pairs) return;
    H[(p.dst_off >> 1) + i] = packHalf2x16(vec2(X[p.src_off + 2u * i], X[p.src_off + 2u * i + 1u]));
}
