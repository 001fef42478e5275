//! Activation functions, each in place over a slice.

/// Exact GELU, `x * Phi(x)` with the error function (PyTorch's default `gelu`, LLaVA's
/// projector). Computed in f64 so the erf is not the accuracy limit.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x.iter_mut() {
        let z = f64::from(*v);
        *v = (0.5 * z * (1.0 + erf(z / std::f64::consts::SQRT_2))) as f32;
    }
}

/// GELU's tanh approximation (`gelu_pytorch_tanh`, SigLIP's MLP).
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)
    for v in x.iter_mut() {
        let z = f64::from(*v);
        *v = (0.5 * z * (1.0 + (C * (z + 0.044715 * z * z * z)).tanh())) as f32;
    }
}

/// `x * sigmoid(1.702 x)` (CLIP's `quick_gelu`).
pub fn quick_gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v *= 1.0 / (1.0 + (-1.702 * *v).exp());
    }
}

/// The error function, to about 1e-15 (Abramowitz-Stegun 7.1.26 is not enough for a 1e-4
/// end-to-end bound after many layers, so use the series / continued fraction split).
pub fn erf(x: f64) -> f64 {
    if x.abs() < 2.5 {
        // Maclaurin series: converges fast for |x| < 2.5.
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..80 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc by its continued fraction (Lentz), accurate for large |x|.
        let a = x.abs();
        let mut f = a;
        let (mut c, mut d) = (a, 0.0);
        for n in 1..200 {
            let an = n as f64 / 2.0;
            d = a + an * d;
            d = 1.0 / d;
            c = a + an / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        let erfc = (-a * a).exp() / (f * std::f64::consts::PI.sqrt());
        (1.0 - erfc).copysign(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from tables of erf to 15 digits.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-14,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn gelus_agree_where_they_should() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 / 10.0).collect();
        let (mut a, mut b, mut c) = (xs.clone(), xs.clone(), xs.clone());
        gelu_erf(&mut a);
        gelu_tanh(&mut b);
        quick_gelu(&mut c);
        for i in 0..xs.len() {
            assert!(
                (a[i] - b[i]).abs() < 1e-3,
                "tanh approximation within 1e-3 of exact"
            );
            assert!(
                (a[i] - c[i]).abs() < 0.03,
                "quick_gelu within 0.03 of exact"
            );
        }
        assert_eq!(a[40], 0.0);
    }
}
