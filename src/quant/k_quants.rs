//! ggml's 256-value super-block formats: Q4_K, Q5_K, Q6_K (weights) and Q8_K (activations).
//! Sub-block scales come from the searches in `search.rs`, are themselves quantized to 6 or 8
//! bits against one f16 super-scale, and the values are then re-quantized against the stored
//! scales, exactly as ggml's reference quantizers do.

use super::float::f16_from_f32;
use super::search::{make_q3_quants, make_qkx2_quants, make_qx_quants, nearest_int};
use super::BlockFormat;
use crate::dtype::GgmlType;
use crate::ffi::{
    le_block_q2_K, le_block_q3_K, le_block_q4_K, le_block_q5_K, le_block_q6_K, le_block_q8_K,
};

const QK_K: usize = 256;

fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The j-th 6-bit (scale, min) pair of Q4_K/Q5_K's packed 12 bytes.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Shared by Q4_K (`nmax` 15) and Q5_K (31): per 32-value sub-block scale and min searched with
/// weights `rms(x) + |x|`, quantized to 6 bits against f16 super-scales; returns the packed
/// scales, the two super-scales, and the final levels.
fn quantize_scale_min(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> ([u8; 12], u16, u16, [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * (j + 1)];
        let mut sum_x2 = 0f32;
        for v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut levels[32 * j..32 * (j + 1)],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        // C stores the int in a uint8_t (modulo 256) before clamping.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16_from_f32(max_scale / 63.0);
    let dmin = f16_from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = f16(d) * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = f16(dmin) * m as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (packed, d, dmin, levels)
}

impl BlockFormat for le_block_q4_K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = QK_K;

    fn quantize_block(x: &[f32]) -> Self {
        let (scales, d, dmin, l) = quantize_scale_min(x, 15, -1.0, 20);
        let mut b = le_block_q4_K {
            d,
            dmin,
            scales,
            ..Default::default()
        };
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                b.qs[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let (d, min) = (f16(self.d), f16(self.dmin));
        for c in 0..4 {
            let (sc, m) = scale_min_k4(2 * c, &self.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = scale_min_k4(2 * c + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let q = &self.qs[32 * c..32 * (c + 1)];
            for i in 0..32 {
                y[64 * c + i] = d1 * (q[i] & 0x0f) as f32 - m1;
                y[64 * c + 32 + i] = d2 * (q[i] >> 4) as f32 - m2;
            }
        }
    }
}

impl BlockFormat for le_block_q5_K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK: usize = QK_K;

    fn quantize_block(x: &[f32]) -> Self {
        let (scales, d, dmin, l) = quantize_scale_min(x, 31, -0.5, 15);
        let mut b = le_block_q5_K {
            d,
            dmin,
            scales,
            ..Default::default()
        };
        let (mut m1, mut m2) = (1u8, 2u8);
        for (c, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let (mut l1, mut l2) = (l[n + j], l[n + j + 32]);
                if l1 > 15 {
                    l1 -= 16;
                    b.qh[j] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    b.qh[j] |= m2;
                }
                b.qs[32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let (d, min) = (f16(self.d), f16(self.dmin));
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..4 {
            let (sc, m) = scale_min_k4(2 * c, &self.scales);
            let (d1, m1) = (d * sc as f32, min * m as f32);
            let (sc, m) = scale_min_k4(2 * c + 1, &self.scales);
            let (d2, m2) = (d * sc as f32, min * m as f32);
            let ql = &self.qs[32 * c..32 * (c + 1)];
            for i in 0..32 {
                let h1 = if self.qh[i] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[i] & u2 != 0 { 16 } else { 0 };
                y[64 * c + i] = d1 * ((ql[i] & 0x0f) + h1) as f32 - m1;
                y[64 * c + 32 + i] = d2 * ((ql[i] >> 4) + h2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

impl BlockFormat for le_block_q6_K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK: usize = QK_K;

    fn quantize_block(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs) = (0f32, 0f32);
        for ib in 0..16 {
            let s = make_qx_quants(
                32,
                &x[16 * ib..16 * (ib + 1)],
                &mut l[16 * ib..16 * (ib + 1)],
            );
            scales[ib] = s;
            if s.abs() > max_abs {
                max_abs = s.abs();
                max_scale = s;
            }
        }
        let mut b = le_block_q6_K::default();
        if max_abs == 0.0 {
            return b;
        }
        let iscale = -128.0 / max_scale;
        b.d = f16_from_f32(1.0 / iscale);
        for (q, s) in b.scales.iter_mut().zip(scales) {
            *q = nearest_int(iscale * s).min(127) as i8;
        }
        for j in 0..16 {
            let d = f16(b.d) * b.scales[j] as f32;
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for (c, j) in (0..QK_K).step_by(128).enumerate() {
            let (ql, qh) = (
                &mut b.ql[64 * c..64 * (c + 1)],
                &mut b.qh[32 * c..32 * (c + 1)],
            );
            for i in 0..32 {
                let q = |k: usize| l[j + i + 32 * k] as u8;
                ql[i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
                ql[i + 32] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
                qh[i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16(self.d);
        for c in 0..2 {
            let (ql, qh) = (
                &self.ql[64 * c..64 * (c + 1)],
                &self.qh[32 * c..32 * (c + 1)],
            );
            let sc = &self.scales[8 * c..8 * (c + 1)];
            for i in 0..32 {
                let is = i / 16;
                let q1 = ((ql[i] & 0x0f) | ((qh[i] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[i + 32] & 0x0f) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
                let o = 128 * c + i;
                y[o] = d * sc[is] as f32 * q1 as f32;
                y[o + 32] = d * sc[is + 2] as f32 * q2 as f32;
                y[o + 64] = d * sc[is + 4] as f32 * q3 as f32;
                y[o + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

impl BlockFormat for le_block_q8_K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK: usize = QK_K;

    fn quantize_block(x: &[f32]) -> Self {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let mut b = le_block_q8_K::default();
        if amax == 0.0 {
            return b;
        }
        let iscale = -127.0 / max;
        for (q, v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for j in 0..16 {
            b.bsums[j] = b.qs[16 * j..16 * (j + 1)]
                .iter()
                .map(|&q| i16::from(q))
                .sum();
        }
        b.d = 1.0 / iscale;
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        for (o, q) in y.iter_mut().zip(self.qs) {
            *o = self.d * f32::from(q);
        }
    }
}

/// Packs 2-bit levels as Q2_K and Q3_K store them: 4 per byte, the byte at `l` of each
/// 128-value half holding values `l`, `l+32`, `l+64`, `l+96`.
fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for (c, j) in (0..QK_K).step_by(128).enumerate() {
        for i in 0..32 {
            qs[32 * c + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

impl BlockFormat for le_block_q2_K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK: usize = QK_K;

    fn quantize_block(x: &[f32]) -> Self {
        let mut l = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        let mut weights = [0f32; 16];
        for j in 0..16 {
            let xs = &x[16 * j..16 * (j + 1)];
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * (j + 1)],
                -0.5,
                0.1,
                15,
                true,
            );
            scales[j] = s;
            mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }
        let mut b = le_block_q2_K::default();
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (q, s) in b.scales.iter_mut().zip(scales) {
                *q = nearest_int(iscale * s) as u8;
            }
            b.d = f16_from_f32(max_scale / 15.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (q, m) in b.scales.iter_mut().zip(mins) {
                *q |= (nearest_int(iscale * m) << 4) as u8;
            }
            b.dmin = f16_from_f32(max_min / 15.0);
        }
        for j in 0..16 {
            let d = f16(b.d) * (b.scales[j] & 0x0f) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = f16(b.dmin) * (b.scales[j] >> 4) as f32;
            for i in 0..16 {
                l[16 * j + i] = nearest_int((x[16 * j + i] + dm) / d).clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut b.qs);
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let (d, min) = (f16(self.d), f16(self.dmin));
        let mut is = 0;
        let mut o = 0;
        for c in 0..2 {
            let q = &self.qs[32 * c..32 * (c + 1)];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = self.scales[is];
                    is += 1;
                    let (dl, ml) = (d * (sc & 0x0f) as f32, min * (sc >> 4) as f32);
                    for i in 0..16 {
                        y[o] = dl * ((q[16 * half + i] >> shift) & 3) as f32 - ml;
                        o += 1;
                    }
                }
            }
        }
    }
}

/// The j-th 6-bit signed scale of Q3_K's packed 12 bytes.
fn q3_scale(j: usize, s: &[u8; 12]) -> i32 {
    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
    ((low | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32) - 32
}

impl BlockFormat for le_block_q3_K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK: usize = QK_K;

    fn quantize_block(x: &[f32]) -> Self {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..16 {
            let s = make_q3_quants(4, &x[16 * j..16 * (j + 1)], &mut l[16 * j..16 * (j + 1)]);
            scales[j] = s;
            if s.abs() > amax {
                amax = s.abs();
                max_scale = s;
            }
        }
        let mut b = le_block_q3_K::default();
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in scales.iter().enumerate() {
                // C stores the int in an int8_t before clamping.
                let q = (nearest_int(iscale * s) as i8).clamp(-32, 31) as i32 + 32;
                if j < 8 {
                    b.scales[j] = (q & 0x0f) as u8;
                } else {
                    b.scales[j - 8] |= ((q & 0x0f) << 4) as u8;
                }
                b.scales[j % 4 + 8] |= ((q >> 4) << (2 * (j / 4))) as u8;
            }
            b.d = f16_from_f32(1.0 / iscale);
        }
        for j in 0..16 {
            let d = f16(b.d) * q3_scale(j, &b.scales) as f32;
            if d == 0.0 {
                continue;
            }
            for i in 0..16 {
                l[16 * j + i] = (nearest_int(x[16 * j + i] / d).clamp(-4, 3) + 4) as i8;
            }
        }
        let mut lu = [0u8; QK_K];
        let (mut m, mut hm) = (0usize, 1u8);
        for j in 0..QK_K {
            let mut v = l[j] as u8;
            if v > 3 {
                b.hmask[m] |= hm;
                v -= 4;
            }
            lu[j] = v;
            m += 1;
            if m == QK_K / 8 {
                m = 0;
                hm <<= 1;
            }
        }
        pack_2bit(&lu, &mut b.qs);
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d_all = f16(self.d);
        let (mut is, mut o, mut m) = (0usize, 0usize, 1u8);
        for c in 0..2 {
            let q = &self.qs[32 * c..32 * (c + 1)];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * q3_scale(is, &self.scales) as f32;
                    is += 1;
                    for i in 0..16 {
                        let k = 16 * half + i;
                        let h = if self.hmask[k] & m != 0 { 0 } else { 4 };
                        y[o] = dl * (((q[k] >> shift) & 3) as i32 - h) as f32;
                        o += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}
