//! Mutation runs of `gguf-tools convert` against malformed checkpoints: every value of a
//! fixture's config.json set to 0, 1, a huge number, -1, a string, null, or removed, and the
//! safetensors header's offsets, shapes, dtypes and length corrupted. Each run must end in a
//! conversion or a typed error, never a panic.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::npy::fixtures_dir;
use common::{Rng, TempDir};
use gguf_tools::convert::{convert, OutType};
use serde_json::{json, Value};

#[derive(Default, Debug)]
struct Tally {
    converted: usize,
    refused: usize,
    panics: Vec<String>,
}

impl Tally {
    fn run(&mut self, hf: &Path, out: &Path, what: &str) {
        let (t, v) = (out.join("t.gguf"), out.join("v.gguf"));
        match catch_unwind(AssertUnwindSafe(|| {
            convert(hf, &t, &v, OutType::F32, false)
        })) {
            Ok(Ok(_)) => self.converted += 1,
            Ok(Err(e)) => {
                // A typed error names what is wrong.
                assert!(!e.to_string().is_empty(), "{what}");
                self.refused += 1
            }
            Err(_) => self.panics.push(what.to_string()),
        }
    }
}

fn copy_checkpoint(case: &str, dir: &Path) -> PathBuf {
    let src = fixtures_dir().join(case).join("hf");
    std::fs::create_dir_all(dir).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir.to_path_buf()
}

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Paths to every value below `v` (objects and arrays included), depth first.
fn paths(v: &Value, at: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, bool)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                at.push(Step::Key(k.clone()));
                out.push((at.clone(), x.is_number()));
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(Step::Index(i));
                out.push((at.clone(), x.is_number()));
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// Replaces (Some) or removes (None) the value at `path`.
fn edit(root: &mut Value, path: &[Step], new: Option<Value>) {
    let (last, parent) = path.split_last().unwrap();
    let mut v = root;
    for s in parent {
        v = match s {
            Step::Key(k) => &mut v[k.as_str()],
            Step::Index(i) => &mut v[*i],
        };
    }
    match (last, new) {
        (Step::Key(k), Some(n)) => v[k.as_str()] = n,
        (Step::Key(k), None) => {
            v.as_object_mut().unwrap().remove(k);
        }
        (Step::Index(i), Some(n)) => v[*i] = n,
        (Step::Index(i), None) => {
            v.as_array_mut().unwrap().remove(*i);
        }
    }
}

#[test]
fn config_json_mutations_never_panic() {
    let tmp = TempDir::new("fuzz-config");
    let mut tally = Tally::default();
    for case in ["llava15", "llava_next_mistral", "llava_ov"] {
        let hf = copy_checkpoint(case, &tmp.path(case));
        let original: Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap())
                .unwrap();
        let mut all = Vec::new();
        paths(&original, &mut Vec::new(), &mut all);
        for (path, numeric) in &all {
            let mut values: Vec<Option<Value>> = vec![None];
            if *numeric {
                values.extend(
                    [
                        json!(0),
                        json!(1),
                        json!(1_000_000_000_000_000_000u64),
                        json!(u64::MAX),
                        json!(-1),
                        json!(2.5),
                        json!("x"),
                        Value::Null,
                    ]
                    .map(Some),
                );
            }
            for new in values {
                let mut cfg = original.clone();
                edit(&mut cfg, path, new.clone());
                std::fs::write(hf.join("config.json"), cfg.to_string()).unwrap();
                tally.run(&hf, &tmp.0, &format!("{case}: {path:?} = {new:?}"));
            }
        }
    }
    println!(
        "config.json mutations: {} converted, {} refused with an error, {} panics",
        tally.converted,
        tally.refused,
        tally.panics.len()
    );
    assert!(tally.panics.is_empty(), "panics: {:#?}", tally.panics);
    assert!(tally.refused > 300, "{tally:?}");
}

