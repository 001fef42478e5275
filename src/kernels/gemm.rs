//! Many-token products: the quantized GEMM over packed panels of eight rows, the decode product
//! over rows stored interleaved by eight, and the F16 and bfloat16 GEMMs.
//!
//! Names: a *panel* is the GEMM's packed form of up to eight rows (`le_block_x8`, made per
//! product by [`pack_panel`]); *interleaved8* is the storage form of a matrix whose rows were
//! interleaved by eight at load (`crate::quant::interleave`); *summed* activations are Q8_0
//! blocks that carry their sums (`le_block_q8_0x`).

use super::{dispatch, Bf16Isa, Bf16Kind, FloatIsa, FloatKind, GemmIsa, GemmKind};
use crate::dtype::GgmlType;
use crate::ffi;
use crate::quant::interleave::interleaved8_block_bytes;

/// One block of a GEMM panel: 32 values of each of eight rows, as integer codes and scales.
pub type PanelBlock = ffi::le_block_x8;

/// Bytes ahead of the weight being read that the x86 decode products prefetch.
pub const PREFETCH_AHEAD: usize = ffi::LE_PREFETCH_AHEAD as usize;

/// The integer codes a weight type packs to for the prefill GEMM, or `None` when it has no
/// panel form (those types keep the row-at-a-time kernels).
pub fn panel_codes(ty: GgmlType) -> Option<ffi::le_codes> {
    // SAFETY: a pure function of an integer.
    let c = unsafe { ffi::le_panel_codes(ty.id() as i32) };
    (c >= 0).then_some(c as ffi::le_codes)
}

/// Packs `nrows` (1..=8) rows of `ty` (`rows.len() == nrows * row_bytes`, `n` values each) into
/// one panel of `n / 32` blocks. Returns false for a type without a panel form.
pub fn pack_panel(
    ty: GgmlType,
    rows: &[u8],
    nrows: usize,
    n: usize,
    out: &mut [PanelBlock],
) -> bool {
    assert!((1..=8).contains(&nrows), "pack_panel: 1..=8 rows");
    assert!(
        n.is_multiple_of(ty.block_size()) && n.is_multiple_of(32),
        "pack_panel: n"
    );
    let row_bytes = n / ty.block_size() * ty.type_size();
    assert_eq!(rows.len(), nrows * row_bytes, "pack_panel: rows length");
    assert_eq!(out.len(), n / 32, "pack_panel: panel length");
    if panel_codes(ty).is_none() {
        return false;
    }
    // Every panel type's block holds f16 scales (ggml_half), so 2-byte alignment.
    assert!(
        rows.as_ptr().align_offset(2) == 0,
        "pack_panel: rows not 2-byte aligned"
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

/// One group of interleaved8 rows as a GEMM panel (byte for byte what [`pack_panel`] makes of
/// the rows before interleaving).
pub fn pack_panel_from_interleaved8(ty: GgmlType, w: &[u8], n: usize, out: &mut [PanelBlock]) {
    crate::quant::interleave::plain_row_bytes(ty, n, w.len());
    assert_eq!(out.len(), n / 32, "pack {ty} interleaved8: panel length");
    // SAFETY: n / 32 blocks on both sides (asserted).
    unsafe { ffi::le_pack_x8_interleaved(ty.id() as i32, w.as_ptr(), n as i32, out.as_mut_ptr()) }
}

/// `out[t * ldo + r] = row r . token t` for the `nrows` rows packed in `panels`
/// (`nrows.div_ceil(8)` panels of `n / 32` blocks) and the `nt` tokens of summed activations
/// in `act`.
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every `t < nt`, `r < nrows`, and no other
/// thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_panels(
    gemm: GemmIsa,
    codes: ffi::le_codes,
    n: usize,
    panels: &[PanelBlock],
    nrows: usize,
    act: &[ffi::le_block_q8_0x],
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    let (nb, np) = (n / 32, nrows.div_ceil(8));
    assert!(n.is_multiple_of(32), "gemm_panels: n");
    assert!(panels.len() >= np * nb, "gemm_panels: panels");
    assert!(act.len() >= nt * nb, "gemm_panels: activations");
    assert!(nt == 1 || ldo >= nrows, "gemm_panels: ldo");
    let (k, p, np, nr) = (n as i32, panels.as_ptr(), np as i32, nrows as i32);
    let (a, t) = (act.as_ptr(), nt as i32);
    // SAFETY: lengths asserted above; `out` per the caller's contract; a SIMD `gemm` exists only
    // where detection found its features.
    unsafe {
        dispatch!(gemm.kind(), (codes, k, p, np, nr, a, t, out, ldo) {
            "x86_64" GemmKind::Avx2 => ffi::le_gemm_x8_avx2,
            "x86_64" GemmKind::Vnni => ffi::le_gemm_x8_vnni,
            "aarch64" GemmKind::Dotprod => ffi::le_gemm_x8_dotprod,
            "aarch64" GemmKind::Neon => ffi::le_gemm_x8_neon,
            _ => ffi::le_gemm_x8_scalar,
        })
    }
}

/// `out[t * ldo + r] = row r . token t` for the `8 * ng` interleaved8 rows of `ty` in `w` (`ng`
/// groups of `n / 32` blocks) and the `nt` tokens of summed activations in `act`: the decode
/// product.
///
/// # Safety
/// `out` must be valid for writes at `t * ldo + r` for every `t < nt`, `r < 8 * ng`, and no
/// other thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemv_interleaved8(
    gemm: GemmIsa,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    act: &[ffi::le_block_q8_0x],
    nt: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bb = interleaved8_block_bytes(ty).unwrap_or_else(|| panic!("{ty} has no interleaved form"));
    assert!(n.is_multiple_of(ty.block_size().max(32)), "gemv {ty}: n");
    let group = n / 32 * bb;
    assert!(
        group > 0 && w.len().is_multiple_of(group),
        "gemv {ty}: whole groups"
    );
    assert!(act.len() >= nt * (n / 32), "gemv {ty}: activations");
    let ng = w.len() / group;
    assert!(nt <= 1 || ldo >= 8 * ng, "gemv {ty}: ldo");
    let (t, k, wp, g, a, m) = (
        ty.id() as i32,
        n as i32,
        w.as_ptr(),
        ng as i32,
        act.as_ptr(),
        nt as i32,
    );
    // SAFETY: lengths asserted above; `out` per the caller's contract; a SIMD `gemm` exists only
    // where detection found its features.
    unsafe {
        dispatch!(gemm.kind(), (t, k, wp, g, a, m, out, ldo) {
            "x86_64" GemmKind::Avx2 => ffi::le_gemv_x8_avx2,
            "x86_64" GemmKind::Vnni => ffi::le_gemv_x8_vnni,
            "aarch64" GemmKind::Dotprod => ffi::le_gemv_x8_dotprod,
            "aarch64" GemmKind::Neon => ffi::le_gemv_x8_neon,
            _ => ffi::le_gemv_x8_scalar,
        })
    }
}

