//! The C kernels: the scalar reference against exact math, every SIMD variant this CPU has
//! against the scalar reference, and our dot products against ggml's on the same bytes.

mod common;

use common::ggml_init;
use std::os::raw::c_void;

use llava_edge::dtype::GgmlType;
use llava_edge::ffi::{le_block_q4_0, le_block_q8_0};
use llava_edge::kernels::{self, Isa};
use llava_edge::quant::quantize;
use rand::{Rng, SeedableRng};

/// ggml's row dot products: all share one signature (n, out, its stride, x, stride, y, stride,
/// rows).
macro_rules! ggml_dots {
    ($($name:ident),*) => {
        extern "C" {
            $(fn $name(
                n: i32,
                s: *mut f32,
                bs: usize,
                vx: *const c_void,
                bx: usize,
                vy: *const c_void,
                by: usize,
                nrc: i32,
            );)*
        }
    };
}
ggml_dots!(
    ggml_vec_dot_q5_0_q8_0,
    ggml_vec_dot_q4_K_q8_K,
    ggml_vec_dot_q6_K_q8_K,
    ggml_vec_dot_q5_K_q8_K,
    ggml_vec_dot_q3_K_q8_K,
    ggml_vec_dot_q2_K_q8_K,
    ggml_vec_dot_q4_0_q8_0,
    ggml_vec_dot_q8_0_q8_0
);

fn randn(rng: &mut rand::rngs::StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            (rng.random::<f32>() - 0.5)
                * 2.0
                * scale
                * if rng.random::<f32>() < 0.02 {
                    20.0
                } else {
                    1.0
                }
        })
        .collect()
}

fn blocks<T: bytemuck::Pod>(ty: GgmlType, x: &[f32]) -> Vec<T> {
    let mut b = Vec::new();
    quantize(ty, x, &mut b).unwrap();
    bytemuck::pod_collect_to_vec(&b)
}

fn h(bits: u16) -> f64 {
    f64::from(half::f16::from_bits(bits).to_f32())
}

/// The exact value of a Q4_0 x Q8_0 dot product (integer sums, f64 scales), and the sum of the
/// magnitudes of its element products, which bounds any float rounding in it (SIMD lanes hold
/// partial sums that may cancel, so block totals are not enough).
fn exact_q4_0(w: &[le_block_q4_0], a: &[le_block_q8_0]) -> (f64, f64) {
    let (mut s, mut m) = (0f64, 0f64);
    for (wb, ab) in w.iter().zip(a) {
        let (mut isum, mut iabs) = (0i64, 0i64);
        for j in 0..16 {
            let p0 = i64::from((wb.qs[j] & 15) as i8 - 8) * i64::from(ab.qs[j]);
            let p1 = i64::from((wb.qs[j] >> 4) as i8 - 8) * i64::from(ab.qs[j + 16]);
            isum += p0 + p1;
            iabs += p0.abs() + p1.abs();
        }
        let d = h(wb.d) * h(ab.d);
        s += isum as f64 * d;
        m += iabs as f64 * d.abs();
    }
    (s, m)
}

fn exact_q8_0(w: &[le_block_q8_0], a: &[le_block_q8_0]) -> (f64, f64) {
    let (mut s, mut m) = (0f64, 0f64);
    for (wb, ab) in w.iter().zip(a) {
        let p: Vec<i64> = wb
            .qs
            .iter()
            .zip(ab.qs)
            .map(|(&x, y)| i64::from(x) * i64::from(y))
            .collect();
        let d = h(wb.d) * h(ab.d);
        s += p.iter().sum::<i64>() as f64 * d;
        m += p.iter().map(|v| v.abs()).sum::<i64>() as f64 * d.abs();
    }
    (s, m)
}

fn isas() -> Vec<Isa> {
    Isa::available()
}

