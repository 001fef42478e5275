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

/// Per output dimension, the bound on one attention head's row against the reference, from its
/// `scores` (scaled, in f64), their dot products' magnitudes `dmag` (scaled the same),
/// `head_dim` and the values (`value(key, dim)`). A score is within (d + 2) roundings of its
/// products' magnitude on each side; a weight e^(s - max) within that plus exp's
/// (3 + 2|s - max|) ulp (Vulkan; the CPU's ~2) and the subtraction's |s - max|; normalising
/// doubles the worst. The output, a weighted mean of the values, then carries that relative
/// error of its weighted magnitude, plus the running sums' roundings over the keys and tiles.
pub fn attention_tols(
    scores: &[f64],
    dmag: &[f64],
    head_dim: usize,
    value: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let n = scores.len();
    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
    let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let l: f64 = p.iter().sum();
    let eps = 2.0
        * (0..n)
            .map(|j| {
                2.0 * (head_dim + 2) as f64 * U * dmag[j] + (6.0 + 3.0 * (scores[j] - m).abs()) * U
            })
            .fold(0.0, f64::max);
    let acc = (2 * n + 2 * n.div_ceil(64) + 10) as f64 * U;
    (0..head_dim)
        .map(|i| {
            let mag: f64 = (0..n).map(|j| p[j] / l * value(j, i).abs()).sum();
            mag * (eps + acc)
        })
        .collect()
}
