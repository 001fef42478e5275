//! Execution of each [`ProductRoute`]: the rows split over the pool's threads, the kernels run
//! with the builds the detected [`Cpu`] grants (a route is only a name; it grants nothing).

use crate::dtype::GgmlType;
use crate::ffi;
use crate::gguf::Layout;
use crate::kernels::{self, Cpu};
use crate::threadpool::{Disjoint, ThreadPool};

use super::plan::{row_acts, ProductRoute, RowActs};
use super::scratch::{add_bias_band, with_packed_tokens, with_panel_scratch};
use super::{dot, Matrix};

/// Weight rows a thread packs at a time: eight panels, a few hundred KiB for the widest
/// matrices, so they stay in L2 while every token tile passes over them.
const GEMM_CHUNK_ROWS: usize = 64;

/// One product's operands: `out[t * m.rows + r] = row r . token t` for the `n` tokens of
/// `m.cols` values in `x`, plus `bias` where the route adds it.
#[derive(Clone, Copy)]
pub(super) struct Product<'p, 'a> {
    pub m: &'p Matrix<'a>,
    pub x: &'p [f32],
    pub n: usize,
    pub out: Disjoint<f32>,
    pub bias: Option<&'p [f32]>,
    pub pool: &'p ThreadPool,
}

impl Product<'_, '_> {
    /// Runs `route` with the builds of `cpu`. The caller has checked that `x` holds `n * cols`
    /// values and `out` `n * rows`.
    pub(super) fn run(&self, route: ProductRoute, cpu: Cpu) {
        match route {
            ProductRoute::DecodeInterleaved8 => self.decode_interleaved8(cpu),
            ProductRoute::GemmPanels { codes } => self.gemm_panels(cpu, codes),
            ProductRoute::RowsQ4_0Summed => {
                let gemm = cpu.gemm();
                self.rows(32, kernels::quantize_row_q8_0_summed, &|w, a| {
                    kernels::dot_q4_0_q8_0_summed(gemm, bytemuck::cast_slice(w), a)
                })
            }
            ProductRoute::RowsQ8_0 | ProductRoute::RowsQ8K => self.quantized_rows(cpu),
            ProductRoute::Bf16Gemm => {
                let bf16 = cpu
                    .bf16()
                    .expect("the bfloat16 route is planned where the CPU has it");
                self.gemm_bf16(bf16)
            }
            #[cfg(target_arch = "x86_64")]
            ProductRoute::F16GemmPacked => gemm_f16_packed(
                &[F16Part {
                    m: self.m,
                    out: self.out,
                    bias: self.bias,
                }],
                self.x,
                self.n,
                self.pool,
            ),
            #[cfg(not(target_arch = "x86_64"))]
            ProductRoute::F16GemmPacked => unreachable!("an AVX-512 route off x86"),
            ProductRoute::F16Gemm => self.gemm_f16(cpu),
            ProductRoute::FloatRows => self.float_rows(cpu),
            ProductRoute::Dequantized => self.dequantized_rows(),
        }
    }

    /// Writes `v` at (token i, row r), bounds checked: a compare beside a row's dot product, so
    /// no row kernel's caller can write outside `out`.
    fn put(&self, i: usize, r: usize, v: f32) {
        let rows = self.m.rows;
        assert!(
            i < self.n && r < rows,
            "{}: output ({i}, {r}) out of range",
            self.m.name
        );
        // SAFETY: `out` has n * rows elements (the caller's check, index checked above) and each
        // (i, r) is written by exactly one thread, the one the pool's split gives row r.
        unsafe { *self.out.get().add(i * rows + r) = v }
    }

    /// Activations quantized once into `A` blocks of `block` values (llama.cpp's scheme), then
    /// every weight row dotted with every token: decode and the few-token products below the
    /// GEMM's threshold.
    fn rows<A: bytemuck::Pod + Default + Send + Sync>(
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
        // Runs claimed from the two ends of the rows (see for_streams): small chunks on demand
        // interleave the threads' streams and defeat the prefetchers, a fixed band a thread
        // leaves threads spinning at the end of each product (PERF.md, "decode row split").
        let body = |band: std::ops::Range<usize>| {
            let r0 = band.start;
            let bytes = &self.m.data[band.start * rb..band.end * rb];
            for (k, w) in bytes.chunks_exact(rb).enumerate() {
                for (i, a) in xq.chunks_exact(nb).enumerate() {
                    self.put(i, r0 + k, dot(w, a));
                }
            }
        };
        self.pool.for_streams(self.m.rows, 16, 64, &body);
    }

