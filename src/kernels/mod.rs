//! The thin, safe layer over the C kernels (`kernels/cpu/`, symbols and flags in
//! `kernels/README.md`): what this CPU offers ([`Cpu`], detected once), and length-checked
//! wrappers that run the build of each kernel it selects, by family:
//!
//! - [`dots`]: activation quantizers and the row-at-a-time dot products (decode);
//! - [`gemm`]: the prefill GEMMs over packed panels (quantized, F16, bfloat16) and the decode
//!   product over interleaved rows;
//! - [`attention`]: one head against a key/value cache, a query row or a tile of them;
//! - [`rows`]: norms, rotary embeddings, activations, row by row.
//!
//! `LLAVA_EDGE_FORCE_SCALAR=1` makes [`Cpu::get`] the portable C (for tests and for comparing
//! against it).
//!
//! Soundness rests on one rule: a wrapper runs the SIMD build its choice value names ([`Isa`],
//! [`GemmIsa`], [`FloatIsa`], [`Bf16Isa`]), and those values are made only from the detected
//! [`Cpu`] (or are the scalar build), so no safe call can run an instruction the CPU lacks.
#![allow(non_snake_case)] // Q8_K, Q4_K: ggml's type names.

use std::sync::OnceLock;

pub mod attention;
pub mod dots;
pub mod gemm;
pub mod rows;

pub use attention::{
    attend_head, attend_head_rows, attend_head_rows_to, HeadRows, KvRef, Visible, MAX_HEAD_DIM,
};
pub use dots::{
    dot_bf16_f32, dot_f16_f32, dot_q2_K_q8_K, dot_q3_K_q8_K, dot_q4_0_q8_0, dot_q4_0_q8_0_summed,
    dot_q4_K_q8_K, dot_q5_0_q8_0, dot_q5_K_q8_K, dot_q6_K_q8_K, dot_q8_0_q8_0, f16_to_f32,
    quantize_row_q8_0, quantize_row_q8_0_summed, quantize_row_q8_0_summed_with,
    quantize_row_q8_0_with, quantize_row_q8_K,
};
pub use gemm::{
    bf16_pack_tokens, bf16_packed_tokens_len, f16_packed_tokens_len, gemm_bf16, gemm_f16,
    gemm_panels, gemv_interleaved8, interleaved8_tail_dot, pack_panel,
    pack_panel_from_interleaved8, panel_codes, PanelBlock, BF16_PANEL_ROWS, BF16_TILE_TOKENS,
    F16_PACK_PER_K, F16_TILE_TOKENS, PREFETCH_AHEAD,
};
#[cfg(target_arch = "x86_64")]
pub use gemm::{f16_pack_tokens, gemm_f16_packed};
pub use rows::{activation_with, layer_norm_with, rms_norm_with, rotate_heads, Gate};

/// Runs the build of a kernel that a choice selects: `dispatch!(kind, (args) { "arch" Kind::A
/// => ffi::le_f_a, ..., _ => ffi::le_f_scalar })`. Each arm names the architecture its symbol
/// exists on, so the table reads as the list of builds; the portable C takes everything else.
/// Expands to unsafe calls: the caller states why the arguments are valid, and the kind must
/// come from a choice value (detection made it).
macro_rules! dispatch {
    ($kind:expr, $args:tt {
        $($arch:literal $pat:pat => $f:path,)*
        _ => $scalar:path $(,)?
    }) => {
        match $kind {
            $(#[cfg(target_arch = $arch)] $pat => $f $args,)*
            _ => $scalar $args,
        }
    };
}
pub(crate) use dispatch;

/// What this CPU offers the kernels: the best build of each family, from one detection. A
/// value proves the CPU runs those builds (the field is private; only [`Cpu::detected`],
/// [`Cpu::get`] and [`Cpu::SCALAR`] make one), so the choices made from it ([`Cpu::isa`],
/// [`Cpu::gemm`], [`Cpu::float`], [`Cpu::bf16`]) may run their SIMD code. Calling an AVX2
/// kernel on a CPU without AVX2 would be undefined behaviour, so none of these compile:
///
/// ```compile_fail
/// use llava_edge::kernels::{self, Isa};
/// let mut x = [1f32; 8];
/// kernels::rms_norm_with(Isa::Avx2, &mut x, &[1.0; 8], 1e-6);
/// ```
///
/// ```compile_fail
/// use llava_edge::kernels::{Isa, IsaKind};
/// let _ = Isa(IsaKind::Avx2);
/// ```
///
/// ```compile_fail
/// use llava_edge::kernels::{Cpu, CpuKinds};
/// let _ = Cpu { kinds: CpuKinds::SCALAR };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpu {
    kinds: CpuKinds,
}

