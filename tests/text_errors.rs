//! Bad input to the text model is a typed error that names the problem: a prompt longer than
//! the context, an unknown architecture, a missing tensor, a tensor of the wrong shape, a
//! token outside the vocabulary.

mod common;

use common::hf_text::write_text_gguf;
use common::npy::fixtures_dir;
use common::TempDir;
use llava_edge::gguf::{GgufFile, GgufWriter, TensorSpec, Value};
use llava_edge::text::{KvType, Logits, TextError, TextModel};
use llava_edge::threadpool::ThreadPool;

/// Rewrites `src` to `dst`, with metadata and tensors changed by the closures.
fn rewrite(
    src: &std::path::Path,
    dst: &std::path::Path,
    md: impl Fn(&str, &Value) -> Option<Value>,
    keep: impl Fn(&str) -> bool,
    dims: impl Fn(&str, &[u64]) -> Vec<u64>,
) {
    let f = GgufFile::open(src).unwrap();
    let meta: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .filter_map(|(k, v)| md(k, v).map(|v| (k.clone(), v)))
        .collect();
    let infos: Vec<_> = f.tensors().iter().filter(|t| keep(&t.name)).collect();
    let specs: Vec<TensorSpec> = infos
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), &dims(&t.name, &t.dims), t.ty))
        .collect();
    let mut w = GgufWriter::create(dst, &meta, &specs).unwrap();
    for (t, s) in infos.iter().zip(&specs) {
        let n = s.ty.bytes_for(s.dims.iter().product()).unwrap() as usize;
        let mut data = f.view(t).data.to_vec();
        data.resize(n, 0);
        w.write_tensor(&t.name, &data).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn bad_models_and_requests_are_clear_errors() {
    let tmp = TempDir::new("text-errors");
    let good = tmp.path("good.gguf");
    write_text_gguf(&fixtures_dir().join("llava15"), &good);
    let same = |_: &str, v: &Value| Some(v.clone());

    // A prompt longer than the context.
    let f = GgufFile::open(&good).unwrap();
    let m = TextModel::load(&f).unwrap();
    let pool = ThreadPool::new(1);
    let mut cache = m.new_cache(4, KvType::F16);
    let e = m
        .forward(
            m.embed(&[1, 2, 3, 4, 5]).unwrap(),
            &mut cache,
            Logits::Last,
            &pool,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            TextError::ContextFull {
                needed: 5,
                n_ctx: 4
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("-c"), "says what to do: {e}");
    // A token outside the vocabulary.
    let e = m.embed(&[100_000]).unwrap_err();
    assert!(e.to_string().contains("100000"), "{e}");

    // An unknown architecture.
    let p = tmp.path("arch.gguf");
    rewrite(
        &good,
        &p,
        |k, v| {
            Some(if k == "general.architecture" {
                Value::string("gptj")
            } else {
                v.clone()
            })
        },
        |_| true,
        |_, d| d.to_vec(),
    );
    let f = GgufFile::open(&p).unwrap();
    let e = TextModel::load(&f).err().unwrap();
    assert!(
        matches!(e, TextError::UnknownArch { .. }) && e.to_string().contains("gptj"),
        "{e}"
    );

    // A missing tensor.
    let p = tmp.path("missing.gguf");
    rewrite(
        &good,
        &p,
        same,
        |n| n != "blk.1.ffn_down.weight",
        |_, d| d.to_vec(),
    );
    let f = GgufFile::open(&p).unwrap();
    let e = TextModel::load(&f).err().unwrap();
    assert!(e.to_string().contains("blk.1.ffn_down.weight"), "{e}");

    // A tensor of the wrong shape.
    let p = tmp.path("shape.gguf");
    rewrite(
        &good,
        &p,
        same,
        |_| true,
        |n, d| {
            if n == "blk.0.attn_k.weight" {
                vec![d[0], d[1] * 2]
            } else {
                d.to_vec()
            }
        },
    );
    let f = GgufFile::open(&p).unwrap();
    let e = TextModel::load(&f).err().unwrap();
    assert!(
        e.to_string().contains("blk.0.attn_k.weight") && e.to_string().contains("shape"),
        "{e}"
    );

    // A missing hyperparameter.
    let p = tmp.path("key.gguf");
    rewrite(
        &good,
        &p,
        |k, v| (k != "llama.block_count").then(|| v.clone()),
        |_| true,
        |_, d| d.to_vec(),
    );
    let f = GgufFile::open(&p).unwrap();
    let e = TextModel::load(&f).err().unwrap();
    assert!(e.to_string().contains("llama.block_count"), "{e}");
}
