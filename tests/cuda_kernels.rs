//! The CUDA kernels against the CPU kernels (feature `cuda`). NVRTC compiles them wherever its
//! library can be loaded (CI installs it from PyPI); the GPU comparisons run only where a GPU
//! and driver are present and otherwise skip with one line saying why.
#![cfg(feature = "cuda")]

use std::ffi::c_void;

use llava_edge::cuda::{self, Cuda};
use llava_edge::dtype::GgmlType;
use llava_edge::ffi::le_block_q8_0;
use llava_edge::kernels::{self, Gate, KvRef, Visible};
use llava_edge::quant::quantize;
use rand::{Rng, SeedableRng};

fn gpu() -> Option<Cuda> {
    match Cuda::open(0) {
        Ok(g) => {
            println!("GPU: {} (compute {}.{})", g.name, g.arch.0, g.arch.1);
            Some(g)
        }
        Err(e) => {
            println!("skipping the GPU comparisons: {e}");
            None
        }
    }
}

fn values(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Pointers to each kernel argument, as cuLaunchKernel takes them.
macro_rules! args {
    ($($a:expr),*) => { &mut [$(&mut $a as *mut _ as *mut c_void),*] };
}

#[test]
fn nvrtc_compiles_the_kernels_where_it_is_installed() {
    match cuda::compile("compute_75") {
        Ok(ptx) => {
            for k in [
                "le_matvec_q4_0",
                "le_gemm_f16",
                "le_attention",
                "le_bilinear",
            ] {
                assert!(
                    ptx.contains(&format!(".entry {k}")),
                    "{k} missing from the PTX"
                );
            }
            println!("NVRTC: {} bytes of PTX for compute_75", ptx.len());
        }
        Err(e @ cuda::CudaError::Library { .. }) => println!("skipping the NVRTC compile: {e}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn quantized_matvecs_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (rows, cols) = (77usize, 1024usize);
    let x = values(&mut rng, cols);
    let mut xq = vec![le_block_q8_0::default(); cols / 32];
    kernels::quantize_row_q8_0(&x, &mut xq);
    // The GPU quantizer writes the same bytes.
    let (dx, dq) = (g.upload(&x).unwrap(), g.alloc(xq.len() * 34).unwrap());
    let (mut px, mut pq, mut nb) = (dx.ptr(), dq.ptr(), (cols / 32) as i32);
    unsafe {
        g.launch(
            g.function("le_quantize_q8_0").unwrap(),
            ((nb as u32).div_ceil(4), 1),
            128,
            0,
            args!(px, pq, nb),
        )
    }
    .unwrap();
    let got: Vec<u8> = dq.download().unwrap();
    assert_eq!(got, bytemuck::cast_slice::<_, u8>(&xq), "q8_0 activations");
    for (ty, name) in [
        (GgmlType::Q4_0, "le_matvec_q4_0"),
        (GgmlType::Q8_0, "le_matvec_q8_0"),
        (GgmlType::Q5_0, "le_matvec_q5_0"),
        (GgmlType::Q4_K, "le_matvec_q4_K_f32"),
        (GgmlType::Q6_K, "le_matvec_q6_K_f32"),
        (GgmlType::F16, "le_matvec_f16"),
    ] {
        let mut w = Vec::new();
        for _ in 0..rows {
            quantize(ty, &values(&mut rng, cols), &mut w).unwrap();
        }
        let m = llava_edge::ops::Matrix {
            name,
            ty,
            rows,
            cols,
            data: &w,
            layout: llava_edge::gguf::Layout::Rows,
            bf16_products: false,
        };
        let pool = llava_edge::threadpool::ThreadPool::new(1);
        let mut want = vec![0f32; rows];
        m.matmul(&x, 1, &mut want, &pool);
        let (dw, dy) = (g.upload(&w).unwrap(), g.alloc(rows * 4).unwrap());
        let (mut pw, mut py, mut r) = (dw.ptr(), dy.ptr(), rows as i32);
        let f32_acts = matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::F16);
        let mut pa = if f32_acts { dx.ptr() } else { dq.ptr() };
        let mut n = match ty {
            GgmlType::Q4_K | GgmlType::Q6_K => (cols / 256) as i32,
            GgmlType::F16 => cols as i32,
            _ => nb,
        };
        unsafe {
            g.launch(
                g.function(name).unwrap(),
                ((r as u32).div_ceil(4), 1),
                128,
                0,
                args!(pw, pa, py, r, n),
            )
        }
        .unwrap();
        let got: Vec<f32> = dy.download().unwrap();
        // The CPU multiplies K-quants with Q8_K activations, the GPU with f32: allow the
        // activation quantization's error there, only summation order elsewhere.
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let tol = if f32_acts && ty != GgmlType::F16 {
            2e-2
        } else {
            1e-4
        } * scale;
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= tol, "{ty} row {i}: gpu {a}, cpu {b}");
        }
    }
}

