//! Our reader against llama.cpp's own `gguf` Python package on the three real vocabulary files:
//! the same version, tensor count, keys in the same order, value types, array element types
//! and lengths, scalar values, and first/last array elements (recorded in
//! tests/data/vocab_gguf_py.json by tests/data/gguf_py_listing.py).

mod common;

use common::shared_dir;
use llava_edge::gguf::{Array, GgufFile, Value};
use serde_json::Value as Json;

fn json_of_scalar(v: &Value) -> Json {
    match v {
        Value::String(b) => Json::from(String::from_utf8_lossy(b).into_owned()),
        Value::Bool(b) => Json::from(*b),
        Value::F32(x) => Json::from(f64::from(*x)),
        Value::F64(x) => Json::from(*x),
        other => Json::from(other.as_i64().expect("integer")),
    }
}

fn picks(a: &Array) -> Option<Vec<Json>> {
    let n = a.len();
    let idx: Vec<usize> = (0..n.min(3)).chain((n > 0).then(|| n - 1)).collect();
    let one = |i: usize| -> Option<Json> {
        Some(match a {
            Array::String(v) => Json::from(String::from_utf8_lossy(&v[i]).into_owned()),
            Array::F32(v) => Json::from(f64::from(v[i])),
            Array::F64(v) => Json::from(v[i]),
            Array::Bool(v) => Json::from(v[i]),
            Array::Array(_) => return None,
            other => Json::from(other.to_i64_vec()?[i]),
        })
    };
    idx.into_iter().map(one).collect()
}

#[test]
fn reader_agrees_with_gguf_py_on_real_vocab_files() {
    let record: Json =
        serde_json::from_str(include_str!("data/vocab_gguf_py.json")).expect("valid JSON");
    let files = record.as_array().unwrap();
    assert_eq!(files.len(), 3);
    for rec in files {
        let name = rec["file"].as_str().unwrap();
        let f = GgufFile::open(shared_dir().join("vocab").join(name)).unwrap();
        assert_eq!(
            u64::from(f.version()),
            rec["version"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            f.tensors().len() as u64,
            rec["tensor_count"].as_u64().unwrap(),
            "{name}"
        );
        let keys = rec["keys"].as_array().unwrap();
        assert_eq!(f.metadata().len(), keys.len(), "{name}: kv count");
        for ((key, value), want) in f.metadata().iter().zip(keys) {
            let ctx = format!("{name}: {key}");
            assert_eq!(key, want["key"].as_str().unwrap(), "{ctx}");
            assert_eq!(
                value.value_type().name(),
                want["type"].as_str().unwrap(),
                "{ctx}"
            );
            match value {
                Value::Array(a) => {
                    assert_eq!(
                        a.elem_type().name(),
                        want["elem_type"].as_str().unwrap(),
                        "{ctx}"
                    );
                    assert_eq!(a.len() as u64, want["len"].as_u64().unwrap(), "{ctx}");
                    if let Some(p) = want.get("picks") {
                        assert_eq!(&Json::from(picks(a).unwrap()), p, "{ctx}");
                    }
                }
                scalar => assert_eq!(json_of_scalar(scalar), want["value"], "{ctx}"),
            }
        }
    }
}

/// The .npy reader the model tests use, on a fixture with known shapes.
#[test]
fn fixture_npy_files_read() {
    let dir = common::npy::fixtures_dir().join("llava15/sq180");
    let ids = common::npy::read(&dir.join("input_ids.npy"));
    let logits = common::npy::read(&dir.join("logits.npy"));
    assert_eq!(ids.shape().len(), 1);
    assert_eq!(logits.shape(), &[ids.shape()[0], 512]);
    assert!(ids.i64().iter().all(|&t| (0..512).contains(&t)));
    assert!(logits.f32().iter().all(|x| x.is_finite()));
}
