//! The attention kernel against f64 softmax attention, for every variant this CPU has, keys and
//! values in f32 and in f16 (the cache, read in place), awkward head sizes and position counts.

use half::f16;
use llava_edge::kernels::{self, Isa, KvRef};
use rand::{Rng, SeedableRng};

fn variants() -> Vec<Isa> {
    Isa::available()
}

#[test]
fn attention_matches_f64_softmax() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut checked = 0;
    for hd in [8usize, 20, 64, 72, 128, 256] {
        for n_kv in [1usize, 5, 32, 33, 100, 300] {
            // Keys of a few heads per position: the head under test sits at an offset.
            let (stride, at) = (3 * hd, hd);
            let q: Vec<f32> = (0..hd).map(|_| rng.random_range(-2.0..2.0)).collect();
            let k: Vec<f32> = (0..n_kv * stride)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let v: Vec<f32> = (0..n_kv * stride)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            // The f16 case rounds keys and values first, so both paths have exact inputs.
            let k16: Vec<u16> = k.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            let v16: Vec<u16> = v.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            for half in [false, true] {
                let kv = |i: usize, x: &[f32], x16: &[u16]| {
                    if half {
                        f16::from_bits(x16[i]).to_f64()
                    } else {
                        x[i] as f64
                    }
                };
                let scores: Vec<f64> = (0..n_kv)
                    .map(|p| {
                        (0..hd)
                            .map(|d| q[d] as f64 * kv(p * stride + at + d, &k, &k16))
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let want: Vec<f64> = (0..hd)
                    .map(|d| {
                        (0..n_kv)
                            .map(|p| e[p] / z * kv(p * stride + at + d, &v, &v16))
                            .sum()
                    })
                    .collect();
                let (kr, vr) = if half {
                    (KvRef::F16(&k16[at..]), KvRef::F16(&v16[at..]))
                } else {
                    (KvRef::F32(&k[at..]), KvRef::F32(&v[at..]))
                };
                for isa in variants() {
                    let mut out = vec![0f32; hd];
                    kernels::attend_head(isa, &q, kr, vr, n_kv, stride, scale, &mut out);
                    for d in 0..hd {
                        // Scores are O(10): their f32 rounding moves the weights by ~1e-6.
                        assert!(
                            (out[d] as f64 - want[d]).abs() < 4e-6,
                            "{isa:?} hd={hd} n_kv={n_kv} f16={half}: out[{d}] = {}, f64 {}",
                            out[d],
                            want[d]
                        );
                    }
                    checked += hd;
                }
            }
        }
    }
    println!("{checked} outputs checked");
}

#[test]
fn a_masked_out_row_and_bad_shapes_do_not_read_out_of_bounds() {
    let q = [1f32; 16];
    let mut out = [9f32; 16];
    // No positions: a zero row, not NaN.
    kernels::attend_head(
        kernels::Cpu::get().isa(),
        &q,
        KvRef::F32(&[]),
        KvRef::F32(&[]),
        0,
        16,
        0.25,
        &mut out,
    );
    assert!(out.iter().all(|&x| x == 0.0));
    // A cache shorter than the positions asked for is refused before the C reads it.
    let short = vec![0f32; 16 * 3];
    let r = std::panic::catch_unwind(|| {
        let mut out = [0f32; 16];
        kernels::attend_head(
            kernels::Cpu::get().isa(),
            &q,
            KvRef::F32(&short),
            KvRef::F32(&short),
            4,
            16,
            0.25,
            &mut out,
        );
    });
    assert!(r.is_err());
}

#[test]
fn gated_activations_match_f64() {
    use llava_edge::kernels::Gate;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // The tails and the middle first (so SIMD lanes, not scalar tails, see them): huge, tiny,
    // zero, exact halves; then random values.
    let mut xs = vec![
        0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 200.0, -200.0, 1e30, -1e30, 0.5, -0.5,
    ];
    xs.extend((0..4001).map(|_| rng.random_range(-12.0f32..12.0)));
    let mul: Vec<f32> = xs.iter().map(|_| rng.random_range(-2.0..2.0)).collect();
    for gate in [Gate::Silu, Gate::QuickGelu, Gate::GeluTanh] {
        let want: Vec<(f64, f64)> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                let z = match gate {
                    Gate::Silu => x,
                    Gate::QuickGelu => 1.702 * x,
                    Gate::GeluTanh => {
                        2.0 * (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)
                    }
                    Gate::GeluErf => unreachable!("not sigmoid-gated: its own test"),
                };
                (x / (1.0 + (-z).exp()), z)
            })
            .collect();
        for isa in variants() {
            for with_mul in [false, true] {
                let mut y = xs.clone();
                kernels::activation_with(isa, gate, &mut y, with_mul.then_some(&mul[..]));
                for (i, (&g, &(w, z))) in y.iter().zip(&want).enumerate() {
                    let w = if with_mul { w * mul[i] as f64 } else { w };
                    // A few ulp, times |z|: rounding z by a few ulp moves e^-z, and so the
                    // result on the gate's tail, by that much relatively. The kernels clamp
                    // e^-z at e^88, leaving |x| / 1.6e38 where the exact value underflows: an
                    // absolute 1e-34 for |x| up to 1e4.
                    let tol = 5e-7 * w.abs() * z.abs().max(1.0) + 1e-34;
                    assert!(
                        (g as f64 - w).abs() <= tol,
                        "{isa:?} {gate:?} mul={with_mul}: f({}) = {g}, f64 {w}",
                        xs[i]
                    );
                }
            }
        }
    }
}