/// A description of a CPU's kernel builds, one per family: what a [`Cpu`] selects, as plain
/// data. Anyone can make one (tests describe CPUs they do not run on), and it runs nothing:
/// only a [`Cpu`] grants the builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuKinds {
    /// The dots, quantizers, norms, rotary embeddings, activations and single-row attention.
    pub isa: IsaKind,
    /// The quantized GEMM and the decode product over interleaved rows.
    pub gemm: GemmKind,
    /// The F16 GEMM and attention's row tiles.
    pub float: FloatKind,
    /// The bfloat16-pair GEMM, where the CPU has the instruction.
    pub bf16: Option<Bf16Kind>,
}

impl CpuKinds {
    /// The portable C everywhere.
    pub const SCALAR: CpuKinds = CpuKinds {
        isa: IsaKind::Scalar,
        gemm: GemmKind::Scalar,
        float: FloatKind::Scalar,
        bf16: None,
    };
}

impl Cpu {
    /// Portable C, which every CPU runs.
    pub const SCALAR: Cpu = Cpu {
        kinds: CpuKinds::SCALAR,
    };

    /// What the CPU supports, ignoring the environment: the one place a [`Cpu`] with SIMD
    /// builds is made, so every SIMD dispatch rests on these checks.
    pub fn detected() -> Cpu {
        static CPU: OnceLock<Cpu> = OnceLock::new();
        *CPU.get_or_init(|| Cpu {
            kinds: detect_kinds(),
        })
    }

    /// The kernels to run: [`Cpu::detected`], or [`Cpu::SCALAR`] when
    /// `LLAVA_EDGE_FORCE_SCALAR` is set (and not `0`).
    pub fn get() -> Cpu {
        static CPU: OnceLock<Cpu> = OnceLock::new();
        *CPU.get_or_init(|| {
            if std::env::var_os("LLAVA_EDGE_FORCE_SCALAR").is_some_and(|v| v != "0") {
                return Cpu::SCALAR;
            }
            Cpu::detected()
        })
    }

    /// The builds this CPU runs, as a description.
    pub fn kinds(self) -> CpuKinds {
        self.kinds
    }

    /// The build of the dots, quantizers, row kernels and single-row attention.
    pub fn isa(self) -> Isa {
        Isa(self.kinds.isa)
    }

    /// The build of the quantized GEMM and the interleaved decode product.
    pub fn gemm(self) -> GemmIsa {
        GemmIsa(self.kinds.gemm)
    }

    /// The build of the F16 GEMM and attention's row tiles.
    pub fn float(self) -> FloatIsa {
        FloatIsa(self.kinds.float)
    }

    /// The SIMD bfloat16 GEMM, where this CPU has one.
    pub fn bf16(self) -> Option<Bf16Isa> {
        self.kinds.bf16.map(Bf16Isa)
    }
}

