//! Weight matrices straight from the file: `y = W x` for one or many input rows, whatever the
//! matrix's GGUF type, with rows split over threads.

use half::{bf16, f16};

use crate::dtype::GgmlType;
use crate::ffi;
use crate::gguf::{Layout, TensorInfo, TensorView};
use crate::kernels;
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
    /// How the rows are arranged (interleaved Q4_0 keeps the same bytes per eight rows).
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

    fn row_bytes(&self) -> usize {
        self.cols * self.ty.type_size() / self.ty.block_size()
    }

    /// Row `r` as f32 values, into `out` (`cols` long).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        if self.layout == Layout::X8 && r < self.rows / 8 * 8 {
            // Back to ggml's rows for the reference dequantizer (embedding lookups only).
            let mut rows = vec![0u8; 8 * rb];
            let group = &self.data[r / 8 * 8 * rb..(r / 8 + 1) * 8 * rb];
            kernels::deinterleave_x8(self.ty, group, self.cols, &mut rows);
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
            if m.layout == Layout::X8 && !m.rows.is_multiple_of(8) {
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
    /// (`n * rows` values), the weight rows split over the pool's threads. Q4_0 and Q8_0
    /// weights meet activations quantized to Q8_0 (as llama.cpp does) in the integer kernels;
    /// F16 weights use the F16 kernel; other types are dequantized a row at a time.
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
        let banded = self.banded_product(x, n, out, bias, pool);
        if let (false, Some(b)) = (banded, bias) {
            add_bias_rows(out, b, pool);
        }
    }

    /// Runs the product; true when it also added `bias` (the GEMMs, band by band).
    fn banded_product(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [f32],
        bias: Option<&[f32]>,
        pool: &ThreadPool,
    ) -> bool {
        let out_ptr = Disjoint::new(out);
        let (rows, cols, rb) = (self.rows, self.cols, self.row_bytes());
        let isa = kernels::isa();
        let gemm_isa = kernels::GemmIsa::for_isa(isa);
        // Bounds checked in the closure (one compare beside a row's dot product), so no caller
        // of it can write outside `out`.
        let put = |i: usize, r: usize, v: f32| {
            assert!(
                i < n && r < rows,
                "{}: output ({i}, {r}) out of range",
                self.name
            );
            // SAFETY: `out` has n * rows elements (asserted in `product`, index checked above)
            // and each (i, r) is written by exactly one thread, the one the pool's split in this
            // function gives row r.
            unsafe { *out_ptr.get().add(i * rows + r) = v }
        };
        let rows_of = |band: std::ops::Range<usize>| &self.data[band.start * rb..band.end * rb];
        let aligned = bytemuck::try_cast_slice::<u8, u16>(self.data).is_ok();
        if self.layout == Layout::X8 && n < X8_GEMV_MAX_TOKENS {
            self.gemv_x8(x, n, out_ptr, pool);
            return false;
        }
        // Types without a decode dot kernel of their own take the GEMM at any token count:
        // packing eight rows into panels and running them is still several times faster than
        // dequantizing rows to f32.
        let row = row_dot(self.ty);
        if (n >= GEMM_MIN_TOKENS || row.is_none()) && aligned {
            if let Some(codes) = kernels::panel_codes(self.ty) {
                self.gemm(codes, x, n, out_ptr, bias, pool);
                return true;
            }
        }
        let product = QuantizedProduct {
            m: self,
            x,
            n,
            pool,
            put: &put,
        };
        if aligned {
            match row {
                // x86: unsigned nibbles against activations that carry their sums (fewer
                // operations a block, and decode of Q4_0 is compute-bound there).
                Some(_) if self.ty == GgmlType::Q4_0 && isa.kind() == kernels::IsaKind::Avx2 => {
                    product.run(32, kernels::quantize_row_q8_0x, &|w, a| {
                        kernels::dot_q4_0_q8_0x(gemm_isa, bytemuck::cast_slice(w), a)
                    });
                    return false;
                }
                Some(RowDot::Q8_0(dot)) => {
                    product.run(32, kernels::quantize_row_q8_0, &|w, a| dot(isa, w, a));
                    return false;
                }
                Some(RowDot::Q8K(dot)) => {
                    product.run(256, kernels::quantize_row_q8_K, &|w, a| dot(isa, w, a));
                    return false;
                }
                None => {}
            }
        }
        if self.ty == GgmlType::F16 && self.bf16_products && aligned && n >= GEMM_MIN_TOKENS {
            if let Some(isa) = kernels::Bf16Isa::simd() {
                self.gemm_bf16(isa, x, n, out_ptr, bias, pool);
                return true;
            }
        }
        match self.ty {
            GgmlType::F16 if aligned && n >= GEMM_MIN_TOKENS => {
                // Prefill / vision: the tiled F16 GEMM, 64-row chunks handed out on demand.
                let w: &[u16] = bytemuck::cast_slice(self.data);
                let build = kernels::FloatIsa::for_isa(isa);
                #[cfg(target_arch = "x86_64")]
                if build.kind() == kernels::FloatKind::Avx512 {
                    gemm_f16_packed(
                        &[F16Part {
                            m: self,
                            out: out_ptr,
                            bias,
                        }],
                        x,
                        n,
                        pool,
                    );
                    return true;
                }
                pool.for_chunks(rows, GEMM_CHUNK_ROWS, &|band| {
                    with_panel_scratch(kernels::F16_PACK_PER_K * cols, |pack| {
                        // SAFETY: `out` has n * rows elements; this thread alone writes columns
                        // band of each token's row.
                        unsafe {
                            kernels::gemm_f16(
                                build,
                                cols,
                                &w[band.start * cols..band.end * cols],
                                band.len(),
                                x,
                                n,
                                out_ptr.get().add(band.start),
                                rows,
                                pack,
                            );
                            add_bias_band(out_ptr, rows, n, band, bias);
                        }
                    });
                });
                true
            }
            GgmlType::F16 | GgmlType::BF16 if aligned => {
                let dot = if self.ty == GgmlType::F16 {
                    kernels::dot_f16_f32
                } else {
                    kernels::dot_bf16_f32
                };
                pool.for_ranges(rows, 16, &|band| {
                    let r0 = band.start;
                    for (k, w) in rows_of(band).chunks_exact(rb).enumerate() {
                        let w: &[u16] = bytemuck::cast_slice(w);
                        for (i, xi) in x.chunks_exact(cols).enumerate() {
                            put(i, r0 + k, dot(isa, w, xi));
                        }
                    }
                });
                false
            }
            _ => {
                pool.for_ranges(rows, 16, &|band| {
                    let mut w = vec![0f32; cols];
                    for r in band {
                        self.row_f32(r, &mut w);
                        for (i, xi) in x.chunks_exact(cols).enumerate() {
                            put(i, r, dot(&w, xi));
                        }
                    }
                });
                false
            }
        }
    }

    /// [`Matrix::matmul`] of F16 weights in bfloat16 pairs: the tokens rounded and packed once
    /// (split over the threads by tiles), then 64-row chunks handed out on demand.
    fn gemm_bf16(
        &self,
        isa: kernels::Bf16Isa,
        x: &[f32],
        n: usize,
        out: Disjoint<f32>,
        bias: Option<&[f32]>,
        pool: &ThreadPool,
    ) {
        let cols = self.cols;
        let tile = kernels::BF16_TILE_TOKENS;
        let pack =
            |x: &[f32], nt, dst: &mut [u32]| kernels::bf16_pack_tokens(isa, cols, x, nt, dst);
        let len = kernels::bf16_packed_tokens_len;
        with_packed_tokens(pool, x, n, cols, tile, len, pack, |xp| {
            self.gemm_bf16_tokens(isa, xp, n, out, bias, pool)
        });
    }

    /// [`Matrix::gemm_bf16`] on its packed tokens.
    fn gemm_bf16_tokens(
        &self,
        isa: kernels::Bf16Isa,
        xp: &[u32],
        n: usize,
        out: Disjoint<f32>,
        bias: Option<&[f32]>,
        pool: &ThreadPool,
    ) {
        let (rows, cols) = (self.rows, self.cols);
        let w: &[u16] = bytemuck::cast_slice(self.data);
        pool.for_chunks(rows, GEMM_CHUNK_ROWS, &|band| {
            with_panel_scratch(kernels::BF16_PANEL_ROWS * cols.div_ceil(2), |pack| {
                // SAFETY: `out` has n * rows elements; this thread alone writes columns band of
                // each token's row.
                unsafe {
                    kernels::gemm_bf16(
                        isa,
                        cols,
                        &w[band.start * cols..band.end * cols],
                        band.len(),
                        xp,
                        n,
                        out.get().add(band.start),
                        rows,
                        pack,
                    );
                    add_bias_band(out, rows, n, band, bias);
                }
            });
        });
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
        let fused = ms.iter().all(|m| {
            m.ty == GgmlType::F16
                && !m.bf16_products
                && m.cols == ms[0].cols
                && bytemuck::try_cast_slice::<u8, u16>(m.data).is_ok()
        }) && n >= GEMM_MIN_TOKENS
            && kernels::FloatIsa::for_isa(kernels::isa()).kind() == kernels::FloatKind::Avx512;
        if fused {
            let mut parts = Vec::with_capacity(ms.len());
            for ((m, b), out) in ms.iter().zip(biases).zip(outs.iter_mut()) {
                assert_eq!(x.len(), n * m.cols, "{}: input length", m.name);
                assert_eq!(out.len(), n * m.rows, "{}: output length", m.name);
                assert_eq!(b.len(), m.rows, "{}: bias length", m.name);
                parts.push(F16Part {
                    m,
                    out: Disjoint::new(out),
                    bias: Some(b),
                });
            }
            gemm_f16_packed(&parts, x, n, pool);
            return;
        }
    }
    for ((m, b), out) in ms.iter().zip(biases).zip(outs.iter_mut()) {
        m.matmul_bias(x, n, out, b, pool);
    }
}

