#version 450
// Element-wise ops in place on x (with y for the binary ones), one value per invocation.
// Variants: SILU_MUL (silu(x) * y), GELU_ERF, GELU_TANH, GELU_QUICK, ADD (x + y). The binary
// ones read y[i % y_period]: y_period = n for two equal vectors, a row's width for a bias.
// The sigmoid-gated forms are x / (1 + e^-z), as the CPU kernel writes them (no overflow or
// cancellation at either tail; tanh-GELU via 0.5 (1 + tanh u) = sigmoid(2u)); exact GELU is
// 0.5 x erfc(-x / sqrt 2) with Numerical Recipes' erfc (fractional error < 1.2e-7), as on the CPU.

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;

layout(std430, binding = 0) buffer Xs { float X[]; };
layout(std430, binding = 1) readonly buffer Ys { float Yv[]; };

layout(push_constant) uniform Push {
    uint n;
    uint x_off;
    uint y_off;
    uint y_period;
} p;

float sigmoid_gate(float x, float z) {
    return x / (1.0 + exp(-z));
}

// erfc(z) for z >= 0.
float erfc_pos(float z) {
    float t = 1.0 / (1.0 + 0.5 * z);
    float poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(poly);
}

void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * WG;
    if (i >= p.n) return;
    float x = X[p.x_off + i];
#if defined(SILU_MUL)
    X[p.x_off + i] = sigmoid_gate(x, x) * Yv[p.y_off + i % p.y_period];
#elif defined(GELU_QUICK)
    X[p.x_off + i] = sigmoid_gate(x, 1.702 * x);
#elif defined(GELU_TANH)
    X[p.x_off + i] = sigmoid_gate(x, 1.5957691216057308 * (x + 0.044715 * x * x * x));
#elif defined(GELU_ERF)
    float z = x * 0.70710678118654752;
    float e = z >= 0.0 ? 2.0 - erfc_pos(z) : erfc_pos(-z);
    X[p.x_off + i] = 0.5 * x * e;
#elif defined(ADD)
    X[p.x_off + i] = x + Yv[p.y_off + i % p.y_period];
#else
#error "define the op"
#endif
}
