//! Activation functions, each in place over a slice.

use crate::kernels::{self, Gate};
use crate::threadpool::{Disjoint, ThreadPool};

/// Exact GELU, `x * Phi(x)` with the error function (PyTorch's default `gelu`, LLaVA's
/// projector), in the C kernel (erfc to ~1e-7 relative; [`erf`] here is the f64 reference).
pub fn gelu_erf(x: &mut [f32], pool: &ThreadPool) {
    gated(pool, Gate::GeluErf, x, None);
}

/// GELU's tanh approximation (`gelu_pytorch_tanh`, SigLIP's MLP).
pub fn gelu_tanh(x: &mut [f32], pool: &ThreadPool) {
    gated(pool, Gate::GeluTanh, x, None);
}

/// `x * sigmoid(1.702 x)` (CLIP's `quick_gelu`).
pub fn quick_gelu(x: &mut [f32], pool: &ThreadPool) {
    gated(pool, Gate::QuickGelu, x, None);
}

/// `silu(gate) * up` into `gate` (LLaMA/Qwen2's SwiGLU feed-forward).
pub fn silu_mul(gate: &mut [f32], up: &[f32], pool: &ThreadPool) {
    gated(pool, Gate::Silu, gate, Some(up));
}

/// The C kernel over chunks of `x` shared out to the pool's threads.
fn gated(pool: &ThreadPool, gate: Gate, x: &mut [f32], mul: Option<&[f32]>) {
    const CHUNK: usize = 1 << 14;
    let isa = kernels::Cpu::get().isa();
    if x.len() <= CHUNK {
        kernels::activation_with(isa, gate, x, mul);
        return;
    }
    let (base, len) = (Disjoint::new(x), x.len());
    pool.for_chunks(len, CHUNK, &|r| {
        // SAFETY: `x` holds len values and each chunk r is handed to exactly one thread.
        let xs = unsafe { std::slice::from_raw_parts_mut(base.get().add(r.start), r.len()) };
        kernels::activation_with(isa, gate, xs, mul.map(|m| &m[r]));
    });
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
        (1.0 - erfc(x.abs())).copysign(x)
    }
}

/// The complementary error function `1 - erf(x)`, to about 1e-15 relative also where it is
/// tiny (large x), which `1 - erf(x)` cannot give: the reference for the GELU's negative tail.
pub fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        return 1.0 - erf(x);
    }
    // The continued fraction (Lentz), accurate for large x.
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for n in 1..200 {
        let an = n as f64 / 2.0;
        d = x + an * d;
        d = 1.0 / d;
        c = x + an / c;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
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
        let pool = ThreadPool::new(1);
        gelu_erf(&mut a, &pool);
        gelu_tanh(&mut b, &pool);
        quick_gelu(&mut c, &pool);
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
