//! The prefill GEMM: panels decode to the weights ggml's dequantizer gives, the scalar GEMM
//! equals f64 math over those panels, and every SIMD variant this CPU has equals the scalar one,
//! for every weight type with a panel form and awkward row, token and length counts.

use llava_edge::dtype::GgmlType;
use llava_edge::ffi::{le_block_q8_0x, le_block_x8, le_codes};
use llava_edge::kernels::{self, GemmIsa};
use llava_edge::quant::{dequantize, quantize};
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 9] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

struct Case {
    ty: GgmlType,
    n: usize,
    nrows: usize,
    nt: usize,
    weights: Vec<u8>,
    panels: Vec<le_block_x8>,
    act: Vec<le_block_q8_0x>,
}

fn random_values(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let v: f32 = rng.random_range(-1.0..1.0);
            // Occasional outliers, as real activations and weights have.
            if i % 37 == 5 {
                v * 12.0
            } else {
                v
            }
        })
        .collect()
}

fn make_case(
    rng: &mut rand::rngs::StdRng,
    ty: GgmlType,
    n: usize,
    nrows: usize,
    nt: usize,
) -> Case {
    let mut weights = Vec::new();
    for _ in 0..nrows {
        let mut row = Vec::new();
        quantize(ty, &random_values(rng, n), &mut row).unwrap();
        weights.extend_from_slice(&row);
    }
    let row_bytes = weights.len() / nrows;
    let nb = n / 32;
    let mut panels = vec![le_block_x8::default(); nrows.div_ceil(8) * nb];
    for (p, chunk) in weights.chunks(8 * row_bytes).enumerate() {
        let rows = chunk.len() / row_bytes;
        assert!(kernels::pack_panel(
            ty,
            chunk,
            rows,
            n,
            &mut panels[p * nb..(p + 1) * nb]
        ));
    }
    let mut act = vec![le_block_q8_0x::default(); nt * nb];
    for t in 0..nt {
        let x = random_values(rng, n);
        kernels::quantize_row_q8_0_summed(&x, &mut act[t * nb..(t + 1) * nb]);
    }
    Case {
        ty,
        n,
        nrows,
        nt,
        weights,
        panels,
        act,
    }
}

/// Row r's value i and the panel block holding it.
fn panel_value(c: &Case, r: usize, i: usize) -> (f64, f64) {
    let nb = c.n / 32;
    let blk = &c.panels[(r / 8) * nb + i / 32];
    let (j, rr) = (i % 32, r % 8);
    let q = blk.q[32 * (j / 4) + 4 * rr + j % 4] as f64;
    let s = blk.s[j / 16][rr] as f64;
    (
        s * q + blk.o[rr] as f64,
        (s * q).abs() + (blk.o[rr] as f64).abs(),
    )
}

#[test]
fn panels_hold_the_dequantized_weights() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for ty in TYPES {
        let n = if ty.block_size() == 256 { 512 } else { 96 };
        let c = make_case(&mut rng, ty, n, 11, 1);
        let row_bytes = c.weights.len() / c.nrows;
        for r in 0..c.nrows {
            let mut want = vec![0f32; n];
            dequantize(
                ty,
                &c.weights[r * row_bytes..(r + 1) * row_bytes],
                &mut want,
            )
            .unwrap();
            for (i, &w) in want.iter().enumerate() {
                let (got, mag) = panel_value(&c, r, i);
                // ggml rounds d * q + m once or twice in f32; the panel value is exact.
                let tol = 2.0 * f32::EPSILON as f64 * mag;
                assert!(
                    (got - w as f64).abs() <= tol,
                    "{ty}: row {r} value {i}: panel {got}, ggml {w}"
                );
            }
        }
        // Rows past the end of a partial panel are zero, so they contribute nothing.
        let last = &c.panels[c.panels.len() - 1];
        assert!(last.s[0][3..].iter().all(|&s| s == 0.0) && last.o[3..].iter().all(|&o| o == 0.0));
    }
}