/// The instruction-set values the safe wrappers trust come from detection only: every one
/// `available()` lists is one this CPU reports (the types have no public constructor, so a
/// caller cannot name another; see the compile_fail example on `Isa`).
#[test]
fn only_detected_instruction_sets_are_offered() {
    use kernels::IsaKind;
    #[cfg(target_arch = "x86_64")]
    use kernels::{Bf16Isa, Bf16Kind, FloatIsa, FloatKind, GemmIsa, GemmKind};
    let all = Isa::available();
    assert_eq!(all[0], Isa::SCALAR);
    assert!(all.contains(&kernels::Cpu::detected().isa()));
    assert!(all.contains(&kernels::Cpu::get().isa()));
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: &str| match f {
            "avx2" => is_x86_feature_detected!("avx2"),
            "fma" => is_x86_feature_detected!("fma"),
            "f16c" => is_x86_feature_detected!("f16c"),
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            "avx512bf16" => is_x86_feature_detected!("avx512bf16"),
            _ => unreachable!(),
        };
        let avx2 = has("avx2") && has("fma") && has("f16c");
        for isa in &all {
            assert!(isa.kind() != IsaKind::Avx2 || avx2, "{isa:?}");
            assert!(!matches!(isa.kind(), IsaKind::Neon | IsaKind::NeonDotprod));
        }
        for g in GemmIsa::available() {
            let ok = match g.kind() {
                GemmKind::Scalar => true,
                GemmKind::Avx2 => avx2,
                GemmKind::Vnni => avx2 && has("avx512vnni"),
                GemmKind::Dotprod | GemmKind::Neon => false,
            };
            assert!(ok, "{g:?}");
        }
        for f in FloatIsa::available() {
            let ok = match f.kind() {
                FloatKind::Scalar => true,
                FloatKind::Avx2 => avx2,
                FloatKind::Avx512 => avx2 && has("avx512f"),
                FloatKind::Neon => false,
            };
            assert!(ok, "{f:?}");
        }
        for b in Bf16Isa::available() {
            let ok = match b.kind() {
                Bf16Kind::Scalar => true,
                Bf16Kind::Avx512 => avx2 && has("avx512bf16"),
                Bf16Kind::Neon => false,
            };
            assert!(ok, "{b:?}");
        }
    }
    #[cfg(target_arch = "aarch64")]
    for isa in &all {
        let dot = std::arch::is_aarch64_feature_detected!("dotprod");
        assert!(isa.kind() != IsaKind::NeonDotprod || dot, "{isa:?}");
        assert!(isa.kind() != IsaKind::Avx2);
    }
}

/// f32 accumulation over `terms` block products: a few ulps of the magnitude sum.
fn tol(mag: f64, terms: usize) -> f64 {
    mag * f64::from(f32::EPSILON) * (4.0 + terms as f64).sqrt() * 4.0 + 1e-30
}

#[test]
fn activation_quantizer_equals_the_ggml_exact_one() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for n in [32, 64, 4096 + 32] {
        for _ in 0..50 {
            let scale = 10f32.powi(rng.random_range(-4..3));
            let x = randn(&mut rng, n, scale);
            let want: Vec<le_block_q8_0> = blocks(GgmlType::Q8_0, &x);
            let mut got = vec![le_block_q8_0::default(); n / 32];
            kernels::quantize_row_q8_0(&x, &mut got);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&got),
                bytemuck::cast_slice::<_, u8>(&want),
                "n {n}"
            );
        }
    }
}