/// One product of [`gemm_f16_packed`]: F16 weights, where their outputs go (`n * m.rows`
/// values), the bias to add.
#[cfg(target_arch = "x86_64")]
struct F16Part<'p> {
    m: &'p Matrix<'p>,
    out: Disjoint<f32>,
    bias: Option<&'p [f32]>,
}

/// Weight rows of an F16 chunk on AVX-512: one 32-row panel, so the last chunks of a product
/// leave a thread waiting for at most one panel's tiles.
#[cfg(target_arch = "x86_64")]
const F16_CHUNK_ROWS: usize = 32;

/// F16 products with the same input on AVX-512: the tokens packed once (split over the threads
/// by tiles), then every product's 32-row chunks handed out on demand in one pass of the pool.
#[cfg(target_arch = "x86_64")]
fn gemm_f16_packed(parts: &[F16Part<'_>], x: &[f32], n: usize, pool: &ThreadPool) {
    let cols = parts[0].m.cols;
    let pack = |x: &[f32], nt, dst: &mut [f32]| kernels::f16_pack_tokens(cols, x, nt, dst);
    let (tile, len) = (kernels::F16_TILE_TOKENS, kernels::f16_packed_tokens_len);
    with_packed_tokens(pool, x, n, cols, tile, len, pack, |xp| {
        gemm_f16_tokens(parts, xp, n, pool)
    });
}

/// [`gemm_f16_packed`] on its packed tokens.
#[cfg(target_arch = "x86_64")]
fn gemm_f16_tokens(parts: &[F16Part<'_>], xp: &[f32], n: usize, pool: &ThreadPool) {
    let cols = parts[0].m.cols;
    let chunks: Vec<(usize, usize)> = parts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| (0..p.m.rows).step_by(F16_CHUNK_ROWS).map(move |r| (i, r)))
        .collect();
    pool.for_chunks(chunks.len(), 1, &|items| {
        with_panel_scratch(kernels::F16_PACK_PER_K * cols, |pack| {
            for &(i, r0) in &chunks[items] {
                let F16Part { m, out, bias } = &parts[i];
                let band = r0..(r0 + F16_CHUNK_ROWS).min(m.rows);
                let w: &[u16] = bytemuck::cast_slice(m.data);
                // SAFETY: `out` has n * m.rows elements; this thread alone writes columns band
                // of each token's row; gemm_f16_packed checks the CPU itself.
                unsafe {
                    kernels::gemm_f16_packed(
                        cols,
                        &w[band.start * cols..band.end * cols],
                        band.len(),
                        xp,
                        n,
                        out.get().add(band.start),
                        m.rows,
                        pack,
                        bias.map(|b| &b[band]),
                    );
                }
            }
        });
    });
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

/// A decode row kernel, by the activations it takes. [`row_dot`] is the one list of them: it
/// both dispatches them and decides which types take the GEMM at one token instead.
#[derive(Clone, Copy)]
enum RowDot {
    /// Against Q8_0 activations (blocks of 32).
    Q8_0(fn(kernels::Isa, &[u8], &[ffi::le_block_q8_0]) -> f32),
    /// Against Q8_K activations (blocks of 256).
    Q8K(fn(kernels::Isa, &[u8], &[ffi::le_block_q8_K]) -> f32),
}

fn row_dot(ty: GgmlType) -> Option<RowDot> {
    use bytemuck::cast_slice as c;
    use kernels as k;
    Some(match ty {
        GgmlType::Q4_0 => RowDot::Q8_0(|i, w, a| k::dot_q4_0_q8_0(i, c(w), a)),
        GgmlType::Q5_0 => RowDot::Q8_0(|i, w, a| k::dot_q5_0_q8_0(i, c(w), a)),
        GgmlType::Q8_0 => RowDot::Q8_0(|i, w, a| k::dot_q8_0_q8_0(i, c(w), a)),
        GgmlType::Q2_K => RowDot::Q8K(|i, w, a| k::dot_q2_K_q8_K(i, c(w), a)),
        GgmlType::Q3_K => RowDot::Q8K(|i, w, a| k::dot_q3_K_q8_K(i, c(w), a)),
        GgmlType::Q4_K => RowDot::Q8K(|i, w, a| k::dot_q4_K_q8_K(i, c(w), a)),
        GgmlType::Q5_K => RowDot::Q8K(|i, w, a| k::dot_q5_K_q8_K(i, c(w), a)),
        GgmlType::Q6_K => RowDot::Q8K(|i, w, a| k::dot_q6_K_q8_K(i, c(w), a)),
        _ => return None,
    })
}

thread_local! {
    /// Each thread's GEMM panel scratch, kept between products: a fresh zeroed vector per
    /// 64-row chunk (up to 551 KiB for SigLIP's fc2) cost memset and page faults in every
    /// product. The packers overwrite what they use, so it is never cleared. f32 storage serves
    /// every panel element type (4-byte aligned, sizes a multiple of 4).
    static PANEL_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's packed tokens of the F16 and bf16 GEMMs.
    static TOKEN_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's panel scratch of `len` elements of `T`.
fn with_panel_scratch<T: bytemuck::Pod, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    with_scratch(&PANEL_SCRATCH, len, f)
}

/// Runs `f` on `len` elements of `T` of this thread's buffer `key`, grown as needed, never
/// cleared. Not re-entrant: `f` must not ask for the same buffer on this thread (it would
/// panic, as the RefCell is borrowed).
fn with_scratch<T: bytemuck::Pod, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    const { assert!(std::mem::size_of::<T>().is_multiple_of(4) && std::mem::align_of::<T>() <= 4) };
    let floats = len * std::mem::size_of::<T>() / 4;
    key.with(|cell| {
        let mut v = cell.borrow_mut();
        if v.len() < floats {
            v.resize(floats, 0.0);
        }
        f(bytemuck::cast_slice_mut(&mut v[..floats]))
    })
}

/// The `n` tokens of `cols` values in `x` packed once for a GEMM's tiles of `tile` tokens
/// (`len(cols, nt)` elements for nt tokens, whole tiles), the tiles split over the threads, then
/// `f` on them. The buffer is the calling thread's, kept between products: a fresh zeroed one
/// (2.4-9.4 MiB for a CLIP-L tile) cost a memset and page faults in every product.
#[allow(clippy::too_many_arguments)]
fn with_packed_tokens<T: bytemuck::Pod + Send + Sync, R>(
    pool: &ThreadPool,
    x: &[f32],
    n: usize,
    cols: usize,
    tile: usize,
    len: fn(usize, usize) -> usize,
    pack: impl Fn(&[f32], usize, &mut [T]) + Sync,
    f: impl FnOnce(&[T]) -> R,
) -> R {
    let tile_len = len(cols, 1);
    with_scratch(&TOKEN_SCRATCH, len(cols, n), |xp: &mut [T]| {
        let xp_ptr = Disjoint::new(xp);
        pool.for_ranges(n.div_ceil(tile), 1, &|tiles| {
            let t0 = tiles.start * tile;
            let nt = (tiles.end * tile).min(n) - t0;
            // SAFETY: tiles are disjoint ranges of `xp`, which holds every tile of the n tokens.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    xp_ptr.get().add(tiles.start * tile_len),
                    tiles.len() * tile_len,
                )
            };
            // The packers write every element of their tiles, padding included.
            pack(&x[t0 * cols..(t0 + nt) * cols], nt, dst);
        });
        f(xp)
    })
}

