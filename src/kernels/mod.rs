//! The thin dispatch to the C kernels: picks the best instruction set the CPU has, once, and
//! offers safe, length-checked wrappers. The instruction-set types ([`Isa`], [`GemmIsa`],
//! [`FloatIsa`], [`Bf16Isa`]) can only be made by detection, so a wrapper given one may run its
//! SIMD code: no caller can ask for an instruction the CPU lacks. `LLAVA_EDGE_FORCE_SCALAR=1` forces the scalar
//! reference (for tests and for comparing against it).
#![allow(non_snake_case)] // Q8_K, Q4_K: ggml's type names.

use std::sync::OnceLock;

use crate::ffi;

/// The instruction set the kernels run with. A value proves that this CPU has it: only
/// detection ([`isa`], [`detect`], [`Isa::available`]) makes one, besides [`Isa::SCALAR`], so the
/// safe functions taking one may run its SIMD code without trusting their caller. Calling an
/// AVX2 kernel on a CPU without AVX2 would be undefined behaviour, so this cannot compile:
///
/// ```compile_fail
/// use llava_edge::kernels::{self, Isa};
/// let mut x = [1f32; 8];
/// kernels::rms_norm_with(Isa::Avx2, &mut x, &[1.0; 8], 1e-6);
/// ```
///
/// nor can one be made from its kind:
///
/// ```compile_fail
/// use llava_edge::kernels::{Isa, IsaKind};
/// let _ = Isa(IsaKind::Avx2);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(IsaKind);

/// Which instruction set an [`Isa`] is: to look at one (an `Isa` cannot be made from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaKind {
    /// Portable C.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// AArch64 base NEON.
    Neon,
    /// AArch64 NEON with the SDOT dot-product extension.
    NeonDotprod,
}

impl Isa {
    /// Portable C, which every CPU runs.
    pub const SCALAR: Isa = Isa(IsaKind::Scalar);

    /// Which instruction set this is.
    pub fn kind(self) -> IsaKind {
        self.0
    }

    /// Every instruction set this CPU can run, the scalar one first (for tests and benchmarks;
    /// ignores `LLAVA_EDGE_FORCE_SCALAR`).
    pub fn available() -> Vec<Isa> {
        let best = detect();
        let mut v = vec![Isa::SCALAR];
        if best.0 == IsaKind::NeonDotprod {
            v.push(Isa(IsaKind::Neon));
        }
        if best != Isa::SCALAR {
            v.push(best);
        }
        v
    }
}

/// The best instruction set this CPU supports (or `Scalar` when forced by the environment).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var_os("LLAVA_EDGE_FORCE_SCALAR").is_some_and(|v| v != "0") {
            return Isa::SCALAR;
        }
        detect()
    })
}

/// What the CPU supports, ignoring the environment. The one place an [`Isa`] other than the
/// scalar one is made, so every SIMD dispatch below rests on these checks.
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa(IsaKind::Avx2);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return Isa(IsaKind::NeonDotprod);
        }
        return Isa(IsaKind::Neon);
    }
    #[allow(unreachable_code)]
    Isa::SCALAR
}

/// Quantizes activations `x` (a multiple of 32 values) into `out` (`x.len() / 32` blocks).
pub fn quantize_row_q8_0(x: &[f32], out: &mut [ffi::le_block_q8_0]) {
    quantize_row_q8_0_with(isa(), x, out)
}

/// [`quantize_row_q8_0`] with a given instruction set (every variant writes the same bytes).
pub fn quantize_row_q8_0_with(isa: Isa, x: &[f32], out: &mut [ffi::le_block_q8_0]) {
    assert_eq!(x.len(), out.len() * 32, "quantize_row_q8_0: lengths");
    let (x, y, n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i32);
    // SAFETY: `x` holds out.len() * 32 floats and `out` that many blocks (asserted above); a
    // SIMD `isa` exists only where `detect` found its features (`Isa`'s private constructor).
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_quantize_row_q8_0_avx2(x, y, n),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_quantize_row_q8_0_neon(x, y, n),
            _ => ffi::le_quantize_row_q8_0_scalar(x, y, n),
        }
    }
}

