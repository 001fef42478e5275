//! Bad input to the text model is a typed error that names the problem: a prompt longer than
//! the context, an unknown architecture, a missing tensor, a tensor of the wrong shape, a
//! token outside the vocabulary.

mod common;

use common::hf_text::write_text_gguf;
use common::npy::fixtures_dir;
use common::TempDir;
use llava_edge::gguf::{Array, GgufFile, GgufWriter, TensorSpec, Value};
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
    // The library says what to do without naming a command-line flag (the CLI adds "-c").
    let msg = e.to_string();
    assert!(msg.contains("longer context"), "says what to do: {msg}");
    assert!(
        !msg.contains(" -c"),
        "a library error names no CLI flag: {msg}"
    );
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

#[test]
fn hyperparameters_that_disagree_with_the_tensors_or_kernels_are_refused() {
    let tmp = TempDir::new("text-hparams");
    let (good, mmproj) = (tmp.path("good.gguf"), tmp.path("mmproj.gguf"));
    gguf_tools::convert::convert(
        &fixtures_dir().join("llava15/hf"),
        &good,
        &mmproj,
        gguf_tools::convert::OutType::F32,
        false,
    )
    .unwrap();
    let refused = |key: &str, value: Option<Value>, says: &[&str]| {
        let p = tmp.path("bad.gguf");
        common::with_key(&good, &p, key, value.clone());
        let f = GgufFile::open(&p).unwrap();
        let e = match TextModel::load(&f) {
            Ok(_) => panic!("{key} = {value:?} loaded"),
            Err(e) => e.to_string(),
        };
        for s in says.iter().chain(&[p.to_str().unwrap()]) {
            assert!(e.contains(s), "{key} = {value:?}: '{e}' does not say '{s}'");
        }
    };
    // The file holds blocks 0 and 1: one fewer ran a truncated model without a word.
    refused(
        "llama.block_count",
        Some(Value::U32(1)),
        &["llama.block_count = 1", "from 0 to 1"],
    );
    // Heads of 16: a rotation wider than the head was silently narrowed, an odd one rotated
    // half a pair.
    refused(
        "llama.rope.dimension_count",
        Some(Value::U32(18)),
        &["rope.dimension_count = 18", "16"],
    );
    refused(
        "llama.rope.dimension_count",
        Some(Value::U32(15)),
        &["rope.dimension_count = 15", "even"],
    );
    // A head wider than the attention kernels take.
    refused(
        "llama.attention.key_length",
        Some(Value::U32(512)),
        &["attention.key_length = 512", "256"],
    );
    refused(
        "llama.vocab_size",
        Some(Value::U32(511)),
        &["vocab_size = 511", "512"],
    );
    refused(
        "llama.rope.freq_base",
        Some(Value::F32(f32::NAN)),
        &["rope.freq_base = NaN"],
    );
    refused(
        "llama.attention.layer_norm_rms_epsilon",
        Some(Value::F32(0.0)),
        &["layer_norm_rms_epsilon = 0"],
    );
    refused(
        "llama.context_length",
        Some(Value::U32(0)),
        &["context_length = 0"],
    );
    // A token list one short of the embedding: sampled ids would have no text.
    let f = GgufFile::open(&good).unwrap();
    let Some(Value::Array(Array::String(tokens))) = f.get("tokenizer.ggml.tokens") else {
        panic!("no token list")
    };
    let short = Array::String(tokens[..tokens.len() - 1].to_vec());
    refused(
        "tokenizer.ggml.tokens",
        Some(Value::Array(short)),
        &["511 tokens", "512 rows"],
    );

    // A KV cache beyond any memory is an error, not an abort; a small one is made.
    let m = TextModel::load(&f).unwrap();
    let e = m.try_new_cache(1 << 40, KvType::F16).err().unwrap();
    assert!(
        matches!(e, TextError::CacheTooLarge { .. }) && e.to_string().contains("smaller context"),
        "{e}"
    );
    assert!(m.try_new_cache(usize::MAX, KvType::F32).is_err());
    assert_eq!(m.try_new_cache(64, KvType::F16).unwrap().n_ctx(), 64);
}