/// The detection [`Cpu::detected`] caches. The x86 SIMD builds all assume AVX2, FMA and F16C;
/// the 512-bit ones add what each needs.
fn detect_kinds() -> CpuKinds {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if !(has!("avx2") && has!("fma") && has!("f16c")) {
            return CpuKinds::SCALAR;
        }
        let vnni = has!("avx512vnni") && has!("avx512vl") && has!("avx512bw");
        let bf16 = has!("avx512bf16") && has!("avx512vl") && has!("avx512bw");
        CpuKinds {
            isa: IsaKind::Avx2,
            gemm: if vnni { GemmKind::Vnni } else { GemmKind::Avx2 },
            float: if has!("avx512f") {
                FloatKind::Avx512
            } else {
                FloatKind::Avx2
            },
            bf16: bf16.then_some(Bf16Kind::Avx512),
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        let dot = has!("dotprod");
        CpuKinds {
            isa: if dot {
                IsaKind::NeonDotprod
            } else {
                IsaKind::Neon
            },
            gemm: if dot {
                GemmKind::Dotprod
            } else {
                GemmKind::Neon
            },
            float: FloatKind::Neon,
            bf16: has!("bf16").then_some(Bf16Kind::Neon),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    CpuKinds::SCALAR
}

/// The builds of one family below `best` on its ladder (scalar first, `best` last): each runs
/// wherever `best` does.
fn ladder<K: Copy + PartialEq>(steps: &[K], best: K) -> Vec<K> {
    let at = steps.iter().position(|&k| k == best).unwrap_or(0);
    steps[..=at].to_vec()
}

/// The dots, quantizers, norms, rotary embeddings, activations and single-row attention: a
/// build [`Cpu::isa`] chose (a value proves this CPU runs it; see [`Cpu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(IsaKind);

/// Which build an [`Isa`] is: to look at one (an `Isa` cannot be made from it).
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

    /// Which build this is.
    pub fn kind(self) -> IsaKind {
        self.0
    }

    /// Every build this CPU can run, the scalar one first (for tests and benchmarks; ignores
    /// `LLAVA_EDGE_FORCE_SCALAR`).
    pub fn available() -> Vec<Isa> {
        let best = Cpu::detected().kinds.isa;
        let steps: &[IsaKind] = match best {
            IsaKind::Avx2 => &[IsaKind::Scalar, IsaKind::Avx2],
            _ => &[IsaKind::Scalar, IsaKind::Neon, IsaKind::NeonDotprod],
        };
        ladder(steps, best).into_iter().map(Isa).collect()
    }
}

/// The quantized GEMM over panels and the decode product over interleaved rows: a build
/// [`Cpu::gemm`] chose (a value proves this CPU runs it; see [`Cpu`]).
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

    /// Every build this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<GemmIsa> {
        let best = Cpu::detected().kinds.gemm;
        let steps: &[GemmKind] = match best {
            GemmKind::Avx2 | GemmKind::Vnni => &[GemmKind::Scalar, GemmKind::Avx2, GemmKind::Vnni],
            _ => &[GemmKind::Scalar, GemmKind::Neon, GemmKind::Dotprod],
        };
        ladder(steps, best).into_iter().map(GemmIsa).collect()
    }
}

/// The F16 GEMM (whose SIMD builds add each output's products in order with one fused
/// multiply-add each, so they agree bit for bit) and attention's row tiles: a build
/// [`Cpu::float`] chose (a value proves this CPU runs it; see [`Cpu`]).
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

impl FloatIsa {
    /// Portable C, the reference, which every CPU runs.
    pub const SCALAR: FloatIsa = FloatIsa(FloatKind::Scalar);

    /// Which build this is.
    pub fn kind(self) -> FloatKind {
        self.0
    }

    /// Every build this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<FloatIsa> {
        let best = Cpu::detected().kinds.float;
        let steps: &[FloatKind] = match best {
            FloatKind::Neon => &[FloatKind::Scalar, FloatKind::Neon],
            _ => &[FloatKind::Scalar, FloatKind::Avx2, FloatKind::Avx512],
        };
        ladder(steps, best).into_iter().map(FloatIsa).collect()
    }
}

/// The bfloat16-pair GEMM: a build [`Cpu::bf16`] chose, or the scalar reference (a value
/// proves this CPU runs it; see [`Cpu`]).
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

    /// Every build this CPU can run (for tests and benchmarks; ignores
    /// `LLAVA_EDGE_FORCE_SCALAR`).
    pub fn available() -> Vec<Bf16Isa> {
        let mut v = vec![Bf16Isa::SCALAR];
        v.extend(Cpu::detected().bf16());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detected_build_of_each_family_is_the_best_it_lists() {
        let cpu = Cpu::detected();
        assert_eq!(Isa::available().last(), Some(&cpu.isa()));
        assert_eq!(GemmIsa::available().last(), Some(&cpu.gemm()));
        assert_eq!(FloatIsa::available().last(), Some(&cpu.float()));
        let bf16 = cpu.bf16().unwrap_or(Bf16Isa::SCALAR);
        assert_eq!(Bf16Isa::available().last(), Some(&bf16));
        assert!([cpu, Cpu::SCALAR].contains(&Cpu::get()));
        assert_eq!(Cpu::SCALAR.kinds(), CpuKinds::SCALAR);
        assert_eq!(Cpu::SCALAR.bf16(), None);
    }
}
