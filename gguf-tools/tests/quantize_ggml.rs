//! `gguf-tools quantize` against ggml: every tensor it quantizes equals, byte for byte, what
//! ggml's reference quantizer gives for the same f32 rows and the type llama.cpp would choose;
//! every tensor it copies is unchanged; the metadata is carried over with the new file type.

use std::os::raw::c_void;
use std::path::{Path, PathBuf};
use std::sync::Once;

use gguf_tools::mix::Mix;
use gguf_tools::quantize::{quantize_file, Options};
use half::f16;
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{GgufFile, GgufWriter, TensorSpec, Value};

extern "C" {
    fn quantize_row_q4_0_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q4_1_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q5_0_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q5_1_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q8_0_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q4_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q5_K_reference(x: *const f32, y: *mut c_void, k: i64);
    fn quantize_row_q6_K_reference(x: *const f32, y: *mut c_void, k: i64);
}

fn ggml_quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: ggml_init with no buffer only sets up ggml's global tables.
        unsafe {
            ggml_sys_bleedingedge::ggml_init(ggml_sys_bleedingedge::ggml_init_params {
                mem_size: 1 << 16,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
        }
    });
    let n = x.len();
    let mut out = vec![0u8; ty.bytes_for(n as u64).unwrap() as usize];
    let f = match ty {
        GgmlType::Q4_0 => quantize_row_q4_0_reference,
        GgmlType::Q4_1 => quantize_row_q4_1_reference,
        GgmlType::Q5_0 => quantize_row_q5_0_reference,
        GgmlType::Q5_1 => quantize_row_q5_1_reference,
        GgmlType::Q8_0 => quantize_row_q8_0_reference,
        GgmlType::Q4_K => quantize_row_q4_K_reference,
        GgmlType::Q5_K => quantize_row_q5_K_reference,
        GgmlType::Q6_K => quantize_row_q6_K_reference,
        GgmlType::F16 => {
            return x
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect();
        }
        other => panic!("no ggml reference wired for {other}"),
    };
    // SAFETY: `out` holds exactly the blocks ggml writes for n values; n is a block multiple.
    unsafe { f(x.as_ptr(), out.as_mut_ptr().cast(), n as i64) };
    out
}

struct Lcg(u64);
impl Lcg {
    fn normal(&mut self) -> f32 {
        // Sum of uniforms: close enough to normal for weights, and deterministic.
        (0..4)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .sum()
    }
}

