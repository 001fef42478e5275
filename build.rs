//! Compiles the C kernels (one static library per instruction set, each with its own flags)
//! and generates the Rust view of their header with bindgen, so block layouts and kernel
//! signatures are declared once, in C.

use std::env;
use std::path::PathBuf;

fn compile(name: &str, files: &[&str], flags: &[&str]) {
    let mut b = cc::Build::new();
    for file in files {
        println!("cargo:rerun-if-changed={file}");
        b.file(file);
    }
    b.include("kernels/include")
        .opt_level(3)
        // The scalar kernels are the reference: no contraction of a*b+c into FMA there.
        .flag_if_supported("-ffp-contract=off")
        .warnings(true);
    for f in flags {
        b.flag(f);
    }
    b.compile(name);
}

/// The Vulkan shaders' SPIR-V into `$OUT_DIR/spv`, which the crate embeds: compiled from the
/// GLSL by `glslc` when it is on the PATH (or named by `$GLSLC`), so an edited shader is what
/// runs; otherwise, or where glslc refuses a variant, the committed `kernels/vulkan/spv` file
/// (a Pi or a Jetson builds without glslc). CI checks the committed files match the sources.
fn spirv() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("spv");
    std::fs::create_dir_all(&out).expect("creating OUT_DIR/spv");
    println!("cargo:rerun-if-changed=kernels/vulkan");
    println!("cargo:rerun-if-env-changed=GLSLC");
    let glslc = env::var("GLSLC").unwrap_or_else(|_| "glslc".into());
    let have_glslc = std::process::Command::new(&glslc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let list = std::fs::read_to_string("kernels/vulkan/variants.txt")
        .expect("reading kernels/vulkan/variants.txt");
    for line in list
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut words = line.split_whitespace();
        let (Some(name), Some(src)) = (words.next(), words.next()) else {
            panic!("kernels/vulkan/variants.txt: '{line}' is not 'name source defines...'");
        };
        let dst = out.join(format!("{name}.spv"));
        let compiled = have_glslc
            && std::process::Command::new(&glslc)
                .current_dir("kernels/vulkan")
                .args(["--target-env=vulkan1.1", "-O", "-I", "."])
                .args(words.map(|d| format!("-D{d}")))
                .args(["-fshader-stage=compute", src, "-o"])
                .arg(&dst)
                .status()
                .is_ok_and(|s| s.success());
        if !compiled {
            if have_glslc {
                println!(
                    "cargo:warning={glslc} could not compile the {name} variant of \
                     kernels/vulkan/{src}; using the committed SPIR-V"
                );
            }
            let committed = format!("kernels/vulkan/spv/{name}.spv");
            std::fs::copy(&committed, &dst)
                .unwrap_or_else(|e| panic!("copying {committed} into OUT_DIR: {e}"));
        }
    }
}