/// out[t][r] in f64 from the panels and activations, and the sum of the magnitudes of its terms.
fn reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
    let nb = c.n / 32;
    let mut want = vec![0f64; c.nt * c.nrows];
    let mut mag = vec![0f64; c.nt * c.nrows];
    for t in 0..c.nt {
        for r in 0..c.nrows {
            let (mut s, mut m) = (0f64, 0f64);
            for i in 0..c.n {
                let a = &c.act[t * nb + i / 32];
                let x = a.d as f64 * a.qs[i % 32] as f64;
                let (w, wmag) = panel_value(c, r, i);
                s += w * x;
                m += wmag * x.abs();
            }
            want[t * c.nrows + r] = s;
            mag[t * c.nrows + r] = m;
        }
    }
    (want, mag)
}

fn run(c: &Case, gemm: GemmIsa, ldo: usize) -> Vec<f32> {
    let codes: le_codes = kernels::panel_codes(c.ty).unwrap();
    let sentinel = f32::from_bits(0x7fc0_1234);
    let mut out = vec![sentinel; c.nt * ldo];
    // SAFETY: `out` covers t * ldo + r for every t < nt, r < nrows (ldo >= nrows); this thread
    // owns it; `gemm` comes from GemmIsa::available().
    unsafe {
        kernels::gemm_panels(
            gemm,
            codes,
            c.n,
            &c.panels,
            c.nrows,
            &c.act,
            c.nt,
            out.as_mut_ptr(),
            ldo,
        )
    };
    // Nothing is written outside the nrows columns of each token's row.
    for t in 0..c.nt {
        for r in c.nrows..ldo {
            assert_eq!(
                out[t * ldo + r].to_bits(),
                sentinel.to_bits(),
                "{gemm:?} wrote past row {r}"
            );
        }
    }
    (0..c.nt)
        .flat_map(|t| out[t * ldo..t * ldo + c.nrows].to_vec())
        .collect()
}

#[test]
fn every_gemm_variant_matches_f64_math() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let variants = GemmIsa::available();
    println!("GEMM variants on this CPU: {variants:?}");
    let mut checked = 0;
    for ty in TYPES {
        let lengths: &[usize] = if ty.block_size() == 256 {
            &[256, 768]
        } else {
            &[32, 160, 896]
        };
        for &n in lengths {
            for (nrows, nt) in [(1, 1), (5, 2), (8, 4), (13, 5), (24, 9), (17, 3), (40, 16)] {
                let c = make_case(&mut rng, ty, n, nrows, nt);
                let (want, mag) = reference(&c);
                // Exact integer block sums; each block adds two or three rounded f32 terms.
                let bound =
                    |i: usize| (3 * (n / 32) + 4) as f64 * f32::EPSILON as f64 * mag[i] + 1e-30;
                for &g in &variants {
                    let got = run(&c, g, nrows + 3);
                    for (i, (&o, &w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (o as f64 - w).abs() <= bound(i),
                            "{ty} n={n} rows={nrows} tokens={nt} {g:?}: out[{i}] = {o}, f64 {w} (bound {})",
                            bound(i)
                        );
                    }
                    checked += got.len();
                }
            }
        }
    }
    println!("{checked} outputs checked");
}