/// A safetensors file from a header and the data bytes after it.
fn write_safetensors(path: &Path, header: &Value, data: &[u8]) {
    let h = header.to_string().into_bytes();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn safetensors_header_mutations_never_panic() {
    let tmp = TempDir::new("fuzz-safetensors");
    let hf = copy_checkpoint("llava15", &tmp.path("hf"));
    let st = hf.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = bytes[8 + n..].to_vec();
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let mut tally = Tally::default();
    let huge = json!(1u64 << 62);
    for (i, name) in names.iter().enumerate() {
        let t = &header[name];
        let (a, b) = (
            t["data_offsets"][0].as_u64().unwrap(),
            t["data_offsets"][1].as_u64().unwrap(),
        );
        let shape = t["shape"].as_array().unwrap().clone();
        let other = &header[&names[(i + 1) % names.len()]]["data_offsets"];
        let mut edits: Vec<(&str, Value)> = vec![
            ("data_offsets", json!([0, 0])),
            ("data_offsets", json!([b, a])),
            ("data_offsets", json!([a, b + 1])),
            ("data_offsets", json!([a + 1, b + 1])),
            ("data_offsets", json!([a, huge])),
            ("data_offsets", json!([-1, b])),
            ("data_offsets", json!(["x", b])),
            ("data_offsets", json!([a])),
            ("data_offsets", Value::Null),
            ("data_offsets", other.clone()),
            ("shape", json!([])),
            ("shape", json!([1u64 << 62, 1u64 << 62])),
            ("shape", json!("x")),
            ("dtype", json!("F64")),
            ("dtype", json!("I8")),
            ("dtype", json!("F16")),
            ("dtype", json!(3)),
            ("dtype", Value::Null),
        ];
        for d in 0..shape.len() {
            for v in [json!(0), json!(1), huge.clone(), json!(-1), json!("x")] {
                let mut s = shape.clone();
                s[d] = v;
                edits.push(("shape", Value::Array(s)));
            }
        }
        let mut longer = shape.clone();
        longer.push(json!(1));
        edits.push(("shape", Value::Array(longer)));
        let mut shorter = shape.clone();
        shorter.pop();
        edits.push(("shape", Value::Array(shorter)));
        for (key, v) in edits {
            let mut h = header.clone();
            h[name.as_str()][key] = v.clone();
            write_safetensors(&st, &h, &data);
            tally.run(&hf, &tmp.0, &format!("{name}.{key} = {v}"));
        }
        let mut h = header.clone();
        h.as_object_mut().unwrap().remove(name);
        write_safetensors(&st, &h, &data);
        tally.run(&hf, &tmp.0, &format!("{name} removed"));
    }
    // The length field, truncations and random byte flips in the header.
    for len in [
        0u64,
        1,
        7,
        n as u64 - 1,
        n as u64 + 1,
        bytes.len() as u64,
        u64::MAX,
    ] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&len.to_le_bytes());
        std::fs::write(&st, b).unwrap();
        tally.run(&hf, &tmp.0, &format!("header length {len}"));
    }
    for cut in [
        0,
        4,
        8,
        8 + n / 2,
        8 + n,
        8 + n + data.len() / 2,
        bytes.len() - 1,
    ] {
        std::fs::write(&st, &bytes[..cut]).unwrap();
        tally.run(&hf, &tmp.0, &format!("truncated to {cut} bytes"));
    }
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    for k in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            let at = 8 + rng.below(n);
            b[at] = match rng.below(3) {
                0 => b"0123456789"[rng.below(10)],
                1 => b"[]{},:\"-"[rng.below(8)],
                _ => rng.below(256) as u8,
            };
        }
        std::fs::write(&st, b).unwrap();
        tally.run(&hf, &tmp.0, &format!("byte flip run {k}"));
    }
    println!(
        "safetensors header mutations: {} converted, {} refused with an error, {} panics",
        tally.converted,
        tally.refused,
        tally.panics.len()
    );
    assert!(tally.panics.is_empty(), "panics: {:#?}", tally.panics);
    assert!(tally.refused > 1000, "{tally:?}");
}

/// The same for the tokenizer files: numbers, types and removals in tokenizer.json (the
/// SentencePiece rebuild of a tokenizer.json-only checkpoint and Qwen2's byte-level BPE) and
/// tokenizer_config.json, and byte flips in tokenizer.model.
#[test]
fn tokenizer_file_mutations_never_panic() {
    let tmp = TempDir::new("fuzz-tokenizer");
    let mut tally = Tally::default();
    for (case, file) in [
        ("llava15_tokjson", "tokenizer.json"),
        ("llava_ov", "tokenizer.json"),
        ("llava15_tokjson", "tokenizer_config.json"),
    ] {
        let hf = copy_checkpoint(case, &tmp.path(case));
        let original: Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join(file)).unwrap()).unwrap();
        let mut all = Vec::new();
        paths(&original, &mut Vec::new(), &mut all);
        // Every 50th vocabulary entry and merge; everything else.
        let mut seen = 0usize;
        all.retain(|(p, _)| {
            let bulk = matches!(p.get(1), Some(Step::Key(k)) if k == "vocab" || k == "merges");
            seen += usize::from(bulk);
            !bulk || seen.is_multiple_of(50)
        });
        for (path, numeric) in &all {
            let mut values: Vec<Option<Value>> = vec![None, Some(json!("x")), Some(Value::Null)];
            if *numeric {
                values.extend(
                    [json!(0), json!(1), json!(1u64 << 62), json!(-1), json!(2.5)].map(Some),
                );
            } else {
                values.extend([json!(7), json!(true), json!([])].map(Some));
            }
            for new in values {
                let mut j = original.clone();
                edit(&mut j, path, new.clone());
                std::fs::write(hf.join(file), j.to_string()).unwrap();
                tally.run(&hf, &tmp.0, &format!("{case}/{file}: {path:?} = {new:?}"));
            }
        }
    }
    let hf = copy_checkpoint("llava15", &tmp.path("sp"));
    let model = std::fs::read(hf.join("tokenizer.model")).unwrap();
    let mut rng = Rng(0x70c3_11ed_0dd5_0001);
    for k in 0..200 {
        let mut b = model.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(b.len());
            b[at] = rng.below(256) as u8;
        }
        if k % 10 == 0 {
            b.truncate(rng.below(b.len()));
        }
        std::fs::write(hf.join("tokenizer.model"), b).unwrap();
        tally.run(&hf, &tmp.0, &format!("tokenizer.model flip run {k}"));
    }
    println!(
        "tokenizer file mutations: {} converted, {} refused with an error, {} panics",
        tally.converted,
        tally.refused,
        tally.panics.len()
    );
    assert!(tally.panics.is_empty(), "panics: {:#?}", tally.panics);
}
