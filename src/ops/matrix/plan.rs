//! Which kernels run a product: [`plan`] names the route a matrix, a token count and a CPU
//! description take, in one place; `run.rs` executes each route.

use crate::dtype::GgmlType;
use crate::ffi;
use crate::gguf::Layout;
use crate::kernels::{self, CpuKinds, FloatKind, IsaKind};

use super::Matrix;

/// From this many tokens on, products run as a GEMM over repacked panels; below it the row
/// kernels win (packing costs about as much as a few passes over the weights).
pub(super) const GEMM_MIN_TOKENS: usize = 4;

/// Interleaved8 rows take the decode product below this many tokens, the GEMM from it on: a
/// token's pass over a group of rows is cheap once the group sits in L2, while the GEMM packs
/// panels first. The x86 crossover is measured (PERF.md, "interleaved decode vs GEMM");
/// elsewhere it is not, so the GEMM's own threshold stays.
pub(super) const INTERLEAVED8_DECODE_MAX_TOKENS: usize = if cfg!(target_arch = "x86_64") {
    16
} else {
    GEMM_MIN_TOKENS
};

/// How one product runs: each route names its kernels. Routes marked "adds the bias" add it
/// band by band while the outputs are in cache; the others leave it to one pass after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductRoute {
    /// Interleaved8 rows, few tokens: the decode product over groups of eight rows against
    /// summed Q8_0 activations (plain tail rows through the row dot).
    DecodeInterleaved8,
    /// Quantized weights packed into panels of eight rows, a chunk per thread, against summed
    /// Q8_0 activations: the prefill GEMM, and any product of a type without a row kernel
    /// (packing is still several times faster than dequantizing). Adds the bias.
    GemmPanels {
        /// The integer codes the weight type packs to.
        codes: ffi::le_codes,
    },
    /// Q4_0 rows one at a time against summed activations (x86: unsigned nibbles against the
    /// block sums take fewer operations a block, and its Q4_0 decode is compute-bound).
    RowsQ4_0Summed,
    /// Quantized rows one at a time against Q8_0 activations (blocks of 32).
    RowsQ8_0,
    /// K-quant rows one at a time against Q8_K activations (blocks of 256).
    RowsQ8K,
    /// F16 weights against many tokens rounded to bfloat16 pairs (the matrix asked for it and
    /// the CPU has the instruction). Adds the bias.
    Bf16Gemm,
    /// F16 weights against many tokens, the tokens packed once for the AVX-512 tiles and shared
    /// by every row chunk. Adds the bias.
    F16GemmPacked,
    /// F16 weights against many tokens in the tiled F16 GEMM. Adds the bias.
    F16Gemm,
    /// F16 or BF16 rows one at a time through the float dot.
    FloatRows,
    /// Each row dequantized to f32 then dotted: F32 weights, and rows the kernels cannot read
    /// in place (not 2-byte aligned).
    Dequantized,
}

impl ProductRoute {
    /// Whether the route adds the bias itself.
    pub fn adds_bias(self) -> bool {
        matches!(
            self,
            ProductRoute::GemmPanels { .. }
                | ProductRoute::Bf16Gemm
                | ProductRoute::F16GemmPacked
                | ProductRoute::F16Gemm
        )
    }
}

/// A decode row kernel, by the activations it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowActs {
    /// Q8_0 blocks of 32.
    Q8_0,
    /// Q8_K blocks of 256.
    Q8K,
}

/// The activations of `ty`'s row dot kernel, or `None` for a type without one. With
/// `run::row_dot`, the one list of them: it decides both dispatch and which types take the
/// GEMM at one token instead.
pub(super) fn row_acts(ty: GgmlType) -> Option<RowActs> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => Some(RowActs::Q8_0),
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            Some(RowActs::Q8K)
        }
        _ => None,
    }
}