#[test]
fn exact_gelu_matches_f64_erf() {
    use llava_edge::kernels::Gate;
    use llava_edge::ops::activation::erfc;
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut xs = vec![
        0.0, -0.0, 1e-30, -1e-30, 13.0, -13.0, 14.0, -14.0, 200.0, -200.0, 1e30, -1e30, 0.5, -0.5,
    ];
    xs.extend((0..4001).map(|_| rng.random_range(-15.0f32..15.0)));
    for isa in variants() {
        let mut y = xs.clone();
        kernels::activation_with(isa, Gate::GeluErf, &mut y, None);
        for (&x, &g) in xs.iter().zip(&y) {
            let xd = x as f64;
            let w = 0.5 * xd * erfc(-xd / std::f64::consts::SQRT_2);
            // erfc's fit is good to 1.2e-7 relative; f32 rounding of z^2 moves e^-z^2 by a
            // few ulp of z^2 relatively (the negative tail); e^-z^2 is flushed to 0 below
            // e^-87, an absolute |x| 1e-38.
            let z2 = xd * xd / 2.0;
            let tol = (5e-7 + 2.4e-7 * z2) * w.abs() + 1e-38 * xd.abs().max(1.0);
            assert!(
                (g as f64 - w).abs() <= tol,
                "{isa:?}: gelu({x}) = {g}, f64 {w} (tol {tol:e})"
            );
        }
    }
}

#[test]
fn row_tiles_match_f64_softmax_causal_and_not() {
    use llava_edge::kernels::Visible;
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let mut checked = 0;
    for hd in [6usize, 8, 20, 64, 72, 128] {
        for (nq, n_kv, causal) in [
            (1, 1, true),
            (4, 4, true),
            (7, 30, true),
            (37, 40, true),
            (5, 5, false),
            (33, 50, false),
            (16, 17, false),
            (8, 8, true),
            (19, 40, true),
            (45, 45, false),
            // ViT-sized rows (whole score rows in the AVX-512 tile) and rows past its 1024
            // (online softmax); causal rows that cross 1024 inside a tile.
            (16, 600, false),
            (9, 1100, false),
            (12, 1030, true),
            // Short calls: tails of two and three rows (a padded tile on the four-row builds),
            // and decode's grouped query heads (Qwen2's seven, Mistral's four) over a long cache.
            (2, 9, true),
            (3, 70, false),
            (7, 1500, false),
            (4, 333, false),
        ] {
            let stride = 2 * hd; // two heads a position; the second is under test
            let qs = 3 * hd; // query rows wider than a head, as in a model
            let q: Vec<f32> = (0..nq * qs).map(|_| rng.random_range(-2.0..2.0)).collect();
            let k: Vec<f32> = (0..n_kv * stride)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let v: Vec<f32> = (0..n_kv * stride)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let k16: Vec<u16> = k.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            let v16: Vec<u16> = v.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
            let first = n_kv - nq;
            let scale = 1.0 / (hd as f32).sqrt();
            for half in [false, true] {
                let get = |x: &[f32], x16: &[u16], i: usize| {
                    if half {
                        f16::from_bits(x16[i]).to_f64()
                    } else {
                        x[i] as f64
                    }
                };
                for isa in kernels::FloatIsa::available() {
                    let mut out = vec![f32::NAN; nq * qs];
                    let (kr, vr) = if half {
                        (KvRef::F16(&k16[hd..]), KvRef::F16(&v16[hd..]))
                    } else {
                        (KvRef::F32(&k[hd..]), KvRef::F32(&v[hd..]))
                    };
                    let vis = if causal {
                        Visible::Causal { first }
                    } else {
                        Visible::All
                    };
                    let mut scratch = Vec::new();
                    let rows = kernels::HeadRows {
                        nq,
                        hd,
                        q: &q,
                        q_stride: qs,
                        k: kr,
                        v: vr,
                        stride,
                        n_kv,
                        visible: vis,
                        scale,
                    };
                    kernels::attend_head_rows(isa, &rows, &mut out, qs, &mut scratch);
                    for i in 0..nq {
                        let seen = if causal { first + i + 1 } else { n_kv };
                        let s: Vec<f64> = (0..seen)
                            .map(|p| {
                                (0..hd)
                                    .map(|d| {
                                        q[i * qs + d] as f64 * get(&k, &k16, p * stride + hd + d)
                                    })
                                    .sum::<f64>()
                                    * scale as f64
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::MIN, f64::max);
                        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                        let z: f64 = e.iter().sum();
                        for d in 0..hd {
                            let want: f64 = (0..seen)
                                .map(|p| e[p] / z * get(&v, &v16, p * stride + hd + d))
                                .sum();
                            let got = out[i * qs + d] as f64;
                            assert!((got - want).abs() < 4e-6, "{isa:?} hd={hd} nq={nq} n_kv={n_kv} causal={causal} f16={half}: row {i} dim {d}: {got} vs {want}");
                        }
                        // Only the head's own columns are written.
                        assert!(out[i * qs + hd..(i + 1) * qs].iter().all(|x| x.is_nan()));
                        checked += hd;
                    }
                }
            }
        }
    }
    println!("{checked} outputs checked");
}
