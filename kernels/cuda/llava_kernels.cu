// llava-edge CUDA kernels, compiled at run time by NVRTC for the GPU found (and in CI for
// compute_53, 61, 72, 75, 87 and 89 by kernels/cuda/compile_check.py).
//
// Self-contained on purpose: NVRTC from PyPI ships no CUDA headers, so there is no
// cuda_fp16.h here: half values travel as their bits (unsigned short) and are widened with
// PTX's cvt. The block layouts repeat kernels/include/llava_kernels.h's (GGUF's), with the
// same sizes asserted. The CPU kernels are the reference: every kernel here computes the same
// sums in the same integer or f32 arithmetic, only its summation order differs. Each kernel's
// CPU counterpart is named beside it, for the GPU tests to compare against.

// No math.h under NVRTC: the constant from its bits.
#define LE_INF __int_as_float(0x7f800000)

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;

struct block_q4_0 { u16 d; u8 qs[16]; };
struct block_q5_0 { u16 d; u8 qh[4]; u8 qs[16]; };
struct block_q8_0 { u16 d; i8 qs[32]; };
struct block_q4_K { u16 d; u16 dmin; u8 scales[12]; u8 qs[128]; };
struct block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; u16 d; };

static_assert(sizeof(block_q4_0) == 18, "q4_0 layout");
static_assert(sizeof(block_q5_0) == 22, "q5_0 layout");
static_assert(sizeof(block_q8_0) == 34, "q8_0 layout");
static_assert(sizeof(block_q4_K) == 144, "q4_K layout");
static_assert(sizeof(block_q6_K) == 210, "q6_K layout");

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("{ .reg .b16 t; cvt.rn.f16.f32 t, %1; mov.b16 %0, t; }" : "=h"(h) : "f"(f));
    return h;
}

// Four signed bytes of a times four of b, plus c. dp4a on sm_61+ (inline PTX: NVRTC 12.2's
// __dp4a needed headers); byte by byte on older GPUs such as Jetson Nano's sm_53.
__device__ __forceinline__ int dot4(int a, int b, int c) {
#if __CUDA_ARCH__ >= 610
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#else
    const i8 *x = (const i8 *)&a, *y = (const i8 *)&b;
    return c + x[0] * y[0] + x[1] * y[1] + x[2] * y[2] + x[3] * y[3];
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024) through shared memory.
__device__ float block_sum(float v, float *shared32) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? shared32[threadIdx.x] : 0.0f;
    return warp_sum(v);
}

__device__ float block_max(float v, float *shared32) {
    v = warp_max(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    v = threadIdx.x < (blockDim.x >> 5) ? shared32[threadIdx.x] : -LE_INF;
    return warp_max(v);
}

__device__ __forceinline__ int load_i32(const void *p) {
    // Blocks are 2-byte aligned: assemble from two halves.
    const u16 *h = (const u16 *)p;
    return (int)((unsigned)h[0] | ((unsigned)h[1] << 16));
}

extern "C" {

// Activations to Q8_0 (CPU: le_quantize_row_q8_0_scalar): one warp per block of 32.
__global__ void le_quantize_q8_0(const float *x, block_q8_0 *y, int n_blocks) {
    const int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (b >= n_blocks) return;
    const float v = x[b * 32 + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].qs[lane] = (i8)roundf(v * id);
    if (lane == 0) y[b].d = f2h(d);
}

// y[r] = W[r] . a, one warp per row (CPU: le_vec_dot_q4_0_q8_0_*).
__global__ void le_matvec_q4_0(const block_q4_0 *w, const block_q8_0 *a, float *y, int rows, int n_blocks) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const block_q4_0 *row = w + (size_t)r * n_blocks;
    float sum = 0.0f;
    for (int b = lane; b < n_blocks; b += 32) {
        int isum = 0;
        for (int j = 0; j < 4; j++) {
            const int q = load_i32(row[b].qs + 4 * j);
            const int lo = q & 0x0f0f0f0f; // nibbles 0..15; the -8 comes below
            const int hi = (q >> 4) & 0x0f0f0f0f;
            isum = dot4(lo, load_i32(a[b].qs + 4 * j), isum);
            isum = dot4(hi, load_i32(a[b].qs + 16 + 4 * j), isum);
        }
        // Nibbles are unsigned; sum(8 * a) restores the offset.
        int asum = 0;
        for (int j = 0; j < 8; j++) asum = dot4(0x01010101, load_i32(a[b].qs + 4 * j), asum);
        sum += (float)(isum - 8 * asum) * (h2f(row[b].d) * h2f(a[b].d));
    }
    sum = warp_sum(sum);
    if (lane == 0) y[r] = sum;
}

// Q8_0 weights (CPU: le_vec_dot_q8_0_q8_0_*).
__global__ void le_matvec_q8_0(const block_q8_0 *w, const block_q8_0 *a, float *y, int rows, int n_blocks) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const block_q8_0 *row = w + (size_t)r * n_blocks;
    float sum = 0.0f;
    for (int b = lane; b < n_blocks; b += 32) {
        int isum = 0;
        for (int j = 0; j < 8; j++) isum = dot4(load_i32(row[b].qs + 4 * j), load_i32(a[b].qs + 4 * j), isum);
        sum += (float)isum * (h2f(row[b].d) * h2f(a[b].d));
    }
    sum = warp_sum(sum);
    if (lane == 0) y[r] = sum;
}

