//! Normalisation layers.

use crate::kernels;
use crate::threadpool::{Disjoint, ThreadPool};

/// RMSNorm of each `w.len()`-wide row of `x` in place: `x / sqrt(mean(x^2) + eps) * w`.
/// The mean is accumulated in f64 (in the C kernel) so the result does not depend on the row
/// length's rounding.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let isa = kernels::Cpu::get().isa();
    for row in x.chunks_exact_mut(w.len()) {
        kernels::rms_norm_with(isa, row, w, eps);
    }
}

/// LayerNorm of each `w.len()`-wide row of `x` in place: `(x - mean) / sqrt(var + eps) * w + b`,
/// statistics in f64.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let isa = kernels::Cpu::get().isa();
    for row in x.chunks_exact_mut(w.len()) {
        kernels::layer_norm_with(isa, row, w, b, eps);
    }
}

/// [`rms_norm`] with the rows split over the pool's threads (prefill, the vision encoder).
pub fn rms_norm_rows(pool: &ThreadPool, x: &mut [f32], w: &[f32], eps: f32) {
    for_rows(pool, x, w.len(), &|rows| rms_norm(rows, w, eps));
}

/// [`layer_norm`] with the rows split over the pool's threads.
pub fn layer_norm_rows(pool: &ThreadPool, x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    for_rows(pool, x, w.len(), &|rows| layer_norm(rows, w, b, eps));
}

/// The pre-norm transformer step between two sublayers, rows split over the pool's threads:
/// `x += h` when `add` (the last sublayer's output joins the residual stream), then
/// `h = layer_norm(x)` (the next sublayer's input). One pass instead of an add, a copy and a
/// norm.
pub fn residual_layer_norm_rows(
    pool: &ThreadPool,
    x: &mut [f32],
    h: &mut [f32],
    add: bool,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    assert_eq!(x.len(), h.len(), "residual and sublayer output lengths");
    let width = w.len();
    let n_rows = x.len() / width.max(1);
    let (xs, hs) = (Disjoint::new(x), Disjoint::new(h));
    let isa = kernels::Cpu::get().isa();
    pool.for_chunks(n_rows, 8, &|r| {
        let span = r.start * width..r.end * width;
        // SAFETY: `x` and `h` hold n_rows * width values and each run of rows goes to one
        // thread.
        let (x, h) = unsafe {
            (
                std::slice::from_raw_parts_mut(xs.get().add(span.start), span.len()),
                std::slice::from_raw_parts_mut(hs.get().add(span.start), span.len()),
            )
        };
        for (xr, hr) in x.chunks_exact_mut(width).zip(h.chunks_exact_mut(width)) {
            if add {
                for (a, v) in xr.iter_mut().zip(hr.iter()) {
                    *a += v;
                }
            }
            hr.copy_from_slice(xr);
            kernels::layer_norm_with(isa, hr, w, b, eps);
        }
    });
}

/// `x += h`, rows of `width` split over the pool's threads.
pub fn add_rows(pool: &ThreadPool, x: &mut [f32], h: &[f32], width: usize) {
    assert_eq!(x.len(), h.len(), "residual and sublayer output lengths");
    let n_rows = x.len() / width.max(1);
    let xs = Disjoint::new(x);
    pool.for_chunks(n_rows, 8, &|r| {
        let span = r.start * width..r.end * width;
        // SAFETY: `x` holds n_rows * width values and each run of rows goes to one thread.
        let x = unsafe { std::slice::from_raw_parts_mut(xs.get().add(span.start), span.len()) };
        for (a, v) in x.iter_mut().zip(&h[span]) {
            *a += v;
        }
    });
}

/// Calls `f` on runs of whole `width`-wide rows of `x`, shared out to the pool's threads.
fn for_rows(pool: &ThreadPool, x: &mut [f32], width: usize, f: &(dyn Fn(&mut [f32]) + Sync)) {
    let n_rows = x.len() / width.max(1);
    if n_rows < 8 {
        f(x);
        return;
    }
    let base = Disjoint::new(x);
    pool.for_chunks(n_rows, 8, &|r| {
        // SAFETY: `x` holds n_rows * width values and each run of rows goes to one thread.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(base.get().add(r.start * width), r.len() * width)
        };
        f(rows);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let mut x = vec![1.0f32, -2.0, 3.0, 0.5];
        let w = [1.0f32, 2.0, 0.5, 1.0];
        let ms = (1.0 + 4.0 + 9.0 + 0.25) / 4.0f64;
        let want: Vec<f32> = [1.0f64, -2.0, 3.0, 0.5]
            .iter()
            .zip(w)
            .map(|(v, g)| (v / (ms + 1e-6).sqrt()) as f32 * g)
            .collect();
        rms_norm(&mut x, &w, 1e-6);
        for (a, b) in x.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0];
        layer_norm(&mut x, &[1.0; 4], &[0.0; 4], 0.0);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        let var: f32 = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5);
    }

    #[test]
    fn residual_step_equals_add_then_norm() {
        let (width, n) = (24usize, 37usize);
        let x0: Vec<f32> = (0..n * width)
            .map(|i| ((i * 7) % 19) as f32 * 0.3 - 2.0)
            .collect();
        let h0: Vec<f32> = (0..n * width)
            .map(|i| ((i * 3) % 11) as f32 * 0.5 - 2.5)
            .collect();
        let w: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..width).map(|i| i as f32 * 0.05 - 0.5).collect();
        let pool = ThreadPool::new(2);
        for add in [false, true] {
            let mut want_x = x0.clone();
            if add {
                for (a, v) in want_x.iter_mut().zip(&h0) {
                    *a += v;
                }
            }
            let mut want_h = want_x.clone();
            layer_norm(&mut want_h, &w, &b, 1e-5);
            let (mut x, mut h) = (x0.clone(), h0.clone());
            residual_layer_norm_rows(&pool, &mut x, &mut h, add, &w, &b, 1e-5);
            assert_eq!((x, h), (want_x, want_h), "add = {add}");
        }
        let mut x = x0.clone();
        add_rows(&pool, &mut x, &h0, width);
        let want: Vec<f32> = x0.iter().zip(&h0).map(|(a, v)| a + v).collect();
        assert_eq!(x, want);
    }
}