macro_rules! dot_fn {
    ($(#[$doc:meta])* $name:ident, $w:ty, $a:ty, $per:expr, $scalar:ident, $avx2:ident, $neon:ident, $dotprod:ident) => {
        $(#[$doc])*
        pub fn $name(isa: Isa, w: &[$w], a: &[$a]) -> f32 {
            assert_eq!(w.len(), a.len(), concat!(stringify!($name), ": lengths"));
            let n = (w.len() * $per) as i32;
            let (w, a) = (w.as_ptr(), a.as_ptr());
            // SAFETY: both slices hold n values (asserted); a SIMD `isa` exists only where
            // `detect` found its features (`Isa`'s private constructor), and the variants exist
            // only on their architecture.
            unsafe {
                match isa.0 {
                    #[cfg(target_arch = "x86_64")]
                    IsaKind::Avx2 => ffi::$avx2(n, w, a),
                    #[cfg(target_arch = "aarch64")]
                    IsaKind::Neon => ffi::$neon(n, w, a),
                    #[cfg(target_arch = "aarch64")]
                    IsaKind::NeonDotprod => ffi::$dotprod(n, w, a),
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

dot_fn!(
    /// Dot product of BF16 weights (raw bits) and F32 activations.
    dot_bf16_f32, u16, f32, 1,
    le_vec_dot_bf16_f32_scalar, le_vec_dot_bf16_f32_avx2, le_vec_dot_bf16_f32_neon, le_vec_dot_bf16_f32_neon
);

/// Quantizes activations `x` (a multiple of 256 values) into Q8_K blocks for the K-quant dots.
pub fn quantize_row_q8_K(x: &[f32], out: &mut [ffi::le_block_q8_K]) {
    assert_eq!(x.len(), out.len() * 256, "quantize_row_q8_K: lengths");
    // SAFETY: `x` holds out.len() * 256 floats and `out` that many blocks (asserted above).
    unsafe { ffi::le_quantize_row_q8_K_scalar(x.as_ptr(), out.as_mut_ptr(), x.len() as i32) }
}

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

/// Half-precision bits to f32, `x.len() == y.len()`.
pub fn f16_to_f32(x: &[u16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "f16_to_f32: lengths");
    let n = x.len() as i32;
    // SAFETY: both slices hold n values (asserted); `isa()` is detection's.
    unsafe {
        match isa().0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_f16_to_f32_avx2(x.as_ptr(), y.as_mut_ptr(), n),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => {
                ffi::le_f16_to_f32_neon(x.as_ptr(), y.as_mut_ptr(), n)
            }
            _ => ffi::le_f16_to_f32_scalar(x.as_ptr(), y.as_mut_ptr(), n),
        }
    }
}

/// Whether the prefill GEMM can use AVX512-VNNI's `vpdpbusd` (on 256-bit registers) here.
fn has_vnni() -> bool {
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// The GEMM variant `isa` selects: the VNNI build where the CPU has it. Like [`Isa`], a value
/// proves this CPU runs it: only [`GemmIsa::for_isa`] and [`GemmIsa::available`] make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmIsa(GemmKind);

/// Which build a [`GemmIsa`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKind {
    /// Portable C.
    Scalar,
    /// x86 AVX2 (`vpmaddubsw`).
    Avx2,
    /// x86 AVX512-VNNI + VL (`vpdpbusd`).
    Vnni,
    /// AArch64 SDOT.
    Dotprod,
    /// AArch64 NEON without SDOT (widening multiplies).
    Neon,
}

impl GemmIsa {
    /// Portable C, which every CPU runs.
    pub const SCALAR: GemmIsa = GemmIsa(GemmKind::Scalar);

    /// Which build this is.
    pub fn kind(self) -> GemmKind {
        self.0
    }

    /// The best GEMM for `isa` on this CPU (VNNI only where detected besides `isa`'s AVX2).
    pub fn for_isa(isa: Isa) -> GemmIsa {
        GemmIsa(match isa.0 {
            IsaKind::Avx2 if has_vnni() => GemmKind::Vnni,
            IsaKind::Avx2 => GemmKind::Avx2,
            IsaKind::NeonDotprod => GemmKind::Dotprod,
            IsaKind::Neon => GemmKind::Neon,
            IsaKind::Scalar => GemmKind::Scalar,
        })
    }

    /// Every variant this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<GemmIsa> {
        let mut v = vec![GemmKind::Scalar];
        match detect().0 {
            IsaKind::Avx2 => {
                v.push(GemmKind::Avx2);
                if has_vnni() {
                    v.push(GemmKind::Vnni);
                }
            }
            IsaKind::NeonDotprod => v.extend([GemmKind::Neon, GemmKind::Dotprod]),
            IsaKind::Neon => v.push(GemmKind::Neon),
            IsaKind::Scalar => {}
        }
        v.into_iter().map(GemmIsa).collect()
    }
}

/// The integer codes a weight type packs to for the prefill GEMM, or `None` when it has no
/// panel form (those types keep the row-at-a-time kernels).
pub fn panel_codes(ty: crate::dtype::GgmlType) -> Option<ffi::le_codes> {
    // SAFETY: a pure function of an integer.
    let c = unsafe { ffi::le_panel_codes(ty.id() as i32) };
    (c >= 0).then_some(c as ffi::le_codes)
}

/// Quantizes activations `x` (a multiple of 32 values) for the GEMM.
pub fn quantize_row_q8_0x(x: &[f32], out: &mut [ffi::le_block_q8_0x]) {
    quantize_row_q8_0x_with(isa(), x, out)
}

/// [`quantize_row_q8_0x`] with a given instruction set (every variant writes the same bytes).
pub fn quantize_row_q8_0x_with(isa: Isa, x: &[f32], out: &mut [ffi::le_block_q8_0x]) {
    assert_eq!(x.len(), out.len() * 32, "quantize_row_q8_0x: lengths");
    let (x, y, n) = (x.as_ptr(), out.as_mut_ptr(), x.len() as i32);
    // SAFETY: as in quantize_row_q8_0_with.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_quantize_row_q8_0x_avx2(x, y, n),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_quantize_row_q8_0x_neon(x, y, n),
            _ => ffi::le_quantize_row_q8_0x_scalar(x, y, n),
        }
    }
}

/// Packs `nrows` (1..=8) rows of `ty` (`rows.len() == nrows * row_bytes`, `n` values each) into
/// one panel of `n / 32` blocks. Returns false for a type without a panel form.
pub fn pack_x8(
    ty: crate::dtype::GgmlType,
    rows: &[u8],
    nrows: usize,
    n: usize,
    out: &mut [ffi::le_block_x8],
) -> bool {
    assert!((1..=8).contains(&nrows), "pack_x8: 1..=8 rows");
    assert!(
        n.is_multiple_of(ty.block_size()) && n.is_multiple_of(32),
        "pack_x8: n"
    );
    let row_bytes = n / ty.block_size() * ty.type_size();
    assert_eq!(rows.len(), nrows * row_bytes, "pack_x8: rows length");
    assert_eq!(out.len(), n / 32, "pack_x8: panel length");
    if panel_codes(ty).is_none() {
        return false;
    }
    // Every panel type's block holds f16 scales (ggml_half), so 2-byte alignment.
    assert!(
        rows.as_ptr().align_offset(2) == 0,
        "pack_x8: rows not 2-byte aligned"
    );
    // SAFETY: `rows` holds nrows rows of row_bytes and `out` n / 32 blocks (asserted); the C
    // reads each row through its block layout, whose 2-byte alignment is asserted too.
    let rc = unsafe {
        ffi::le_pack_x8(
            ty.id() as i32,
            rows.as_ptr(),
            row_bytes,
            nrows as i32,
            n as i32,
            out.as_mut_ptr(),
        )
    };
    rc == 0
}

/// `out[t * ldo + r] = row r . token t` for the `nrows` rows packed in `panels`
/// (`nrows.div_ceil(8)` panels of `n / 32` blocks) and the `nt` tokens in `act`.
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every `t < nt`, `r < nrows`, and no other
/// thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_x8(
    gemm: GemmIsa,
    codes: ffi::le_codes,
    n: usize,
    panels: &[ffi::le_block_x8],
    nrows: usize,
    act: &[ffi::le_block_q8_0x],
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    let (nb, np) = (n / 32, nrows.div_ceil(8));
    assert!(n.is_multiple_of(32), "gemm_x8: n");
    assert!(panels.len() >= np * nb, "gemm_x8: panels");
    assert!(act.len() >= nt * nb, "gemm_x8: activations");
    assert!(nt == 1 || ldo >= nrows, "gemm_x8: ldo");
    let args = (n as i32, panels.as_ptr(), np as i32, nrows as i32);
    let (a, t) = (act.as_ptr(), nt as i32);
    // SAFETY: lengths asserted above; `out` per the caller's contract; a SIMD `gemm` exists only
    // where detection found its features (`GemmIsa`'s private constructor).
    unsafe {
        match gemm.0 {
            #[cfg(target_arch = "x86_64")]
            GemmKind::Avx2 => {
                ffi::le_gemm_x8_avx2(codes, args.0, args.1, args.2, args.3, a, t, out, ldo)
            }
            #[cfg(target_arch = "x86_64")]
            GemmKind::Vnni => {
                ffi::le_gemm_x8_vnni(codes, args.0, args.1, args.2, args.3, a, t, out, ldo)
            }
            #[cfg(target_arch = "aarch64")]
            GemmKind::Dotprod => {
                ffi::le_gemm_x8_dotprod(codes, args.0, args.1, args.2, args.3, a, t, out, ldo)
            }
            #[cfg(target_arch = "aarch64")]
            GemmKind::Neon => {
                ffi::le_gemm_x8_neon(codes, args.0, args.1, args.2, args.3, a, t, out, ldo)
            }
            _ => ffi::le_gemm_x8_scalar(codes, args.0, args.1, args.2, args.3, a, t, out, ldo),
        }
    }
}

/// Bytes of eight rows' 32 values of `ty` in `Layout::X8` (one interleaved block; an eighth of
/// one for the K types, whose blocks are 256 values), or `None` for a type without that form (it
/// exists for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K; see `le_block_q4_0x8`).
pub fn x8_block_bytes(ty: crate::dtype::GgmlType) -> Option<usize> {
    // SAFETY: a pure function of its argument.
    let b = unsafe { ffi::le_x8_block_bytes(ty.id() as i32) };
    (b > 0).then_some(b as usize)
}

/// Bytes of one plain row of `n` values of an interleavable `ty`, after checking `n` and the
/// block count of `x8_bytes` interleaved bytes.
fn x8_shape(ty: crate::dtype::GgmlType, n: usize, x8_bytes: usize) -> usize {
    let bb = x8_block_bytes(ty).unwrap_or_else(|| panic!("{ty} has no interleaved form"));
    assert!(
        n.is_multiple_of(ty.block_size().max(32)),
        "{ty}x8: n must be whole blocks"
    );
    assert_eq!(x8_bytes, n / 32 * bb, "{ty}x8: blocks for n");
    n / 32 * bb / 8
}

/// Interleaves eight rows of `ty` (`rows.len() == 8 * row_bytes`, `n` values each) into `out`
/// (`n / 32` interleaved blocks).
pub fn interleave_x8(ty: crate::dtype::GgmlType, rows: &[u8], n: usize, out: &mut [u8]) {
    let row_bytes = x8_shape(ty, n, out.len());
    assert_eq!(rows.len(), 8 * row_bytes, "interleave {ty}: rows length");
    // SAFETY: eight rows of row_bytes in `rows`, n / 32 blocks in `out` (asserted); the C reads
    // and writes bytes only (unaligned copies).
    unsafe {
        ffi::le_interleave_x8(
            ty.id() as i32,
            rows.as_ptr(),
            row_bytes,
            n as i32,
            out.as_mut_ptr(),
        )
    }
}

/// The inverse of [`interleave_x8`].
pub fn deinterleave_x8(ty: crate::dtype::GgmlType, w: &[u8], n: usize, rows: &mut [u8]) {
    let row_bytes = x8_shape(ty, n, w.len());
    assert_eq!(rows.len(), 8 * row_bytes, "deinterleave {ty}: rows length");
    // SAFETY: as in interleave_x8, in the other direction.
    unsafe {
        ffi::le_deinterleave_x8(
            ty.id() as i32,
            w.as_ptr(),
            n as i32,
            rows.as_mut_ptr(),
            row_bytes,
        )
    }
}

/// One group of interleaved rows as a GEMM panel (byte for byte what [`pack_x8`] makes of the
/// rows before interleaving).
pub fn pack_x8_interleaved(
    ty: crate::dtype::GgmlType,
    w: &[u8],
    n: usize,
    out: &mut [ffi::le_block_x8],
) {
    x8_shape(ty, n, w.len());
    assert_eq!(out.len(), n / 32, "pack {ty}x8: panel length");
    // SAFETY: n / 32 blocks on both sides (asserted).
    unsafe { ffi::le_pack_x8_interleaved(ty.id() as i32, w.as_ptr(), n as i32, out.as_mut_ptr()) }
}

/// `out[t * ldo + r] = row r . token t` for the `8 * ng` interleaved rows of `ty` in `w` (`ng`
/// groups of `n / 32` blocks) and the `nt` tokens in `act`: the decode product.
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every `t < nt`, `r < 8 * ng`, and no
/// other thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemv_x8(
    gemm: GemmIsa,
    ty: crate::dtype::GgmlType,
    n: usize,
    w: &[u8],
    act: &[ffi::le_block_q8_0x],
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bb = x8_block_bytes(ty).unwrap_or_else(|| panic!("{ty} has no interleaved form"));
    assert!(n.is_multiple_of(ty.block_size().max(32)), "gemv {ty}x8: n");
    let group = n / 32 * bb;
    assert!(
        group > 0 && w.len().is_multiple_of(group),
        "gemv {ty}x8: whole groups"
    );
    assert!(act.len() >= nt * (n / 32), "gemv {ty}x8: activations");
    let ng = w.len() / group;
    assert!(nt <= 1 || ldo >= 8 * ng, "gemv {ty}x8: ldo");
    let (t, k, wp, g, a, m) = (
        ty.id() as i32,
        n as i32,
        w.as_ptr(),
        ng as i32,
        act.as_ptr(),
        nt as i32,
    );
    // SAFETY: lengths asserted above; `out` per the caller's contract; a SIMD `gemm` exists only
    // where detection found its features (`GemmIsa`'s private constructor).
    unsafe {
        match gemm.0 {
            #[cfg(target_arch = "x86_64")]
            GemmKind::Avx2 => ffi::le_gemv_x8_avx2(t, k, wp, g, a, m, out, ldo),
            #[cfg(target_arch = "x86_64")]
            GemmKind::Vnni => ffi::le_gemv_x8_vnni(t, k, wp, g, a, m, out, ldo),
            #[cfg(target_arch = "aarch64")]
            GemmKind::Dotprod => ffi::le_gemv_x8_dotprod(t, k, wp, g, a, m, out, ldo),
            #[cfg(target_arch = "aarch64")]
            GemmKind::Neon => ffi::le_gemv_x8_neon(t, k, wp, g, a, m, out, ldo),
            _ => ffi::le_gemv_x8_scalar(t, k, wp, g, a, m, out, ldo),
        }
    }
}

/// A plain row of an interleavable `ty` (one after a matrix's last group of eight) against the
/// decode activations: Q4_0 through its SIMD dot, the others in scalar C (at most seven rows of
/// a matrix take this path).
pub fn x8_tail_dot(
    gemm: GemmIsa,
    ty: crate::dtype::GgmlType,
    row: &[u8],
    a: &[ffi::le_block_q8_0x],
) -> f32 {
    if ty == crate::dtype::GgmlType::Q4_0 {
        return dot_q4_0_q8_0x(gemm, bytemuck::cast_slice(row), a);
    }
    let bb = x8_block_bytes(ty).unwrap_or_else(|| panic!("{ty} has no interleaved form"));
    assert_eq!(row.len() * 8, a.len() * bb, "{ty} tail dot: lengths");
    // SAFETY: the row holds a.len() plain blocks (asserted); byte reads only.
    unsafe {
        ffi::le_vec_dot_legacy_q8_0x_scalar(
            ty.id() as i32,
            (a.len() * 32) as i32,
            row.as_ptr(),
            a.as_ptr(),
        )
    }
}

/// Keys or values read in place: f32, or the F16 cache's half bits.
#[derive(Clone, Copy, Debug)]
pub enum KvRef<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// Half-precision bits.
    F16(&'a [u16]),
}

impl<'a> KvRef<'a> {
    fn len(&self) -> usize {
        match self {
            KvRef::F32(x) => x.len(),
            KvRef::F16(x) => x.len(),
        }
    }

    fn ptr(&self) -> (*const std::ffi::c_void, i32) {
        match self {
            KvRef::F32(x) => (x.as_ptr().cast(), 0),
            KvRef::F16(x) => (x.as_ptr().cast(), 1),
        }
    }

    /// The view starting `at` elements in.
    pub fn skip(self, at: usize) -> KvRef<'a> {
        match self {
            KvRef::F32(x) => KvRef::F32(&x[at..]),
            KvRef::F16(x) => KvRef::F16(&x[at..]),
        }
    }
}