fn main() {
    if env::var_os("CARGO_FEATURE_VULKAN").is_some() {
        spirv();
    }
    let header = "kernels/include/llava_kernels.h";
    println!("cargo:rerun-if-changed={header}");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    println!("cargo:rerun-if-changed=kernels/cpu/half.h");
    println!("cargo:rerun-if-changed=kernels/cpu/neon_kdots.h");
    println!("cargo:rerun-if-changed=kernels/cpu/vexp.h");
    println!("cargo:rerun-if-changed=kernels/cpu/gemm_tiles.h");
    println!("cargo:rerun-if-changed=kernels/cpu/hsum_x86.h");
    println!("cargo:rerun-if-changed=kernels/cpu/prefetch_x86.h");
    println!("cargo:rerun-if-changed=kernels/cpu/transpose_x86.h");
    println!("cargo:rerun-if-changed=kernels/cpu/q3k_scales.h");
    println!("cargo:rerun-if-changed=kernels/cpu/x8_kinds.h");
    compile(
        "le_scalar",
        &[
            "kernels/cpu/scalar.c",
            "kernels/cpu/gemm_pack.c",
            "kernels/cpu/attention.c",
            "kernels/cpu/gemm_f16.c",
            "kernels/cpu/gemm_bf16.c",
            "kernels/cpu/activation.c",
            "kernels/cpu/norm_rope.c",
        ],
        &[],
    );
    match arch.as_str() {
        "x86_64" => {
            let avx2 = ["-mavx2", "-mfma", "-mf16c"];
            compile(
                "le_avx2",
                &[
                    "kernels/cpu/avx2.c",
                    "kernels/cpu/gemm_x86.c",
                    "kernels/cpu/gemv_x86.c",
                    "kernels/cpu/attention.c",
                    "kernels/cpu/gemm_f16.c",
                    "kernels/cpu/activation.c",
                    "kernels/cpu/norm_rope.c",
                ],
                &[
                    &avx2[..],
                    &[
                        "-DLE_ATTN_AVX2",
                        "-DLE_F16_AVX2",
                        "-DLE_ACT_AVX2",
                        "-DLE_ROW_AVX2",
                    ],
                ]
                .concat(),
            );
            // The F16 GEMM on 512-bit registers (Intel cores with two 512-bit FMA ports run it
            // at twice the AVX2 tile's rate; Zen 4 at the same rate with half the instructions).
            compile(
                "le_f16_avx512",
                &["kernels/cpu/gemm_f16.c"],
                &["-mavx512f", "-mfma", "-mf16c", "-DLE_F16_AVX512"],
            );
            // Attention's row tiles, eight rows on 512-bit registers (the AVX2 source again).
            compile(
                "le_attn_avx512",
                &["kernels/cpu/attention.c"],
                &[
                    &avx2[..],
                    &["-mavx512f", "-DLE_ATTN_AVX2", "-DLE_ATTN_AVX512"],
                ]
                .concat(),
            );
            // The same GEMM source again, with vpdpbusd (AVX512-VNNI on 256-bit registers).
            let vnni = [
                &avx2[..],
                &[
                    "-mavx512f",
                    "-mavx512bw",
                    "-mavx512vl",
                    "-mavx512vnni",
                    "-DLE_VNNI",
                ],
            ]
            .concat();
            compile(
                "le_vnni",
                &["kernels/cpu/gemm_x86.c", "kernels/cpu/gemv_x86.c"],
                &vnni,
            );
            // bfloat16 pairs (vdpbf16ps), for the opt-in bf16 vision products.
            compile(
                "le_bf16",
                &["kernels/cpu/gemm_bf16.c"],
                &[
                    "-mavx512f",
                    "-mavx512bw",
                    "-mavx512vl",
                    "-mavx512bf16",
                    "-mf16c",
                    "-DLE_BF16_AVX512",
                ],
            );
        }
        "aarch64" => {
            compile(
                "le_neon",
                &[
                    "kernels/cpu/neon.c",
                    "kernels/cpu/attention.c",
                    "kernels/cpu/gemm_f16.c",
                    "kernels/cpu/activation.c",
                    "kernels/cpu/norm_rope.c",
                ],
                &[
                    "-DLE_ATTN_NEON",
                    "-DLE_F16_NEON",
                    "-DLE_ACT_NEON",
                    "-DLE_ROW_NEON",
                ],
            );
            // The SDOT GEMM's source again, for NEON without SDOT.
            compile(
                "le_gemm_neon",
                &["kernels/cpu/gemm_dotprod.c"],
                &["-DLE_GEMM_PLAIN_NEON"],
            );
            // bfloat16 pairs (BFDOT), for the opt-in bf16 vision products.
            compile(
                "le_bf16_neon",
                &["kernels/cpu/gemm_bf16.c"],
                &["-march=armv8.6-a+bf16", "-DLE_BF16_NEON"],
            );
            compile(
                "le_dotprod",
                &["kernels/cpu/neon_dotprod.c", "kernels/cpu/gemm_dotprod.c"],
                &["-march=armv8.2-a+dotprod"],
            );
        }
        _ => {}
    }

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindgen::Builder::default()
        .header(header)
        .allowlist_type("le_.*")
        .allowlist_var("LE_.*")
        .allowlist_function("le_.*")
        .derive_default(true)
        .derive_copy(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed on {header}: {e}; is libclang-dev installed?"))
        .write_to_file(out.join("kernels_bindings.rs"))
        .expect("writing kernels_bindings.rs into OUT_DIR");
}
