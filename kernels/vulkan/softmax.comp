#version 450
// Softmax of each row in place, one workgroup per row: max, then sum of e^(x - max), then
// scale, each reduction through a shared-memory tree (no subgroup operations).

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;   // a power of two

layout(std430, binding = 0) buffer Rows { float X[]; };

layout(push_constant) uniform Push {
    uint width;
    uint n_rows;
    uint x_off;
    uint x_stride;
} p;

shared float red[WG];

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.n_rows) return;
    uint tid = gl_LocalInvocationID.x;
    uint base = p.x_off + row * p.x_stride;
    float m = -1.0 / 0.0;
    for (uint i = tid; i < p.width; i += WG) m = max(m, X[base + i]);
    red[tid] = m;
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (tid < h) red[tid] = max(red[tid], red[tid + h]);
        barrier();
    }
    m = red[0];
    barrier();
    float s = 0.0;
    for (uint i = tid; i < p.width; i += WG) {
        float e = exp(X[base + i] - m);
        X[base + i] = e;
        s += e;
    }
    red[tid] = s;
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (tid < h) red[tid] += red[tid + h];
        barrier();
    }
    float inv = 1.0 / red[0];
    for (uint i = tid; i < p.width; i += WG) X[base + i] *= inv;
}