/// A small F16 model with llama.cpp's tensor names: `hidden` wide, `n_layer` blocks.
fn write_f16_model(path: &Path, arch: &str, n_layer: usize, hidden: u64, ff: u64, tied: bool) {
    let mut specs = vec![TensorSpec::new(
        "token_embd.weight",
        &[hidden, 64],
        GgmlType::F16,
    )];
    for i in 0..n_layer {
        let b = format!("blk.{i}");
        specs.push(TensorSpec::new(
            format!("{b}.attn_norm.weight"),
            &[hidden],
            GgmlType::F32,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.attn_q.weight"),
            &[hidden, hidden],
            GgmlType::F16,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.attn_q.bias"),
            &[hidden],
            GgmlType::F32,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.attn_k.weight"),
            &[hidden, hidden / 2],
            GgmlType::F16,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.attn_v.weight"),
            &[hidden, hidden / 2],
            GgmlType::F16,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.attn_output.weight"),
            &[hidden, hidden],
            GgmlType::F16,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.ffn_norm.weight"),
            &[hidden],
            GgmlType::F32,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.ffn_gate.weight"),
            &[hidden, ff],
            GgmlType::F16,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.ffn_up.weight"),
            &[hidden, ff],
            GgmlType::F16,
        ));
        specs.push(TensorSpec::new(
            format!("{b}.ffn_down.weight"),
            &[ff, hidden],
            GgmlType::F16,
        ));
    }
    specs.push(TensorSpec::new(
        "output_norm.weight",
        &[hidden],
        GgmlType::F32,
    ));
    if !tied {
        specs.push(TensorSpec::new(
            "output.weight",
            &[hidden, 64],
            GgmlType::F16,
        ));
    }
    let md = vec![
        ("general.architecture".to_string(), Value::string(arch)),
        (format!("{arch}.block_count"), Value::U32(n_layer as u32)),
        ("general.file_type".to_string(), Value::U32(1)),
    ];
    let mut w = GgufWriter::create(path, &md, &specs).unwrap();
    let mut rng = Lcg(7);
    for s in &specs {
        let n: u64 = s.dims.iter().product();
        // Outlier-heavy rows now and then, as real weights have.
        let vals: Vec<f32> = (0..n)
            .map(|i| rng.normal() * if i % 97 == 0 { 8.0 } else { 0.05 })
            .collect();
        let bytes: Vec<u8> = match s.ty {
            GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => vals
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        w.write_tensor(&s.name, &bytes).unwrap();
    }
    w.finish().unwrap();
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gguf-tools-q-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn check(mix: Mix, input: &Path, expect: &[(&str, GgmlType)]) {
    let out = tmp(&format!(
        "{}-{}.gguf",
        input.file_stem().unwrap().to_string_lossy(),
        mix
    ));
    let opts = Options {
        mix,
        threads: 2,
        allow_requantize: false,
        progress: false,
    };
    quantize_file(input, &out, &opts).unwrap();
    let src = GgufFile::open(input).unwrap();
    let dst = GgufFile::open(&out).unwrap();
    assert_eq!(
        dst.get_u64("general.file_type").unwrap(),
        u64::from(mix.file_type())
    );
    assert_eq!(dst.get_u64("general.quantization_version").unwrap(), 2);
    assert_eq!(
        dst.get_str("general.architecture").unwrap(),
        src.get_str("general.architecture").unwrap()
    );
    assert_eq!(dst.tensors().len(), src.tensors().len());
    let mut quantized = 0;
    for (s, d) in src.tensors().iter().zip(dst.tensors()) {
        assert_eq!((&s.name, &s.dims), (&d.name, &d.dims));
        let sv = src.view(s);
        let dv = dst.view(d);
        if d.ty == s.ty {
            assert_eq!(sv.data, dv.data, "{mix}: copied tensor {} changed", s.name);
            continue;
        }
        let f32s: Vec<f32> = sv.as_f16().unwrap().iter().map(|h| h.to_f32()).collect();
        let want = ggml_quantize(d.ty, &f32s);
        let first_diff = want.iter().zip(dv.data).position(|(a, b)| a != b);
        assert!(
            want.len() == dv.data.len() && first_diff.is_none(),
            "{mix}: tensor {} as {}: differs from ggml at byte {first_diff:?} of {}",
            s.name,
            d.ty,
            want.len()
        );
        quantized += 1;
    }
    assert!(quantized > 0);
    for (name, ty) in expect {
        assert_eq!(dst.tensor_info(name).unwrap().ty, *ty, "{mix}: {name}");
    }
    std::fs::remove_file(&out).unwrap();
}

#[test]
fn quantized_files_equal_ggml_reference_bytes() {
    use GgmlType::*;
    // A LLaMA-like model whose rows are multiples of 256: K-quants everywhere they apply.
    let llama = tmp("llama-f16.gguf");
    write_f16_model(&llama, "llama", 8, 512, 768, false);
    check(
        Mix::Q4_K_M,
        &llama,
        &[
            ("token_embd.weight", Q4_K),
            ("output.weight", Q6_K),
            ("blk.0.attn_v.weight", Q6_K),
            ("blk.1.attn_v.weight", Q4_K),
            ("blk.3.ffn_down.weight", Q6_K),
            ("blk.4.ffn_down.weight", Q4_K),
            ("blk.0.attn_norm.weight", F32),
            ("blk.0.attn_q.bias", F32),
        ],
    );
    check(
        Mix::Q5_K_M,
        &llama,
        &[("blk.1.attn_q.weight", Q5_K), ("blk.7.attn_v.weight", Q6_K)],
    );
    check(
        Mix::Q4_0,
        &llama,
        &[("token_embd.weight", Q4_0), ("output.weight", Q6_K)],
    );
    check(Mix::Q8_0, &llama, &[("output.weight", Q8_0)]);
    check(Mix::Q4_1, &llama, &[("blk.2.ffn_up.weight", Q4_1)]);
    check(Mix::Q5_1, &llama, &[("blk.2.ffn_up.weight", Q5_1)]);
    // A Qwen2-0.5B-like model: hidden 288 is not a multiple of 256 (896 in the real one),
    // embeddings tied: llama.cpp's fallbacks apply.
    let qwen = tmp("qwen-f16.gguf");
    write_f16_model(&qwen, "qwen2", 4, 288, 512, true);
    check(
        Mix::Q4_K_M,
        &qwen,
        &[
            ("token_embd.weight", Q8_0),
            ("blk.0.attn_q.weight", Q5_0),
            ("blk.3.attn_v.weight", Q8_0),
            ("blk.0.ffn_down.weight", Q4_K),
            ("blk.2.ffn_down.weight", Q6_K),
        ],
    );
    check(Mix::Q5_K_M, &qwen, &[("blk.0.attn_q.weight", Q5_1)]);
    let _ = std::fs::remove_dir_all(llama.parent().unwrap());
}

#[test]
fn quantized_input_needs_allow_requantize() {
    let f = tmp("req-f16.gguf");
    write_f16_model(&f, "llama", 1, 256, 256, false);
    let q = tmp("req-q8.gguf");
    let opts = Options {
        mix: Mix::Q8_0,
        threads: 1,
        allow_requantize: false,
        progress: false,
    };
    quantize_file(&f, &q, &opts).unwrap();
    let again = tmp("req-q4.gguf");
    let err = quantize_file(
        &q,
        &again,
        &Options {
            mix: Mix::Q4_0,
            ..opts.clone()
        },
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("--allow-requantize"), "{err}");
    assert!(!again.exists());
    quantize_file(
        &q,
        &again,
        &Options {
            mix: Mix::Q4_0,
            allow_requantize: true,
            ..opts
        },
    )
    .unwrap();
    assert_eq!(
        GgufFile::open(&again)
            .unwrap()
            .tensor_info("blk.0.ffn_up.weight")
            .unwrap()
            .ty,
        GgmlType::Q4_0
    );
}