/// The largest head dimension [`attend_head`] takes.
pub const MAX_HEAD_DIM: usize = 256;

/// One attention head over `n_kv` positions: position p's key and value are the `q.len()`
/// elements at `p * stride` of `k` and `v` (both f32 or both f16). Result into `out`.
#[allow(clippy::too_many_arguments)]
pub fn attend_head(
    isa: Isa,
    q: &[f32],
    k: KvRef<'_>,
    v: KvRef<'_>,
    n_kv: usize,
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    assert!(
        (1..=MAX_HEAD_DIM).contains(&hd),
        "attend_head: head dim {hd}"
    );
    assert_eq!(out.len(), hd, "attend_head: output length");
    assert!(stride >= hd || n_kv <= 1, "attend_head: stride");
    let need = if n_kv == 0 {
        0
    } else {
        (n_kv - 1) * stride + hd
    };
    assert!(
        k.len() >= need && v.len() >= need,
        "attend_head: cache too short"
    );
    let ((kp, kf16), (vp, vf16)) = (k.ptr(), v.ptr());
    assert_eq!(kf16, vf16, "attend_head: keys and values of one type");
    type HeadFn = unsafe extern "C" fn(
        i32,
        i32,
        *const f32,
        *const std::ffi::c_void,
        *const std::ffi::c_void,
        i32,
        usize,
        f32,
        *mut f32,
    ) -> i32;
    let f: HeadFn = match isa.0 {
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => ffi::le_attend_head_avx2,
        #[cfg(target_arch = "aarch64")]
        IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_attend_head_neon,
        _ => ffi::le_attend_head_scalar,
    };
    // SAFETY: every read stays below `need` elements of k and v and hd of q (asserted); `out`
    // holds hd values; a SIMD `isa` exists only where detection found it. hd is in range, so
    // the C cannot refuse it.
    let rc = unsafe {
        f(
            n_kv as i32,
            hd as i32,
            q.as_ptr(),
            kp,
            vp,
            kf16,
            stride,
            scale,
            out.as_mut_ptr(),
        )
    };
    debug_assert_eq!(rc, 0);
}

