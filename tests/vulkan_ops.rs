//! Every Vulkan shader against the CPU reference, on random inputs whose shapes are not
//! multiples of the workgroups, for one token and for many. Runs on any Vulkan device (CI:
//! Mesa's lavapipe); where none exists each test returns after one line saying so, unless
//! LLAVA_EDGE_REQUIRE_VULKAN=1 (CI sets it: a missing driver must fail there, not skip).
//!
//! Tolerances are derived, not tuned: u = 2^-24 is the f32 unit roundoff, a sum of m terms
//! carries at most ~m*u of the sum of their magnitudes, and each bound below adds up what the
//! shader's arithmetic and the reference's can each contribute (Vulkan's own precision rules
//! for exp, division and sqrt included).
#![cfg(feature = "vulkan")]

mod common;

use common::bounds::{assert_layer_norm_close, attention_tols, U};
use llava_edge::dtype::GgmlType;
use llava_edge::kernels::KvRef;
use llava_edge::ops;
use llava_edge::ops::rope::{rope_table, rope_with, RopeStyle};
use llava_edge::quant;
use llava_edge::threadpool::ThreadPool;
use llava_edge::vulkan::{
    q8_scratch_bytes, rope_tables, Activation, AttentionShape, Buffer, Mask, Recorder, Vulkan,
    VulkanError, MUL_MAT_Q8_TYPES, MUL_MAT_TYPES,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shared device, or None (after one line saying why) where there is no Vulkan at all.
fn device() -> Option<&'static Vulkan> {
    common::vulkan::shared_device("")
}

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

#[test]
fn device_reports_its_name_and_features() {
    let Some(vk) = device() else { return };
    let info = vk.info();
    eprintln!("Vulkan device: {info}");
    assert!(!info.name.is_empty());
    assert!(info.subgroup_size > 0, "{info}");
    assert!(info.max_storage_buffer_range > 0);
    let all = Vulkan::devices().unwrap();
    assert!(all.iter().any(|d| d.name == info.name), "{all:?}");
    // An index past the list is a typed error.
    assert!(matches!(
        Vulkan::new(Some(all.len())),
        Err(VulkanError::DeviceIndex { .. })
    ));
}

/// One matrix product on the device against the f64 product of the reference dequantizer's
/// weights (the float-activation shader's exact counterpart; src/ops' CPU product quantizes
/// the activations to Q8 first, so it is not).
fn check_mul_mat(vk: &Vulkan, ty: GgmlType, rows: usize, cols: usize, n_tok: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = random(&mut rng, rows * cols, 1.0);
    let x = random(&mut rng, n_tok * cols, 1.0);
    let mut bytes = Vec::new();
    quant::quantize(ty, &w, &mut bytes).unwrap();
    let wd = quant::to_f32(ty, &bytes, rows * cols).unwrap();

    let wb = vk.upload(&bytes, "weights").unwrap();
    let xb = vk.upload_f32(&x, "x").unwrap();
    let yb = vk.buffer((n_tok * rows * 4) as u64, "y").unwrap();
    let mut rec = vk.recorder().unwrap();
    rec.mul_mat(&wb, ty, rows, cols, &xb, n_tok, &yb).unwrap();
    rec.submit().unwrap();
    let y = yb.read_f32().unwrap();

    // Each invocation sums 32-product chunks in order (32 roundings), adds its chunks
    // (cols / 32 / 32 of them, the workgroup being 32 wide), and 5 tree levels join the
    // invocations: every product passes through at most m = 32 + chunks/32 + 5 roundings,
    // plus 2 for a dequantized weight the driver may compute with a fused multiply-add where
    // the reference rounds twice (Q4_1's d*q + m, the K-quants' d1*q - m1).
    let m = 32 + (cols / 32).div_ceil(32) + 5 + 2;
    for t in 0..n_tok {
        for r in 0..rows {
            let (mut want, mut mag) = (0f64, 0f64);
            for k in 0..cols {
                let p = wd[r * cols + k] as f64 * x[t * cols + k] as f64;
                want += p;
                mag += p.abs();
            }
            let got = y[t * rows + r] as f64;
            let tol = 1.01 * m as f64 * U * mag;
            assert!(
                (got - want).abs() <= tol,
                "{ty} {rows}x{cols}, {n_tok} tokens: y[{t}][{r}] = {got}, want {want} (bound {tol:e})"
            );
        }
    }
}

