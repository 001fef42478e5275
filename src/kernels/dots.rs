//! Activation quantizers and the row-at-a-time dot products of the decode path: one weight row
//! against one token's quantized activations.

use super::{dispatch, Cpu, GemmIsa, Isa, IsaKind};
use crate::ffi;

/// Quantizes activations `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [ffi::le_block_q8_0]) {
    quantize_row_q8_0_with(Cpu::get().isa(), x, out)
}

/// [`quantize_row_q8_0`] with a given build (every build writes the same bytes).
pub fn quantize_row_q8_0_with(isa: Isa, x: &[f32], out: &mut [ffi::le_block_q8_0]) {
    assert_eq!(x.len(), out.len() * 32, "quantize_row_q8_0: lengths");
    let (x, y, n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i32);
    // SAFETY: `x` holds out.len() * 32 floats and `out` that many blocks (asserted above); a
    // SIMD `isa` exists only where detection found its features.
    unsafe {
        dispatch!(isa.kind(), (x, y, n) {
            "x86_64" IsaKind::Avx2 => ffi::le_quantize_row_q8_0_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_quantize_row_q8_0_neon,
            _ => ffi::le_quantize_row_q8_0_scalar,
        })
    }
}

/// Quantizes activations `x` (a multiple of 32 values) into Q8_0 blocks that also carry each
/// block's sum (`le_block_q8_0x`): what the GEMMs, the interleaved decode and the x86 Q4_0 dot
/// take, so unsigned weight codes need no per-block offset multiply.
pub fn quantize_row_q8_0_summed(x: &[f32], out: &mut [ffi::le_block_q8_0x]) {
    quantize_row_q8_0_summed_with(Cpu::get().isa(), x, out)
}

/// [`quantize_row_q8_0_summed`] with a given build (every build writes the same bytes).
pub fn quantize_row_q8_0_summed_with(isa: Isa, x: &[f32], out: &mut [ffi::le_block_q8_0x]) {
    assert_eq!(x.len(), out.len() * 32, "quantize_row_q8_0_summed: lengths");
    let (x, y, n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i32);
    // SAFETY: as in quantize_row_q8_0_with.
    unsafe {
        dispatch!(isa.kind(), (x, y, n) {
            "x86_64" IsaKind::Avx2 => ffi::le_quantize_row_q8_0x_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_quantize_row_q8_0x_neon,
            _ => ffi::le_quantize_row_q8_0x_scalar,
        })
    }
}

/// Quantizes activations `x` (a multiple of 256 values) into Q8_K blocks for the K-quant dots.
pub fn quantize_row_q8_K(x: &[f32], out: &mut [ffi::le_block_q8_K]) {
    assert_eq!(x.len(), out.len() * 256, "quantize_row_q8_K: lengths");
    // SAFETY: `x` holds out.len() * 256 floats and `out` that many blocks (asserted above).
    unsafe { ffi::le_quantize_row_q8_K_scalar(x.as_ptr(), out.as_mut_ptr(), x.len() as i32) }
}

