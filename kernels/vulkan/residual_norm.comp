#version 450
// The vision layers' pre-norm step in place, one workgroup per row: x += h (when `add`: h is
// the previous block's output), then h = LayerNorm(x) with weight w and bias b. Statistics in
// f32 through a shared-memory tree (no subgroup operations), two passes for the variance, as
// norm.comp's LAYER_NORM.

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;   // a power of two

layout(std430, binding = 0) buffer Residual { float X[]; };
layout(std430, binding = 1) buffer Hidden { float H[]; };
layout(std430, binding = 2) readonly buffer Weight { float G[]; };
layout(std430, binding = 3) readonly buffer Bias { float B[]; };

layout(push_constant) uniform Push {
    uint width;
    uint n_rows;
    uint add;
    float eps;
} p;

shared float red[WG];

float row_sum(float v) {
    uint tid = gl_LocalInvocationID.x;
    red[tid] = v;
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (tid < h) red[tid] += red[tid + h];
        barrier();
    }
    float s = red[0];
    barrier(); // red is reused by the next sum
    return s;
}

void main() {
    uint row = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
    if (row >= p.n_rows) return;
    uint tid = gl_LocalInvocationID.x;
    uint base = row * p.width;
    float s = 0.0;
    for (uint i = tid; i < p.width; i += WG) {
        float v = X[base + i];
        if (p.add != 0u) {
            v += H[base + i];
            X[base + i] = v;
        }
        s += v;
    }
    // Each invocation reads back only the values it wrote itself.
    float mean = row_sum(s) / float(p.width);
    float s2 = 0.0;
    for (uint i = tid; i < p.width; i += WG) {
        float c = X[base + i] - mean;
        s2 += c * c;
    }
    float inv = 1.0 / sqrt(row_sum(s2) / float(p.width) + p.eps);
    for (uint i = tid; i < p.width; i += WG) H[base + i] = ((X[base + i] - mean) * inv) * G[i] + B[i];
}