// Q5_0 weights (CPU: le_vec_dot_q5_0_q8_0_*): fifth bits from qh, offset 16.
__global__ void le_matvec_q5_0(const block_q5_0 *w, const block_q8_0 *a, float *y, int rows, int n_blocks) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const block_q5_0 *row = w + (size_t)r * n_blocks;
    float sum = 0.0f;
    for (int b = lane; b < n_blocks; b += 32) {
        const unsigned qh = (unsigned)load_i32(row[b].qh);
        int isum = 0;
        for (int j = 0; j < 16; j++) {
            const int lo = (row[b].qs[j] & 0x0f) | (((qh >> j) & 1) << 4);
            const int hi = (row[b].qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
            isum += (lo - 16) * a[b].qs[j] + (hi - 16) * a[b].qs[j + 16];
        }
        sum += (float)isum * (h2f(row[b].d) * h2f(a[b].d));
    }
    sum = warp_sum(sum);
    if (lane == 0) y[r] = sum;
}

// Q4_K weights against f32 activations (CPU: the dequantizer then an f32 dot): one warp per row,
// each lane a 32-value sub-block at a time.
__global__ void le_matvec_q4_K_f32(const block_q4_K *w, const float *x, float *y, int rows, int n_super) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const block_q4_K *row = w + (size_t)r * n_super;
    float sum = 0.0f;
    for (int s = lane; s < n_super * 8; s += 32) {
        const block_q4_K *b = row + s / 8;
        const int j = s % 8, g = j / 2, high = j % 2;
        int sc, m;
        if (j < 4) {
            sc = b->scales[j] & 63;
            m = b->scales[j + 4] & 63;
        } else {
            sc = (b->scales[j + 4] & 0x0f) | ((b->scales[j - 4] >> 6) << 4);
            m = (b->scales[j + 4] >> 4) | ((b->scales[j] >> 6) << 4);
        }
        const float d = h2f(b->d) * (float)sc, dm = h2f(b->dmin) * (float)m;
        const float *xs = x + (size_t)(s / 8) * 256 + 32 * j;
        float acc = 0.0f, xsum = 0.0f;
        for (int l = 0; l < 32; l++) {
            const int q = high ? b->qs[32 * g + l] >> 4 : b->qs[32 * g + l] & 0x0f;
            acc += (float)q * xs[l];
            xsum += xs[l];
        }
        sum += d * acc - dm * xsum;
    }
    sum = warp_sum(sum);
    if (lane == 0) y[r] = sum;
}

// Q6_K weights against f32 activations.
__global__ void le_matvec_q6_K_f32(const block_q6_K *w, const float *x, float *y, int rows, int n_super) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const block_q6_K *row = w + (size_t)r * n_super;
    float sum = 0.0f;
    for (int s = lane; s < n_super * 8; s += 32) {
        const block_q6_K *b = row + s / 8;
        const int j = s % 8, h = j / 4, k = j % 4;
        const u8 *ql = b->ql + 64 * h + (k & 1) * 32, *qh = b->qh + 32 * h;
        const float d = h2f(b->d);
        const float s0 = d * (float)b->scales[8 * h + 2 * k], s1 = d * (float)b->scales[8 * h + 2 * k + 1];
        const float *xs = x + (size_t)(s / 8) * 256 + 32 * j;
        float a0 = 0.0f, a1 = 0.0f;
        for (int l = 0; l < 32; l++) {
            const int lo = k < 2 ? ql[l] & 0x0f : ql[l] >> 4;
            const int q = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
            if (l < 16) a0 += (float)q * xs[l]; else a1 += (float)q * xs[l];
        }
        sum += s0 * a0 + s1 * a1;
    }
    sum = warp_sum(sum);
    if (lane == 0) y[r] = sum;
}