/// Bytes ahead of the weight being read that the x86 decode products prefetch.
pub const PREFETCH_AHEAD: usize = ffi::LE_PREFETCH_AHEAD as usize;

/// Floats of [`gemm_f16`]'s packing scratch per unit of `k` (the largest panel of any build).
pub const F16_PACK_PER_K: usize = ffi::LE_F16_PACK_FLOATS as usize;

/// The builds of the float kernels that have a 512-bit form: the F16 GEMM (whose SIMD builds add
/// each output's products in order with one fused multiply-add each, so they agree bit for bit)
/// and attention's row tiles. Like [`Isa`], a value proves this CPU runs it: only
/// [`FloatIsa::for_isa`] and [`FloatIsa::available`] make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloatIsa(FloatKind);

/// Which build a [`FloatIsa`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatKind {
    /// Portable C, the reference.
    Scalar,
    /// x86 AVX2 + FMA + F16C (GEMM tiles of 16 rows x 6 tokens, attention tiles of 4 rows).
    Avx2,
    /// x86 AVX-512F (GEMM tiles of 32 rows x 12 packed tokens, attention tiles of 8 rows).
    Avx512,
    /// AArch64 NEON.
    Neon,
}

/// Whether this x86 CPU has AVX-512F (with the AVX2 set the other kernels need).
fn has_avx512f() -> bool {
    static AVX512: OnceLock<bool> = OnceLock::new();
    *AVX512.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

impl FloatIsa {
    /// Portable C, the reference, which every CPU runs.
    pub const SCALAR: FloatIsa = FloatIsa(FloatKind::Scalar);

    /// Which build this is.
    pub fn kind(self) -> FloatKind {
        self.0
    }

    /// The fastest build for `isa` on this CPU (AVX-512 only where detected besides `isa`'s
    /// AVX2).
    pub fn for_isa(isa: Isa) -> FloatIsa {
        FloatIsa(match isa.0 {
            IsaKind::Avx2 if has_avx512f() => FloatKind::Avx512,
            IsaKind::Avx2 => FloatKind::Avx2,
            IsaKind::Neon | IsaKind::NeonDotprod => FloatKind::Neon,
            IsaKind::Scalar => FloatKind::Scalar,
        })
    }

    /// Every build this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<FloatIsa> {
        let mut v = vec![FloatKind::Scalar];
        match detect().0 {
            IsaKind::Avx2 => {
                v.push(FloatKind::Avx2);
                if has_avx512f() {
                    v.push(FloatKind::Avx512);
                }
            }
            IsaKind::Neon | IsaKind::NeonDotprod => v.push(FloatKind::Neon),
            IsaKind::Scalar => {}
        }
        v.into_iter().map(FloatIsa).collect()
    }
}