/// A plain row of an interleavable `ty` (one after a matrix's last group of eight) against the
/// decode's summed activations: Q4_0 through its SIMD dot, the others in scalar C (at most
/// seven rows of a matrix take this path).
pub fn interleaved8_tail_dot(
    gemm: GemmIsa,
    ty: GgmlType,
    row: &[u8],
    a: &[ffi::le_block_q8_0x],
) -> f32 {
    if ty == GgmlType::Q4_0 {
        return super::dot_q4_0_q8_0_summed(gemm, bytemuck::cast_slice(row), a);
    }
    let bb = interleaved8_block_bytes(ty).unwrap_or_else(|| panic!("{ty} has no interleaved form"));
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

/// Floats of [`gemm_f16`]'s packing scratch per unit of `k` (the largest panel of any build).
pub const F16_PACK_PER_K: usize = ffi::LE_F16_PACK_FLOATS as usize;

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
    #[cfg(target_arch = "x86_64")]
    if build.kind() == FloatKind::Avx512 {
        let mut packed = vec![0f32; f16_packed_tokens_len(k, nt)];
        f16_pack_tokens(k, &x[..nt * k], nt, &mut packed);
        // SAFETY: as gemm_f16_packed's, which the caller's contract is.
        unsafe { gemm_f16_packed(k, w, nrows, &packed, nt, out, ldo, pack, None) };
        return;
    }
    let (kk, wp, nr, xp, t) = (k as i32, w.as_ptr(), nrows as i32, x.as_ptr(), nt as i32);
    let pk = pack.as_mut_ptr();
    // SAFETY: lengths asserted; `out` per the caller's contract; a SIMD `build` exists only where
    // detection found its features.
    unsafe {
        dispatch!(build.kind(), (kk, wp, k, nr, xp, k, t, out, ldo, pk) {
            "x86_64" FloatKind::Avx2 => ffi::le_gemm_f16_avx2,
            "aarch64" FloatKind::Neon => ffi::le_gemm_f16_neon,
            _ => ffi::le_gemm_f16_scalar,
        })
    }
}

/// Tokens per packed tile of [`f16_pack_tokens`] (the AVX-512 F16 GEMM's tile width).
pub const F16_TILE_TOKENS: usize = ffi::LE_F16_TILE_TOKENS as usize;

/// Floats [`f16_pack_tokens`] writes for `nt` tokens of `k` values (whole tiles).
pub fn f16_packed_tokens_len(k: usize, nt: usize) -> usize {
    nt.div_ceil(F16_TILE_TOKENS) * F16_TILE_TOKENS * k
}

/// Whether the detected CPU runs the AVX-512 F16 kernels (one cached load: the packed F16
/// wrappers check it per call, as they take no choice value).
#[cfg(target_arch = "x86_64")]
fn has_avx512_float() -> bool {
    super::Cpu::detected().kinds().float == FloatKind::Avx512
}

/// The `nt` tokens of `k` values in `x` as the AVX-512 F16 GEMM reads them: tiles of
/// [`F16_TILE_TOKENS`], value-major within a tile, missing tokens zero. A product's tokens may be
/// packed in parts that start at whole tiles. Panics on a CPU without AVX-512F.
#[cfg(target_arch = "x86_64")]
pub fn f16_pack_tokens(k: usize, x: &[f32], nt: usize, xp: &mut [f32]) {
    assert!(has_avx512_float(), "f16_pack_tokens: needs AVX-512F");
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
    assert!(has_avx512_float(), "gemm_f16_packed: needs AVX-512F");
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
    // SAFETY: lengths asserted; a SIMD `isa` exists only where detection found it.
    unsafe {
        dispatch!(isa.kind(), (kk, t, xs, k, out) {
            "x86_64" Bf16Kind::Avx512 => ffi::le_bf16_pack_tokens_avx512,
            "aarch64" Bf16Kind::Neon => ffi::le_bf16_pack_tokens_neon,
            _ => ffi::le_bf16_pack_tokens_scalar,
        })
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
    // detection found it.
    unsafe {
        dispatch!(isa.kind(), (kk, wp, k, nr, xs, t, out, ldo, pk) {
            "x86_64" Bf16Kind::Avx512 => ffi::le_gemm_bf16_avx512,
            "aarch64" Bf16Kind::Neon => ffi::le_gemm_bf16_neon,
            _ => ffi::le_gemm_bf16_scalar,
        })
    }
}
