//! Weight matrices straight from the file: `y = W x` for one or many input rows, whatever the
//! matrix's GGUF type, with rows split over threads.

use half::{bf16, f16};

use crate::dtype::GgmlType;
use crate::gguf::TensorView;
use crate::threadpool::ThreadPool;
use crate::{ffi, kernels};

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
        })
    }

    fn row_bytes(&self) -> usize {
        self.cols * self.ty.type_size() / self.ty.block_size()
    }

    /// Row `r` as f32 values, into `out` (`cols` long).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
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

    /// `out[t] = W x[t]` for each of the `n` input rows in `x` (`n * cols` values), into `out`
    /// (`n * rows` values), the weight rows split over the pool's threads. Q4_0 and Q8_0
    /// weights meet activations quantized to Q8_0 (as llama.cpp does) in the integer kernels;
    /// F16 weights use the F16 kernel; other types are dequantized a row at a time.
    pub fn matmul(&self, x: &[f32], n: usize, out: &mut [f32], pool: &ThreadPool) {
        assert_eq!(x.len(), n * self.cols, "{}: input length", self.name);
        assert_eq!(out.len(), n * self.rows, "{}: output length", self.name);
        let out_ptr = SyncPtr(out.as_mut_ptr());
        let (rows, cols, rb) = (self.rows, self.cols, self.row_bytes());
        let isa = kernels::isa();
        // SAFETY (for every write below): `out` has n * rows elements (asserted above) and each
        // (i, r) pair is written by exactly one thread, the one that owns row r.
        let put = |i: usize, r: usize, v: f32| unsafe { *out_ptr.get().add(i * rows + r) = v };
        let rows_of = |band: std::ops::Range<usize>| &self.data[band.start * rb..band.end * rb];
        match self.ty {
            GgmlType::Q4_0 | GgmlType::Q8_0
                if bytemuck::try_cast_slice::<u8, u16>(self.data).is_ok() =>
            {
                let nb = cols / 32;
                let mut xq = vec![ffi::le_block_q8_0::default(); n * nb];
                for (xi, qi) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb)) {
                    kernels::quantize_row_q8_0(xi, qi);
                }
                let q4 = self.ty == GgmlType::Q4_0;
                pool.for_ranges(rows, 16, &|band| {
                    let r0 = band.start;
                    for (k, w) in rows_of(band).chunks_exact(rb).enumerate() {
                        // Prefill: four tokens per pass decode each Q4_0 weight block once.
                        let mut i0 = 0;
                        if q4 {
                            let wb: &[ffi::le_block_q4_0] = bytemuck::cast_slice(w);
                            while i0 + 4 <= n {
                                let a = |j: usize| &xq[(i0 + j) * nb..(i0 + j + 1) * nb];
                                let v =
                                    kernels::dot_q4_0_q8_0_x4(isa, wb, [a(0), a(1), a(2), a(3)]);
                                for (j, vj) in v.into_iter().enumerate() {
                                    put(i0 + j, r0 + k, vj);
                                }
                                i0 += 4;
                            }
                        }
                        for (i, a) in xq.chunks_exact(nb).enumerate().skip(i0) {
                            let v = if q4 {
                                kernels::dot_q4_0_q8_0(isa, bytemuck::cast_slice(w), a)
                            } else {
                                kernels::dot_q8_0_q8_0(isa, bytemuck::cast_slice(w), a)
                            };
                            put(i, r0 + k, v);
                        }
                    }
                });
            }
            GgmlType::Q5_0 if bytemuck::try_cast_slice::<u8, u16>(self.data).is_ok() => {
                let nb = cols / 32;
                let mut xq = vec![ffi::le_block_q8_0::default(); n * nb];
                for (xi, qi) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb)) {
                    kernels::quantize_row_q8_0(xi, qi);
                }
                pool.for_ranges(rows, 16, &|band| {
                    let r0 = band.start;
                    for (k, w) in rows_of(band).chunks_exact(rb).enumerate() {
                        for (i, a) in xq.chunks_exact(nb).enumerate() {
                            put(
                                i,
                                r0 + k,
                                kernels::dot_q5_0_q8_0(isa, bytemuck::cast_slice(w), a),
                            );
                        }
                    }
                });
            }
            GgmlType::Q4_K | GgmlType::Q6_K
                if bytemuck::try_cast_slice::<u8, u16>(self.data).is_ok() =>
            {
                let nb = cols / 256;
                let mut xq = vec![ffi::le_block_q8_K::default(); n * nb];
                for (xi, qi) in x.chunks_exact(cols).zip(xq.chunks_exact_mut(nb)) {
                    kernels::quantize_row_q8_K(xi, qi);
                }
                let q4 = self.ty == GgmlType::Q4_K;
                pool.for_ranges(rows, 16, &|band| {
                    let r0 = band.start;
                    for (k, w) in rows_of(band).chunks_exact(rb).enumerate() {
                        for (i, a) in xq.chunks_exact(nb).enumerate() {
                            let v = if q4 {
                                kernels::dot_q4_K_q8_K(isa, bytemuck::cast_slice(w), a)
                            } else {
                                kernels::dot_q6_K_q8_K(isa, bytemuck::cast_slice(w), a)
                            };
                            put(i, r0 + k, v);
                        }
                    }
                });
            }
            GgmlType::F16 if bytemuck::try_cast_slice::<u8, u16>(self.data).is_ok() => {
                pool.for_ranges(rows, 16, &|band| {
                    let r0 = band.start;
                    for (k, w) in rows_of(band).chunks_exact(rb).enumerate() {
                        let w: &[u16] = bytemuck::cast_slice(w);
                        for (i, xi) in x.chunks_exact(cols).enumerate() {
                            put(i, r0 + k, kernels::dot_f16_f32(isa, w, xi));
                        }
                    }
                });
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
            }
        }
    }
}

/// A pointer that threads writing disjoint elements may share.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only for writes to disjoint indices, synchronised by the pool's join.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
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
}