#[test]
fn gemm_agrees_with_the_row_kernels_on_q4_0_and_q8_0() {
    // The row kernels are held to ggml's; same activation codes, so only rounding order differs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let isa = kernels::Cpu::get().isa();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let c = make_case(&mut rng, ty, 896, 9, 3);
        let (_, mag) = reference(&c);
        let got = run(&c, kernels::Cpu::get().gemm(), c.nrows);
        let row_bytes = c.weights.len() / c.nrows;
        for t in 0..c.nt {
            let nb = c.n / 32;
            let act: Vec<llava_edge::ffi::le_block_q8_0> = c.act[t * nb..(t + 1) * nb]
                .iter()
                .map(|a| llava_edge::ffi::le_block_q8_0 {
                    d: half::f16::from_f32(a.d).to_bits(),
                    qs: a.qs,
                })
                .collect();
            for r in 0..c.nrows {
                let w = &c.weights[r * row_bytes..(r + 1) * row_bytes];
                let want = match ty {
                    GgmlType::Q4_0 => kernels::dot_q4_0_q8_0(isa, bytemuck::cast_slice(w), &act),
                    _ => kernels::dot_q8_0_q8_0(isa, bytemuck::cast_slice(w), &act),
                };
                let i = t * c.nrows + r;
                let bound = 120.0 * f32::EPSILON as f64 * mag[i];
                assert!(
                    ((got[i] - want) as f64).abs() <= bound,
                    "{ty}: token {t} row {r}: gemm {}, row kernel {want}",
                    got[i]
                );
            }
        }
    }
}

#[test]
fn types_without_panels_are_refused() {
    assert!(kernels::panel_codes(GgmlType::F16).is_none());
    assert!(kernels::panel_codes(GgmlType::Q2_K).is_none());
    let mut out = vec![le_block_x8::default(); 8];
    assert!(!kernels::pack_panel(
        GgmlType::Q2_K,
        &[0u8; 84],
        1,
        256,
        &mut out
    ));
}

#[test]
fn simd_activation_quantizers_write_the_scalar_bytes() {
    use llava_edge::ffi::le_block_q8_0;
    use llava_edge::kernels::Isa;
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let isa = kernels::Cpu::detected().isa();
    let mut blocks = 0;
    for rep in 0..400 {
        let n = 32 * (1 + rep % 9);
        let mut x = random_values(&mut rng, n);
        // Values landing exactly on halves of the code grid, where roundf and round-to-even
        // disagree; and all-zero, huge and tiny blocks.
        match rep % 5 {
            0 => {
                for (i, v) in x.iter_mut().enumerate() {
                    *v = (i as f32 - 16.0) + 0.5;
                }
                x[0] = 127.0;
            }
            1 => x[..32].fill(0.0),
            2 => x.iter_mut().for_each(|v| *v *= 1e30),
            3 => x.iter_mut().for_each(|v| *v *= 1e-39),
            _ => {}
        }
        let nb = n / 32;
        let (mut a, mut b) = (
            vec![le_block_q8_0::default(); nb],
            vec![le_block_q8_0::default(); nb],
        );
        kernels::quantize_row_q8_0_with(Isa::SCALAR, &x, &mut a);
        kernels::quantize_row_q8_0_with(isa, &x, &mut b);
        assert_eq!(
            bytemuck::cast_slice::<_, u8>(&a),
            bytemuck::cast_slice::<_, u8>(&b),
            "rep {rep}"
        );
        let (mut c, mut d) = (
            vec![le_block_q8_0x::default(); nb],
            vec![le_block_q8_0x::default(); nb],
        );
        kernels::quantize_row_q8_0_summed_with(Isa::SCALAR, &x, &mut c);
        kernels::quantize_row_q8_0_summed_with(isa, &x, &mut d);
        for (p, q) in c.iter().zip(&d) {
            assert_eq!(
                (p.d.to_bits(), p.dsum.to_bits(), p.qs),
                (q.d.to_bits(), q.dsum.to_bits(), q.qs)
            );
        }
        blocks += nb;
    }
    println!("{blocks} blocks byte-identical ({isa:?} vs scalar)");
}