// F16 weights against f32 activations (CPU: le_vec_dot_f16_f32_*).
__global__ void le_matvec_f16(const u16 *w, const float *x, float *y, int rows, int cols) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    const u16 *row = w + (size_t)r * cols;
    float sum = 0.0f;
    for (int i = lane; i < cols; i += 32) sum += h2f(row[i]) * x[i];
    sum = warp_sum(sum);
    if (lane == 0) y[r] = sum;
}

// Y[t][r] = W[r] . X[t] for F16 weights and many tokens (prefill, the vision encoder; CPU:
// le_gemm_f16_*): 32x32 output tiles through shared memory, each thread four outputs. Tensor
// core (mma) versions for sm_75+ are the next step.
__global__ void le_gemm_f16(const u16 *w, const float *x, float *y, int rows, int cols, int tokens) {
    __shared__ float ws[32][33], xs[32][33];
    const int r0 = blockIdx.x * 32, t0 = blockIdx.y * 32;
    const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5; // 256 threads: 32 x 8
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < cols; k0 += 32) {
        for (int i = ty; i < 32; i += 8) {
            const int r = r0 + i, t = t0 + i, k = k0 + tx;
            ws[i][tx] = r < rows && k < cols ? h2f(w[(size_t)r * cols + k]) : 0.0f;
            xs[i][tx] = t < tokens && k < cols ? x[(size_t)t * cols + k] : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < 32; k++) {
            const float wv = ws[tx][k];
            for (int j = 0; j < 4; j++) acc[j] += wv * xs[ty + 8 * j][k];
        }
        __syncthreads();
    }
    for (int j = 0; j < 4; j++) {
        const int r = r0 + tx, t = t0 + ty + 8 * j;
        if (r < rows && t < tokens) y[(size_t)t * rows + r] = acc[j];
    }
}

// RMSNorm of each row in place (CPU: ops::norm::rms_norm): one block per row.
__global__ void le_rms_norm(float *x, const float *weight, int n, float eps) {
    __shared__ float s32[32];
    float *row = x + (size_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += row[i] * row[i];
    const float scale = rsqrtf(block_sum(ss, s32) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = row[i] * scale * weight[i];
}

// LayerNorm of each row in place (CPU: ops::norm::layer_norm).
__global__ void le_layer_norm(float *x, const float *weight, const float *bias, int n, float eps) {
    __shared__ float s32[32];
    float *row = x + (size_t)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += row[i];
    const float mean = block_sum(s, s32) / (float)n;
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v += (row[i] - mean) * (row[i] - mean);
    const float inv = rsqrtf(block_sum(v, s32) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = (row[i] - mean) * inv * weight[i] + bias[i];
}

// Rotary embedding of rows of n_head heads (CPU: ops::rope::rope), token t at position
// pos0 + t: `neox` pairs (i, i + rot/2), else (2i, 2i + 1). One thread per pair.
__global__ void le_rope(float *x, int n_tokens, int n_head, int head_dim, int rot_dim, int pos0, float theta,
                        int neox) {
    const int half = rot_dim / 2;
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)n_tokens * n_head * half) return;
    const int i = (int)(id % half), h = (int)(id / half % n_head), t = (int)(id / half / n_head);
    const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)rot_dim);
    const float angle = (float)(pos0 + t) * inv_freq;
    float sn, cs;
    sincosf(angle, &sn, &cs);
    float *head = x + ((size_t)t * n_head + h) * head_dim;
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = head[a], x1 = head[b];
    head[a] = x0 * cs - x1 * sn;
    head[b] = x0 * sn + x1 * cs;
}

// Sigmoid-gated activations (CPU: le_activation_*): kind 0 SiLU, 1 quick_gelu, 2 GELU-tanh;
// times mul when given.
__global__ void le_gated(float *x, const float *mul, int n, int kind) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    const float z = kind == 1 ? 1.702f * v : kind == 2 ? 1.5957691216057308f * (v + 0.044715f * v * v * v) : v;
    const float y = v / (1.0f + expf(-z));
    x[i] = mul ? y * mul[i] : y;
}