/// `out[t * ldo + r] = w_r . x_t` for the `nrows` rows of `k` halves in `w` (`ldw` apart) and
/// the `nt` tokens of `k` floats in `x`; `pack` is scratch of `F16_PACK_PER_K * k` floats.
/// The AVX-512 build packs the tokens on each call; a product split over threads packs them once
/// and calls [`gemm_f16_packed`] (as `Matrix::matmul` does).
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every `t < nt`, `r < nrows`, and no other
/// thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f16(
    build: FloatIsa,
    k: usize,
    w: &[u16],
    nrows: usize,
    x: &[f32],
    nt: usize,
    out: *mut f32,
    ldo: usize,
    pack: &mut [f32],
) {
    assert!(w.len() >= nrows * k, "gemm_f16: weights");
    assert!(x.len() >= nt * k, "gemm_f16: activations");
    assert!(pack.len() >= F16_PACK_PER_K * k, "gemm_f16: scratch");
    assert!(nt <= 1 || ldo >= nrows, "gemm_f16: ldo");
    let (kk, wp, nr, xp, t) = (k as i32, w.as_ptr(), nrows as i32, x.as_ptr(), nt as i32);
    let pk = pack.as_mut_ptr();
    // SAFETY: lengths asserted; `out` per the caller's contract; a SIMD `build` exists only where
    // detection found its features (`FloatIsa`'s private constructor).
    unsafe {
        match build.0 {
            #[cfg(target_arch = "x86_64")]
            FloatKind::Avx2 => ffi::le_gemm_f16_avx2(kk, wp, k, nr, xp, k, t, out, ldo, pk),
            #[cfg(target_arch = "x86_64")]
            FloatKind::Avx512 => {
                let mut packed = vec![0f32; f16_packed_tokens_len(k, nt)];
                f16_pack_tokens(k, &x[..nt * k], nt, &mut packed);
                ffi::le_gemm_f16_packed_avx512(
                    kk,
                    wp,
                    k,
                    nr,
                    packed.as_ptr(),
                    t,
                    out,
                    ldo,
                    pk,
                    std::ptr::null(),
                )
            }
            #[cfg(target_arch = "aarch64")]
            FloatKind::Neon => ffi::le_gemm_f16_neon(kk, wp, k, nr, xp, k, t, out, ldo, pk),
            _ => ffi::le_gemm_f16_scalar(kk, wp, k, nr, xp, k, t, out, ldo, pk),
        }
    }
}

/// Tokens per packed tile of [`f16_pack_tokens`] (the AVX-512 F16 GEMM's tile width).
pub const F16_TILE_TOKENS: usize = ffi::LE_F16_TILE_TOKENS as usize;

/// Floats [`f16_pack_tokens`] writes for `nt` tokens of `k` values (whole tiles).
pub fn f16_packed_tokens_len(k: usize, nt: usize) -> usize {
    nt.div_ceil(F16_TILE_TOKENS) * F16_TILE_TOKENS * k
}

/// The `nt` tokens of `k` values in `x` as the AVX-512 F16 GEMM reads them: tiles of
/// [`F16_TILE_TOKENS`], value-major within a tile, missing tokens zero. A product's tokens may be
/// packed in parts that start at whole tiles. Panics on a CPU without AVX-512F.
#[cfg(target_arch = "x86_64")]
pub fn f16_pack_tokens(k: usize, x: &[f32], nt: usize, xp: &mut [f32]) {
    assert!(has_avx512f(), "f16_pack_tokens: needs AVX-512F");
    assert_eq!(x.len(), nt * k, "f16_pack_tokens: activations");
    assert_eq!(
        xp.len(),
        f16_packed_tokens_len(k, nt),
        "f16_pack_tokens: packed length"
    );
    // SAFETY: nt tokens of k floats in, whole tiles out, AVX-512F present (asserted).
    unsafe { ffi::le_f16_pack_tokens_avx512(k as i32, nt as i32, x.as_ptr(), k, xp.as_mut_ptr()) }
}