macro_rules! dot_fn {
    ($(#[$doc:meta])* $name:ident, $w:ty, $a:ty, $per:expr, $scalar:ident, $avx2:ident, $neon:ident, $dotprod:ident) => {
        $(#[$doc])*
        pub fn $name(isa: Isa, w: &[$w], a: &[$a]) -> f32 {
            assert_eq!(w.len(), a.len(), concat!(stringify!($name), ": lengths"));
            let n = (w.len() * $per) as i32;
            let (w, a) = (w.as_ptr(), a.as_ptr());
            // SAFETY: both slices hold n values (asserted); a SIMD `isa` exists only where
            // detection found its features.
            unsafe {
                dispatch!(isa.kind(), (n, w, a) {
                    "x86_64" IsaKind::Avx2 => ffi::$avx2,
                    "aarch64" IsaKind::Neon => ffi::$neon,
                    "aarch64" IsaKind::NeonDotprod => ffi::$dotprod,
                    _ => ffi::$scalar,
                })
            }
        }
    };
}

dot_fn!(
    /// Dot product of Q4_0 weights and Q8_0 activations (blocks of 32).
    dot_q4_0_q8_0, ffi::le_block_q4_0, ffi::le_block_q8_0, 32,
    le_vec_dot_q4_0_q8_0_scalar, le_vec_dot_q4_0_q8_0_avx2, le_vec_dot_q4_0_q8_0_neon, le_vec_dot_q4_0_q8_0_dotprod
);
dot_fn!(
    /// Dot product of Q8_0 weights and Q8_0 activations (blocks of 32).
    dot_q8_0_q8_0, ffi::le_block_q8_0, ffi::le_block_q8_0, 32,
    le_vec_dot_q8_0_q8_0_scalar, le_vec_dot_q8_0_q8_0_avx2, le_vec_dot_q8_0_q8_0_neon, le_vec_dot_q8_0_q8_0_dotprod
);
dot_fn!(
    /// Dot product of F16 weights (raw bits) and F32 activations.
    dot_f16_f32, u16, f32, 1,
    le_vec_dot_f16_f32_scalar, le_vec_dot_f16_f32_avx2, le_vec_dot_f16_f32_neon, le_vec_dot_f16_f32_neon
);
dot_fn!(
    /// Dot product of BF16 weights (raw bits) and F32 activations.
    dot_bf16_f32, u16, f32, 1,
    le_vec_dot_bf16_f32_scalar, le_vec_dot_bf16_f32_avx2, le_vec_dot_bf16_f32_neon, le_vec_dot_bf16_f32_neon
);
dot_fn!(
    /// Dot product of Q5_0 weights and Q8_0 activations (blocks of 32).
    dot_q5_0_q8_0, ffi::le_block_q5_0, ffi::le_block_q8_0, 32,
    le_vec_dot_q5_0_q8_0_scalar, le_vec_dot_q5_0_q8_0_avx2, le_vec_dot_q5_0_q8_0_neon, le_vec_dot_q5_0_q8_0_dotprod
);
dot_fn!(
    /// Dot product of Q4_K weights and Q8_K activations (blocks of 256).
    dot_q4_K_q8_K, ffi::le_block_q4_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q4_K_q8_K_scalar, le_vec_dot_q4_K_q8_K_avx2, le_vec_dot_q4_K_q8_K_neon, le_vec_dot_q4_K_q8_K_dotprod
);
dot_fn!(
    /// Dot product of Q5_K weights and Q8_K activations (blocks of 256).
    dot_q5_K_q8_K, ffi::le_block_q5_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q5_K_q8_K_scalar, le_vec_dot_q5_K_q8_K_avx2, le_vec_dot_q5_K_q8_K_neon, le_vec_dot_q5_K_q8_K_dotprod
);
dot_fn!(
    /// Dot product of Q2_K weights and Q8_K activations (blocks of 256).
    dot_q2_K_q8_K, ffi::le_block_q2_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q2_K_q8_K_scalar, le_vec_dot_q2_K_q8_K_avx2, le_vec_dot_q2_K_q8_K_neon, le_vec_dot_q2_K_q8_K_dotprod
);
dot_fn!(
    /// Dot product of Q3_K weights and Q8_K activations (blocks of 256).
    dot_q3_K_q8_K, ffi::le_block_q3_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q3_K_q8_K_scalar, le_vec_dot_q3_K_q8_K_avx2, le_vec_dot_q3_K_q8_K_neon, le_vec_dot_q3_K_q8_K_dotprod
);
dot_fn!(
    /// Dot product of Q6_K weights and Q8_K activations (blocks of 256).
    dot_q6_K_q8_K, ffi::le_block_q6_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q6_K_q8_K_scalar, le_vec_dot_q6_K_q8_K_avx2, le_vec_dot_q6_K_q8_K_neon, le_vec_dot_q6_K_q8_K_dotprod
);

/// Q4_0 weights against [`quantize_row_q8_0_summed`] activations (the x86 decode row, where
/// unsigned nibbles against the block sums take fewer operations a block), with the build of
/// `gemm` (the same choice as the GEMM's: VNNI where there is one).
pub fn dot_q4_0_q8_0_summed(
    gemm: GemmIsa,
    w: &[ffi::le_block_q4_0],
    a: &[ffi::le_block_q8_0x],
) -> f32 {
    assert_eq!(w.len(), a.len(), "dot_q4_0_q8_0_summed: lengths");
    let (n, w, a) = ((w.len() * 32) as i32, w.as_ptr(), a.as_ptr());
    // SAFETY: both slices hold n values (asserted); a SIMD `gemm` exists only where detected.
    unsafe {
        dispatch!(gemm.kind(), (n, w, a) {
            "x86_64" super::GemmKind::Avx2 => ffi::le_vec_dot_q4_0_q8_0x_avx2,
            "x86_64" super::GemmKind::Vnni => ffi::le_vec_dot_q4_0_q8_0x_vnni,
            _ => ffi::le_vec_dot_q4_0_q8_0x_scalar,
        })
    }
}

/// Half-precision bits to f32, `x.len() == y.len()`.
pub fn f16_to_f32(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "f16_to_f32: lengths");
    let (x, y, n) = (x.as_ptr(), y.as_mut_ptr(), x.len() as i32);
    // SAFETY: both slices hold n values (asserted); `Cpu::get` is detection's.
    unsafe {
        dispatch!(Cpu::get().isa().kind(), (x, y, n) {
            "x86_64" IsaKind::Avx2 => ffi::le_f16_to_f32_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_f16_to_f32_neon,
            _ => ffi::le_f16_to_f32_scalar,
        })
    }
}