/// Adds `bias[band]` to columns `band` of each of the `n` rows (`rows` wide) behind `out`.
///
/// # Safety
/// `out` holds n * rows values and no other thread touches those columns meanwhile.
unsafe fn add_bias_band(
    out: Disjoint<f32>,
    rows: usize,
    n: usize,
    band: std::ops::Range<usize>,
    bias: Option<&[f32]>,
) {
    let Some(bias) = bias else { return };
    let b = &bias[band.clone()];
    for t in 0..n {
        let row = std::slice::from_raw_parts_mut(out.get().add(t * rows + band.start), b.len());
        for (o, v) in row.iter_mut().zip(b) {
            *o += v;
        }
    }
}

/// Adds `bias` to every row of `out`, the rows shared out to the pool's threads.
fn add_bias_rows(out: &mut [f32], bias: &[f32], pool: &ThreadPool) {
    let n = out.len() / bias.len();
    let base = Disjoint::new(out);
    let w = bias.len();
    pool.for_ranges(n, 1, &|tokens| {
        // SAFETY: `out` holds n rows of w values and each range of whole rows goes to one thread.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(tokens.start * w), tokens.len() * w)
        };
        for row in rows.chunks_exact_mut(w) {
            for (o, v) in row.iter_mut().zip(bias) {
                *o += v;
            }
        }
    });
}