/// [`gemm_f16`] of the AVX-512 build on tokens packed by [`f16_pack_tokens`] (once per product,
/// however many row bands the threads take), plus `bias[r]` on each output row r when given.
///
/// Panics on a CPU without AVX-512F.
///
/// # Safety
/// As [`gemm_f16`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_f16_packed(
    k: usize,
    w: &[u16],
    nrows: usize,
    xp: &[f32],
    nt: usize,
    out: *mut f32,
    ldo: usize,
    pack: &mut [f32],
    bias: Option<&[f32]>,
) {
    assert!(w.len() >= nrows * k, "gemm_f16_packed: weights");
    assert!(
        bias.is_none_or(|b| b.len() >= nrows),
        "gemm_f16_packed: bias"
    );
    assert!(
        xp.len() >= f16_packed_tokens_len(k, nt),
        "gemm_f16_packed: tokens"
    );
    assert!(pack.len() >= F16_PACK_PER_K * k, "gemm_f16_packed: scratch");
    assert!(nt <= 1 || ldo >= nrows, "gemm_f16_packed: ldo");
    // One cached load: this runs once per 32-row chunk, not per element.
    assert!(has_avx512f(), "gemm_f16_packed: needs AVX-512F");
    // SAFETY: lengths asserted; `out` per the caller's contract; AVX-512F present (asserted).
    unsafe {
        ffi::le_gemm_f16_packed_avx512(
            k as i32,
            w.as_ptr(),
            k,
            nrows as i32,
            xp.as_ptr(),
            nt as i32,
            out,
            ldo,
            pack.as_mut_ptr(),
            bias.map_or(std::ptr::null(), |b| b.as_ptr()),
        )
    }
}

/// Rows of an F16 weight matrix per packed panel of [`gemm_bf16`].
pub const BF16_PANEL_ROWS: usize = ffi::LE_BF16_PANEL_ROWS as usize;
/// Tokens per packed tile of [`bf16_pack_tokens`].
pub const BF16_TILE_TOKENS: usize = ffi::LE_BF16_TILE_TOKENS as usize;

/// The variants of the bfloat16-pair GEMM. Like [`Isa`], a value proves this CPU runs it: only
/// [`Bf16Isa::simd`] and [`Bf16Isa::available`] make one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bf16Isa(Bf16Kind);

/// Which build a [`Bf16Isa`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kind {
    /// Portable C, the reference (slow: it exists to check the SIMD one).
    Scalar,
    /// x86 AVX512-BF16 (`vdpbf16ps`).
    Avx512,
    /// AArch64 Armv8.6 BF16 (`BFDOT`).
    Neon,
}

impl Bf16Isa {
    /// Portable C, the reference, which every CPU runs.
    pub const SCALAR: Bf16Isa = Bf16Isa(Bf16Kind::Scalar);

    /// Which build this is.
    pub fn kind(self) -> Bf16Kind {
        self.0
    }

    /// The SIMD variant when this CPU has one (and `LLAVA_EDGE_FORCE_SCALAR` is not set).
    pub fn simd() -> Option<Bf16Isa> {
        static HAS: OnceLock<bool> = OnceLock::new();
        let has = *HAS.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                is_x86_feature_detected!("avx512bf16")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "aarch64")]
            {
                std::arch::is_aarch64_feature_detected!("bf16")
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            false
        });
        let simd = if cfg!(target_arch = "aarch64") {
            Bf16Kind::Neon
        } else {
            Bf16Kind::Avx512
        };
        // The x86 kernel also takes AVX2, FMA and F16C for granted: `isa()` checked those.
        (has && isa() != Isa::SCALAR).then_some(Bf16Isa(simd))
    }

    /// Every variant this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<Bf16Isa> {
        let mut v = vec![Bf16Isa::SCALAR];
        v.extend(Self::simd());
        v
    }
}

/// Dwords [`bf16_pack_tokens`] writes for `nt` tokens of `k` values.
pub fn bf16_packed_tokens_len(k: usize, nt: usize) -> usize {
    nt.div_ceil(BF16_TILE_TOKENS) * k.div_ceil(2) * BF16_TILE_TOKENS
}

/// The `nt` tokens of `k` floats in `x`, rounded to bf16 pairs in [`gemm_bf16`]'s tiles.
pub fn bf16_pack_tokens(isa: Bf16Isa, k: usize, x: &[f32], nt: usize, xp: &mut [u32]) {
    assert!(x.len() >= nt * k, "bf16_pack_tokens: activations");
    assert!(
        xp.len() >= bf16_packed_tokens_len(k, nt),
        "bf16_pack_tokens: output"
    );
    let (kk, t, xs, out) = (k as i32, nt as i32, x.as_ptr(), xp.as_mut_ptr());
    // SAFETY: lengths asserted; a SIMD `isa` exists only where `Bf16Isa::simd` detected it.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            Bf16Kind::Avx512 => ffi::le_bf16_pack_tokens_avx512(kk, t, xs, k, out),
            #[cfg(target_arch = "aarch64")]
            Bf16Kind::Neon => ffi::le_bf16_pack_tokens_neon(kk, t, xs, k, out),
            _ => ffi::le_bf16_pack_tokens_scalar(kk, t, xs, k, out),
        }
    }
}

