//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod hf_text;
pub mod hf_vision;
pub mod npy;
pub mod safetensors;

use std::path::PathBuf;

/// The `shared/` folder that sits beside the repository (vocabularies, reference facts).
/// `LLAVA_EDGE_SHARED` overrides it.
pub fn shared_dir() -> PathBuf {
    if let Ok(p) = std::env::var("LLAVA_EDGE_SHARED") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.join("vocab").is_dir(),
        "{} not found: the tests need ../shared beside the repository (or LLAVA_EDGE_SHARED)",
        p.display()
    );
    p
}

/// A fresh temporary directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "llava-edge-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small deterministic PRNG (xorshift64*), so tests need no extra crate for mutations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Largest difference relative to the largest reference magnitude.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

/// A JSON file's contents.
pub fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A two-element JSON array as a pair of sizes.
pub fn pair(v: &serde_json::Value) -> (usize, usize) {
    (
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

/// Initialises ggml once (fills the fp16 tables its reference code reads scales through).
pub fn ggml_init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // SAFETY: with no buffer this only fills ggml's global tables.
        unsafe {
            ggml_sys_bleedingedge::ggml_init(ggml_sys_bleedingedge::ggml_init_params {
                mem_size: 1 << 16,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
        }
    });
}