/// From this many tokens on, products run as a GEMM over repacked panels; below it the row
/// kernels win (packing costs about as much as a few passes over the weights).
const GEMM_MIN_TOKENS: usize = 4;

/// Interleaved rows take the decode kernels below this many tokens, the GEMM from it on: a
/// token's pass over a group of rows is cheap once the group sits in L2, while the GEMM packs
/// panels first. Measured on x86 (7B Q4_0 / Q4_K_M and 0.5B Q4_0, PERF.md step 67): the decode
/// kernels led 1.8-1.9x at 4 tokens, 1.05-1.1x at 12-16, and trailed from 24. Elsewhere the
/// crossover is unmeasured (the NEON decode kernels read one stream a thread), so the GEMM's
/// own threshold stays.
const X8_GEMV_MAX_TOKENS: usize = if cfg!(target_arch = "x86_64") {
    16
} else {
    GEMM_MIN_TOKENS
};

/// Weight rows a thread packs at a time: eight panels, a few hundred KiB for the widest
/// matrices, so they stay in L2 while every token tile passes over them.
const GEMM_CHUNK_ROWS: usize = 64;

impl Matrix<'_> {
    /// The prefill path: activations quantized once, each thread packing a chunk of its rows
    /// into panels and running every token against them (see llava_kernels.h).
    fn gemm(
        &self,
        codes: crate::ffi::le_codes,
        x: &[f32],
        n: usize,
        out: Disjoint<f32>,
        bias: Option<&[f32]>,
        pool: &ThreadPool,
    ) {
        let (rows, cols) = (self.rows, self.cols);
        let nb = cols / 32;
        let mut act = vec![crate::ffi::le_block_q8_0x::default(); n * nb];
        let act_ptr = Disjoint::new(&mut act);
        pool.for_ranges(n, 1, &|tokens| {
            // SAFETY: `act` holds n * nb blocks and each thread fills only its tokens' blocks.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    act_ptr.get().add(tokens.start * nb),
                    tokens.len() * nb,
                )
            };
            kernels::quantize_row_q8_0x(&x[tokens.start * cols..tokens.end * cols], dst);
        });
        pool.for_chunks(rows, GEMM_CHUNK_ROWS, &|band| {
            with_panel_scratch(GEMM_CHUNK_ROWS / 8 * nb, |panels| {
                self.gemm_band(codes, band.clone(), panels, &act, n, out);
                // SAFETY: gemm_band wrote columns band of every token's row, this thread's own.
                unsafe { add_bias_band(out, rows, n, band, bias) };
            });
        });
    }

    /// One thread's rows of [`Matrix::gemm`]: packed 64 at a time into `panels`, then run
    /// against every token.
    fn gemm_band(
        &self,
        codes: crate::ffi::le_codes,
        band: std::ops::Range<usize>,
        panels: &mut [crate::ffi::le_block_x8],
        act: &[crate::ffi::le_block_q8_0x],
        n: usize,
        out: Disjoint<f32>,
    ) {
        let (rows, cols, rb) = (self.rows, self.cols, self.row_bytes());
        let nb = cols / 32;
        let gemm = kernels::GemmIsa::for_isa(kernels::isa());
        let mut r0 = band.start;
        while r0 < band.end {
            let r1 = (r0 + GEMM_CHUNK_ROWS).min(band.end);
            for (p, first) in (r0..r1).step_by(8).enumerate() {
                let last = (first + 8).min(r1);
                let panel = &mut panels[p * nb..(p + 1) * nb];
                if self.layout == Layout::X8 && first + 8 <= self.rows / 8 * 8 {
                    let group = &self.data[first * rb..(first + 8) * rb];
                    kernels::pack_x8_interleaved(self.ty, group, cols, panel);
                    continue;
                }
                let packed = kernels::pack_x8(
                    self.ty,
                    &self.data[first * rb..last * rb],
                    last - first,
                    cols,
                    panel,
                );
                debug_assert!(packed, "panel_codes said {} packs", self.ty);
            }
            // SAFETY: `out` has n * rows elements; this thread alone writes the columns
            // r0..r1 of each token's row (its band), at t * rows + r.
            unsafe {
                kernels::gemm_x8(
                    gemm,
                    codes,
                    cols,
                    panels,
                    r1 - r0,
                    act,
                    n,
                    out.get().add(r0),
                    rows,
                )
            };
            r0 = r1;
        }
    }
}

