//! Separable resampling with PIL's antialiasing: when shrinking, the filter is widened by the
//! scale factor so every source pixel contributes (what PIL and torchvision's antialiased
//! resize do; plain bicubic sampling would alias).

/// Resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Bicubic, a = -0.5 (PIL's BICUBIC).
    Bicubic,
    /// Triangle (PIL's BILINEAR).
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x).max(0.0),
        }
    }
}

/// For each output index: the first input index and the normalised weights.
fn coefficients(n_in: usize, n_out: usize, filter: Filter) -> Vec<(usize, Vec<f32>)> {
    let scale = n_in as f64 / n_out as f64;
    let fscale = scale.max(1.0);
    let support = filter.support() * fscale;
    (0..n_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(n_in);
            let w: Vec<f64> = (lo..hi)
                .map(|i| filter.weight((i as f64 - center + 0.5) / fscale))
                .collect();
            let sum: f64 = w.iter().sum();
            (lo, w.iter().map(|x| (x / sum) as f32).collect())
        })
        .collect()
}

/// Resizes planar f32 channels (`c` planes of `h x w`) to `oh x ow`. With `eight_bit`, the
/// intermediate and final values are rounded and clipped to 0..=255 as PIL does for 8-bit
/// images (bicubic overshoot is clipped between the passes, which moves results by up to
/// three levels against a float pipeline).
#[allow(clippy::too_many_arguments)]
pub fn resize_planes(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    filter: Filter,
    eight_bit: bool,
) -> Vec<f32> {
    let clip = |v: f32| {
        if eight_bit {
            v.round().clamp(0.0, 255.0)
        } else {
            v
        }
    };
    let cx = coefficients(w, ow, filter);
    let cy = coefficients(h, oh, filter);
    // Horizontal pass then vertical, as PIL does.
    let mut tmp = vec![0f32; c * h * ow];
    for p in 0..c * h {
        let row = &src[p * w..(p + 1) * w];
        for (o, (lo, ws)) in cx.iter().enumerate() {
            tmp[p * ow + o] = clip(ws.iter().zip(&row[*lo..]).map(|(a, b)| a * b).sum());
        }
    }
    let mut out = vec![0f32; c * oh * ow];
    for ch in 0..c {
        for (o, (lo, ws)) in cy.iter().enumerate() {
            let dst = &mut out[(ch * oh + o) * ow..(ch * oh + o + 1) * ow];
            for (k, wgt) in ws.iter().enumerate() {
                let srow = &tmp[(ch * h + lo + k) * ow..(ch * h + lo + k + 1) * ow];
                for (d, s) in dst.iter_mut().zip(srow) {
                    *d += wgt * s;
                }
            }
        }
    }
    for v in out.iter_mut() {
        *v = clip(*v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_images_stay_constant_and_identity_is_exact() {
        let src = vec![7.0f32; 3 * 10 * 13];
        for (oh, ow) in [(5, 6), (20, 26), (10, 13), (1, 1)] {
            for f in [Filter::Bicubic, Filter::Bilinear] {
                let out = resize_planes(&src, 3, 10, 13, oh, ow, f, false);
                assert!(out.iter().all(|v| (v - 7.0).abs() < 1e-4), "{oh}x{ow}");
            }
        }
        let ramp: Vec<f32> = (0..3 * 4 * 5).map(|i| i as f32).collect();
        assert_eq!(
            resize_planes(&ramp, 3, 4, 5, 4, 5, Filter::Bicubic, true),
            ramp
        );
    }
}
