//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod bounds;
pub mod fixtures;
pub mod hf_text;
pub mod hf_vision;
pub mod npy;
pub mod safetensors;
#[cfg(feature = "vulkan")]
pub mod vulkan;

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

/// `src` copied to `dst` with metadata key `key` set (added at the end if absent) or, for
/// None, removed; tensors as they are.
pub fn with_key(
    src: &std::path::Path,
    dst: &std::path::Path,
    key: &str,
    value: Option<llava_edge::gguf::Value>,
) {
    use llava_edge::gguf::{GgufFile, GgufWriter, TensorSpec};
    let f = GgufFile::open(src).unwrap();
    let mut meta: Vec<_> = f
        .metadata()
        .iter()
        .filter(|(k, _)| k != key)
        .cloned()
        .collect();
    meta.extend(value.map(|v| (key.to_string(), v)));
    let specs: Vec<TensorSpec> = f
        .tensors()
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &t.dims, t.ty))
        .collect();
    let mut w = GgufWriter::create(dst, &meta, &specs).unwrap();
    for t in f.tensors() {
        w.write_tensor(&t.name, f.view(t).data).unwrap();
    }
    w.finish().unwrap();
}

/// The tiny LLaVA-1.5 fixture converted to an F32 text model and mmproj once per test
/// process, under the target's temporary folder (copies left by finished processes removed).
pub fn converted_llava15(tag: &str) -> &'static (PathBuf, PathBuf) {
    static MODEL: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let prefix = format!("{tag}-llava15-");
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(&prefix) {
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (t, v) = (dir.join("llava15.gguf"), dir.join("llava15-mmproj.gguf"));
        gguf_tools::convert::convert(
            &npy::fixtures_dir().join("llava15/hf"),
            &t,
            &v,
            gguf_tools::convert::OutType::F32,
            false,
        )
        .unwrap();
        (t, v)
    })
}