#[test]
fn gemm_norm_activation_attention_and_shrink_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    // F16 GEMM.
    let (rows, cols, tokens) = (70usize, 96usize, 37usize);
    let w: Vec<u16> = values(&mut rng, rows * cols)
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    let x = values(&mut rng, cols * tokens);
    let mut want = vec![0f32; rows * tokens];
    let mut pack = vec![0f32; kernels::F16_PACK_PER_K * cols];
    unsafe {
        kernels::gemm_f16(
            kernels::FloatIsa::SCALAR,
            cols,
            &w,
            rows,
            &x,
            tokens,
            want.as_mut_ptr(),
            rows,
            &mut pack,
        )
    };
    let (dw, dx, dy) = (
        g.upload(&w).unwrap(),
        g.upload(&x).unwrap(),
        g.alloc(rows * tokens * 4).unwrap(),
    );
    let (mut a, mut b, mut c, mut r, mut k, mut t) = (
        dw.ptr(),
        dx.ptr(),
        dy.ptr(),
        rows as i32,
        cols as i32,
        tokens as i32,
    );
    unsafe {
        g.launch(
            g.function("le_gemm_f16").unwrap(),
            ((r as u32).div_ceil(32), (t as u32).div_ceil(32)),
            256,
            0,
            args!(a, b, c, r, k, t),
        )
    }
    .unwrap();
    let got: Vec<f32> = dy.download().unwrap();
    for (i, (p, q)) in got.iter().zip(&want).enumerate() {
        assert!(
            (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
            "gemm {i}: {p} vs {q}"
        );
    }
    // RMSNorm.
    let (n, eps) = (896usize, 1e-6f32);
    let mut xs = values(&mut rng, 3 * n);
    let wn = values(&mut rng, n);
    let (dx, dw) = (g.upload(&xs).unwrap(), g.upload(&wn).unwrap());
    let (mut px, mut pw, mut nn, mut e) = (dx.ptr(), dw.ptr(), n as i32, eps);
    unsafe {
        g.launch(
            g.function("le_rms_norm").unwrap(),
            (3, 1),
            256,
            0,
            args!(px, pw, nn, e),
        )
    }
    .unwrap();
    for row in xs.chunks_exact_mut(n) {
        llava_edge::ops::norm::rms_norm(row, &wn, eps);
    }
    let got: Vec<f32> = dx.download().unwrap();
    for (p, q) in got.iter().zip(&xs) {
        assert!(
            (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
            "rms_norm: {p} vs {q}"
        );
    }
    // GELU-tanh.
    let mut xs = values(&mut rng, 5000)
        .iter()
        .map(|v| v * 8.0)
        .collect::<Vec<f32>>();
    let dx = g.upload(&xs).unwrap();
    let (mut px, mut nul, mut nn, mut kind) = (dx.ptr(), 0u64, xs.len() as i32, 2i32);
    unsafe {
        g.launch(
            g.function("le_gated").unwrap(),
            ((nn as u32).div_ceil(256), 1),
            256,
            0,
            args!(px, nul, nn, kind),
        )
    }
    .unwrap();
    kernels::activation_with(kernels::Isa::SCALAR, Gate::GeluTanh, &mut xs, None);
    let got: Vec<f32> = dx.download().unwrap();
    for (p, q) in got.iter().zip(&xs) {
        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "gelu: {p} vs {q}");
    }
    // Causal attention over an F16 cache, GQA 4:2.
    let (nh, nkv, hd, nq, past) = (4usize, 2usize, 64usize, 9usize, 5usize);
    let n_pos = past + nq;
    let q = values(&mut rng, nq * nh * hd);
    let kv: Vec<u16> = values(&mut rng, n_pos * nkv * hd)
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits())
        .collect();
    let mut want = vec![0f32; nq * nh * hd];
    llava_edge::ops::attention::attend_rows(
        &llava_edge::threadpool::ThreadPool::new(1),
        &q,
        KvRef::F16(&kv),
        KvRef::F16(&kv),
        nq,
        n_pos,
        Visible::Causal { first: past },
        nh,
        nkv,
        hd,
        &mut want,
    );
    let (dq, dk, dout) = (
        g.upload(&q).unwrap(),
        g.upload(&kv).unwrap(),
        g.alloc(want.len() * 4).unwrap(),
    );
    let (mut pq, mut pk, mut pv, mut f16, mut po) =
        (dq.ptr(), dk.ptr(), dk.ptr(), 1i32, dout.ptr());
    let (mut h, mut hk, mut d, mut stride) = (nh as i32, nkv as i32, hd as i32, nkv * hd);
    let (mut nk, mut causal, mut first, mut scale) =
        (n_pos as i32, 1i32, past as i32, 1.0 / (hd as f32).sqrt());
    unsafe {
        g.launch(
            g.function("le_attention").unwrap(),
            (nq as u32, nh as u32),
            128,
            (n_pos * 4) as u32,
            args!(pq, pk, pv, f16, po, h, hk, d, stride, nk, causal, first, scale),
        )
    }
    .unwrap();
    let got: Vec<f32> = dout.download().unwrap();
    for (p, q) in got.iter().zip(&want) {
        assert!((p - q).abs() <= 1e-5, "attention: {p} vs {q}");
    }
    // OneVision's bilinear shrink: PyTorch's arithmetic on both sides, so equal.
    let (h0, w0, dd, oh, ow) = (27usize, 27usize, 8usize, 19usize, 13usize);
    let grid = values(&mut rng, h0 * w0 * dd);
    let want = llava_edge::vision::anyres::bilinear_grid(&grid, h0, w0, dd, oh, ow);
    let (dg, dout) = (g.upload(&grid).unwrap(), g.alloc(want.len() * 4).unwrap());
    let (mut pg, mut po) = (dg.ptr(), dout.ptr());
    let (mut a, mut b, mut c, mut e, mut f) =
        (h0 as i32, w0 as i32, dd as i32, oh as i32, ow as i32);
    unsafe {
        g.launch(
            g.function("le_bilinear").unwrap(),
            ((want.len() as u32).div_ceil(256), 1),
            256,
            0,
            args!(pg, po, a, b, c, e, f),
        )
    }
    .unwrap();
    let got: Vec<f32> = dout.download().unwrap();
    for (p, q) in got.iter().zip(&want) {
        assert!(
            (p - q).abs() <= 1e-6 * (1.0 + q.abs()),
            "bilinear: {p} vs {q}"
        );
    }
}
