//! The per-row C kernels (RMSNorm, LayerNorm, RoPE) against f64 math, on every variant this CPU
//! has, for awkward lengths; and the variants against each other (they do the same f32
//! arithmetic in the same order, so they agree bit for bit).

use llava_edge::kernels::{self, Isa};
use rand::{Rng, SeedableRng};

const ULP: f64 = f32::EPSILON as f64 / 2.0;

fn variants() -> Vec<Isa> {
    Isa::available()
}

fn row(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

#[test]
fn norms_match_f64() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    let mut checked = 0;
    for n in [1usize, 3, 7, 8, 33, 64, 896, 1152, 4097] {
        for scale in [1e-3f32, 1.0, 300.0] {
            let x = row(&mut rng, n, scale);
            let (w, b) = (row(&mut rng, n, 2.0), row(&mut rng, n, 0.5));
            // An offset row, so LayerNorm's centring matters.
            let xo: Vec<f32> = x.iter().map(|v| v + 3.0 * scale).collect();
            let eps = 1e-6f32;
            let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let ms = xd.iter().map(|v| v * v).sum::<f64>() / n as f64;
            let rs = 1.0 / (ms + eps as f64).sqrt();
            let xod: Vec<f64> = xo.iter().map(|&v| v as f64).collect();
            let mean = xod.iter().sum::<f64>() / n as f64;
            let var = xod.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for isa in variants() {
                let (mut r, mut l) = (x.clone(), xo.clone());
                kernels::rms_norm_with(isa, &mut r, &w, eps);
                kernels::layer_norm_with(isa, &mut l, &w, &b, eps);
                for i in 0..n {
                    // The f32 scale and two f32 products: three roundings.
                    let want = xd[i] * rs * w[i] as f64;
                    let tol = 3.5 * ULP * want.abs() + 1e-37;
                    assert!(
                        (r[i] as f64 - want).abs() <= tol,
                        "{isa:?} rms n={n} [{i}]: {} vs {want}",
                        r[i]
                    );
                    // (x - mean) * inv rounded to f32, times w, plus b: the last rounding is
                    // relative to the larger of the two terms.
                    let a = (xod[i] - mean) * inv * w[i] as f64;
                    let want = a + b[i] as f64;
                    let tol = 3.5 * ULP * (a.abs() + (b[i] as f64).abs()) + 1e-37;
                    assert!(
                        (l[i] as f64 - want).abs() <= tol,
                        "{isa:?} layer n={n} [{i}]: {} vs {want}",
                        l[i]
                    );
                    checked += 2;
                }
                match &first {
                    None => first = Some((r, l)),
                    Some((r0, l0)) => {
                        assert_eq!(&r, r0, "{isa:?} rms n={n}: bits differ from scalar");
                        assert_eq!(&l, l0, "{isa:?} layer n={n}: bits differ from scalar");
                    }
                }
            }
        }
    }
    println!("{checked} norm outputs checked on {:?}", variants());
}

#[test]
fn rope_matches_f64_in_both_layouts() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(43);
    let mut checked = 0;
    // (head_dim, rotated pairs): whole heads, a partial rotation, odd pair counts.
    for (hd, half) in [
        (8usize, 4usize),
        (64, 32),
        (128, 64),
        (80, 40),
        (64, 16),
        (24, 7),
    ] {
        for neox in [false, true] {
            let n_heads = 3;
            let x = row(&mut rng, n_heads * hd, 4.0);
            let ang: Vec<f32> = (0..half)
                .map(|_| rng.random_range(-50.0f32..50.0))
                .collect();
            let (cos, sin): (Vec<f32>, Vec<f32>) = ang.iter().map(|a| (a.cos(), a.sin())).unzip();
            let mut first: Option<Vec<f32>> = None;
            for isa in variants() {
                let mut y = x.clone();
                kernels::rotate_heads(isa, &mut y, hd, &cos, &sin, neox);
                for h in 0..n_heads {
                    let (xs, ys) = (&x[h * hd..(h + 1) * hd], &y[h * hd..(h + 1) * hd]);
                    let mut rotated = vec![false; hd];
                    for i in 0..half {
                        let (a, b) = if neox {
                            (i, i + half)
                        } else {
                            (2 * i, 2 * i + 1)
                        };
                        rotated[a] = true;
                        rotated[b] = true;
                        let (x0, x1) = (xs[a] as f64, xs[b] as f64);
                        let (c, s) = (cos[i] as f64, sin[i] as f64);
                        for (got, want, mag) in [
                            (ys[a], x0 * c - x1 * s, (x0 * c).abs() + (x1 * s).abs()),
                            (ys[b], x0 * s + x1 * c, (x0 * s).abs() + (x1 * c).abs()),
                        ] {
                            assert!(
                                (got as f64 - want).abs() <= 2.0 * ULP * mag + 1e-37,
                                "{isa:?} hd={hd} half={half} neox={neox} head {h} pair {i}: {got} vs {want}"
                            );
                            checked += 1;
                        }
                    }
                    for d in (0..hd).filter(|&d| !rotated[d]) {
                        assert_eq!(ys[d], xs[d], "{isa:?}: dimension {d} is not rotated");
                    }
                }
                match &first {
                    None => first = Some(y),
                    Some(y0) => assert_eq!(&y, y0, "{isa:?} hd={hd} neox={neox}: bits differ"),
                }
            }
        }
    }
    println!("{checked} rotated values checked on {:?}", variants());
}