    /// [`Product::rows`] with the type's own dot kernel.
    fn quantized_rows(&self, cpu: Cpu) {
        let isa = cpu.isa();
        let ty = self.m.ty;
        match row_dot(ty) {
            RowDot::Q8_0(dot) => self.rows(32, kernels::quantize_row_q8_0, &|w, a| dot(isa, w, a)),
            RowDot::Q8K(dot) => self.rows(256, kernels::quantize_row_q8_K, &|w, a| dot(isa, w, a)),
        }
    }

    /// Decode over interleaved8 rows: each thread takes a contiguous band of whole groups; rows
    /// past the last group of eight are plain and go through the row dot.
    fn decode_interleaved8(&self, cpu: Cpu) {
        let m = self.m;
        let (rows, cols, rb, n) = (m.rows, m.cols, m.row_bytes(), self.n);
        let (nb, grouped) = (cols / 32, rows / 8 * 8);
        let mut act = vec![ffi::le_block_q8_0x::default(); n * nb];
        for (xi, qi) in self.x.chunks_exact(cols).zip(act.chunks_exact_mut(nb)) {
            kernels::quantize_row_q8_0_summed(xi, qi);
        }
        let (gemm, out) = (cpu.gemm(), self.out);
        let body = |band: std::ops::Range<usize>| {
            let g1 = band.end.min(grouped);
            if band.start < g1 {
                let w = &m.data[band.start * rb..g1 * rb];
                let at = out.get().wrapping_add(band.start);
                // SAFETY: `out` has n * rows elements; this thread alone writes rows band of
                // each token (bands start at multiples of 16, so groups are whole).
                unsafe { kernels::gemv_interleaved8(gemm, m.ty, cols, w, &act, n, at, rows) };
            }
            for r in g1.max(band.start)..band.end {
                let w = &m.data[r * rb..(r + 1) * rb];
                for (t, a) in act.chunks_exact(nb).enumerate() {
                    self.put(t, r, kernels::interleaved8_tail_dot(gemm, m.ty, w, a));
                }
            }
        };
        self.pool.for_streams(rows, 16, 64, &body);
    }

