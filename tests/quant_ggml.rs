//! Bit-exactness with ggml (the `ggml-sys-bleedingedge` build of ggml b2757): for every format
//! we implement, thousands of rows from many distributions are quantized by both, and the
//! bytes must be identical; both dequantizers must give identical floats for the same bytes.

mod common;

use common::ggml_init;
use std::os::raw::c_void;

use llava_edge::dtype::GgmlType;
use llava_edge::quant::{dequantize, quantize};
use rand::{Rng, SeedableRng};

extern "C" {
    fn quantize_row_q4_0_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q4_1_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q5_0_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q5_1_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q8_0_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q8_1_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q2_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q3_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn dequantize_row_q2_K(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q3_K(x: *const c_void, y: *mut f32, k: i64);
    fn quantize_row_q4_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q5_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q6_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q8_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn dequantize_row_q4_K(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q5_K(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q6_K(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q8_K(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q4_0(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q4_1(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q5_0(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q5_1(x: *const c_void, y: *mut f32, k: i64);
    fn dequantize_row_q8_0(x: *const c_void, y: *mut f32, k: i64);
}

type QFn = unsafe extern "C" fn(*const f32, *mut c_void, i64);
type DFn = unsafe extern "C" fn(*const c_void, *mut f32, i64);

fn ggml_quantize(f: QFn, ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
    // SAFETY: `out` is exactly the size of the blocks ggml writes for x.len() values.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast(), x.len() as i64) };
    out
}

fn ggml_dequantize(f: DFn, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    // SAFETY: `bytes` holds the blocks of n values; `out` has room for n.
    unsafe { f(bytes.as_ptr().cast(), out.as_mut_ptr(), n as i64) };
    out
}

/// Rows of `n` values from many distributions, including the awkward ones.
fn rows(n: usize, seed: u64) -> Vec<(String, Vec<f32>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let normal = |rng: &mut rand::rngs::StdRng| -> f32 {
        // Box-Muller.
        let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    for r in 0..400 {
        let scale = 10f32.powi(rng.random_range(-6..4));
        out.push((
            format!("normal*{scale:e} #{r}"),
            (0..n).map(|_| normal(&mut rng) * scale).collect(),
        ));
        out.push((
            format!("uniform #{r}"),
            (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                .collect(),
        ));
        out.push((
            format!("heavy-tailed #{r}"),
            (0..n)
                .map(|_| normal(&mut rng) / rng.random::<f32>().max(1e-3))
                .collect(),
        ));
        let mut spike: Vec<f32> = (0..n).map(|_| normal(&mut rng) * 0.01).collect();
        let at = rng.random_range(0..n);
        spike[at] = if r % 2 == 0 { 50.0 } else { -50.0 };
        out.push((format!("outlier #{r}"), spike));
        out.push((
            format!("positive #{r}"),
            (0..n).map(|_| rng.random::<f32>() * scale).collect(),
        ));
    }
    out.push(("zeros".into(), vec![0.0; n]));
    out.push((
        "tiny".into(),
        (0..n).map(|i| (i as f32 - 7.0) * 1e-30).collect(),
    ));
    out.push((
        "denormal".into(),
        (0..n).map(|i| f32::from_bits(i as u32 * 977 + 1)).collect(),
    ));
    out.push((
        "huge".into(),
        (0..n).map(|i| (i as f32 - 100.0) * 1e3).collect(),
    ));
    out.push(("constant".into(), vec![3.25; n]));
    out.push(("negative constant".into(), vec![-0.7; n]));
    out.push((
        "alternating".into(),
        (0..n)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect(),
    ));
    out.push((
        "ramp".into(),
        (0..n).map(|i| i as f32 / n as f32 - 0.5).collect(),
    ));
    out.push((
        "ties".into(),
        (0..n).map(|i| (i % 17) as f32 * 0.5 - 4.0).collect(),
    ));
    out
}

fn check(ty: GgmlType, q: QFn, d: Option<DFn>) {
    ggml_init();
    let mut checked = 0;
    let sizes: &[usize] = if ty.block_size() == 256 {
        &[256, 512, 4096 + 256]
    } else {
        &[32, 256, 4096 + 96]
    };
    for &n in sizes {
        for (name, x) in rows(n, ty as u64 * 1000 + n as u64) {
            if ty.block_size() == 256 && name == "denormal" {
                // Outside ggml's domain: its K-quant reference asserts (nearest_int overflows)
                // on all-denormal input. Ours must still return finite values, not panic.
                let mut q = Vec::new();
                quantize(ty, &x, &mut q).unwrap();
                let mut y = vec![0f32; n];
                dequantize(ty, &q, &mut y).unwrap();
                assert!(y.iter().all(|v| v.is_finite()), "{ty}: denormal row");
                continue;
            }
            let theirs = ggml_quantize(q, ty, &x);
            let mut ours = Vec::new();
            quantize(ty, &x, &mut ours).unwrap();
            if let Some(i) = ours.iter().zip(&theirs).position(|(a, b)| a != b) {
                let bs = ty.type_size();
                panic!(
                    "{ty} row '{name}' (n={n}): bytes differ from ggml in block {} (byte {i}):\n ours   {:?}\n ggml   {:?}\n values {:?}",
                    i / bs,
                    &ours[i / bs * bs..(i / bs + 1) * bs],
                    &theirs[i / bs * bs..(i / bs + 1) * bs],
                    &x[i / bs * ty.block_size()..(i / bs + 1) * ty.block_size()]
                );
            }
            assert_eq!(ours.len(), theirs.len());
            if let Some(df) = d {
                let want = ggml_dequantize(df, &theirs, n);
                let mut got = vec![0f32; n];
                dequantize(ty, &theirs, &mut got).unwrap();
                let bad = got
                    .iter()
                    .zip(&want)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert!(
                    bad.is_none(),
                    "{ty} row '{name}': dequantized value {bad:?} differs from ggml"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 5000, "{checked} rows");
}

#[test]
fn q4_0_is_bit_exact() {
    check(
        GgmlType::Q4_0,
        quantize_row_q4_0_reference,
        Some(dequantize_row_q4_0),
    );
}

#[test]
fn q4_1_is_bit_exact() {
    check(
        GgmlType::Q4_1,
        quantize_row_q4_1_reference,
        Some(dequantize_row_q4_1),
    );
}

#[test]
fn q5_0_is_bit_exact() {
    check(
        GgmlType::Q5_0,
        quantize_row_q5_0_reference,
        Some(dequantize_row_q5_0),
    );
}

#[test]
fn q5_1_is_bit_exact() {
    check(
        GgmlType::Q5_1,
        quantize_row_q5_1_reference,
        Some(dequantize_row_q5_1),
    );
}

#[test]
fn q8_0_is_bit_exact() {
    check(
        GgmlType::Q8_0,
        quantize_row_q8_0_reference,
        Some(dequantize_row_q8_0),
    );
}

#[test]
fn q8_1_is_bit_exact() {
    check(GgmlType::Q8_1, quantize_row_q8_1_reference, None);
}

#[test]
fn q4_k_is_bit_exact() {
    check(
        GgmlType::Q4_K,
        quantize_row_q4_K_reference,
        Some(dequantize_row_q4_K),
    );
}

#[test]
fn q5_k_is_bit_exact() {
    check(
        GgmlType::Q5_K,
        quantize_row_q5_K_reference,
        Some(dequantize_row_q5_K),
    );
}

#[test]
fn q6_k_is_bit_exact() {
    check(
        GgmlType::Q6_K,
        quantize_row_q6_K_reference,
        Some(dequantize_row_q6_K),
    );
}

#[test]
fn q8_k_is_bit_exact() {
    check(
        GgmlType::Q8_K,
        quantize_row_q8_K_reference,
        Some(dequantize_row_q8_K),
    );
}

#[test]
fn q2_k_is_bit_exact() {
    check(
        GgmlType::Q2_K,
        quantize_row_q2_K_reference,
        Some(dequantize_row_q2_K),
    );
}

#[test]
fn q3_k_is_bit_exact() {
    check(
        GgmlType::Q3_K,
        quantize_row_q3_K_reference,
        Some(dequantize_row_q3_K),
    );
}

/// F16 both ways against ggml's row converters: every one of the 65,536 half bit patterns to
/// f32 (NaNs compared as NaN), and thousands of f32 rows to half, bit for bit.
#[test]
fn f16_is_bit_exact() {
    ggml_init();
    let halves: Vec<u16> = (0..=u16::MAX).collect();
    let mut theirs = vec![0f32; halves.len()];
    // SAFETY: both buffers hold halves.len() values.
    unsafe {
        ggml_sys_bleedingedge::ggml_fp16_to_fp32_row(
            halves.as_ptr(),
            theirs.as_mut_ptr(),
            halves.len() as i64,
        )
    };
    let mut ours = vec![0f32; halves.len()];
    dequantize(GgmlType::F16, bytemuck::cast_slice(&halves), &mut ours).unwrap();
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "half {i:#06x}: {a} vs {b}"
        );
    }
    let mut checked = 0;
    for (name, x) in rows(256, 16) {
        let mut want = vec![0u16; x.len()];
        // SAFETY: both buffers hold x.len() values.
        unsafe {
            ggml_sys_bleedingedge::ggml_fp32_to_fp16_row(
                x.as_ptr(),
                want.as_mut_ptr(),
                x.len() as i64,
            )
        };
        let mut got = Vec::new();
        quantize(GgmlType::F16, &x, &mut got).unwrap();
        assert_eq!(
            bytemuck::cast_slice::<u8, u16>(&got),
            &want[..],
            "row '{name}'"
        );
        checked += 1;
    }
    assert!(checked > 2000);
}
