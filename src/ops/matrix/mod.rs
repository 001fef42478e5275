//! Weight matrices straight from the file: `y = W x` for one or many input rows, whatever the
//! matrix's GGUF type, with rows split over threads.

//!
//! The matrix type and its products live here; [`plan`] names the route (kernels) a product
//! takes, `run.rs` executes each route, `scratch.rs` holds the per-thread buffers.

mod plan;
mod run;
mod scratch;
#[cfg(test)]
mod tests;

use half::{bf16, f16};

pub use plan::{plan, ProductRoute};

use crate::dtype::GgmlType;
use crate::gguf::{Layout, TensorView};
use crate::kernels::Cpu;
use crate::quant::interleave::deinterleave8;
use crate::threadpool::{Disjoint, ThreadPool};

/// Errors of the math layer: shapes that do not line up, types it cannot compute with.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A weight tensor has a type no kernel here handles.
    #[error("tensor '{tensor}': type {ty} is not supported for {what}")]
    UnsupportedType {
        tensor: String,
        ty: GgmlType,
        what: &'static str,
    },
    /// A tensor does not have the shape the model needs.
    #[error("tensor '{tensor}': shape {found:?}, expected {expected:?}")]
    Shape {
        tensor: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
}

/// A 2-D weight matrix in ggml's layout: `rows` rows of `cols` values (dims `[cols, rows]`),
/// so `W x` takes a `cols`-vector to a `rows`-vector. The data stays in the memory map.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    /// The tensor's name, for errors.
    pub name: &'a str,
    /// Element type of `data`.
    pub ty: GgmlType,
    /// Output dimension.
    pub rows: usize,
    /// Input dimension (row length).
    pub cols: usize,
    /// The raw rows, `rows * row_bytes` bytes.
    pub data: &'a [u8],
    /// How the rows are arranged (interleaved8 keeps the same bytes per eight rows).
    pub layout: Layout,
    /// F16 weights meet many-token inputs as bfloat16 pairs (`vdpbf16ps`, twice the f32 FMA
    /// rate) on CPUs that have the instruction: PyTorch's torch.bfloat16 precision rather than
    /// exact F16 weights against f32 inputs. Off unless asked for.
    pub bf16_products: bool,
}

impl<'a> Matrix<'a> {
    /// A matrix view of `t`, which must have dims `[cols, rows]`.
    pub fn new(t: TensorView<'a>, cols: usize, rows: usize) -> Result<Matrix<'a>, OpError> {
        let found = t.info.dims.clone();
        let want = vec![cols as u64, rows as u64];
        // [cols], [cols, rows] and [cols, rows, 1, 1] are all the same matrix.
        let first = found.first().copied().unwrap_or(1);
        let second = found.get(1).copied().unwrap_or(1);
        let rest_are_one = found.iter().skip(2).all(|&d| d == 1);
        if first != cols as u64 || second != rows as u64 || !rest_are_one {
            return Err(OpError::Shape {
                tensor: t.info.name.clone(),
                expected: want,
                found,
            });
        }
        Self::new_unchecked(t, cols, rows)
    }

    /// `t` viewed as `rows` rows of all its remaining elements, e.g. a convolution kernel
    /// `[kw, kh, c_in, c_out]` as `c_out` rows of `c_in * kh * kw`.
    pub fn flattened(t: TensorView<'a>, rows: usize) -> Result<Matrix<'a>, OpError> {
        let n = t.info.n_elements as usize;
        if rows == 0 || !n.is_multiple_of(rows) || t.info.dims.last().copied() != Some(rows as u64)
        {
            return Err(OpError::Shape {
                tensor: t.info.name.clone(),
                expected: vec![(n / rows.max(1)) as u64, rows as u64],
                found: t.info.dims.clone(),
            });
        }
        Self::new_unchecked(t, n / rows, rows)
    }

    fn new_unchecked(t: TensorView<'a>, cols: usize, rows: usize) -> Result<Matrix<'a>, OpError> {
        if !crate::quant::is_supported(t.info.ty) {
            return Err(OpError::UnsupportedType {
                tensor: t.info.name.clone(),
                ty: t.info.ty,
                what: "matrix products",
            });
        }
        Ok(Matrix {
            name: &t.info.name,
            ty: t.info.ty,
            rows,
            cols,
            data: t.data,
            layout: t.info.layout,
            bf16_products: false,
        })
    }

    pub(crate) fn row_bytes(&self) -> usize {
        self.cols * self.ty.type_size() / self.ty.block_size()
    }

    /// Row `r` as f32 values, into `out` (`cols` long).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        if self.layout == Layout::Interleaved8 && r < self.rows / 8 * 8 {
            // Back to ggml's rows for the reference dequantizer (embedding lookups only).
            let mut rows = vec![0u8; 8 * rb];
            let group = &self.data[r / 8 * 8 * rb..(r / 8 + 1) * 8 * rb];
            deinterleave8(self.ty, group, self.cols, &mut rows);
            let bytes = &rows[r % 8 * rb..(r % 8 + 1) * rb];
            crate::quant::dequantize(self.ty, bytes, out).expect("row length checked at load");
            return;
        }
        let bytes = &self.data[r * rb..(r + 1) * rb];
        match self.ty {
            GgmlType::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            GgmlType::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            GgmlType::BF16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            ty => {
                // Quantized rows: the reference dequantizer (the SIMD kernels replace this).
                crate::quant::dequantize(ty, bytes, out).expect("row length checked at load");
            }
        }
    }

    /// The matrices as one (their rows stacked), when they share a type and input width and lie
    /// back to back inside `within`, the one buffer they all borrow from (a GGUF file's bytes,
    /// `GgufFile::bytes`), as llama.cpp's converters write Q, K, V and gate, up. The result is a
    /// slice of `within`: two buffers that merely touch (two memory maps can) are never joined.
    pub fn stacked(within: &'a [u8], ms: &[Matrix<'a>]) -> Option<Matrix<'a>> {
        let first = ms.first()?;
        // Addresses are only compared here, never offset: where each matrix sits in `within`.
        let base = within.as_ptr() as usize;
        let offset_in = |m: &Matrix| {
            let at = (m.data.as_ptr() as usize).checked_sub(base)?;
            (at.checked_add(m.data.len())? <= within.len()).then_some(at)
        };
        let start = offset_in(first)?;
        let (mut end, mut rows) = (start, 0);
        for m in ms {
            if m.ty != first.ty || m.cols != first.cols || m.layout != first.layout {
                return None;
            }
            // Interleaved groups must not straddle two of the matrices.
            if m.layout == Layout::Interleaved8 && !m.rows.is_multiple_of(8) {
                return None;
            }
            if m.data.len() != m.rows * m.row_bytes() || offset_in(m)? != end {
                return None;
            }
            end += m.data.len();
            rows += m.rows;
        }
        Some(Matrix {
            name: first.name,
            ty: first.ty,
            rows,
            cols: first.cols,
            data: &within[start..end],
            layout: first.layout,
            bf16_products: first.bf16_products,
        })
    }

    /// `out[t] = W x[t]` for each of the `n` input rows in `x` (`n * cols` values), into `out`
    /// (`n * rows` values), the weight rows split over the pool's threads, by the kernels
    /// [`plan`] names for this CPU.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32], pool: &ThreadPool) {
        self.product(x, n, out, None, pool);
    }

    /// [`Matrix::matmul`] plus `bias` (`rows` values) on every output row: added by the GEMMs
    /// to each band of rows while it is still in cache, by one parallel pass after the others.
    pub fn matmul_bias(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        bias: &[f32],
        pool: &ThreadPool,
    ) {
        assert_eq!(bias.len(), self.rows, "{}: bias length", self.name);
        self.product(x, n, out, Some(bias), pool);
    }

    fn product(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        bias: Option<&[f32]>,
        pool: &ThreadPool,
    ) {
        assert_eq!(x.len(), n * self.cols, "{}: input length", self.name);
        assert_eq!(out.len(), n * self.rows, "{}: output length", self.name);
        let cpu = Cpu::get();
        let route = plan(self, n, cpu.kinds());
        let product = run::Product {
            m: self,
            x,
            n,
            out: Disjoint::new(out),
            bias,
            pool,
        };
        product.run(route, cpu);
        if let (false, Some(b)) = (route.adds_bias(), bias) {
            scratch::add_bias_rows(out, b, pool);
        }
    }
}