/// `out[t * ldo + r] = w_r . x_t` in bfloat16 pairs for the `nrows` rows of `k` halves in `w`
/// and the `nt` tokens packed by [`bf16_pack_tokens`] in `xp`; `pack` is scratch of
/// `BF16_PANEL_ROWS * ceil(k / 2)` dwords.
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every `t < nt`, `r < nrows`, and no other
/// thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_bf16(
    isa: Bf16Isa,
    k: usize,
    w: &[u16],
    nrows: usize,
    xp: &[u32],
    nt: usize,
    out: *mut f32,
    ldo: usize,
    pack: &mut [u32],
) {
    assert!(w.len() >= nrows * k, "gemm_bf16: weights");
    assert!(
        xp.len() >= bf16_packed_tokens_len(k, nt),
        "gemm_bf16: activations"
    );
    assert!(
        pack.len() >= BF16_PANEL_ROWS * k.div_ceil(2),
        "gemm_bf16: scratch"
    );
    assert!(nt <= 1 || ldo >= nrows, "gemm_bf16: ldo");
    let (kk, wp, nr, xs, t) = (k as i32, w.as_ptr(), nrows as i32, xp.as_ptr(), nt as i32);
    let pk = pack.as_mut_ptr();
    // SAFETY: lengths asserted; `out` per the caller's contract; a SIMD `isa` exists only where
    // `Bf16Isa::simd` detected it.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            Bf16Kind::Avx512 => ffi::le_gemm_bf16_avx512(kk, wp, k, nr, xs, t, out, ldo, pk),
            #[cfg(target_arch = "aarch64")]
            Bf16Kind::Neon => ffi::le_gemm_bf16_neon(kk, wp, k, nr, xs, t, out, ldo, pk),
            _ => ffi::le_gemm_bf16_scalar(kk, wp, k, nr, xs, t, out, ldo, pk),
        }
    }
}

/// Q4_0 weights against [`quantize_row_q8_0x`] activations (the x86 decode path), with the
/// variant of `gemm` (the same instruction-set choice as the GEMM's).
pub fn dot_q4_0_q8_0x(gemm: GemmIsa, w: &[ffi::le_block_q4_0], a: &[ffi::le_block_q8_0x]) -> f32 {
    assert_eq!(w.len(), a.len(), "dot_q4_0_q8_0x: lengths");
    let n = (w.len() * 32) as i32;
    // SAFETY: both slices hold n values (asserted); a SIMD `gemm` exists only where detected.
    unsafe {
        match gemm.0 {
            #[cfg(target_arch = "x86_64")]
            GemmKind::Avx2 => ffi::le_vec_dot_q4_0_q8_0x_avx2(n, w.as_ptr(), a.as_ptr()),
            #[cfg(target_arch = "x86_64")]
            GemmKind::Vnni => ffi::le_vec_dot_q4_0_q8_0x_vnni(n, w.as_ptr(), a.as_ptr()),
            _ => ffi::le_vec_dot_q4_0_q8_0x_scalar(n, w.as_ptr(), a.as_ptr()),
        }
    }
}

/// An activation of the C kernel: sigmoid-gated, `x * sigmoid(z(x))`, or the exact GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// SiLU, `z = x`.
    Silu,
    /// CLIP's quick_gelu, `z = 1.702 x`.
    QuickGelu,
    /// GELU's tanh approximation, `z = 2 sqrt(2/pi) (x + 0.044715 x^3)`.
    GeluTanh,
    /// The exact GELU, `x * Phi(x)` (no `mul`).
    GeluErf,
}

/// `x = x * sigmoid(z(x))`, times `mul` elementwise when given (SwiGLU), with `isa`.
pub fn activation_with(isa: Isa, gate: Gate, x: &mut [f32], mul: Option<&[f32]>) {
    if let Some(m) = mul {
        assert_eq!(m.len(), x.len(), "activation: lengths");
    }
    let kind = match gate {
        Gate::Silu => ffi::LE_ACT_SILU,
        Gate::QuickGelu => ffi::LE_ACT_QUICK_GELU,
        Gate::GeluTanh => ffi::LE_ACT_GELU_TANH,
        Gate::GeluErf => {
            assert!(mul.is_none(), "activation: the exact GELU takes no mul");
            ffi::LE_ACT_GELU_ERF
        }
    } as i32;
    let (p, m, n) = (
        x.as_mut_ptr(),
        mul.map_or(std::ptr::null(), |m| m.as_ptr()),
        x.len() as i32,
    );
    // SAFETY: `x` and `mul` (when given) hold n values (asserted); a SIMD `isa` only if detected.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_activation_avx2(kind, p, m, n),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_activation_neon(kind, p, m, n),
            _ => ffi::le_activation_scalar(kind, p, m, n),
        }
    }
}

/// RMSNorm of one row `x` in place with gains `w` (same length), with `isa`.
pub fn rms_norm_with(isa: Isa, x: &mut [f32], w: &[f32], eps: f32) {
    assert_eq!(x.len(), w.len(), "rms_norm: lengths");
    let (p, g, n) = (x.as_mut_ptr(), w.as_ptr(), x.len() as i32);
    // SAFETY: both slices hold n values (asserted); a SIMD `isa` exists only where detected.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_rms_norm_avx2(p, g, n, eps),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_rms_norm_neon(p, g, n, eps),
            _ => ffi::le_rms_norm_scalar(p, g, n, eps),
        }
    }
}

/// LayerNorm of one row `x` in place with gains `w` and biases `b` (same length), with `isa`.
pub fn layer_norm_with(isa: Isa, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    assert!(
        x.len() == w.len() && x.len() == b.len(),
        "layer_norm: lengths"
    );
    let (p, g, c, n) = (x.as_mut_ptr(), w.as_ptr(), b.as_ptr(), x.len() as i32);
    // SAFETY: the three slices hold n values (asserted); a SIMD `isa` only if detected.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_layer_norm_avx2(p, g, c, n, eps),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_layer_norm_neon(p, g, c, n, eps),
            _ => ffi::le_layer_norm_scalar(p, g, c, n, eps),
        }
    }
}

/// Rotates each `head_dim`-wide head of `x` by the angles with cosines `cos` and sines `sin`
/// (`cos.len()` pairs of dimensions; NeoX halves or adjacent pairs), with `isa`.
pub fn rope_with(isa: Isa, x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32], neox: bool) {
    assert_eq!(cos.len(), sin.len(), "rope: table lengths");
    assert!(
        head_dim > 0 && 2 * cos.len() <= head_dim && x.len().is_multiple_of(head_dim),
        "rope: shapes"
    );
    let (hd, nh, half) = (
        head_dim as i32,
        (x.len() / head_dim) as i32,
        cos.len() as i32,
    );
    let (p, c, s, nx) = (x.as_mut_ptr(), cos.as_ptr(), sin.as_ptr(), i32::from(neox));
    // SAFETY: x holds nh heads of hd values, the tables half values, 2 half <= hd (asserted); a
    // SIMD `isa` exists only where detected.
    unsafe {
        match isa.0 {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => ffi::le_rope_avx2(p, hd, nh, c, s, half, nx),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_rope_neon(p, hd, nh, c, s, half, nx),
            _ => ffi::le_rope_scalar(p, hd, nh, c, s, half, nx),
        }
    }
}

