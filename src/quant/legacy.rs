//! ggml's 32-value block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (weights) and Q8_1
//! (activations). The arithmetic follows ggml's reference quantizers step for step: scale by
//! the reciprocal, add the offset, truncate toward zero, so the bytes are identical.

use super::float::f16_from_f32;
use super::BlockFormat;
use crate::dtype::GgmlType;
use crate::ffi::{
    le_block_q4_0, le_block_q4_1, le_block_q5_0, le_block_q5_1, le_block_q8_0, le_block_q8_1,
};

const QK: usize = 32;

fn f16(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// The value of largest magnitude, with its sign (the first one on ties).
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// C's float-to-integer conversion as compiled for x86 (`cvttss2si`): truncation toward zero,
/// and the "integer indefinite" `i32::MIN` for NaN or out-of-range values, whose low byte a
/// narrowing cast keeps. ggml relies on this when a denormal scale makes `1/d` infinite; Rust's
/// saturating `as` would give other bytes.
pub(crate) fn c_trunc(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

fn recip(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

impl BlockFormat for le_block_q4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = QK;

    fn quantize_block(x: &[f32]) -> Self {
        let d = signed_absmax(x) / -8.0;
        let id = recip(d);
        let mut b = le_block_q4_0 {
            d: f16_from_f32(d),
            ..Default::default()
        };
        for j in 0..QK / 2 {
            let q0 = (c_trunc(x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = (c_trunc(x[QK / 2 + j] * id + 8.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16(self.d);
        for j in 0..QK / 2 {
            y[j] = ((self.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((self.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

impl BlockFormat for le_block_q4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK: usize = QK;

    fn quantize_block(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = recip(d);
        let mut b = le_block_q4_1 {
            d: f16_from_f32(d),
            m: f16_from_f32(min),
            ..Default::default()
        };
        for j in 0..QK / 2 {
            let q0 = (c_trunc((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (c_trunc((x[QK / 2 + j] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let (d, m) = (f16(self.d), f16(self.m));
        for j in 0..QK / 2 {
            y[j] = (self.qs[j] & 0x0f) as f32 * d + m;
            y[j + QK / 2] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }
}

impl BlockFormat for le_block_q5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK: usize = QK;

    fn quantize_block(x: &[f32]) -> Self {
        let d = signed_absmax(x) / -16.0;
        let id = recip(d);
        let mut b = le_block_q5_0 {
            d: f16_from_f32(d),
            ..Default::default()
        };
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = (c_trunc(x[j] * id + 16.5) as i8).min(31) as u8;
            let q1 = (c_trunc(x[QK / 2 + j] * id + 16.5) as i8).min(31) as u8;
            b.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= u32::from((q0 & 0x10) >> 4) << j;
            qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16(self.d);
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (((self.qs[j] & 0x0f) as u32 | h0) as i32 - 16) as f32 * d;
            y[j + QK / 2] = (((self.qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

impl BlockFormat for le_block_q5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK: usize = QK;

    fn quantize_block(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = recip(d);
        let mut b = le_block_q5_1 {
            d: f16_from_f32(d),
            m: f16_from_f32(min),
            ..Default::default()
        };
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // ggml truncates to uint8 here with no clamp: (max - min) * id rounds to at most 31.5.
            let q0 = c_trunc((x[j] - min) * id + 0.5) as u8;
            let q1 = c_trunc((x[QK / 2 + j] - min) * id + 0.5) as u8;
            b.qs[j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= u32::from((q0 & 0x10) >> 4) << j;
            qh |= u32::from((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        b.qh = qh.to_le_bytes();
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let (d, m) = (f16(self.d), f16(self.m));
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..QK / 2 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((self.qs[j] & 0x0f) as u32 | h0) as f32 * d + m;
            y[j + QK / 2] = ((self.qs[j] >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

impl BlockFormat for le_block_q8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = QK;

    fn quantize_block(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = recip(d);
        let mut b = le_block_q8_0 {
            d: f16_from_f32(d),
            ..Default::default()
        };
        for (q, v) in b.qs.iter_mut().zip(x) {
            // C's roundf: half away from zero, as Rust's round.
            *q = c_trunc((v * id).round()) as i8;
        }
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16(self.d);
        for (o, q) in y.iter_mut().zip(self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

impl BlockFormat for le_block_q8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK: usize = QK;

    fn quantize_block(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = recip(d);
        let mut b = le_block_q8_1 {
            d: f16_from_f32(d),
            ..Default::default()
        };
        let mut sum = 0i32;
        for j in 0..QK / 2 {
            b.qs[j] = c_trunc((x[j] * id).round()) as i8;
            b.qs[QK / 2 + j] = c_trunc((x[QK / 2 + j] * id).round()) as i8;
            sum += i32::from(b.qs[j]) + i32::from(b.qs[QK / 2 + j]);
        }
        b.s = f16_from_f32(sum as f32 * d);
        b
    }

    fn dequantize_block(&self, y: &mut [f32]) {
        let d = f16(self.d);
        for (o, q) in y.iter_mut().zip(self.qs) {
            *o = f32::from(q) * d;
        }
    }
}