/// Checks a GEMM's `out` (`nt` rows of `ldo`, the first `nrows` of each written) against the
/// f64 sums of `product(r, t, i)` over `k`, within the error of `k + 2` f32 additions, and that
/// the columns past `nrows` still hold the NaN sentinel. Returns the outputs checked.
fn check_products(
    label: &str,
    out: &[f32],
    (k, nrows, nt, ldo): (usize, usize, usize, usize),
    product: impl Fn(usize, usize, usize) -> f64,
) -> usize {
    for t in 0..nt {
        for r in 0..nrows {
            let (mut want, mut mag) = (0f64, 0f64);
            for i in 0..k {
                let p = product(r, t, i);
                want += p;
                mag += p.abs();
            }
            let got = out[t * ldo + r] as f64;
            let bound = (k + 2) as f64 * f32::EPSILON as f64 * mag + 1e-30;
            assert!(
                (got - want).abs() <= bound,
                "{label} k={k} t={t} r={r}: {got} vs {want}"
            );
        }
        for r in nrows..ldo {
            assert_eq!(
                out[t * ldo + r].to_bits(),
                GEMM_SENTINEL.to_bits(),
                "{label} wrote past the rows"
            );
        }
    }
    nt * nrows
}

/// What the GEMM tests fill their outputs with, to see what was written.
const GEMM_SENTINEL: f32 = f32::from_bits(0x7fc0_4321);

#[test]
fn f16_gemm_matches_f64_math() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let isas = kernels::FloatIsa::available();
    let mut checked = 0;
    for (k, nrows, nt) in [
        (1, 1, 1),
        (7, 3, 2),
        (64, 16, 6),
        (72, 17, 7),
        (1152, 40, 13),
        (33, 5, 12),
        (64, 33, 17),
        (96, 64, 9),
        (37, 32, 9),
    ] {
        let w: Vec<u16> = random_values(&mut rng, k * nrows)
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let x = random_values(&mut rng, k * nt);
        let mut simd_out: Option<(kernels::FloatIsa, Vec<f32>)> = None;
        for &isa in &isas {
            let ldo = nrows + 2;
            let mut out = vec![GEMM_SENTINEL; nt * ldo];
            let mut pack = vec![0f32; kernels::F16_PACK_PER_K * k];
            // SAFETY: `out` covers t * ldo + r for t < nt, r < nrows; this thread owns it.
            unsafe {
                kernels::gemm_f16(isa, k, &w, nrows, &x, nt, out.as_mut_ptr(), ldo, &mut pack)
            };
            checked += check_products(&format!("{isa:?}"), &out, (k, nrows, nt, ldo), |r, t, i| {
                half::f16::from_bits(w[r * k + i]).to_f64() * x[t * k + i] as f64
            });
            // The SIMD builds fuse each multiply-add in the same order: the same bits.
            if isa != kernels::FloatIsa::SCALAR {
                match &simd_out {
                    None => simd_out = Some((isa, out)),
                    Some((first, want)) => {
                        for (i, (a, b)) in out.iter().zip(want).enumerate() {
                            assert_eq!(
                                a.to_bits(),
                                b.to_bits(),
                                "{isa:?} and {first:?} differ at {i} (k {k}, {nrows} rows, {nt} tokens)"
                            );
                        }
                    }
                }
            }
        }
    }
    println!("{checked} F16 GEMM outputs checked over {isas:?}");
}

#[test]
fn bf16_gemm_matches_f64_math_on_rounded_inputs() {
    use kernels::Bf16Isa;
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let bf = |v: f32| half::bf16::from_f32(v).to_f64();
    let mut checked = 0;
    for (k, nrows, nt) in [
        (1, 1, 1),
        (7, 3, 2),
        (64, 32, 12),
        (72, 33, 13),
        (1152, 40, 25),
        (33, 5, 11),
        (4096, 64, 12),
    ] {
        let w: Vec<u16> = random_values(&mut rng, k * nrows)
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let x = random_values(&mut rng, k * nt);
        for isa in Bf16Isa::available() {
            let ldo = nrows + 2;
            let mut out = vec![GEMM_SENTINEL; nt * ldo];
            let mut xp = vec![0u32; kernels::bf16_packed_tokens_len(k, nt)];
            kernels::bf16_pack_tokens(isa, k, &x, nt, &mut xp);
            let mut pack = vec![0u32; kernels::BF16_PANEL_ROWS * k.div_ceil(2)];
            // SAFETY: `out` covers t * ldo + r for t < nt, r < nrows; this thread owns it.
            unsafe {
                kernels::gemm_bf16(isa, k, &w, nrows, &xp, nt, out.as_mut_ptr(), ldo, &mut pack)
            };
            // The exact products of the bf16-rounded inputs: only the f32 sums may differ.
            checked += check_products(&format!("{isa:?}"), &out, (k, nrows, nt, ldo), |r, t, i| {
                bf(half::f16::from_bits(w[r * k + i]).to_f32()) * bf(x[t * k + i])
            });
        }
    }
    println!("{checked} bf16 GEMM outputs checked");
}