#[test]
fn mul_mat_every_type_one_token_and_many() {
    let Some(vk) = device() else { return };
    for (i, &ty) in MUL_MAT_TYPES.iter().enumerate() {
        // Rows not a multiple of anything; 13 and 45 chunks of 32 (fewer and more than one
        // per invocation), K-quants in 3 and 5 super-blocks; 1 token, a tile and a bit (9),
        // and a longer run (19).
        let cols = if ty.block_size() == 256 {
            [768, 1280]
        } else {
            [416, 1440]
        };
        for (j, &c) in cols.iter().enumerate() {
            for (k, &n) in [1usize, 9, 19].iter().enumerate() {
                check_mul_mat(vk, ty, 67, c, n, (i * 100 + j * 10 + k) as u64);
            }
        }
    }
}

/// The integer product's output and the device's quantized activations.
fn run_mul_mat_q8(
    vk: &Vulkan,
    ty: GgmlType,
    w: &[u8],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
) -> (Vec<f32>, Vec<u8>) {
    let wb = vk.upload(w, "weights").unwrap();
    let xb = vk.upload_f32(x, "x").unwrap();
    let sb = vk.buffer(q8_scratch_bytes(cols, n), "scratch").unwrap();
    let yb = vk.buffer((n * rows * 4) as u64, "y").unwrap();
    let mut rec = vk.recorder().unwrap();
    rec.mul_mat_q8(&wb, ty, rows, cols, &xb, n, &sb, &yb)
        .unwrap();
    rec.submit().unwrap();
    let mut xq = vec![0u8; sb.size() as usize];
    sb.read(0, &mut xq).unwrap();
    (yb.read_f32().unwrap(), xq)
}

/// The largest |m| of a chunk's values a * (q - zero) + m, for chunk c of a row: the block's
/// own min for Q4_1/Q5_1, at most 63 * dmin for the K-quants' 6-bit mins, none otherwise.
fn chunk_min_bound(ty: GgmlType, row: &[u8], c: usize) -> f64 {
    let f16_at = |o: usize| {
        half::f16::from_le_bytes([row[o], row[o + 1]])
            .to_f64()
            .abs()
    };
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => f16_at(c * ty.type_size() + 2),
        GgmlType::Q4_K | GgmlType::Q5_K => 63.0 * f16_at(c / 8 * ty.type_size() + 2),
        _ => 0.0,
    }
}

