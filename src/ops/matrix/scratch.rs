//! Per-thread scratch kept between products, and the bias passes.

use crate::threadpool::{Disjoint, ThreadPool};

thread_local! {
    /// Each thread's GEMM panel scratch, kept between products so that no chunk pays for
    /// zeroing and faulting in hundreds of KiB. The packers overwrite what they use, so it is
    /// never cleared. f32 storage serves every panel element type (4-byte aligned, sizes a
    /// multiple of 4).
    static PANEL_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's packed tokens of the F16 and bf16 GEMMs.
    static TOKEN_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's panel scratch of `len` elements of `T`.
pub(super) fn with_panel_scratch<T: bytemuck::Pod, R>(
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
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
/// `f` on them. The buffer is the calling thread's, kept between products so that none pays for
/// zeroing and faulting in megabytes (PERF.md, "scratch kept between products").
#[allow(clippy::too_many_arguments)]
pub(super) fn with_packed_tokens<T: bytemuck::Pod + Send + Sync, R>(
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
pub(super) unsafe fn add_bias_band(
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
pub(super) fn add_bias_rows(out: &mut [f32], bias: &[f32], pool: &ThreadPool) {
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