/// The route `m` times `n` tokens takes on a CPU offering `cpu`. Pure: a description picks the
/// route, and execution runs it with the builds the detected CPU grants.
pub fn plan(m: &Matrix<'_>, n: usize, cpu: CpuKinds) -> ProductRoute {
    if m.layout == Layout::Interleaved8 && n < INTERLEAVED8_DECODE_MAX_TOKENS {
        return ProductRoute::DecodeInterleaved8;
    }
    // The kernels read blocks and halves in place: f16 scales and values need 2-byte alignment.
    let aligned = bytemuck::try_cast_slice::<u8, u16>(m.data).is_ok();
    if !aligned {
        return ProductRoute::Dequantized;
    }
    let row = row_acts(m.ty);
    let many = n >= GEMM_MIN_TOKENS;
    if many || row.is_none() {
        if let Some(codes) = kernels::panel_codes(m.ty) {
            return ProductRoute::GemmPanels { codes };
        }
    }
    match row {
        Some(_) if m.ty == GgmlType::Q4_0 && cpu.isa == IsaKind::Avx2 => {
            return ProductRoute::RowsQ4_0Summed
        }
        Some(RowActs::Q8_0) => return ProductRoute::RowsQ8_0,
        Some(RowActs::Q8K) => return ProductRoute::RowsQ8K,
        None => {}
    }
    match m.ty {
        GgmlType::F16 if many && m.bf16_products && cpu.bf16.is_some() => ProductRoute::Bf16Gemm,
        GgmlType::F16 if many && cpu.float == FloatKind::Avx512 => ProductRoute::F16GemmPacked,
        GgmlType::F16 if many => ProductRoute::F16Gemm,
        GgmlType::F16 | GgmlType::BF16 => ProductRoute::FloatRows,
        _ => ProductRoute::Dequantized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Bf16Kind, GemmKind};

    const AVX2: CpuKinds = CpuKinds {
        isa: IsaKind::Avx2,
        gemm: GemmKind::Avx2,
        float: FloatKind::Avx2,
        bf16: None,
    };
    const AVX512_BF16: CpuKinds = CpuKinds {
        isa: IsaKind::Avx2,
        gemm: GemmKind::Vnni,
        float: FloatKind::Avx512,
        bf16: Some(Bf16Kind::Avx512),
    };
    const NEON: CpuKinds = CpuKinds {
        isa: IsaKind::NeonDotprod,
        gemm: GemmKind::Dotprod,
        float: FloatKind::Neon,
        bf16: None,
    };
    const SCALAR: CpuKinds = CpuKinds::SCALAR;

    /// A matrix of `ty` over `data` (contents unread by `plan`).
    fn matrix(ty: GgmlType, data: &[u8], layout: Layout, bf16_products: bool) -> Matrix<'_> {
        Matrix {
            name: "w",
            ty,
            rows: 8,
            cols: 256,
            data,
            layout,
            bf16_products,
        }
    }

    fn route(ty: GgmlType, n: usize, cpu: CpuKinds) -> ProductRoute {
        let buf = vec![0u16; 4096];
        plan(
            &matrix(ty, bytemuck::cast_slice(&buf), Layout::Rows, false),
            n,
            cpu,
        )
    }

    #[test]
    fn quantized_rows_take_the_row_kernels_for_few_tokens_and_the_gemm_for_many() {
        let gemm = |ty| ProductRoute::GemmPanels {
            codes: kernels::panel_codes(ty).unwrap(),
        };
        for cpu in [SCALAR, AVX2, AVX512_BF16, NEON] {
            assert_eq!(route(GgmlType::Q8_0, 1, cpu), ProductRoute::RowsQ8_0);
            assert_eq!(route(GgmlType::Q5_0, 3, cpu), ProductRoute::RowsQ8_0);
            assert_eq!(route(GgmlType::Q4_K, 1, cpu), ProductRoute::RowsQ8K);
            for ty in [
                GgmlType::Q4_0,
                GgmlType::Q8_0,
                GgmlType::Q4_K,
                GgmlType::Q6_K,
            ] {
                assert_eq!(route(ty, GEMM_MIN_TOKENS, cpu), gemm(ty), "{ty} {cpu:?}");
            }
            // No row kernel: the GEMM at one token. No panel form: the row kernel at many.
            assert_eq!(route(GgmlType::Q4_1, 1, cpu), gemm(GgmlType::Q4_1));
            assert_eq!(route(GgmlType::Q2_K, 64, cpu), ProductRoute::RowsQ8K);
        }
        // Q4_0 decode against summed activations only where the AVX2 dots are.
        assert_eq!(route(GgmlType::Q4_0, 1, AVX2), ProductRoute::RowsQ4_0Summed);
        assert_eq!(
            route(GgmlType::Q4_0, 1, AVX512_BF16),
            ProductRoute::RowsQ4_0Summed
        );
        assert_eq!(route(GgmlType::Q4_0, 1, NEON), ProductRoute::RowsQ8_0);
        assert_eq!(route(GgmlType::Q4_0, 1, SCALAR), ProductRoute::RowsQ8_0);
    }

    #[test]
    fn float_weights_take_the_gemm_the_cpu_has() {
        for cpu in [SCALAR, AVX2, AVX512_BF16, NEON] {
            assert_eq!(route(GgmlType::F16, 1, cpu), ProductRoute::FloatRows);
            assert_eq!(route(GgmlType::BF16, 64, cpu), ProductRoute::FloatRows);
            assert_eq!(route(GgmlType::F32, 64, cpu), ProductRoute::Dequantized);
        }
        assert_eq!(route(GgmlType::F16, 4, AVX2), ProductRoute::F16Gemm);
        assert_eq!(route(GgmlType::F16, 4, NEON), ProductRoute::F16Gemm);
        assert_eq!(route(GgmlType::F16, 4, SCALAR), ProductRoute::F16Gemm);
        assert_eq!(
            route(GgmlType::F16, 4, AVX512_BF16),
            ProductRoute::F16GemmPacked
        );
        // bfloat16 pairs only when the matrix asks and the CPU has them.
        let buf = vec![0u16; 4096];
        let bytes: &[u8] = bytemuck::cast_slice(&buf);
        let asks = matrix(GgmlType::F16, bytes, Layout::Rows, true);
        assert_eq!(plan(&asks, 4, AVX512_BF16), ProductRoute::Bf16Gemm);
        assert_eq!(plan(&asks, 3, AVX512_BF16), ProductRoute::FloatRows);
        assert_eq!(plan(&asks, 4, AVX2), ProductRoute::F16Gemm);
        let neon_bf16 = CpuKinds {
            bf16: Some(Bf16Kind::Neon),
            ..NEON
        };
        assert_eq!(plan(&asks, 4, neon_bf16), ProductRoute::Bf16Gemm);
    }

    #[test]
    fn interleaved_rows_decode_below_their_threshold() {
        let buf = vec![0u16; 4096];
        let bytes: &[u8] = bytemuck::cast_slice(&buf);
        for ty in [GgmlType::Q4_0, GgmlType::Q6_K] {
            let m = matrix(ty, bytes, Layout::Interleaved8, false);
            for cpu in [SCALAR, AVX2, NEON] {
                assert_eq!(plan(&m, 1, cpu), ProductRoute::DecodeInterleaved8);
                let last = INTERLEAVED8_DECODE_MAX_TOKENS - 1;
                assert_eq!(plan(&m, last, cpu), ProductRoute::DecodeInterleaved8);
                assert_eq!(
                    plan(&m, INTERLEAVED8_DECODE_MAX_TOKENS, cpu),
                    ProductRoute::GemmPanels {
                        codes: kernels::panel_codes(ty).unwrap()
                    }
                );
            }
        }
    }

    #[test]
    fn unaligned_rows_are_dequantized() {
        let buf = vec![0u16; 4096];
        let odd = &bytemuck::cast_slice::<u16, u8>(&buf)[1..];
        for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::F16] {
            let m = matrix(ty, odd, Layout::Rows, false);
            for n in [1, 64] {
                assert_eq!(plan(&m, n, AVX2), ProductRoute::Dequantized, "{ty}");
            }
        }
    }

    #[test]
    fn routes_that_add_the_bias_are_the_gemms() {
        assert!(route(GgmlType::F16, 4, AVX2).adds_bias());
        assert!(route(GgmlType::Q8_0, 4, AVX2).adds_bias());
        assert!(!route(GgmlType::Q8_0, 1, AVX2).adds_bias());
        assert!(!route(GgmlType::F32, 64, AVX2).adds_bias());
    }
}
