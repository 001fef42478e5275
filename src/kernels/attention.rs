//! One attention head against a key/value cache: a single query row ([`attend_head`], online
//! softmax, the cache read in place) or several ([`attend_head_rows`], keys transposed and
//! values packed once for tiles of rows).

use super::{dispatch, FloatIsa, FloatKind, Isa, IsaKind};
use crate::ffi;

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

/// The largest head dimension the attention kernels take (their stack buffers' size).
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
    let (n, d, qp, op) = (n_kv as i32, hd as i32, q.as_ptr(), out.as_mut_ptr());
    // SAFETY: every read stays below `need` elements of k and v and hd of q (asserted); `out`
    // holds hd values; a SIMD `isa` exists only where detection found it. hd is in range, so
    // the C cannot refuse it.
    let rc = unsafe {
        dispatch!(isa.kind(), (n, d, qp, kp, vp, kf16, stride, scale, op) {
            "x86_64" IsaKind::Avx2 => ffi::le_attend_head_avx2,
            "aarch64" IsaKind::Neon | IsaKind::NeonDotprod => ffi::le_attend_head_neon,
            _ => ffi::le_attend_head_scalar,
        })
    };
    debug_assert_eq!(rc, 0);
}

/// Which positions each query row of [`attend_head_rows`] sees.
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

/// The inputs of [`attend_head_rows`]: `nq` query rows of one head, row i's `hd` values at
/// `q[i * q_stride..]`, against `n_kv` positions of keys and values as [`attend_head`] takes
/// them (`stride` apart), each row seeing the positions `visible` says, scores times `scale`.
#[derive(Clone, Copy, Debug)]
pub struct HeadRows<'a> {
    /// Query rows.
    pub nq: usize,
    /// Head dimension, 1..=[`MAX_HEAD_DIM`].
    pub hd: usize,
    /// The queries.
    pub q: &'a [f32],
    /// Elements from one query row to the next.
    pub q_stride: usize,
    /// Keys.
    pub k: KvRef<'a>,
    /// Values, of the same type as the keys.
    pub v: KvRef<'a>,
    /// Elements from one position's key (or value) to the next.
    pub stride: usize,
    /// Positions.
    pub n_kv: usize,
    /// Which positions each row sees.
    pub visible: Visible,
    /// The score scale (1 / sqrt(hd) for the models here).
    pub scale: f32,
}

/// Fewest query rows `le_attend_rows_*` may run as a tile (`PAD_ROWS` in attention.c: 2, or 4
/// for AVX-512), so packing keys and values; one row reads the cache in place.
const ATTEND_PACK_ROWS: usize = 2;

/// The rows of `a`, row i's output at `out[i * o_stride..]`. `scratch` holds the packed keys
/// and values; the caller keeps it between calls.
pub fn attend_head_rows(
    isa: FloatIsa,
    a: &HeadRows<'_>,
    out: &mut [f32],
    o_stride: usize,
    scratch: &mut Vec<f32>,
) {
    if a.nq == 0 {
        return;
    }
    assert!(
        out.len() >= (a.nq - 1) * o_stride + a.hd,
        "attend_head_rows: output"
    );
    // SAFETY: `out` holds every element written (asserted) and is borrowed exclusively.
    unsafe { attend_head_rows_to(isa, a, out.as_mut_ptr(), o_stride, scratch) }
}

/// [`attend_head_rows`] writing through a raw pointer, for threads that each own some columns of
/// one output (one head's columns of a block of rows): a `&mut` slice from each would overlap
/// the others'.
///
/// # Safety
/// `out` must be valid for writes at `i * o_stride + j` for every `i < a.nq`, `j < a.hd`, and no
/// other thread may access those elements during the call.
pub unsafe fn attend_head_rows_to(
    isa: FloatIsa,
    a: &HeadRows<'_>,
    out: *mut f32,
    o_stride: usize,
    scratch: &mut Vec<f32>,
) {
    let &HeadRows {
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
    } = a;
    if nq == 0 {
        return;
    }
    assert!(
        (1..=MAX_HEAD_DIM).contains(&hd),
        "attend_head_rows: head dim {hd}"
    );
    assert!(
        q.len() >= (nq - 1) * q_stride + hd,
        "attend_head_rows: queries"
    );
    assert!(nq == 1 || o_stride >= hd, "attend_head_rows: output stride");
    let (causal, kv0) = match visible {
        Visible::All => (0, 0),
        Visible::Causal { first } => {
            assert!(
                first + nq <= n_kv,
                "attend_head_rows: causal rows past the keys"
            );
            (1, first)
        }
    };
    assert!(n_kv >= 1, "attend_head_rows: no positions");
    assert!(stride >= hd || n_kv == 1, "attend_head_rows: stride");
    let need = (n_kv - 1) * stride + hd;
    assert!(
        k.len() >= need && v.len() >= need,
        "attend_head_rows: cache too short"
    );
    let ((kp, kf16), (vp, vf16)) = (k.ptr(), v.ptr());
    assert_eq!(kf16, vf16, "attend_head_rows: keys and values of one type");
    // Only calls that may make a tile pack keys and values (see le_attend_rows_*): one row
    // reads the cache in place, and sizing the scratch for it anyway would be a memset per
    // thread and layer for nothing.
    if nq >= ATTEND_PACK_ROWS {
        // Transposed keys, packed values, and the AVX-512 tile's eight score rows. Only ever
        // grown: the caller keeps it, and the C overwrites what it reads.
        let need = 2 * n_kv.div_ceil(16) * 16 * hd + 8 * (n_kv.div_ceil(32) * 32 + 16);
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
    }
    let s = scratch.as_mut_ptr();
    let (n, d, qp, nk, kv0) = (nq as i32, hd as i32, q.as_ptr(), n_kv as i32, kv0 as i32);
    // SAFETY: reads stay within the asserted lengths of q, k and v; writes at the elements the
    // caller's contract covers (rows of hd at o_stride); the scratch holds the packed keys and
    // values of n_kv positions whenever nq may make a tile (the C code packs only then); a SIMD
    // `isa` exists only where detection found it.
    let rc = unsafe {
        dispatch!(isa.kind(),
            (n, d, qp, q_stride, kp, vp, kf16, stride, nk, causal, kv0, scale, out, o_stride, s) {
            "x86_64" FloatKind::Avx2 => ffi::le_attend_rows_avx2,
            "x86_64" FloatKind::Avx512 => ffi::le_attend_rows_avx512,
            "aarch64" FloatKind::Neon => ffi::le_attend_rows_neon,
            _ => ffi::le_attend_rows_scalar,
        })
    };
    debug_assert_eq!(rc, 0);
}
