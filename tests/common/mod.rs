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
