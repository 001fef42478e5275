//! Quantized block formats: one `#[repr(C)]` block type per ggml format (declared once, in the
//! kernel header, bound by bindgen), each with a reference quantizer and dequantizer that are
//! bit-exact with ggml's `quantize_row_*_reference` / `dequantize_row_*`.

mod float;
pub mod interleave;
mod k_quants;
mod legacy;
pub mod search;

pub use float::{bf16_from_f32, f16_from_f32};

use crate::dtype::GgmlType;
use crate::ffi;

/// Why a conversion could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// A row that is not a whole number of blocks.
    #[error("{len} values are not a whole number of {ty} blocks of {}", ty.block_size())]
    RowLength { ty: GgmlType, len: usize },
    /// Bytes that are not a whole number of blocks, or do not match the output length.
    #[error("{bytes} bytes of {ty} do not hold {want} values")]
    ByteLength {
        ty: GgmlType,
        bytes: usize,
        want: usize,
    },
    /// A type this module cannot convert.
    #[error("{ty} is not supported for {what}")]
    Unsupported { ty: GgmlType, what: &'static str },
}

/// A quantized block format.
pub trait BlockFormat: bytemuck::Pod {
    /// The ggml type.
    const TYPE: GgmlType;
    /// Values per block.
    const BLOCK: usize;
    /// Quantizes one block's worth of values (`x.len() == BLOCK`).
    fn quantize_block(x: &[f32]) -> Self;
    /// Dequantizes into `y` (`y.len() == BLOCK`).
    fn dequantize_block(&self, y: &mut [f32]);
}

// SAFETY: the block structs are bindgen's view of `kernels/include/llava_kernels.h`: plain
// integer and f32 fields, no padding (sizes are asserted in the header and by bindgen's
// layout tests), so every bit pattern is valid and zero is a valid value.
macro_rules! pod {
    ($($t:ty),*) => {$(
        unsafe impl bytemuck::Zeroable for $t {}
        unsafe impl bytemuck::Pod for $t {}
    )*};
}
pod!(
    ffi::le_block_q4_0,
    ffi::le_block_q4_1,
    ffi::le_block_q5_0,
    ffi::le_block_q5_1,
    ffi::le_block_q8_0,
    ffi::le_block_q8_1,
    ffi::le_block_q2_K,
    ffi::le_block_q3_K,
    ffi::le_block_q4_K,
    ffi::le_block_q5_K,
    ffi::le_block_q6_K,
    ffi::le_block_q8_K,
    ffi::le_block_q8_0x,
    ffi::le_block_q4_0x8,
    ffi::le_block_x8
);

fn quantize_blocks<B: BlockFormat>(src: &[f32], dst: &mut Vec<u8>) {
    for x in src.chunks_exact(B::BLOCK) {
        dst.extend_from_slice(bytemuck::bytes_of(&B::quantize_block(x)));
    }
}

fn dequantize_blocks<B: BlockFormat>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    for (b, y) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(B::BLOCK)) {
        // Mapped tensor data is aligned, but a caller's slice need not be: read unaligned.
        bytemuck::pod_read_unaligned::<B>(b).dequantize_block(y);
    }
}

/// Appends the encoding of `src` as `ty` to `dst`. `src.len()` must be a multiple of the
/// type's block size.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut Vec<u8>) -> Result<(), QuantError> {
    if !src.len().is_multiple_of(ty.block_size()) {
        return Err(QuantError::RowLength { ty, len: src.len() });
    }
    dst.reserve(src.len() / ty.block_size() * ty.type_size());
    match ty {
        GgmlType::F32 => src
            .iter()
            .for_each(|x| dst.extend_from_slice(&x.to_le_bytes())),
        GgmlType::F16 => src
            .iter()
            .for_each(|&x| dst.extend_from_slice(&f16_from_f32(x).to_le_bytes())),
        GgmlType::BF16 => src
            .iter()
            .for_each(|&x| dst.extend_from_slice(&bf16_from_f32(x).to_le_bytes())),
        GgmlType::Q4_0 => quantize_blocks::<ffi::le_block_q4_0>(src, dst),
        GgmlType::Q4_1 => quantize_blocks::<ffi::le_block_q4_1>(src, dst),
        GgmlType::Q5_0 => quantize_blocks::<ffi::le_block_q5_0>(src, dst),
        GgmlType::Q5_1 => quantize_blocks::<ffi::le_block_q5_1>(src, dst),
        GgmlType::Q8_0 => quantize_blocks::<ffi::le_block_q8_0>(src, dst),
        GgmlType::Q8_1 => quantize_blocks::<ffi::le_block_q8_1>(src, dst),
        GgmlType::Q3_K => quantize_blocks::<ffi::le_block_q3_K>(src, dst),
        GgmlType::Q2_K => quantize_blocks::<ffi::le_block_q2_K>(src, dst),
        GgmlType::Q8_K => quantize_blocks::<ffi::le_block_q8_K>(src, dst),
        GgmlType::Q6_K => quantize_blocks::<ffi::le_block_q6_K>(src, dst),
        GgmlType::Q5_K => quantize_blocks::<ffi::le_block_q5_K>(src, dst),
        GgmlType::Q4_K => quantize_blocks::<ffi::le_block_q4_K>(src, dst),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                what: "quantization",
            })
        }
    }
    Ok(())
}

