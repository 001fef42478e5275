#version 450
// Bilinear resize of a [h, w, d] feature grid to [oh, ow, d] (PyTorch's interpolate,
// align_corners=False, no antialiasing): OneVision's anyres shrink and its video frames'
// 2x2 pooling. One invocation per output value; the source coordinates follow
// src/vision/anyres.rs's bilinear_grid step for step, with the scales (in/out, f32) divided
// on the host so they are correctly rounded as there.

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 0) readonly buffer Grid { float X[]; };
layout(std430, binding = 1) writeonly buffer Out { float O[]; };

layout(push_constant) uniform Push {
    uint h;
    uint w;
    uint d;
    uint oh;
    uint ow;
    float scale_y;  // h / oh
    float scale_x;  // w / ow
} p;

void coord(uint o, uint n_in, float scale, out uint i0, out uint i1, out float l0, out float l1) {
    float s = max(scale * (float(o) + 0.5) - 0.5, 0.0);
    i0 = min(uint(s), n_in - 1u);
    i1 = i0 < n_in - 1u ? i0 + 1u : i0;
    l1 = s - float(i0);
    l0 = 1.0 - l1;
}

void main() {
    uint id = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
    if (id >= p.oh * p.ow * p.d) return;
    uint k = id % p.d, px = id / p.d;
    uint y = px / p.ow, x = px % p.ow;
    uint y0, y1, x0, x1;
    float h0, h1, w0, w1;
    coord(y, p.h, p.scale_y, y0, y1, h0, h1);
    coord(x, p.w, p.scale_x, x0, x1, w0, w1);
    float a = X[(y0 * p.w + x0) * p.d + k], b = X[(y0 * p.w + x1) * p.d + k];
    float c = X[(y1 * p.w + x0) * p.d + k], e = X[(y1 * p.w + x1) * p.d + k];
    O[id] = h0 * (w0 * a + w1 * b) + h1 * (w0 * c + w1 * e);
}