// Exact GELU (the LLaVA projector; CPU: ops::activation::gelu_erf, which works in f64).
__global__ void le_gelu_erf(float *x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const double z = x[i];
    x[i] = (float)(0.5 * z * (1.0 + erf(z * 0.70710678118654752440)));
}

// x += y.
__global__ void le_add(float *x, const float *y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// Row-wise softmax in place: one block per row.
__global__ void le_softmax(float *x, int n) {
    __shared__ float s32[32];
    float *row = x + (size_t)blockIdx.x * n;
    float m = -LE_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, row[i]);
    m = block_max(m, s32);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        row[i] = expf(row[i] - m);
        s += row[i];
    }
    const float inv = 1.0f / block_sum(s, s32);
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] *= inv;
}

// Attention (CPU: le_attend_rows_*): one block per (query row, head); keys and values f16
// bits (the cache) or f32, `stride` elements between positions; query row t sees n_kv
// positions, or with `causal` the first first + t + 1. Scores sit in dynamic shared memory
// (4 bytes a position: 48 KiB holds 12K positions; the host splits longer contexts).
__global__ void le_attention(const float *q, const void *k, const void *v, int kv_f16, float *out, int n_head,
                             int n_kv_head, int hd, size_t stride, int n_kv, int causal, int first, float scale) {
    extern __shared__ float scores[];
    __shared__ float s32[32];
    const int t = blockIdx.x, h = blockIdx.y;
    const int seen = causal ? first + t + 1 : n_kv;
    const int kvh = h / (n_head / n_kv_head);
    const float *qh = q + ((size_t)t * n_head + h) * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int p = warp; p < seen; p += warps) {
        const size_t at = (size_t)p * stride + (size_t)kvh * hd;
        float s = 0.0f;
        for (int d = lane; d < hd; d += 32) {
            const float kv = kv_f16 ? h2f(((const u16 *)k)[at + d]) : ((const float *)k)[at + d];
            s += qh[d] * kv;
        }
        s = warp_sum(s);
        if (lane == 0) scores[p] = s * scale;
    }
    __syncthreads();
    float m = -LE_INF;
    for (int p = threadIdx.x; p < seen; p += blockDim.x) m = fmaxf(m, scores[p]);
    m = block_max(m, s32);
    float l = 0.0f;
    for (int p = threadIdx.x; p < seen; p += blockDim.x) {
        scores[p] = expf(scores[p] - m);
        l += scores[p];
    }
    l = block_sum(l, s32);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int p = 0; p < seen; p++) {
            const size_t at = (size_t)p * stride + (size_t)kvh * hd + d;
            acc += scores[p] * (kv_f16 ? h2f(((const u16 *)v)[at]) : ((const float *)v)[at]);
        }
        out[((size_t)t * n_head + h) * hd + d] = acc / l;
    }
}

// OneVision's bilinear shrink of a [h][w][d] feature grid to [oh][ow][d] (CPU:
// vision::anyres::bilinear_grid, PyTorch's align_corners=False arithmetic in f32).
__global__ void le_bilinear(const float *x, float *y, int h, int w, int d, int oh, int ow) {
    const long long id = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= (long long)oh * ow * d) return;
    const int k = (int)(id % d), xx = (int)(id / d % ow), yy = (int)(id / d / ow);
    const float sy = fmaxf((float)h / (float)oh * ((float)yy + 0.5f) - 0.5f, 0.0f);
    const float sx = fmaxf((float)w / (float)ow * ((float)xx + 0.5f) - 0.5f, 0.0f);
    const int y0 = min((int)sy, h - 1), x0 = min((int)sx, w - 1);
    const int y1 = y0 < h - 1 ? y0 + 1 : y0, x1 = x0 < w - 1 ? x0 + 1 : x0;
    const float ly = sy - (float)y0, lx = sx - (float)x0;
    const float h0 = 1.0f - ly, w0 = 1.0f - lx;
    const float *g = x + k;
    y[id] = h0 * (w0 * g[((size_t)y0 * w + x0) * d] + lx * g[((size_t)y0 * w + x1) * d]) +
            ly * (w0 * g[((size_t)y1 * w + x0) * d] + lx * g[((size_t)y1 * w + x1) * d]);
}

} // extern "C"
