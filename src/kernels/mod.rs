//! The thin dispatch to the C kernels: picks the best instruction set the CPU has, once, and
//! offers safe, length-checked wrappers. `LLAVA_EDGE_FORCE_SCALAR=1` forces the scalar
//! reference (for tests and for comparing against it).
#![allow(non_snake_case)] // Q8_K, Q4_K: ggml's type names.

use std::sync::OnceLock;

use crate::ffi;

/// The instruction set the kernels run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable C.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// AArch64 base NEON.
    Neon,
    /// AArch64 NEON with the SDOT dot-product extension.
    NeonDotprod,
}

/// The best instruction set this CPU supports (or `Scalar` when forced by the environment).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var_os("LLAVA_EDGE_FORCE_SCALAR").is_some_and(|v| v != "0") {
            return Isa::Scalar;
        }
        detect()
    })
}

/// What the CPU supports, ignoring the environment.
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return Isa::NeonDotprod;
        }
        return Isa::Neon;
    }
    #[allow(unreachable_code)]
    Isa::Scalar
}

/// Quantizes activations `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [ffi::le_block_q8_0]) {
    assert_eq!(x.len(), out.len() * 32, "quantize_row_q8_0: lengths");
    // SAFETY: `x` holds out.len() * 32 floats and `out` that many blocks (asserted above).
    unsafe { ffi::le_quantize_row_q8_0_scalar(x.as_ptr(), out.as_mut_ptr(), x.len() as i32) }
}

macro_rules! dot_fn {
    ($(#[$doc:meta])* $name:ident, $w:ty, $a:ty, $per:expr, $scalar:ident, $avx2:ident, $neon:ident, $dotprod:ident) => {
        $(#[$doc])*
        pub fn $name(isa: Isa, w: &[$w], a: &[$a]) -> f32 {
            assert_eq!(w.len(), a.len(), concat!(stringify!($name), ": lengths"));
            let n = (w.len() * $per) as i32;
            let (w, a) = (w.as_ptr(), a.as_ptr());
            // SAFETY: both slices hold n values (asserted); the SIMD variants are only called
            // when `isa` names a feature set this CPU has (see `isa()`), and exist only on
            // their architecture.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => ffi::$avx2(n, w, a),
                    #[cfg(target_arch = "aarch64")]
                    Isa::Neon => ffi::$neon(n, w, a),
                    #[cfg(target_arch = "aarch64")]
                    Isa::NeonDotprod => ffi::$dotprod(n, w, a),
                    _ => ffi::$scalar(n, w, a),
                }
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

/// Quantizes activations `x` (a multiple of 256 values) into Q8_K blocks for the K-quant dots.
pub fn quantize_row_q8_K(x: &[f32], out: &mut [ffi::le_block_q8_K]) {
    assert_eq!(x.len(), out.len() * 256, "quantize_row_q8_K: lengths");
    // SAFETY: `x` holds out.len() * 256 floats and `out` that many blocks (asserted above).
    unsafe { ffi::le_quantize_row_q8_K_scalar(x.as_ptr(), out.as_mut_ptr(), x.len() as i32) }
}

macro_rules! dot_fn_x86 {
    ($(#[$doc:meta])* $name:ident, $w:ty, $a:ty, $per:expr, $scalar:ident, $avx2:ident) => {
        $(#[$doc])*
        pub fn $name(isa: Isa, w: &[$w], a: &[$a]) -> f32 {
            assert_eq!(w.len(), a.len(), concat!(stringify!($name), ": lengths"));
            let n = (w.len() * $per) as i32;
            let (w, a) = (w.as_ptr(), a.as_ptr());
            // SAFETY: both slices hold n values (asserted); the AVX2 variant is only called when
            // `isa` says the CPU has it. ARM runs the scalar C until NEON versions exist.
            unsafe {
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => ffi::$avx2(n, w, a),
                    _ => ffi::$scalar(n, w, a),
                }
            }
        }
    };
}

dot_fn_x86!(
    /// Dot product of Q5_0 weights and Q8_0 activations (blocks of 32).
    dot_q5_0_q8_0, ffi::le_block_q5_0, ffi::le_block_q8_0, 32,
    le_vec_dot_q5_0_q8_0_scalar, le_vec_dot_q5_0_q8_0_avx2
);
dot_fn_x86!(
    /// Dot product of Q4_K weights and Q8_K activations (blocks of 256).
    dot_q4_K_q8_K, ffi::le_block_q4_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q4_K_q8_K_scalar, le_vec_dot_q4_K_q8_K_avx2
);
dot_fn_x86!(
    /// Dot product of Q6_K weights and Q8_K activations (blocks of 256).
    dot_q6_K_q8_K, ffi::le_block_q6_K, ffi::le_block_q8_K, 256,
    le_vec_dot_q6_K_q8_K_scalar, le_vec_dot_q6_K_q8_K_avx2
);

/// Half-precision bits to f32, `x.len() == y.len()`.
pub fn f16_to_f32(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "f16_to_f32: lengths");
    let n = x.len() as i32;
    // SAFETY: both slices hold n values (asserted); SIMD variants only where `isa()` found them.
    unsafe {
        match isa() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => ffi::le_f16_to_f32_avx2(x.as_ptr(), y.as_mut_ptr(), n),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon | Isa::NeonDotprod => ffi::le_f16_to_f32_neon(x.as_ptr(), y.as_mut_ptr(), n),
            _ => ffi::le_f16_to_f32_scalar(x.as_ptr(), y.as_mut_ptr(), n),
        }
    }
}

/// One Q4_0 weight row against four Q8_0 activation rows (each `w.len()` blocks).
pub fn dot_q4_0_q8_0_x4(
    isa: Isa,
    w: &[ffi::le_block_q4_0],
    a: [&[ffi::le_block_q8_0]; 4],
) -> [f32; 4] {
    for r in &a {
        assert_eq!(r.len(), w.len(), "dot_q4_0_q8_0_x4: lengths");
    }
    let ptrs = a.map(|r| r.as_ptr());
    let mut out = [0f32; 4];
    let n = (w.len() * 32) as i32;
    // SAFETY: every activation row holds as many blocks as `w` (asserted); AVX2 only when
    // `isa` says the CPU has it; ARM runs the scalar C.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                ffi::le_vec_dot_q4_0_q8_0_x4_avx2(n, w.as_ptr(), ptrs.as_ptr(), out.as_mut_ptr())
            }
            _ => {
                ffi::le_vec_dot_q4_0_q8_0_x4_scalar(n, w.as_ptr(), ptrs.as_ptr(), out.as_mut_ptr())
            }
        }
    }
    out
}
