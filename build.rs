//! Generates the Rust view of the kernel header (block layouts, kernel signatures) with bindgen,
//! so the layouts are declared once in C and shared.

use std::env;
use std::path::PathBuf;

fn main() {
    let header = "kernels/include/llava_kernels.h";
    println!("cargo:rerun-if-changed={header}");

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