#[test]
fn bf16_token_packing_rounds_like_the_instruction() {
    use kernels::Bf16Isa;
    // Ties to even both ways, values that round up into the next binade, signed zeros,
    // subnormals (flushed to signed zero), infinities and NaN.
    let specials = [
        1.0f32,
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::from_bits(0x3f80_7fff),
        f32::from_bits(0x3fff_ffff),
        -0.0,
        0.0,
        f32::from_bits(0x0000_0001),
        f32::from_bits(0x8040_0000),
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        1e-38,
        -3.5e20,
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let (k, nt) = (37, 14);
    let mut x = random_values(&mut rng, k * nt);
    for (i, v) in specials.iter().enumerate() {
        x[i * 7 % (k * nt)] = *v;
    }
    let mut want = vec![0u32; kernels::bf16_packed_tokens_len(k, nt)];
    kernels::bf16_pack_tokens(Bf16Isa::SCALAR, k, &x, nt, &mut want);
    // The scalar packing against half's rounding (which keeps subnormals and NaN payloads).
    for t in 0..nt {
        for i in 0..k {
            let v = x[t * k + i];
            let d = want[(t / 12 * k.div_ceil(2) + i / 2) * 12 + t % 12];
            let got = if i % 2 == 0 {
                d as u16
            } else {
                (d >> 16) as u16
            };
            if v.is_nan() {
                assert!(half::bf16::from_bits(got).is_nan());
            } else if v != 0.0 && v.abs() < f32::MIN_POSITIVE {
                assert_eq!(got, if v < 0.0 { 0x8000 } else { 0 }, "subnormal {v:e}");
            } else {
                assert_eq!(got, half::bf16::from_f32(v).to_bits(), "{v:e}");
            }
        }
    }
    for isa in Bf16Isa::available() {
        let mut got = vec![0u32; want.len()];
        kernels::bf16_pack_tokens(isa, k, &x, nt, &mut got);
        assert_eq!(got, want, "{isa:?} packing differs from the scalar one");
    }
}

#[test]
fn q4_0_decode_dot_with_summed_activations_matches_f64() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    for n in [32usize, 64, 96, 896, 4864] {
        for _ in 0..20 {
            let mut w = Vec::new();
            quantize(GgmlType::Q4_0, &random_values(&mut rng, n), &mut w).unwrap();
            let mut wf = vec![0f32; n];
            dequantize(GgmlType::Q4_0, &w, &mut wf).unwrap();
            let mut a = vec![le_block_q8_0x::default(); n / 32];
            kernels::quantize_row_q8_0_summed(&random_values(&mut rng, n), &mut a);
            let (mut want, mut mag) = (0f64, 0f64);
            for (i, &wv) in wf.iter().enumerate() {
                let x = a[i / 32].d as f64 * a[i / 32].qs[i % 32] as f64;
                want += wv as f64 * x;
                // The kernel sums d * q * x and, apart, 8 * d * x: count both magnitudes.
                let dw = half::f16::from_le_bytes([w[i / 32 * 18], w[i / 32 * 18 + 1]]).to_f64();
                mag += (wv as f64 * x).abs() + 8.0 * dw.abs() * x.abs();
            }
            for g in GemmIsa::available() {
                let got = kernels::dot_q4_0_q8_0_summed(g, bytemuck::cast_slice(&w), &a) as f64;
                let bound = (n / 32 + 4) as f64 * 3.0 * f32::EPSILON as f64 * mag + 1e-30;
                assert!(
                    (got - want).abs() <= bound,
                    "{g:?} n={n}: {got} vs {want} (bound {bound})"
                );
            }
        }
    }
}

