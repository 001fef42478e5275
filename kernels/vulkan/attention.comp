#version 450
// Scaled dot-product attention over an F16 key/value cache in one pass with an online softmax
// (running max and sum; no score row is stored beyond one tile of keys). One workgroup per
// (query head, query row); grouped-query heads read key/value head h / (n_head / n_kv_head).
// Causal (text: row r sees keys 0..=first + r) or full (vision: every key), by push constant.
//
// A tile of WG keys at a time: invocation j scores key j of the tile, the tile's max and sum
// meet in shared-memory trees (no subgroup operations), then each invocation updates the output
// dimensions it owns (tid, tid + WG, ... < head_dim <= 256). The cache is bound as uint[] and
// read as half pairs, so 16-bit storage is not needed. Variant KV_F32: keys and values are f32
// rows (the vision encoder's, which are never cached); offsets and strides then count floats.

#define WG 64
#define MAX_DIM 256
#define DIMS_PER (MAX_DIM / WG)
layout(local_size_x = WG) in;

layout(std430, binding = 0) readonly buffer Query { float Q[]; };
#if defined(KV_F32)
layout(std430, binding = 1) readonly buffer Keys { float K[]; };
layout(std430, binding = 2) readonly buffer Values { float V[]; };
#else
layout(std430, binding = 1) readonly buffer Keys { uint K[]; };
layout(std430, binding = 2) readonly buffer Values { uint V[]; };
#endif
layout(std430, binding = 3) writeonly buffer Out { float O[]; };

layout(push_constant) uniform Push {
    uint n_rows;
    uint n_kv;       // keys in the cache
    uint n_head;
    uint n_kv_head;
    uint head_dim;   // even, <= MAX_DIM
    uint q_off;
    uint q_stride;   // values between query rows (and output rows)
    uint o_off;
    uint kv_off;     // halves before position 0 of the cache
    uint kv_stride;  // halves between positions (n_kv_head * head_dim for a dense cache)
    uint causal;     // 0: every row sees all n_kv keys; 1: row r sees keys 0..=first + r
    uint first;
    float scale;
} p;

shared float qs[MAX_DIM];
shared float sc[WG];
shared float red[WG];

#if defined(KV_F32)
float value_at(uint idx) { return V[idx]; }
vec2 key_pair(uint idx) { return vec2(K[idx], K[idx + 1u]); }
#else
float value_at(uint idx) { return unpackHalf2x16(V[idx >> 1] >> ((idx & 1u) * 16u)).x; }
vec2 key_pair(uint idx) { return unpackHalf2x16(K[idx >> 1]); }
#endif

float tree(float v, bool is_max) {
    uint tid = gl_LocalInvocationID.x;
    red[tid] = v;
    barrier();
    for (uint h = WG / 2u; h > 0u; h >>= 1) {
        if (tid < h) red[tid] = is_max ? max(red[tid], red[tid + h]) : red[tid] + red[tid + h];
        barrier();
    }
    float r = red[0];
    barrier();
    return r;
}

void main() {
    uint head = gl_WorkGroupID.x, row = gl_WorkGroupID.y;
    uint tid = gl_LocalInvocationID.x;
    uint kvh = head / (p.n_head / p.n_kv_head);
    uint D = p.head_dim;
    uint qb = p.q_off + row * p.q_stride + head * D;
    for (uint d = tid; d < D; d += WG) qs[d] = Q[qb + d];
    barrier();
    uint seen = p.causal != 0u ? min(p.first + row + 1u, p.n_kv) : p.n_kv;
    uint kb = p.kv_off + kvh * D;

    float m = -1.0 / 0.0, l = 0.0;
    float acc[DIMS_PER];
    for (uint k = 0u; k < DIMS_PER; k++) acc[k] = 0.0;
    for (uint t0 = 0u; t0 < seen; t0 += WG) {
        uint key = t0 + tid;
        float s = -1.0 / 0.0;
        if (key < seen) {
            uint at = kb + key * p.kv_stride;
            float dot = 0.0;
            for (uint d = 0u; d < D; d += 2u) {
                vec2 kk = key_pair(at + d);
                dot += qs[d] * kk.x + qs[d + 1u] * kk.y;
            }
            s = dot * p.scale;
        }
        float m_new = max(m, tree(s, true));
        float e = key < seen ? exp(s - m_new) : 0.0;
        sc[tid] = e;
        float alpha = exp(m - m_new);   // 0 on the first tile (m = -inf)
        l = l * alpha + tree(e, false); // tree's barriers also publish sc
        m = m_new;
        uint n_here = min(WG, seen - t0);
        for (uint k = 0u; k < DIMS_PER; k++) {
            uint d = tid + k * WG;
            if (d >= D) break;
            float a = acc[k] * alpha;
            for (uint j = 0u; j < n_here; j++) a += sc[j] * value_at(kb + (t0 + j) * p.kv_stride + d);
            acc[k] = a;
        }
        barrier(); // sc is rewritten by the next tile
    }
    uint ob = p.o_off + row * p.q_stride + head * D;
    for (uint k = 0u; k < DIMS_PER; k++) {
        uint d = tid + k * WG;
        if (d < D) O[ob + d] = acc[k] / l;
    }
}
