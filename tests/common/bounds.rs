//! Error bounds derived from f32 arithmetic, shared by the device tests that check the same
//! operation (u = 2^-24, the f32 unit roundoff; a sum of m terms carries at most ~m*u of the
//! sum of their magnitudes).

/// The f32 unit roundoff.
pub const U: f64 = 1.0 / (1u64 << 24) as f64;

/// `got` (rows of `width`) is the layer norm of `input`'s rows within f32 rounding of `want`,
/// the CPU's: the mean is off by up to depth*u of the mean magnitude; each centred value by
/// that plus its own rounding; the variance's scale as in RMSNorm (half its depth + 10 ulp);
/// then the weight's product and the bias's sum, twice (both sides).
pub fn assert_layer_norm_close(
    input: &[f32],
    got: &[f32],
    want: &[f32],
    w: &[f32],
    b: &[f32],
    width: usize,
) {
    let depth = width.div_ceil(64) as f64 + 6.0;
    for r in 0..input.len() / width {
        let row = &input[r * width..(r + 1) * width];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
        let inv = 1.0 / (var + 1e-5).sqrt();
        let mean_err =
            depth * U * row.iter().map(|&v| (v as f64).abs()).sum::<f64>() / width as f64;
        for i in 0..width {
            let c = (row[i] as f64 - mean).abs();
            let tol = (w[i] as f64).abs() * inv * (mean_err + (depth / 2.0 + 12.0) * U * c)
                + 3.0 * U * ((want[r * width + i] as f64).abs() + (b[i] as f64).abs());
            let (g, t) = (got[r * width + i], want[r * width + i]);
            assert!(
                ((g - t) as f64).abs() <= tol,
                "width {width} row {r}: [{i}] {g} vs {t}"
            );
        }
    }
}