/// Interleaved legacy types (the decode layout): the rows come back unchanged, their panels are
/// the plain rows' panels byte for byte, and every decode variant equals f64 math over them.
#[test]
fn interleaved_decode_matches_f64_math() {
    for (ty, seed) in [
        (GgmlType::Q4_0, 17),
        (GgmlType::Q4_1, 18),
        (GgmlType::Q5_0, 19),
        (GgmlType::Q5_1, 20),
        (GgmlType::Q8_0, 21),
        (GgmlType::Q4_K, 22),
        (GgmlType::Q6_K, 23),
        (GgmlType::Q5_K, 24),
    ] {
        interleaved_decode(ty, seed);
    }
}

fn interleaved_decode(ty: GgmlType, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let variants = GemmIsa::available();
    let mut checked = 0;
    // K blocks are 256 values: one, three, nineteen (Qwen2-0.5B's ffn_down) and 43 (Llama-7B's
    // ffn_down, whose two tokens' 16-value sums outgrow the Q6_K kernels' stack buffer).
    let lengths: &[usize] = if ty.block_size() == 256 {
        &[256, 768, 4864, 11008]
    } else {
        &[32, 160, 896]
    };
    for &n in lengths {
        for (nrows, nt) in [(8, 1), (24, 1), (16, 3), (40, 2)] {
            let c = make_case(&mut rng, ty, n, nrows, nt);
            let (nb, row_bytes) = (n / 32, c.weights.len() / nrows);
            let gb = nb * llava_edge::quant::interleave::interleaved8_block_bytes(ty).unwrap();
            let mut groups = vec![0u8; nrows / 8 * gb];
            for (g, rows8) in c.weights.chunks_exact(8 * row_bytes).enumerate() {
                let group = &mut groups[g * gb..(g + 1) * gb];
                llava_edge::quant::interleave::interleave8(ty, rows8, n, group);
                let mut back = vec![0u8; 8 * row_bytes];
                llava_edge::quant::interleave::deinterleave8(ty, group, n, &mut back);
                assert_eq!(back, rows8, "{ty} n={n}: round trip of group {g}");
                let mut panel = vec![le_block_x8::default(); nb];
                kernels::pack_panel_from_interleaved8(ty, group, n, &mut panel);
                let want = &c.panels[g * nb..(g + 1) * nb];
                assert_eq!(
                    bytemuck::cast_slice::<_, u8>(&panel),
                    bytemuck::cast_slice::<_, u8>(want),
                    "{ty} n={n}: panel of group {g}"
                );
            }
            let (want, mag) = reference(&c);
            let bound = |i: usize| (3 * nb + 4) as f64 * f32::EPSILON as f64 * mag[i] + 1e-30;
            let ldo = nrows + 5;
            for &g in &variants {
                let sentinel = f32::from_bits(0x7fc0_1234);
                let mut out = vec![sentinel; nt * ldo];
                // SAFETY: `out` covers t * ldo + r for t < nt, r < nrows; `g` is available.
                unsafe {
                    kernels::gemv_interleaved8(g, ty, n, &groups, &c.act, nt, out.as_mut_ptr(), ldo)
                };
                for t in 0..nt {
                    for r in 0..ldo {
                        let o = out[t * ldo + r];
                        if r >= nrows {
                            assert_eq!(o.to_bits(), sentinel.to_bits(), "{g:?} wrote past row {r}");
                            continue;
                        }
                        let (w, b) = (want[t * nrows + r], bound(t * nrows + r));
                        assert!(
                            (o as f64 - w).abs() <= b,
                            "{ty} n={n} rows={nrows} t={t} {g:?}: row {r} = {o}, f64 {w} (bound {b})"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    println!("{checked} interleaved {ty} decode outputs checked on {variants:?}");
}