/// Which positions each query row of [`attend_rows`] sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visible {
    /// All `n_kv` positions (the vision encoder).
    All,
    /// Row i sees the first `first + i + 1` (causal decoding; `first` is the row's position).
    Causal {
        /// Positions before row 0 (the cache, plus row 0's own index in the batch).
        first: usize,
    },
}

/// Fewest query rows `le_attend_rows_*` may run as a tile (`PAD_ROWS` in attention.c: 2, or 4
/// for AVX-512), so packing keys and values; one row reads the cache in place.
const ATTEND_PACK_ROWS: usize = 2;

/// `nq` query rows of one head: row i's `hd` values at `q[i * q_stride..]`, its output at
/// `out[i * o_stride..]`, keys and values as [`attend_head`] takes them (`n_kv` positions).
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    isa: FloatIsa,
    nq: usize,
    hd: usize,
    q: &[f32],
    q_stride: usize,
    k: KvRef<'_>,
    v: KvRef<'_>,
    stride: usize,
    n_kv: usize,
    visible: Visible,
    scale: f32,
    out: &mut [f32],
    o_stride: usize,
    scratch: &mut Vec<f32>,
) {
    if nq == 0 {
        return;
    }
    assert!(out.len() >= (nq - 1) * o_stride + hd, "attend_rows: output");
    // SAFETY: `out` holds every element written (asserted) and is borrowed exclusively.
    unsafe {
        attend_rows_to(
            isa,
            nq,
            hd,
            q,
            q_stride,
            k,
            v,
            stride,
            n_kv,
            visible,
            scale,
            out.as_mut_ptr(),
            o_stride,
            scratch,
        )
    }
}

/// [`attend_rows`] writing through a raw pointer, for threads that each own some columns of one
/// output (one head's columns of a block of rows): a `&mut` slice from each would overlap the
/// others'.
///
/// # Safety
/// `out` must be valid for writes at `i * o_stride + j` for every `i < nq`, `j < hd`, and no
/// other thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn attend_rows_to(
    isa: FloatIsa,
    nq: usize,
    hd: usize,
    q: &[f32],
    q_stride: usize,
    k: KvRef<'_>,
    v: KvRef<'_>,
    stride: usize,
    n_kv: usize,
    visible: Visible,
    scale: f32,
    out: *mut f32,
    o_stride: usize,
    scratch: &mut Vec<f32>,
) {
    if nq == 0 {
        return;
    }
    assert!(
        (1..=MAX_HEAD_DIM).contains(&hd),
        "attend_rows: head dim {hd}"
    );
    assert!(q.len() >= (nq - 1) * q_stride + hd, "attend_rows: queries");
    assert!(nq == 1 || o_stride >= hd, "attend_rows: output stride");
    let (causal, kv0) = match visible {
        Visible::All => (0, 0),
        Visible::Causal { first } => {
            assert!(first + nq <= n_kv, "attend_rows: causal rows past the keys");
            (1, first)
        }
    };
    assert!(n_kv >= 1, "attend_rows: no positions");
    assert!(stride >= hd || n_kv == 1, "attend_rows: stride");
    let need = (n_kv - 1) * stride + hd;
    assert!(
        k.len() >= need && v.len() >= need,
        "attend_rows: cache too short"
    );
    let ((kp, kf16), (vp, vf16)) = (k.ptr(), v.ptr());
    assert_eq!(kf16, vf16, "attend_rows: keys and values of one type");
    // Keys transposed and values packed (see le_attend_rows_*), only for calls of two rows or
    // more: one row reads the cache in place, and sizing the scratch anyway cost a 260 KiB
    // memset per thread and layer at a 512-position cache (2.5% of a decode profile).
    if nq >= ATTEND_PACK_ROWS {
        // Transposed keys, packed values, and the AVX-512 tile's eight score rows. Only ever
        // grown: the caller keeps it, and zeroing it again each call costs a memset.
        let need = 2 * n_kv.div_ceil(16) * 16 * hd + 8 * (n_kv.div_ceil(32) * 32 + 16);
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
    }
    let s = scratch.as_mut_ptr();
    let (n, d, qp, op) = (nq as i32, hd as i32, q.as_ptr(), out);
    type RowsFn = unsafe extern "C" fn(
        i32,
        i32,
        *const f32,
        usize,
        *const std::ffi::c_void,
        *const std::ffi::c_void,
        i32,
        usize,
        i32,
        i32,
        i32,
        f32,
        *mut f32,
        usize,
        *mut f32,
    ) -> i32;
    let f: RowsFn = match isa.0 {
        #[cfg(target_arch = "x86_64")]
        FloatKind::Avx2 => ffi::le_attend_rows_avx2,
        #[cfg(target_arch = "x86_64")]
        FloatKind::Avx512 => ffi::le_attend_rows_avx512,
        #[cfg(target_arch = "aarch64")]
        FloatKind::Neon => ffi::le_attend_rows_neon,
        _ => ffi::le_attend_rows_scalar,
    };
    // SAFETY: reads stay within the asserted lengths of q, k and v; writes at the elements the
    // caller's contract covers (rows of hd at o_stride); the
    // scratch holds the packed keys and values of n_kv positions whenever nq may make a tile (the
    // C code packs only then); a SIMD `isa` exists only where detection found it.
    let rc = unsafe {
        f(
            n,
            d,
            qp,
            q_stride,
            kp,
            vp,
            kf16,
            stride,
            n_kv as i32,
            causal,
            kv0 as i32,
            scale,
            op,
            o_stride,
            s,
        )
    };
    debug_assert_eq!(rc, 0);
}
