//! Feeds arbitrary bytes to the GGUF reader and, when they parse, touches every metadata value
//! and tensor view, so any out-of-bounds access or panic on a hostile file is found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llava_edge::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") {
        for (k, v) in f.metadata() {
            let _ = (k.len(), v.to_string(), f.get(k));
        }
        for t in f.tensors() {
            let view = f.view(t);
            assert_eq!(view.data.len() as u64, t.size);
            let _ = (view.as_f32(), view.as_f16(), t.n_rows(), t.row_len());
        }
    }
});
