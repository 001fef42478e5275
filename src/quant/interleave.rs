//! The interleaved8 storage form of a weight matrix: each run of eight rows rearranged, block by
//! block, into the kernels' interleaved block for the type (`le_block_q4_0x8` for Q4_0 ..
//! `le_block_q6_Kx8`), so the decode product reads eight rows in one stream. The rows after the
//! last multiple of eight stay plain. A loader rearranges a tensor in its private pages once
//! ([`interleave`]) and marks it [`Layout::Interleaved8`]; the bytes per eight rows are the
//! same, so offsets of whole groups do not move.

use crate::dtype::GgmlType;
use crate::ffi;
use crate::gguf::{Layout, TensorInfo};

/// Bytes of eight rows' 32 values of `ty` interleaved (one interleaved block; an eighth of one
/// for the K types, whose blocks are 256 values), or `None` for a type without that form (it
/// exists for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K).
pub fn interleaved8_block_bytes(ty: GgmlType) -> Option<usize> {
    // SAFETY: a pure function of its argument.
    let b = unsafe { ffi::le_x8_block_bytes(ty.id() as i32) };
    (b > 0).then_some(b as usize)
}

/// Bytes of one plain row of `n` values of an interleavable `ty`, after checking `n` and that
/// `interleaved_bytes` is one group of eight such rows. Panics otherwise.
pub(crate) fn plain_row_bytes(ty: GgmlType, n: usize, interleaved_bytes: usize) -> usize {
    let bb = interleaved8_block_bytes(ty).unwrap_or_else(|| panic!("{ty} has no interleaved form"));
    assert!(
        n.is_multiple_of(ty.block_size().max(32)),
        "{ty} interleaved8: n must be whole blocks"
    );
    assert_eq!(
        interleaved_bytes,
        n / 32 * bb,
        "{ty} interleaved8: blocks for n"
    );
    n / 32 * bb / 8
}

/// Interleaves eight rows of `ty` (`rows.len() == 8 * row_bytes`, `n` values each) into `out`
/// (`n / 32` interleaved blocks).
pub fn interleave8(ty: GgmlType, rows: &[u8], n: usize, out: &mut [u8]) {
    let row_bytes = plain_row_bytes(ty, n, out.len());
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

/// The inverse of [`interleave8`].
pub fn deinterleave8(ty: GgmlType, w: &[u8], n: usize, rows: &mut [u8]) {
    let row_bytes = plain_row_bytes(ty, n, w.len());
    assert_eq!(rows.len(), 8 * row_bytes, "deinterleave {ty}: rows length");
    // SAFETY: as in interleave8, in the other direction.
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

/// Rearranges a Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K matrix's rows in place into
/// the interleaved8 form (the rows after the last multiple of eight stay plain) and marks its
/// layout. Returns false, changing nothing, for any other tensor, or one of fewer than eight
/// rows.
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
        info.layout = Layout::Interleaved8;
    }
    done
}

/// [`interleave`] on bare bytes: `rows` rows of type `ty` and `cols` values (a matrix built in
/// memory, then given `layout: Layout::Interleaved8`). False, changing nothing, when the type
/// has no interleaved form or the bytes do not hold such rows, at least eight of them,
/// 2-aligned.
pub fn interleave_rows(ty: GgmlType, cols: usize, rows: usize, data: &mut [u8]) -> bool {
    let Some(bb) = interleaved8_block_bytes(ty) else {
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
        interleave8(ty, rows8, cols, &mut group);
        rows8.copy_from_slice(&group);
    }
    true
}