    /// The prefill path: activations quantized once, each thread packing a chunk of its rows
    /// into panels and running every token against them (see llava_kernels.h).
    fn gemm_panels(&self, cpu: Cpu, codes: ffi::le_codes) {
        let (m, n, x) = (self.m, self.n, self.x);
        let (rows, cols) = (m.rows, m.cols);
        let nb = cols / 32;
        let mut act = vec![ffi::le_block_q8_0x::default(); n * nb];
        let act_ptr = Disjoint::new(&mut act);
        self.pool.for_ranges(n, 1, &|tokens| {
            // SAFETY: `act` holds n * nb blocks and each thread fills only its tokens' blocks.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    act_ptr.get().add(tokens.start * nb),
                    tokens.len() * nb,
                )
            };
            kernels::quantize_row_q8_0_summed(&x[tokens.start * cols..tokens.end * cols], dst);
        });
        let gemm = cpu.gemm();
        self.pool.for_chunks(rows, GEMM_CHUNK_ROWS, &|band| {
            with_panel_scratch(GEMM_CHUNK_ROWS / 8 * nb, |panels| {
                self.gemm_band(gemm, codes, band.clone(), panels, &act);
                // SAFETY: gemm_band wrote columns band of every token's row, this thread's own.
                unsafe { add_bias_band(self.out, rows, n, band, self.bias) };
            });
        });
    }

    /// One thread's rows of [`Product::gemm_panels`]: packed 64 at a time into `panels`, then
    /// run against every token.
    fn gemm_band(
        &self,
        gemm: kernels::GemmIsa,
        codes: ffi::le_codes,
        band: std::ops::Range<usize>,
        panels: &mut [kernels::PanelBlock],
        act: &[ffi::le_block_q8_0x],
    ) {
        let m = self.m;
        let (rows, cols, rb) = (m.rows, m.cols, m.row_bytes());
        let nb = cols / 32;
        let mut r0 = band.start;
        while r0 < band.end {
            let r1 = (r0 + GEMM_CHUNK_ROWS).min(band.end);
            for (p, first) in (r0..r1).step_by(8).enumerate() {
                let last = (first + 8).min(r1);
                let panel = &mut panels[p * nb..(p + 1) * nb];
                if m.layout == Layout::Interleaved8 && first + 8 <= rows / 8 * 8 {
                    let group = &m.data[first * rb..(first + 8) * rb];
                    kernels::pack_panel_from_interleaved8(m.ty, group, cols, panel);
                    continue;
                }
                let rows_bytes = &m.data[first * rb..last * rb];
                let packed = kernels::pack_panel(m.ty, rows_bytes, last - first, cols, panel);
                debug_assert!(packed, "panel_codes said {} packs", m.ty);
            }
            // SAFETY: `out` has n * rows elements; this thread alone writes the columns
            // r0..r1 of each token's row (its band), at t * rows + r.
            unsafe {
                let at = self.out.get().add(r0);
                kernels::gemm_panels(gemm, codes, cols, panels, r1 - r0, act, self.n, at, rows)
            };
            r0 = r1;
        }
    }

    /// The tiled F16 GEMM, 64-row chunks handed out on demand.
    fn gemm_f16(&self, cpu: Cpu) {
        let (m, n) = (self.m, self.n);
        let (rows, cols) = (m.rows, m.cols);
        let w: &[u16] = bytemuck::cast_slice(m.data);
        let build = cpu.float();
        self.pool.for_chunks(rows, GEMM_CHUNK_ROWS, &|band| {
            with_panel_scratch(kernels::F16_PACK_PER_K * cols, |pack| {
                let w = &w[band.start * cols..band.end * cols];
                // SAFETY: `out` has n * rows elements; this thread alone writes columns band of
                // each token's row.
                unsafe {
                    let at = self.out.get().add(band.start);
                    kernels::gemm_f16(build, cols, w, band.len(), self.x, n, at, rows, pack);
                    add_bias_band(self.out, rows, n, band, self.bias);
                }
            });
        });
    }

    /// F16 weights in bfloat16 pairs: the tokens rounded and packed once (split over the
    /// threads by tiles), then 64-row chunks handed out on demand.
    fn gemm_bf16(&self, isa: kernels::Bf16Isa) {
        let cols = self.m.cols;
        let tile = kernels::BF16_TILE_TOKENS;
        let pack =
            |x: &[f32], nt, dst: &mut [u32]| kernels::bf16_pack_tokens(isa, cols, x, nt, dst);
        let len = kernels::bf16_packed_tokens_len;
        with_packed_tokens(self.pool, self.x, self.n, cols, tile, len, pack, |xp| {
            self.gemm_bf16_tokens(isa, xp)
        });
    }

    /// [`Product::gemm_bf16`] on its packed tokens.
    fn gemm_bf16_tokens(&self, isa: kernels::Bf16Isa, xp: &[u32]) {
        let (m, n) = (self.m, self.n);
        let (rows, cols) = (m.rows, m.cols);
        let w: &[u16] = bytemuck::cast_slice(m.data);
        self.pool.for_chunks(rows, GEMM_CHUNK_ROWS, &|band| {
            with_panel_scratch(kernels::BF16_PANEL_ROWS * cols.div_ceil(2), |pack| {
                let w = &w[band.start * cols..band.end * cols];
                // SAFETY: `out` has n * rows elements; this thread alone writes columns band of
                // each token's row.
                unsafe {
                    let at = self.out.get().add(band.start);
                    kernels::gemm_bf16(isa, cols, w, band.len(), xp, n, at, rows, pack);
                    add_bias_band(self.out, rows, n, band, self.bias);
                }
            });
        });
    }

    /// F16 or BF16 rows one at a time through the float dot.
    fn float_rows(&self, cpu: Cpu) {
        let (m, isa) = (self.m, cpu.isa());
        let (cols, rb) = (m.cols, m.row_bytes());
        let dot = if m.ty == GgmlType::F16 {
            kernels::dot_f16_f32
        } else {
            kernels::dot_bf16_f32
        };
        self.pool.for_ranges(m.rows, 16, &|band| {
            let r0 = band.start;
            let bytes = &m.data[band.start * rb..band.end * rb];
            for (k, w) in bytes.chunks_exact(rb).enumerate() {
                let w: &[u16] = bytemuck::cast_slice(w);
                for (i, xi) in self.x.chunks_exact(cols).enumerate() {
                    self.put(i, r0 + k, dot(isa, w, xi));
                }
            }
        });
    }

    /// Each row dequantized to f32 by the reference code, then dotted with every token.
    fn dequantized_rows(&self) {
        let (m, cols) = (self.m, self.m.cols);
        self.pool.for_ranges(m.rows, 16, &|band| {
            let mut w = vec![0f32; cols];
            for r in band {
                m.row_f32(r, &mut w);
                for (i, xi) in self.x.chunks_exact(cols).enumerate() {
                    self.put(i, r, dot(&w, xi));
                }
            }
        });
    }
}

