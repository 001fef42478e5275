#version 450
// Row normalisation in place, one workgroup per row, statistics in f32 through a shared-memory
// tree (no subgroup operations). Variants: RMS_NORM (x / sqrt(mean(x^2) + eps) * w) and
// LAYER_NORM ((x - mean) / sqrt(var + eps) * w + b, two passes over the row for the variance).

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;   // a power of two

layout(std430, binding = 0) buffer Rows { float X[]; };
layout(std430, binding = 1) readonly buffer Weight { float G[]; };
layout(std430, binding = 2) readonly buffer Bias { float B[]; };

layout(push_constant) uniform Push {
    uint width;
    uint n_rows;
    uint x_off;
    uint x_stride;
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
    uint base = p.x_off + row * p.x_stride;
    float n = float(p.width);
#if defined(RMS_NORM)
    float s = 0.0;
    for (uint i = tid; i < p.width; i += WG) s += X[base + i] * X[base + i];
    float inv = 1.0 / sqrt(row_sum(s) / n + p.eps);
    for (uint i = tid; i < p.width; i += WG) X[base + i] = (X[base + i] * inv) * G[i];
#elif defined(LAYER_NORM)
    float s = 0.0;
    for (uint i = tid; i < p.width; i += WG) s += X[base + i];
    float mean = row_sum(s) / n;
    float s2 = 0.0;
    for (uint i = tid; i < p.width; i += WG) {
        float c = X[base + i] - mean;
        s2 += c * c;
    }
    float inv = 1.0 / sqrt(row_sum(s2) / n + p.eps);
    for (uint i = tid; i < p.width; i += WG) X[base + i] = ((X[base + i] - mean) * inv) * G[i] + B[i];
#else
#error "define RMS_NORM or LAYER_NORM"
#endif
}