#[test]
fn dot_products_match_exact_math_and_ggml() {
    ggml_init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let isas = isas();
    println!("instruction sets tested: {isas:?}");
    for n in [32usize, 64, 96, 256, 4096 + 32, 11008] {
        for _ in 0..40 {
            let w = randn(&mut rng, n, 0.05);
            let a = randn(&mut rng, n, 3.0);
            let aq: Vec<le_block_q8_0> = blocks(GgmlType::Q8_0, &a);
            let w4: Vec<le_block_q4_0> = blocks(GgmlType::Q4_0, &w);
            let w8: Vec<le_block_q8_0> = blocks(GgmlType::Q8_0, &w);
            let (e4, m4) = exact_q4_0(&w4, &aq);
            let (e8, m8) = exact_q8_0(&w8, &aq);
            let (mut g4, mut g8) = (0f32, 0f32);
            // SAFETY: n values in both operands, one output, nrc = 1.
            unsafe {
                ggml_vec_dot_q4_0_q8_0(
                    n as i32,
                    &mut g4,
                    0,
                    w4.as_ptr().cast(),
                    0,
                    aq.as_ptr().cast(),
                    0,
                    1,
                );
                ggml_vec_dot_q8_0_q8_0(
                    n as i32,
                    &mut g8,
                    0,
                    w8.as_ptr().cast(),
                    0,
                    aq.as_ptr().cast(),
                    0,
                    1,
                );
            }
            assert!(
                (f64::from(g4) - e4).abs() <= tol(m4, n / 32),
                "ggml own q4_0 dot vs exact: n={n} ggml {g4} exact {e4} mag {m4}"
            );
            for &isa in &isas {
                let d4 = f64::from(kernels::dot_q4_0_q8_0(isa, &w4, &aq));
                let d8 = f64::from(kernels::dot_q8_0_q8_0(isa, &w8, &aq));
                assert!(
                    (d4 - e4).abs() <= tol(m4, n / 32),
                    "{isa:?} q4_0 n={n}: {d4} vs exact {e4}"
                );
                assert!(
                    (d8 - e8).abs() <= tol(m8, n / 32),
                    "{isa:?} q8_0 n={n}: {d8} vs exact {e8}"
                );
                assert!(
                    (d4 - f64::from(g4)).abs() <= 2.0 * tol(m4, n / 32),
                    "{isa:?} q4_0 vs ggml"
                );
                assert!(
                    (d8 - f64::from(g8)).abs() <= 2.0 * tol(m8, n / 32),
                    "{isa:?} q8_0 vs ggml: n={n} ours {d8} ggml {g8} exact {e8} mag {m8}"
                );
            }
        }
    }
}

#[test]
fn f16_and_bf16_dots_match_exact_math() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for bf in [false, true] {
        for n in [1usize, 7, 8, 15, 16, 17, 100, 896, 4096 + 3] {
            for _ in 0..40 {
                let vals = randn(&mut rng, n, 1.0);
                let (w, wf): (Vec<u16>, Vec<f64>) = vals
                    .iter()
                    .map(|&v| {
                        if bf {
                            let b = half::bf16::from_f32(v);
                            (b.to_bits(), f64::from(b.to_f32()))
                        } else {
                            let b = half::f16::from_f32(v);
                            (b.to_bits(), h(b.to_bits()))
                        }
                    })
                    .unzip();
                let a = randn(&mut rng, n, 2.0);
                let terms: Vec<f64> = wf.iter().zip(&a).map(|(x, &y)| x * f64::from(y)).collect();
                let exact: f64 = terms.iter().sum();
                let mag: f64 = terms.iter().map(|t| t.abs()).sum();
                for isa in isas() {
                    let got = f64::from(if bf {
                        kernels::dot_bf16_f32(isa, &w, &a)
                    } else {
                        kernels::dot_f16_f32(isa, &w, &a)
                    });
                    assert!(
                        (got - exact).abs() <= tol(mag, n),
                        "{isa:?} bf16={bf} n={n}: {got} vs {exact}"
                    );
                }
            }
        }
    }
}

/// The exact dot product of two quantized rows (each dequantized with the ggml-exact
/// dequantizer, multiplied and summed in f64) and the sum of the element magnitudes.
fn exact_any(wt: GgmlType, w: &[u8], at: GgmlType, a: &[u8], n: usize) -> (f64, f64) {
    let wf = llava_edge::quant::to_f32(wt, w, n).unwrap();
    let af = llava_edge::quant::to_f32(at, a, n).unwrap();
    let p: Vec<f64> = wf
        .iter()
        .zip(&af)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .collect();
    (p.iter().sum(), p.iter().map(|v| v.abs()).sum())
}