/// `outs[i] = ms[i] x + biases[i]` for matrices with the same input (a vision layer's Q, K and
/// V): on AVX-512 with F16 weights the tokens are packed once and every matrix's row chunks
/// share one pass of the pool, else one [`Matrix::matmul_bias`] each.
pub fn matmul_bias_sharing_input(
    ms: &[&Matrix<'_>],
    biases: &[&[f32]],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
    pool: &ThreadPool,
) {
    assert!(ms.len() == biases.len() && ms.len() == outs.len());
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = Cpu::get().kinds();
        let fused = ms
            .iter()
            .all(|m| m.cols == ms[0].cols && plan(m, n, cpu) == ProductRoute::F16GemmPacked);
        if fused && !ms.is_empty() {
            let mut parts = Vec::with_capacity(ms.len());
            for ((m, b), out) in ms.iter().zip(biases).zip(outs.iter_mut()) {
                assert_eq!(x.len(), n * m.cols, "{}: input length", m.name);
                assert_eq!(out.len(), n * m.rows, "{}: output length", m.name);
                assert_eq!(b.len(), m.rows, "{}: bias length", m.name);
                parts.push(run::F16Part {
                    m,
                    out: Disjoint::new(out),
                    bias: Some(b),
                });
            }
            run::gemm_f16_packed(&parts, x, n, pool);
            return;
        }
    }
    for ((m, b), out) in ms.iter().zip(biases).zip(outs.iter_mut()) {
        m.matmul_bias(x, n, out, b, pool);
    }
}

/// `outs[i] = ms[i] x` for matrices with the same input: one product over `stacked` (one pass of
/// the pool, one quantization of `x`) when it is given, else one product each. `scratch`
/// holds the stacked result between calls.
pub fn matmul_stacked(
    stacked: Option<&Matrix<'_>>,
    ms: &[&Matrix<'_>],
    x: &[f32],
    n: usize,
    outs: &mut [&mut [f32]],
    pool: &ThreadPool,
    scratch: &mut Vec<f32>,
) {
    let Some(all) = stacked else {
        for (m, out) in ms.iter().zip(outs.iter_mut()) {
            m.matmul(x, n, out, pool);
        }
        return;
    };
    scratch.resize(n * all.rows, 0.0);
    all.matmul(x, n, scratch, pool);
    for (t, row) in scratch.chunks_exact(all.rows).enumerate() {
        let mut at = 0;
        for (m, out) in ms.iter().zip(outs.iter_mut()) {
            out[t * m.rows..(t + 1) * m.rows].copy_from_slice(&row[at..at + m.rows]);
            at += m.rows;
        }
    }
}

/// f32 dot product with 8 partial sums (closer to what SIMD kernels compute than one running sum).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for k in 0..8 {
            acc[k] += a[c * 8 + k] * b[c * 8 + k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}