impl Matrix<'_> {
    /// Decode over interleaved rows: each thread takes a contiguous band of whole groups; rows
    /// past the last group of eight are plain and go through the row dot.
    fn gemv_x8(&self, x: &[f32], n: usize, out: Disjoint<f32>, pool: &ThreadPool) {
        let (rows, cols, rb) = (self.rows, self.cols, self.row_bytes());
        let (nb, grouped) = (cols / 32, rows / 8 * 8);
        let mut act = vec![ffi::le_block_q8_0x::default(); n * nb];
        for (xi, qi) in x.chunks_exact(cols).zip(act.chunks_exact_mut(nb)) {
            kernels::quantize_row_q8_0x(xi, qi);
        }
        let gemm = kernels::GemmIsa::for_isa(kernels::isa());
        let body = |band: std::ops::Range<usize>| {
            let g1 = band.end.min(grouped);
            if band.start < g1 {
                let w = &self.data[band.start * rb..g1 * rb];
                // SAFETY: `out` has n * rows elements; this thread alone writes rows band of
                // each token (bands start at multiples of 16, so groups are whole).
                unsafe {
                    kernels::gemv_x8(
                        gemm,
                        self.ty,
                        cols,
                        w,
                        &act,
                        n,
                        out.get().add(band.start),
                        rows,
                    )
                };
            }
            for r in g1.max(band.start)..band.end {
                let w = &self.data[r * rb..(r + 1) * rb];
                for (t, a) in act.chunks_exact(nb).enumerate() {
                    // SAFETY: as above; row r is in this thread's band.
                    unsafe {
                        *out.get().add(t * rows + r) = kernels::x8_tail_dot(gemm, self.ty, w, a)
                    };
                }
            }
        };
        pool.for_streams(rows, 16, 64, &body);
    }
}

/// Rearranges a Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K matrix's rows in place into
/// groups of eight interleaved rows for the decode kernels (the rows after the last multiple of
/// eight stay plain) and marks its layout. Returns false, changing nothing, for any other tensor, or one of fewer than eight rows.
pub fn interleave(info: &mut TensorInfo, data: &mut [u8]) -> bool {
    if info.layout != Layout::Rows {
        return false;
    }
    let done = interleave_rows(
        info.ty,
        info.row_len() as usize,
        info.n_rows() as usize,
        data,
    );
    if done {
        info.layout = Layout::X8;
    }
    done
}

/// [`interleave`] on bare bytes: `rows` rows of type `ty` and `cols` values (a matrix built in
/// memory, then given `layout: Layout::X8`). False, changing nothing, when the type has no
/// interleaved form or the bytes do not hold such rows, at least eight of them, 2-aligned.
pub fn interleave_rows(ty: GgmlType, cols: usize, rows: usize, data: &mut [u8]) -> bool {
    let Some(bb) = kernels::x8_block_bytes(ty) else {
        return false;
    };
    let rb = cols / 32 * bb / 8;
    if !cols.is_multiple_of(ty.block_size().max(32))
        || rows < 8
        || data.len() != rows * rb
        || bytemuck::try_cast_slice::<u8, u16>(data).is_err()
    {
        return false;
    }
    let mut group = vec![0u8; 8 * rb];
    for rows8 in data.chunks_exact_mut(8 * rb) {
        kernels::interleave_x8(ty, rows8, cols, &mut group);
        rows8.copy_from_slice(&group);
    }
    true
}

