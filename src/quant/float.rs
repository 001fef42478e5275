//! Scalar float conversions with ggml's rounding.

/// f32 to IEEE half bits, round to nearest even (as ggml's `GGML_FP32_TO_FP16`, F16C's
/// `_cvtss_sh` with rounding mode 0).
pub fn f16_from_f32(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// f32 to bfloat16 bits as newer ggml rounds them: to nearest even, NaN kept a quiet NaN
/// with its sign. (The ggml pinned for the tests predates BF16; this follows its successor.)
pub fn bf16_from_f32(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_matches_half_on_every_finite_pattern_step() {
        // Every 97th bit pattern (about 44 million): finite values must agree with `half`'s
        // round-to-nearest-even; NaNs stay NaN with their sign.
        let mut u: u32 = 0;
        loop {
            let x = f32::from_bits(u);
            let ours = bf16_from_f32(x);
            if x.is_nan() {
                assert!(half::bf16::from_bits(ours).is_nan());
                assert_eq!(ours >> 15, (u >> 31) as u16);
            } else {
                assert_eq!(ours, half::bf16::from_f32(x).to_bits(), "{u:#x}");
            }
            match u.checked_add(97) {
                Some(n) => u = n,
                None => break,
            }
        }
        assert_eq!(bf16_from_f32(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_from_f32(f32::NEG_INFINITY), 0xff80);
        assert_eq!(bf16_from_f32(1.0), 0x3f80);
    }
}