/// A decode row kernel with the activations it takes ([`row_acts`] says which).
#[derive(Clone, Copy)]
enum RowDot {
    /// Against Q8_0 activations (blocks of 32).
    Q8_0(fn(kernels::Isa, &[u8], &[ffi::le_block_q8_0]) -> f32),
    /// Against Q8_K activations (blocks of 256).
    Q8K(fn(kernels::Isa, &[u8], &[ffi::le_block_q8_K]) -> f32),
}

/// The row dot of a type [`row_acts`] lists. Panics for another: the plan routes only those
/// here.
fn row_dot(ty: GgmlType) -> RowDot {
    use bytemuck::cast_slice as c;
    use kernels as k;
    let dot = match ty {
        GgmlType::Q4_0 => RowDot::Q8_0(|i, w, a| k::dot_q4_0_q8_0(i, c(w), a)),
        GgmlType::Q5_0 => RowDot::Q8_0(|i, w, a| k::dot_q5_0_q8_0(i, c(w), a)),
        GgmlType::Q8_0 => RowDot::Q8_0(|i, w, a| k::dot_q8_0_q8_0(i, c(w), a)),
        GgmlType::Q2_K => RowDot::Q8K(|i, w, a| k::dot_q2_K_q8_K(i, c(w), a)),
        GgmlType::Q3_K => RowDot::Q8K(|i, w, a| k::dot_q3_K_q8_K(i, c(w), a)),
        GgmlType::Q4_K => RowDot::Q8K(|i, w, a| k::dot_q4_K_q8_K(i, c(w), a)),
        GgmlType::Q5_K => RowDot::Q8K(|i, w, a| k::dot_q5_K_q8_K(i, c(w), a)),
        GgmlType::Q6_K => RowDot::Q8K(|i, w, a| k::dot_q6_K_q8_K(i, c(w), a)),
        _ => panic!("{ty} has no row dot kernel"),
    };
    debug_assert_eq!(
        row_acts(ty),
        Some(match dot {
            RowDot::Q8_0(_) => RowActs::Q8_0,
            RowDot::Q8K(_) => RowActs::Q8K,
        })
    );
    dot
}

/// One product of [`gemm_f16_packed`]: F16 weights, where their outputs go (`n * m.rows`
/// values), the bias to add.
#[cfg(target_arch = "x86_64")]
pub(super) struct F16Part<'p> {
    pub m: &'p Matrix<'p>,
    pub out: Disjoint<f32>,
    pub bias: Option<&'p [f32]>,
}

/// Weight rows of an F16 chunk on AVX-512: one 32-row panel, so the last chunks of a product
/// leave a thread waiting for at most one panel's tiles.
#[cfg(target_arch = "x86_64")]
const F16_CHUNK_ROWS: usize = 32;

/// F16 products with the same input on AVX-512: the tokens packed once (split over the threads
/// by tiles), then every product's 32-row chunks handed out on demand in one pass of the pool.
#[cfg(target_arch = "x86_64")]
pub(super) fn gemm_f16_packed(parts: &[F16Part<'_>], x: &[f32], n: usize, pool: &ThreadPool) {
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