#[test]
fn mul_mat_q8_every_type_with_and_without_packed_dot() {
    let Some(vk) = device() else { return };
    // The same device with its optional features hidden: the unpacked-integer variants.
    let plain = Vulkan::open(None, false).unwrap();
    eprintln!(
        "packed integer dot product: {}",
        if vk.info().integer_dot_product {
            "used"
        } else {
            "absent (both runs unpacked)"
        }
    );
    for (i, &ty) in MUL_MAT_Q8_TYPES.iter().enumerate() {
        let cols = if ty.block_size() == 256 {
            [768, 1280]
        } else {
            [416, 1440]
        };
        for (j, cols) in cols.into_iter().enumerate() {
            for (k, n) in [1usize, 9, 19].into_iter().enumerate() {
                let rows = 67;
                let mut rng = StdRng::seed_from_u64((200 + i * 100 + j * 10 + k) as u64);
                let w = random(&mut rng, rows * cols, 1.0);
                let x = random(&mut rng, n * cols, 1.0);
                let mut wq = Vec::new();
                quant::quantize(ty, &w, &mut wq).unwrap();
                let wd = quant::to_f32(ty, &wq, rows * cols).unwrap();
                let (y, xq) = run_mul_mat_q8(vk, ty, &wq, &x, rows, cols, n);
                // Integers are exact and the float steps are the same code: bit-identical.
                assert_eq!(
                    run_mul_mat_q8(&plain, ty, &wq, &x, rows, cols, n),
                    (y.clone(), xq.clone()),
                    "{ty}"
                );

                // The device's quantized activations, x^ = dx * qx.
                let blocks = cols / 32;
                let word = |b: usize, i: usize| {
                    u32::from_le_bytes(xq[36 * b + 4 * i..36 * b + 4 * i + 4].try_into().unwrap())
                };
                let mut xh = vec![0f64; n * cols];
                for b in 0..n * blocks {
                    let dx = f32::from_bits(word(b, 0));
                    for v in 0..32 {
                        let q = (word(b, 1 + v / 4) >> (8 * (v % 4))) as u8 as i8;
                        let xv = x[b * 32 + v];
                        assert!(q != -128);
                        // Within half a step (the reciprocal scale may be a few ulp off, so a
                        // value near a rounding boundary may go either way).
                        assert!(
                            (xv - dx * q as f32).abs()
                                <= 0.5 * dx * (1.0 + 1e-6) + 4.0 * U as f32 * xv.abs(),
                            "{xv} as {q} x {dx}"
                        );
                        xh[b * 32 + v] = dx as f64 * q as f64;
                    }
                }
                // The product against sum_k w_k x^_k in f64 (w from the reference
                // dequantizer). Each chunk's integer sums are exact; a * sum, m * sum, their
                // sum and the product with dx round 4 times, the chunk sums add
                // chunks/32 + 5 more (mul_mat's reduction), and the reference's w_k is
                // itself within 2 roundings of a (q - zero) + m: all relative to
                // M_k = |a (q_k - zero)| + |m| <= |w_k| + 2|m| per weight.
                let m = blocks.div_ceil(32) + 5 + 4 + 2;
                let row_bytes = cols / ty.block_size() * ty.type_size();
                for t in 0..n {
                    for r in 0..rows {
                        let row = &wq[r * row_bytes..(r + 1) * row_bytes];
                        let (mut want, mut mag) = (0f64, 0f64);
                        for kk in 0..cols {
                            let (wv, xv) = (wd[r * cols + kk] as f64, xh[t * cols + kk]);
                            want += wv * xv;
                            mag += (wv.abs() + 2.0 * chunk_min_bound(ty, row, kk / 32)) * xv.abs();
                        }
                        let got = y[t * rows + r] as f64;
                        let tol = 1.01 * m as f64 * U * mag;
                        assert!(
                            (got - want).abs() <= tol,
                            "{ty} {cols} cols {n} tokens: y[{t}][{r}] = {got}, want {want} (bound {tol:e})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn mul_mat_rejects_bad_shapes_and_types() {
    let Some(vk) = device() else { return };
    let w = vk.buffer(18 * 4, "w").unwrap();
    let x = vk.buffer(32 * 4, "x").unwrap();
    let y = vk.buffer(4 * 4, "y").unwrap();
    let mut rec = vk.recorder().unwrap();
    // Too few weight bytes for 5 rows.
    let e = rec
        .mul_mat(&w, GgmlType::Q4_0, 5, 32, &x, 1, &y)
        .unwrap_err();
    assert!(e.to_string().contains("weight buffer"), "{e}");
    // A type without a shader.
    let e = rec
        .mul_mat(&w, GgmlType::Q2_K, 1, 256, &x, 1, &y)
        .unwrap_err();
    assert!(matches!(e, VulkanError::Invalid { .. }), "{e}");
    // Columns that are not whole blocks.
    let e = rec
        .mul_mat(&w, GgmlType::Q4_0, 1, 48, &x, 1, &y)
        .unwrap_err();
    assert!(e.to_string().contains("48 columns"), "{e}");
    assert_eq!(rec.dispatches(), 0);
}

#[test]
fn rms_norm_matches_the_cpu() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(7);
    for (width, n_rows) in [(1000usize, 1usize), (1000, 7), (37, 3)] {
        let x = random(&mut rng, width * n_rows, 3.0);
        let w = random(&mut rng, width, 2.0);
        let xb = vk.upload_f32(&x, "x").unwrap();
        let wb = vk.upload_f32(&w, "w").unwrap();
        let mut rec = vk.recorder().unwrap();
        rec.rms_norm(&xb, &wb, width, n_rows, 1e-6).unwrap();
        rec.submit().unwrap();
        let got = xb.read_f32().unwrap();
        let mut want = x.clone();
        ops::norm::rms_norm(&mut want, &w, 1e-6);
        // The sum of squares (all terms positive) is within (width/64 + 6) roundings relative;
        // the scale takes half of that through the square root, plus the mean's division,
        // sqrt and reciprocal (Vulkan: up to 2.5 ulp each) and the two products: 10 ulp. The
        // CPU (f64 statistics) rounds twice.
        let depth = width.div_ceil(64) as f64 + 6.0;
        for i in 0..got.len() {
            let tol = (depth / 2.0 + 12.0) * U * (want[i] as f64).abs();
            assert!(
                ((got[i] - want[i]) as f64).abs() <= tol,
                "width {width}: [{i}] {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn layer_norm_matches_the_cpu() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(8);
    for (width, n_rows) in [(1000usize, 1usize), (1000, 5), (37, 3)] {
        // An offset mean, so the centring's error shows.
        let x: Vec<f32> = random(&mut rng, width * n_rows, 3.0)
            .iter()
            .map(|v| v + 1.5)
            .collect();
        let w = random(&mut rng, width, 2.0);
        let b = random(&mut rng, width, 1.0);
        let (xb, wb, bb) = (
            vk.upload_f32(&x, "x").unwrap(),
            vk.upload_f32(&w, "w").unwrap(),
            vk.upload_f32(&b, "b").unwrap(),
        );
        let mut rec = vk.recorder().unwrap();
        rec.layer_norm(&xb, &wb, &bb, width, n_rows, 1e-5).unwrap();
        rec.submit().unwrap();
        let got = xb.read_f32().unwrap();
        let mut want = x.clone();
        ops::norm::layer_norm(&mut want, &w, &b, 1e-5);
        assert_layer_norm_close(&x, &got, &want, &w, &b, width);
    }
}

#[test]
fn rope_both_layouts_match_the_cpu() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(9);
    let (n_head, head_dim) = (3usize, 64usize);
    for (style, neox) in [(RopeStyle::Normal, false), (RopeStyle::Neox, true)] {
        for (rot_dim, positions) in [
            (64usize, vec![31_999usize]),
            (64, vec![0, 1, 5, 77, 1000, 4095, 31_999]),
            (32, vec![3, 900]), // partial rotation: the rest of each head is left alone
        ] {
            let n_tok = positions.len();
            let x = random(&mut rng, n_tok * n_head * head_dim, 2.0);
            let table = rope_tables(&positions, rot_dim, 1e6);
            let xb = vk.upload_f32(&x, "x").unwrap();
            let tb = vk.upload_f32(&table, "table").unwrap();
            let mut rec = vk.recorder().unwrap();
            rec.rope(&xb, &tb, head_dim, rot_dim, n_head, n_tok, neox)
                .unwrap();
            rec.submit().unwrap();
            let got = xb.read_f32().unwrap();
            let half = rot_dim / 2;
            for (t, &pos) in positions.iter().enumerate() {
                let tab = rope_table(rot_dim, pos, 1e6);
                let span = t * n_head * head_dim..(t + 1) * n_head * head_dim;
                let mut want = x[span.clone()].to_vec();
                rope_with(&mut want, head_dim, &tab, style);
                for h in 0..n_head {
                    for i in 0..head_dim {
                        let at = span.start + h * head_dim + i;
                        let (g, w) = (got[at], want[h * head_dim + i]);
                        if i >= rot_dim {
                            assert_eq!(g, x[at], "unrotated dimension changed");
                            continue;
                        }
                        // Each output is x0*c -+ x1*s: two products and a sum, 2 roundings of
                        // |x0 c| + |x1 s| on each side (a fused form only removes one).
                        let pair = if neox { i % half } else { i / 2 };
                        let (a, b) = if neox {
                            (pair, pair + half)
                        } else {
                            (2 * pair, 2 * pair + 1)
                        };
                        let base = span.start + h * head_dim;
                        let mag = (x[base + a] * tab.cos[pair]).abs() as f64
                            + (x[base + b] * tab.sin[pair]).abs() as f64;
                        assert!(
                            ((g - w) as f64).abs() <= 4.0 * U * mag,
                            "{style:?} rot {rot_dim} pos {pos} head {h} dim {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

/// The sigmoid gate's argument z for each activation, in f64 (for the bounds).
fn gate_arg(act: &str, x: f64) -> f64 {
    match act {
        "silu" => x,
        "quick" => 1.702 * x,
        "tanh" => 1.595_769_121_605_730_8 * (x + 0.044715 * x * x * x),
        // erf's exponent is about -z^2 with z = x / sqrt 2.
        _ => x * x / 2.0 + 2.0,
    }
}

#[test]
fn activations_match_the_cpu() {
    let Some(vk) = device() else { return };
    let pool = ThreadPool::new(1);
    let mut rng = StdRng::seed_from_u64(10);
    let mut x = random(&mut rng, 3001, 8.0);
    x.extend_from_slice(&[0.0, -0.0, 30.0, -30.0, 90.0, -90.0, 1e-3, -1e-3]);
    let up = random(&mut rng, x.len(), 2.0);
    let n = x.len();
    for act in ["silu", "erf", "tanh", "quick"] {
        let mut want = x.clone();
        match act {
            "silu" => ops::activation::silu_mul(&mut want, &up, &pool),
            "erf" => ops::activation::gelu_erf(&mut want, &pool),
            "tanh" => ops::activation::gelu_tanh(&mut want, &pool),
            _ => ops::activation::quick_gelu(&mut want, &pool),
        }
        let xb = vk.upload_f32(&x, "x").unwrap();
        let ub = vk.upload_f32(&up, "up").unwrap();
        let mut rec = vk.recorder().unwrap();
        match act {
            "silu" => rec.silu_mul(&xb, &ub, n).unwrap(),
            "erf" => rec.activation(Activation::GeluErf, &xb, n).unwrap(),
            "tanh" => rec.activation(Activation::GeluTanh, &xb, n).unwrap(),
            _ => rec.activation(Activation::GeluQuick, &xb, n).unwrap(),
        }
        rec.submit().unwrap();
        let got = xb.read_f32().unwrap();
        for i in 0..n {
            // exp(a) is within 3 + 2|a| ulp on Vulkan and ~2 ulp on the CPU, and its argument
            // carries ~|a| ulp of its own rounding on each side (3|a| for the cubic); the
            // sum, division and products add ~8 ulp over both sides. Results that underflow
            // (|x| e^-88) may be flushed to zero by the device: an absolute floor of 1e-36|x|.
            let z = gate_arg(act, x[i] as f64).abs();
            let tol = (12.0 + 8.0 * z) * U * (want[i] as f64).abs() + 1e-36 * (x[i] as f64).abs();
            assert!(
                ((got[i] - want[i]) as f64).abs() <= tol,
                "{act}({}) = {} want {}",
                x[i],
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn add_is_exact() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(11);
    let (x, y) = (random(&mut rng, 4099, 5.0), random(&mut rng, 4099, 5.0));
    let xb = vk.upload_f32(&x, "x").unwrap();
    let yb = vk.upload_f32(&y, "y").unwrap();
    let mut rec = vk.recorder().unwrap();
    rec.add(&xb, &yb, x.len()).unwrap();
    rec.submit().unwrap();
    let mut want = x.clone();
    ops::add_assign(&mut want, &y);
    // Vulkan's f32 addition is correctly rounded, as the CPU's is.
    assert_eq!(xb.read_f32().unwrap(), want);
}

#[test]
fn add_bias_is_exact() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(13);
    let (width, n_rows) = (131usize, 7usize);
    let (x, b) = (
        random(&mut rng, width * n_rows, 5.0),
        random(&mut rng, width, 5.0),
    );
    let xb = vk.upload_f32(&x, "x").unwrap();
    let bb = vk.upload_f32(&b, "bias").unwrap();
    let mut rec = vk.recorder().unwrap();
    rec.add_bias(&xb, &bb, width, n_rows).unwrap();
    rec.submit().unwrap();
    let mut want = x.clone();
    for row in want.chunks_exact_mut(width) {
        ops::add_assign(row, &b);
    }
    assert_eq!(xb.read_f32().unwrap(), want);
}

#[test]
fn bilinear_shrink_and_video_pooling_match_the_cpu() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(14);
    // Video pooling (27 -> ceil(27/2)), OneVision's shrink of a wide grid, an upsampling edge.
    for (h, w, d, oh, ow) in [
        (27usize, 27usize, 5usize, 14usize, 14usize),
        (24, 36, 3, 17, 25),
        (1, 2, 4, 3, 5),
    ] {
        let x = random(&mut rng, h * w * d, 3.0);
        let xb = vk.upload_f32(&x, "grid").unwrap();
        let ob = vk.buffer((oh * ow * d * 4) as u64, "out").unwrap();
        let mut rec = vk.recorder().unwrap();
        rec.bilinear(&xb, h, w, d, &ob, oh, ow).unwrap();
        rec.submit().unwrap();
        let got = ob.read_f32().unwrap();
        let want = llava_edge::vision::anyres::bilinear_grid(&x, h, w, d, oh, ow);
        // Same coordinates (the scales come from the host), so the weights differ at most by
        // a fused multiply-add in s = scale (o + 0.5) - 0.5, that is by u*s; the blend rounds
        // 4 times on each side. Bounded by the four corners' magnitudes (weights <= 1): with
        // s <= max(h, w), (8 + 2 max(h, w)) u of their sum.
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let tol = (8.0 + 2.0 * h.max(w) as f64) * U * 4.0 * amax;
        for i in 0..got.len() {
            assert!(
                ((got[i] - want[i]) as f64).abs() <= tol,
                "{h}x{w} -> {oh}x{ow}: [{i}] {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn cache_append_rounds_to_the_nearest_half() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(15);
    let (width, cap) = (6usize, 11usize);
    let mut before = vec![0u16; cap * width];
    let cache = vk.upload(bytemuck::cast_slice(&before), "cache").unwrap();
    // A prompt of 7 rows, then two decode steps: the other rows must stay as they were.
    for (pos, n) in [(0usize, 7usize), (7, 1), (8, 1)] {
        // Past f16's 65504 too, and a subnormal half.
        let mut x = random(&mut rng, n * width, 70_000.0);
        x[0] = 1e-6;
        let xb = vk.upload_f32(&x, "rows").unwrap();
        let mut rec = vk.recorder().unwrap();
        rec.cache_append(&xb, &cache, pos, width, n).unwrap();
        rec.submit().unwrap();
        let mut got = vec![0u16; cap * width];
        cache.read(0, bytemuck::cast_slice_mut(&mut got)).unwrap();
        let rows = pos * width..(pos + n) * width;
        for i in 0..cap * width {
            if !rows.contains(&i) {
                assert_eq!(got[i], before[i], "pos {pos}: [{i}] changed");
                continue;
            }
            let v = x[i - rows.start];
            // The CPU cache rounds to nearest even; Vulkan leaves this conversion's rounding to
            // the device, so the other half adjacent to v (bits one apart, v between them; at
            // the top, f16's largest or infinity) is the only other answer allowed.
            let want = quant::f16_from_f32(v);
            let (g, w) = (
                half::f16::from_bits(got[i]).to_f32(),
                half::f16::from_bits(want).to_f32(),
            );
            let between = g.min(w) <= v && v <= g.max(w) || g.is_infinite() || w.is_infinite();
            assert!(
                got[i] == want || (got[i].abs_diff(want) == 1 && between),
                "pos {pos}: {v} became {g}, want {w}"
            );
        }
        before = got;
    }
}

#[test]
fn softmax_matches_f64() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(12);
    for (width, n_rows) in [(1usize, 1usize), (151, 1), (1000, 6)] {
        let x = random(&mut rng, width * n_rows, 12.0);
        let xb = vk.upload_f32(&x, "x").unwrap();
        let mut rec = vk.recorder().unwrap();
        rec.softmax(&xb, width, n_rows).unwrap();
        rec.submit().unwrap();
        let got = xb.read_f32().unwrap();
        for r in 0..n_rows {
            let row = &x[r * width..(r + 1) * width];
            let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            // Each e^(x - max) is within (3 + 3|x - max|) ulp (Vulkan's exp bound plus the
            // subtraction's rounding); the sum within the worst of those plus its depth; the
            // final scale 3 ulp.
            let worst = row
                .iter()
                .map(|&v| 3.0 + 3.0 * (v as f64 - m).abs())
                .fold(0.0, f64::max);
            let depth = width.div_ceil(64) as f64 + 6.0;
            for i in 0..width {
                let want = (row[i] as f64 - m).exp() / sum;
                let e = 3.0 + 3.0 * (row[i] as f64 - m).abs();
                let tol = (e + worst + depth + 3.0) * U * want;
                let g = got[r * width + i] as f64;
                assert!(
                    (g - want).abs() <= tol,
                    "width {width} row {r} [{i}]: {g} vs {want}"
                );
            }
        }
    }
}

/// Attention on the device against the CPU's `ops::attention::attend`, row by row.
fn check_attention(vk: &Vulkan, s: AttentionShape, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (d, w, kvw) = (s.head_dim, s.n_head * s.head_dim, s.n_kv_head * s.head_dim);
    let q = random(&mut rng, s.n_rows * w, 1.5);
    let k: Vec<u16> = random(&mut rng, s.n_kv * kvw, 1.5)
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    let v: Vec<u16> = random(&mut rng, s.n_kv * kvw, 2.0)
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    let qb = vk.upload_f32(&q, "q").unwrap();
    let kb = vk.upload(bytemuck::cast_slice(&k), "k").unwrap();
    let vb = vk.upload(bytemuck::cast_slice(&v), "v").unwrap();
    let ob = vk.buffer((s.n_rows * w * 4) as u64, "out").unwrap();
    let mut rec = vk.recorder().unwrap();
    rec.attention(&qb, &kb, &vb, &ob, s).unwrap();
    rec.submit().unwrap();
    let got = ob.read_f32().unwrap();

    let kf: Vec<f64> = k
        .iter()
        .map(|&b| half::f16::from_bits(b).to_f64())
        .collect();
    let vf: Vec<f64> = v
        .iter()
        .map(|&b| half::f16::from_bits(b).to_f64())
        .collect();
    let scale = 1.0 / (d as f64).sqrt();
    for r in 0..s.n_rows {
        let seen = match s.mask {
            Mask::None => s.n_kv,
            Mask::Causal { first } => first + r + 1,
        };
        let mut want = vec![0f32; w];
        ops::attention::attend(
            &q[r * w..(r + 1) * w],
            KvRef::F16(&k),
            KvRef::F16(&v),
            seen,
            s.n_head,
            s.n_kv_head,
            d,
            &mut want,
        );
        for h in 0..s.n_head {
            let g = h / (s.n_head / s.n_kv_head);
            let qh = &q[r * w + h * d..r * w + (h + 1) * d];
            // Scores and their dot products' magnitudes, in f64.
            let (mut sc, mut dmag) = (Vec::new(), Vec::new());
            for j in 0..seen {
                let kj = &kf[j * kvw + g * d..j * kvw + (g + 1) * d];
                sc.push(scale * qh.iter().zip(kj).map(|(&a, b)| a as f64 * b).sum::<f64>());
                dmag.push(
                    scale
                        * qh.iter()
                            .zip(kj)
                            .map(|(&a, b)| (a as f64 * b).abs())
                            .sum::<f64>(),
                );
            }
            let tols = attention_tols(&sc, &dmag, d, |j, i| vf[j * kvw + g * d + i]);
            for (i, &tol) in tols.iter().enumerate() {
                let (gv, wv) = (got[r * w + h * d + i], want[h * d + i]);
                assert!(
                    ((gv - wv) as f64).abs() <= tol,
                    "{s:?} row {r} head {h} dim {i}: {gv} vs {wv} (bound {tol:e})"
                );
            }
        }
    }
}

#[test]
fn attention_causal_and_full_with_grouped_heads() {
    let Some(vk) = device() else { return };
    let mut seed = 20;
    for head_dim in [64usize, 80, 128] {
        // Decode: one row at the end of a 70-key cache (two tiles of keys).
        for s in [
            AttentionShape {
                n_rows: 1,
                n_kv: 70,
                n_head: 6,
                n_kv_head: 2,
                head_dim,
                mask: Mask::Causal { first: 69 },
            },
            // Prefill of 13 rows after 57 cached positions.
            AttentionShape {
                n_rows: 13,
                n_kv: 70,
                n_head: 6,
                n_kv_head: 2,
                head_dim,
                mask: Mask::Causal { first: 57 },
            },
            // A whole prompt from position 0.
            AttentionShape {
                n_rows: 9,
                n_kv: 9,
                n_head: 4,
                n_kv_head: 1,
                head_dim,
                mask: Mask::Causal { first: 0 },
            },
            // Vision: every row sees every key, no grouping.
            AttentionShape {
                n_rows: 37,
                n_kv: 37,
                n_head: 3,
                n_kv_head: 3,
                head_dim,
                mask: Mask::None,
            },
        ] {
            check_attention(vk, s, seed);
            seed += 1;
        }
    }
}

#[test]
fn attention_rejects_bad_shapes() {
    let Some(vk) = device() else { return };
    let b = vk.buffer(1 << 16, "any").unwrap();
    let mut rec = vk.recorder().unwrap();
    let base = AttentionShape {
        n_rows: 1,
        n_kv: 4,
        n_head: 2,
        n_kv_head: 2,
        head_dim: 64,
        mask: Mask::None,
    };
    for bad in [
        AttentionShape {
            head_dim: 258,
            ..base
        },
        AttentionShape {
            head_dim: 63,
            ..base
        },
        AttentionShape {
            n_kv_head: 3,
            ..base
        },
        AttentionShape {
            n_rows: 2,
            mask: Mask::Causal { first: 3 },
            ..base
        },
    ] {
        assert!(
            matches!(
                rec.attention(&b, &b, &b, &b, bad),
                Err(VulkanError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
}

/// Several dispatches in one command buffer: each sees the previous one's output (the
/// recorder's barriers), and the result equals the same ops submitted one at a time.
#[test]
fn one_recorder_chains_dispatches() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(30);
    let (rows, cols, n) = (45usize, 96usize, 5usize);
    let x = random(&mut rng, n * cols, 2.0);
    let g = random(&mut rng, cols, 1.0);
    let w = random(&mut rng, rows * cols, 1.0);
    let mut wq = Vec::new();
    quant::quantize(GgmlType::Q8_0, &w, &mut wq).unwrap();
    let run = |batched: bool| {
        let xb = vk.upload_f32(&x, "x").unwrap();
        let gb = vk.upload_f32(&g, "g").unwrap();
        let wb = vk.upload(&wq, "w").unwrap();
        let yb = vk.buffer((n * rows * 4) as u64, "y").unwrap();
        // Step i of the chain into `r` (a fn, not a closure: the recorder's borrow of the
        // buffers needs one named lifetime).
        fn step<'b>(
            r: &mut Recorder<'b>,
            i: usize,
            [x, g, w, y]: [&'b Buffer; 4],
            shape: (usize, usize, usize),
        ) {
            let (rows, cols, n) = shape;
            match i {
                0 => r.rms_norm(x, g, cols, n, 1e-6).unwrap(),
                1 => r.mul_mat(w, GgmlType::Q8_0, rows, cols, x, n, y).unwrap(),
                _ => r.activation(Activation::GeluQuick, y, n * rows).unwrap(),
            }
        }
        let bufs = [&xb, &gb, &wb, &yb];
        if batched {
            let mut rec = vk.recorder().unwrap();
            (0..3).for_each(|i| step(&mut rec, i, bufs, (rows, cols, n)));
            assert_eq!(rec.dispatches(), 3);
            rec.submit().unwrap();
        } else {
            for i in 0..3 {
                let mut rec = vk.recorder().unwrap();
                step(&mut rec, i, bufs, (rows, cols, n));
                rec.submit().unwrap();
            }
        }
        yb.read_f32().unwrap()
    };
    assert_eq!(run(true), run(false));
}

/// Recorders on several threads at once over one device (each has its own command pool; the
/// queue is shared under a lock): every thread's results are its own.
#[test]
fn recorders_on_several_threads() {
    let Some(vk) = device() else { return };
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(50 + t);
                for _ in 0..10 {
                    let (x, y) = (random(&mut rng, 1000, 3.0), random(&mut rng, 1000, 3.0));
                    let xb = vk.upload_f32(&x, "x").unwrap();
                    let yb = vk.upload_f32(&y, "y").unwrap();
                    let mut rec = vk.recorder().unwrap();
                    rec.add(&xb, &yb, 1000).unwrap();
                    rec.add(&xb, &yb, 1000).unwrap();
                    rec.submit().unwrap();
                    let want: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a + b + b).collect();
                    assert_eq!(xb.read_f32().unwrap(), want);
                }
            });
        }
    });
}

/// Not a benchmark (lavapipe is the CPU emulating a GPU): a sanity figure for the notes.
/// `cargo test --release --features vulkan --test vulkan_ops -- --ignored --nocapture`
#[test]
#[ignore]
fn sanity_timing() {
    let Some(vk) = device() else { return };
    let mut rng = StdRng::seed_from_u64(40);
    for (ty, rows, cols, n) in [
        (GgmlType::Q4_0, 4096usize, 4096usize, 1usize),
        (GgmlType::Q8_0, 4864, 896, 1),
        (GgmlType::Q8_0, 4864, 896, 64),
        (GgmlType::F16, 896, 896, 64),
    ] {
        let w = random(&mut rng, rows * cols, 1.0);
        let mut bytes = Vec::new();
        quant::quantize(ty, &w, &mut bytes).unwrap();
        let wb = vk.upload(&bytes, "w").unwrap();
        let xb = vk
            .upload_f32(&random(&mut rng, n * cols, 1.0), "x")
            .unwrap();
        let yb = vk.buffer((n * rows * 4) as u64, "y").unwrap();
        let reps = 5;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let mut rec = vk.recorder().unwrap();
            rec.mul_mat(&wb, ty, rows, cols, &xb, n, &yb).unwrap();
            rec.submit().unwrap();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        let gflops = 2.0 * (rows * cols * n) as f64 / (ms * 1e-3) / 1e9;
        eprintln!(
            "{}: mul_mat {ty} {rows}x{cols} x {n} tokens: {ms:.2} ms ({gflops:.2} GFLOP/s)",
            vk.info().name
        );
        if matches!(ty, GgmlType::Q4_0 | GgmlType::Q8_0) {
            let sb = vk.buffer(q8_scratch_bytes(cols, n), "scratch").unwrap();
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let mut rec = vk.recorder().unwrap();
                rec.mul_mat_q8(&wb, ty, rows, cols, &xb, n, &sb, &yb)
                    .unwrap();
                rec.submit().unwrap();
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            eprintln!("  mul_mat_q8 (integer dot) of the same: {ms:.2} ms");
        }
    }
}