#[test]
fn k_quant_and_q5_0_dots_match_exact_math_and_ggml() {
    ggml_init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    for n in [256usize, 512, 4864, 11008] {
        for _ in 0..30 {
            let w = randn(&mut rng, n, 0.05);
            let a = randn(&mut rng, n, 3.0);
            let mut aq8 = Vec::new();
            quantize(GgmlType::Q8_0, &a, &mut aq8).unwrap();
            let mut aqk = Vec::new();
            quantize(GgmlType::Q8_K, &a, &mut aqk).unwrap();
            // The C activation quantizer gives the ggml-exact bytes.
            let mut c_aqk = vec![llava_edge::ffi::le_block_q8_K::default(); n / 256];
            kernels::quantize_row_q8_K(&a, &mut c_aqk);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&c_aqk),
                &aqk[..],
                "q8_K quantizer n={n}"
            );
            for wt in [
                GgmlType::Q5_0,
                GgmlType::Q2_K,
                GgmlType::Q3_K,
                GgmlType::Q4_K,
                GgmlType::Q5_K,
                GgmlType::Q6_K,
            ] {
                let mut wq = Vec::new();
                quantize(wt, &w, &mut wq).unwrap();
                let (at, aq) = if wt == GgmlType::Q5_0 {
                    (GgmlType::Q8_0, &aq8)
                } else {
                    (GgmlType::Q8_K, &aqk)
                };
                let (exact, mag) = exact_any(wt, &wq, at, aq, n);
                let mut g = 0f32;
                let f = match wt {
                    GgmlType::Q5_0 => ggml_vec_dot_q5_0_q8_0,
                    GgmlType::Q2_K => ggml_vec_dot_q2_K_q8_K,
                    GgmlType::Q3_K => ggml_vec_dot_q3_K_q8_K,
                    GgmlType::Q4_K => ggml_vec_dot_q4_K_q8_K,
                    GgmlType::Q5_K => ggml_vec_dot_q5_K_q8_K,
                    _ => ggml_vec_dot_q6_K_q8_K,
                };
                // SAFETY: n values in both operands, one output, nrc = 1.
                unsafe {
                    f(
                        n as i32,
                        &mut g,
                        0,
                        wq.as_ptr().cast(),
                        0,
                        aq.as_ptr().cast(),
                        0,
                        1,
                    )
                };
                // Dequantized values carry one f32 rounding each (d * scale), so allow a few
                // ulps of the magnitude sum on top of the accumulation.
                let bound = tol(mag, n / 16) * 2.0;
                assert!(
                    (f64::from(g) - exact).abs() <= bound,
                    "ggml {wt} n={n}: {g} vs {exact}"
                );
                for isa in isas() {
                    let got = f64::from(match wt {
                        GgmlType::Q5_0 => kernels::dot_q5_0_q8_0(
                            isa,
                            bytemuck::cast_slice(&wq),
                            bytemuck::cast_slice(aq),
                        ),
                        GgmlType::Q2_K => kernels::dot_q2_K_q8_K(
                            isa,
                            bytemuck::cast_slice(&wq),
                            bytemuck::cast_slice(aq),
                        ),
                        GgmlType::Q3_K => kernels::dot_q3_K_q8_K(
                            isa,
                            bytemuck::cast_slice(&wq),
                            bytemuck::cast_slice(aq),
                        ),
                        GgmlType::Q4_K => kernels::dot_q4_K_q8_K(
                            isa,
                            bytemuck::cast_slice(&wq),
                            bytemuck::cast_slice(aq),
                        ),
                        GgmlType::Q5_K => kernels::dot_q5_K_q8_K(
                            isa,
                            bytemuck::cast_slice(&wq),
                            bytemuck::cast_slice(aq),
                        ),
                        _ => kernels::dot_q6_K_q8_K(
                            isa,
                            bytemuck::cast_slice(&wq),
                            bytemuck::cast_slice(aq),
                        ),
                    });
                    assert!(
                        (got - exact).abs() <= bound,
                        "{isa:?} {wt} n={n}: {got} vs exact {exact}"
                    );
                    assert!(
                        (got - f64::from(g)).abs() <= 2.0 * bound,
                        "{isa:?} {wt} n={n}: {got} vs ggml {g}"
                    );
                }
            }
        }
    }
}