/// A product whose weights meet activations quantized once per call (llama.cpp's scheme): the
/// integer dot kernels then see both operands as blocks.
struct QuantizedProduct<'m, 'a> {
    m: &'m Matrix<'a>,
    x: &'m [f32],
    n: usize,
    pool: &'m ThreadPool,
    put: &'m (dyn Fn(usize, usize, f32) + Sync),
}

impl QuantizedProduct<'_, '_> {
    /// Quantizes the activations into `A` blocks of `block` values, then dots every weight row
    /// with every token (decode and the few-token products below the GEMM's threshold).
    fn run<A: bytemuck::Pod + Default + Send + Sync>(
        &self,
        block: usize,
        quantize: fn(&[f32], &mut [A]),
        dot: &(dyn Fn(&[u8], &[A]) -> f32 + Sync),
    ) {
        let (cols, rb, n) = (self.m.cols, self.m.row_bytes(), self.n);
        let nb = cols / block;
        let mut xq = vec![A::default(); n * nb];
        for (xi, qi) in self.x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb)) {
            quantize(xi, qi);
        }
        // Runs claimed from the two ends of the rows (see for_streams): handing out small chunks
        // on demand measured 5% slower decode (interleaved streams defeat the prefetchers), a
        // fixed band a thread left ~12% of decode time spinning at the end of each product.
        let body = |band: std::ops::Range<usize>| {
            let r0 = band.start;
            let bytes = &self.m.data[band.start * rb..band.end * rb];
            for (k, w) in bytes.chunks_exact(rb).enumerate() {
                for (i, a) in xq.chunks_exact(nb).enumerate() {
                    (self.put)(i, r0 + k, dot(w, a));
                }
            }
        };
        self.pool.for_streams(self.m.rows, 16, 64, &body);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgufFile, GgufWriter, TensorSpec};

    /// `m.gguf` of [`write_random`] in a fresh temporary folder named for `tag`: the folder
    /// (for the caller to remove) and the file, open.
    fn random_file(tag: &str, specs: &[TensorSpec], seed: u32) -> (std::path::PathBuf, GgufFile) {
        let dir = std::env::temp_dir().join(format!("le-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        write_random(&path, specs, seed);
        let f = GgufFile::open(&path).unwrap();
        (dir, f)
    }

    /// A GGUF file of `specs`, each tensor uniform in [-0.5, 0.5) from an LCG seeded with
    /// `seed`, quantized to its type.
    fn write_random(path: &std::path::Path, specs: &[TensorSpec], mut seed: u32) {
        let mut w = GgufWriter::create(path, &[], specs).unwrap();
        for s in specs {
            let n: usize = s.dims.iter().product::<u64>() as usize;
            let vals: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect();
            let mut bytes = Vec::new();
            crate::quant::quantize(s.ty, &vals, &mut bytes).unwrap();
            w.write_tensor(&s.name, &bytes).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn shapes_are_checked_without_panicking() {
        let dir = std::env::temp_dir().join(format!("le-matrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        let specs = [
            TensorSpec::new("v", &[4], GgmlType::F32),
            TensorSpec::new("m", &[4, 2], GgmlType::F32),
            TensorSpec::new("t", &[4, 2, 3], GgmlType::F32),
            TensorSpec::new("q", &[32, 2], GgmlType::Q8_0),
            TensorSpec::new("iq", &[256, 2], GgmlType::IQ4_XS),
        ];
        let mut w = GgufWriter::create(&path, &[], &specs).unwrap();
        for s in &specs {
            let n = s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize;
            w.write_tensor(&s.name, &vec![0; n]).unwrap();
        }
        w.finish().unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert!(Matrix::new(f.tensor("v").unwrap(), 4, 1).is_ok());
        assert!(Matrix::new(f.tensor("m").unwrap(), 4, 2).is_ok());
        for (name, cols, rows) in [
            ("v", 4, 2),
            ("v", 2, 1),
            ("m", 2, 4),
            ("t", 4, 2),
            ("t", 4, 6),
        ] {
            let e = Matrix::new(f.tensor(name).unwrap(), cols, rows).unwrap_err();
            assert!(matches!(e, OpError::Shape { .. }), "{name}: {e}");
        }
        let q = Matrix::new(f.tensor("q").unwrap(), 32, 2).unwrap();
        let mut row = [1f32; 32];
        q.row_f32(1, &mut row);
        assert!(row.iter().all(|&v| v == 0.0));
        let e = Matrix::new(f.tensor("iq").unwrap(), 256, 2).unwrap_err();
        assert!(e.to_string().contains("IQ4_XS"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn stacked_products_equal_separate_ones() {
        // q, k, v back to back; a matrix of another type; one after a gap of a vector.
        let (cols, rows) = (64usize, [24usize, 8, 8]);
        let mut specs: Vec<TensorSpec> = ["q", "k", "v"]
            .iter()
            .zip(rows)
            .map(|(n, r)| TensorSpec::new(*n, &[cols as u64, r as u64], GgmlType::Q8_0))
            .collect();
        specs.push(TensorSpec::new("f", &[cols as u64, 8], GgmlType::F32));
        specs.push(TensorSpec::new("gap", &[32], GgmlType::F32));
        specs.push(TensorSpec::new("late", &[cols as u64, 8], GgmlType::Q8_0));
        let (dir, f) = random_file("stacked", &specs, 1);
        let m = |name: &str, r: usize| Matrix::new(f.tensor(name).unwrap(), cols, r).unwrap();
        let (q, k, v) = (m("q", 24), m("k", 8), m("v", 8));
        let file = f.bytes();
        let all = Matrix::stacked(file, &[q, k, v]).expect("adjacent, one type");
        assert_eq!(all.rows, 40);
        assert!(
            Matrix::stacked(file, &[q, m("late", 8)]).is_none(),
            "not adjacent"
        );
        assert!(
            Matrix::stacked(file, &[v, m("f", 8)]).is_none(),
            "two types"
        );
        let pool = ThreadPool::new(2);
        for n in [1usize, 5] {
            let x: Vec<f32> = (0..n * cols).map(|i| (i % 7) as f32 - 3.0).collect();
            let mut want = [vec![0f32; n * 24], vec![0f32; n * 8], vec![0f32; n * 8]];
            for (mat, out) in [q, k, v].iter().zip(want.iter_mut()) {
                mat.matmul(&x, n, out, &pool);
            }
            let mut got = [vec![0f32; n * 24], vec![0f32; n * 8], vec![0f32; n * 8]];
            let [g0, g1, g2] = &mut got;
            let mut scratch = Vec::new();
            matmul_stacked(
                Some(&all),
                &[&q, &k, &v],
                &x,
                n,
                &mut [g0, g1, g2],
                &pool,
                &mut scratch,
            );
            assert_eq!(got, want, "n = {n}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An F32 matrix of `rows` rows over all of `data`.
    fn f32_rows(data: &[u8], rows: usize) -> Matrix<'_> {
        Matrix {
            name: "m",
            ty: GgmlType::F32,
            rows,
            cols: data.len() / 4 / rows,
            data,
            layout: Layout::Rows,
            bf16_products: false,
        }
    }

    #[test]
    fn stacked_joins_only_matrices_of_one_buffer() {
        let bytes = 4096usize;
        let one = vec![0u8; 2 * bytes];
        let (a, b) = one.split_at(bytes);
        let joined = Matrix::stacked(&one, &[f32_rows(a, 4), f32_rows(b, 4)]).expect("one buffer");
        assert_eq!(joined.rows, 8);
        assert_eq!(joined.data.as_ptr_range(), one.as_ptr_range());
        assert!(Matrix::stacked(a, &[f32_rows(a, 4), f32_rows(b, 4)]).is_none());
        // Two memory maps placed back to back: adjacent addresses, two allocations. Joining
        // them by address alone made one slice over both (undefined behaviour to read).
        #[cfg(unix)]
        // SAFETY: the test's own anonymous maps, read only while mapped, unmapped at the end.
        unsafe {
            let len = bytes.next_multiple_of(libc::sysconf(libc::_SC_PAGESIZE).max(1) as usize);
            let (prot, flags) = (
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            );
            let first = libc::mmap(std::ptr::null_mut(), 2 * len, prot, flags, -1, 0);
            assert_ne!(first, libc::MAP_FAILED);
            let at = first.cast::<u8>().add(len).cast();
            let second = libc::mmap(at, len, prot, flags | libc::MAP_FIXED, -1, 0);
            assert_eq!(second, at, "a second map right after the first");
            let map1 = std::slice::from_raw_parts(first.cast::<u8>(), len);
            let map2 = std::slice::from_raw_parts(second.cast::<u8>(), len);
            let (tail, head) = (&map1[len - bytes..], &map2[..bytes]);
            assert_eq!(tail.as_ptr_range().end, head.as_ptr(), "adjacent");
            let (ma, mb) = (f32_rows(tail, 4), f32_rows(head, 4));
            assert!(Matrix::stacked(map1, &[ma, mb]).is_none());
            assert!(Matrix::stacked(map2, &[ma, mb]).is_none());
            assert_eq!(Matrix::stacked(map1, &[ma]).map(|m| m.rows), Some(4));
            libc::munmap(first, len);
            libc::munmap(second, len);
        }
    }

    #[test]
    fn biased_products_add_the_bias_on_every_path() {
        // 200 rows: several 64-row GEMM chunks and a short last one.
        let (cols, rows) = (256usize, 200usize);
        let types = [
            GgmlType::F16,
            GgmlType::F32,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
        ];
        let specs: Vec<TensorSpec> = types
            .iter()
            .map(|ty| TensorSpec::new(ty.to_string(), &[cols as u64, rows as u64], *ty))
            .collect();
        let (dir, f) = random_file("bias", &specs, 3);
        let bias: Vec<f32> = (0..rows).map(|r| (r % 13) as f32 * 0.25 - 1.5).collect();
        let pool = ThreadPool::new(2);
        for ty in types {
            let m = Matrix::new(f.tensor(&ty.to_string()).unwrap(), cols, rows).unwrap();
            // One token (row kernels), three (below the GEMM), 37 (GEMM tiles and a tail).
            for n in [1usize, 3, 37] {
                let x: Vec<f32> = (0..n * cols).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
                let (mut plain, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
                m.matmul(&x, n, &mut plain, &pool);
                m.matmul_bias(&x, n, &mut got, &bias, &pool);
                for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
                    assert_eq!(*g, p + bias[i % rows], "{ty} n = {n}: out[{i}]");
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn products_sharing_an_input_equal_separate_ones() {
        // Rows that are and are not multiples of a 32-row chunk.
        let (cols, rows) = (160usize, [200usize, 64, 40]);
        let specs: Vec<TensorSpec> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                TensorSpec::new(format!("m{i}"), &[cols as u64, *r as u64], GgmlType::F16)
            })
            .collect();
        let (dir, f) = random_file("sharing", &specs, 5);
        let ms: Vec<Matrix> = (0..3)
            .map(|i| Matrix::new(f.tensor(&format!("m{i}")).unwrap(), cols, rows[i]).unwrap())
            .collect();
        let biases: Vec<Vec<f32>> = rows
            .iter()
            .map(|&r| (0..r).map(|i| (i % 7) as f32 - 3.0).collect())
            .collect();
        let pool = ThreadPool::new(2);
        for n in [2usize, 37] {
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 3) % 13) as f32 * 0.5 - 3.0)
                .collect();
            let mut want: Vec<Vec<f32>> = rows.iter().map(|r| vec![0f32; n * r]).collect();
            for ((m, b), out) in ms.iter().zip(&biases).zip(want.iter_mut()) {
                m.matmul_bias(&x, n, out, b, &pool);
            }
            let mut got: Vec<Vec<f32>> = rows.iter().map(|r| vec![0f32; n * r]).collect();
            let [g0, g1, g2] = &mut got[..] else {
                unreachable!()
            };
            matmul_bias_sharing_input(
                &[&ms[0], &ms[1], &ms[2]],
                &[&biases[0], &biases[1], &biases[2]],
                &x,
                n,
                &mut [g0, g1, g2],
                &pool,
            );
            assert_eq!(got, want, "n = {n}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn interleaved_rows_equal_the_plain_rows() {
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
        ] {
            interleaved_equals_plain(ty);
        }
    }

    fn interleaved_equals_plain(ty: GgmlType) {
        let dir = std::env::temp_dir().join(format!("le-interleave-{ty}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        // 21 rows: two interleaved groups and five plain rows after them.
        let (cols, rows) = (96usize.next_multiple_of(ty.block_size()), 21usize);
        let specs = [
            TensorSpec::new("w", &[cols as u64, rows as u64], ty),
            TensorSpec::new("small", &[cols as u64, 7], ty),
            TensorSpec::new("other", &[cols as u64, 8], GgmlType::F16),
        ];
        write_random(&path, &specs, 7);
        let plain = GgufFile::open(&path).unwrap();
        let mut inter = GgufFile::open(&path).unwrap();
        let done: Vec<bool> = inter
            .tensors_mut(|_| true)
            .unwrap()
            .into_iter()
            .map(|(info, data)| interleave(info, data))
            .collect();
        assert_eq!(
            done,
            [true, false, false],
            "{ty}: a matrix of under eight rows, or of another type, stays plain"
        );
        let bytes = std::fs::read(&path).unwrap();
        let reread = GgufFile::from_bytes(bytes, "copy").unwrap();
        assert_eq!(
            reread.tensor("w").unwrap().data,
            plain.tensor("w").unwrap().data,
            "the file itself is untouched"
        );
        let p = Matrix::new(plain.tensor("w").unwrap(), cols, rows).unwrap();
        let q = Matrix::new(inter.tensor("w").unwrap(), cols, rows).unwrap();
        assert_eq!(q.layout, Layout::X8);
        assert_ne!(p.data, q.data);
        let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
        for r in 0..rows {
            p.row_f32(r, &mut a);
            q.row_f32(r, &mut b);
            assert_eq!(a, b, "{ty} row {r}");
        }
        let pool = ThreadPool::new(2);
        for n in [1usize, 2, 5, X8_GEMV_MAX_TOKENS - 1, X8_GEMV_MAX_TOKENS] {
            let x: Vec<f32> = (0..n * cols).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
            p.matmul(&x, n, &mut want, &pool);
            q.matmul(&x, n, &mut got, &pool);
            if n >= X8_GEMV_MAX_TOKENS {
                assert_eq!(got, want, "{ty} n = {n}: the GEMM sees the same panels");
            } else {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // The legacy kinds meet the same 32-value activation blocks either way, as
                    // do K rows in the GEMM; a plain K row's decode dot meets 256-value ones
                    // (Q8_K), so each side may round every activation by half of its block's
                    // step (at most max|x| / 127 apart).
                    let bound = if ty.block_size() == 256 && n < GEMM_MIN_TOKENS {
                        p.row_f32(i % rows, &mut a);
                        let wsum: f32 = a.iter().map(|v| v.abs()).sum();
                        wsum * 5.0 / 127.0 + 1e-4 * w.abs().max(1.0)
                    } else {
                        1e-5 * w.abs().max(1.0)
                    };
                    assert!(
                        (g - w).abs() <= bound,
                        "{ty} n = {n}: out[{i}] {g} vs {w} (bound {bound})"
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