/// Decodes `bytes` of type `ty` into `out`, which must hold exactly the values they encode.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let want = out.len();
    if !want.is_multiple_of(ty.block_size())
        || ty.bytes_for(want as u64) != Some(bytes.len() as u64)
    {
        return Err(QuantError::ByteLength {
            ty,
            bytes: bytes.len(),
            want,
        });
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => dequantize_blocks::<ffi::le_block_q4_0>(bytes, out),
        GgmlType::Q4_1 => dequantize_blocks::<ffi::le_block_q4_1>(bytes, out),
        GgmlType::Q5_0 => dequantize_blocks::<ffi::le_block_q5_0>(bytes, out),
        GgmlType::Q5_1 => dequantize_blocks::<ffi::le_block_q5_1>(bytes, out),
        GgmlType::Q8_0 => dequantize_blocks::<ffi::le_block_q8_0>(bytes, out),
        GgmlType::Q8_1 => dequantize_blocks::<ffi::le_block_q8_1>(bytes, out),
        GgmlType::Q3_K => dequantize_blocks::<ffi::le_block_q3_K>(bytes, out),
        GgmlType::Q2_K => dequantize_blocks::<ffi::le_block_q2_K>(bytes, out),
        GgmlType::Q8_K => dequantize_blocks::<ffi::le_block_q8_K>(bytes, out),
        GgmlType::Q6_K => dequantize_blocks::<ffi::le_block_q6_K>(bytes, out),
        GgmlType::Q5_K => dequantize_blocks::<ffi::le_block_q5_K>(bytes, out),
        GgmlType::Q4_K => dequantize_blocks::<ffi::le_block_q4_K>(bytes, out),
        _ => {
            return Err(QuantError::Unsupported {
                ty,
                what: "dequantization",
            })
        }
    }
    Ok(())
}

/// `bytes` of type `ty` decoded into a new vector of `n` values.
pub fn to_f32(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, QuantError> {
    let mut out = vec![0f32; n];
    dequantize(ty, bytes, &mut out)?;
    Ok(out)
}

/// Whether [`quantize`] and [`dequantize`] handle `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q8_1
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::Q8_K
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lengths_and_types_are_typed_errors() {
        let mut v = Vec::new();
        assert_eq!(
            quantize(GgmlType::Q4_0, &[0.0; 33], &mut v),
            Err(QuantError::RowLength {
                ty: GgmlType::Q4_0,
                len: 33
            })
        );
        assert!(matches!(
            quantize(GgmlType::IQ2_XXS, &[0.0; 256], &mut v),
            Err(QuantError::Unsupported { .. })
        ));
        let mut out = [0f32; 32];
        assert!(matches!(
            dequantize(GgmlType::Q4_0, &[0; 17], &mut out),
            Err(QuantError::ByteLength { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0; 18], &mut out),
            Err(QuantError::ByteLength { .. })
        ));
        // Misaligned input bytes are fine.
        let mut q = vec![0u8];
        quantize(GgmlType::Q4_1, &[0.5; 32], &mut q).unwrap();
        dequantize(GgmlType::Q4_1, &q[1..], &mut out).unwrap();
        assert!(out.iter().all(|&x| x == 0.5));
    }

    #[test]
    fn round_trip_errors_are_within_the_format_bounds() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        // Q4_0/Q5_0 map the block's signed extreme exactly; the other sign has one level fewer,
        // so values there can clip by up to a full step. Q8_0 is symmetric: half a step.
        for (ty, levels, steps) in [
            (GgmlType::Q4_0, 8.0, 1.0),
            (GgmlType::Q5_0, 16.0, 1.0),
            (GgmlType::Q8_0, 127.0, 0.5),
        ] {
            let mut q = Vec::new();
            quantize(ty, &x, &mut q).unwrap();
            let y = to_f32(ty, &q, x.len()).unwrap();
            // Scale is amax/levels per block (<= global amax), plus f16 rounding of the scale.
            let step = amax / levels * 1.01;
            for (a, b) in x.iter().zip(&y) {
                assert!(
                    (a - b).abs() <= step * steps + 1e-3 * a.abs(),
                    "{ty}: {a} vs {b}"
                );
            }
        }
    }
}
