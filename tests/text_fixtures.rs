//! The decoder against transformers on every fixture's text-only prompt: logits at every
//! position from one prefill, then eight greedy steps through the KV cache.

mod common;

use common::fixtures::TEXT_CASES;
use common::hf_text::write_text_gguf;
use common::npy::{fixtures_dir, read};
use common::rel_err;
use common::TempDir;
use llava_edge::gguf::GgufFile;
use llava_edge::text::{KvType, Logits, TextModel};
use llava_edge::threadpool::ThreadPool;

#[test]
fn text_models_match_transformers() {
    let tmp = TempDir::new("text");
    let pool = ThreadPool::new(2);
    for case in TEXT_CASES {
        let dir = fixtures_dir().join(case);
        let path = tmp.path(&format!("{case}.gguf"));
        let arch = write_text_gguf(&dir, &path);
        let f = GgufFile::open(&path).unwrap();
        let model = TextModel::load(&f).unwrap();
        let fx = dir.join("text_only");
        let ids: Vec<u32> = read(&fx.join("input_ids.npy"))
            .i64()
            .iter()
            .map(|&x| x as u32)
            .collect();
        let want = read(&fx.join("logits.npy"));
        let vocab = model.config.n_vocab;

        let mut cache = model.new_cache(ids.len() + 16, KvType::F32);
        let logits = model
            .forward(model.embed(&ids).unwrap(), &mut cache, Logits::All, &pool)
            .unwrap();
        let mut worst = 0f32;
        for (t, (g, w)) in logits
            .chunks(vocab)
            .zip(want.f32().chunks(vocab))
            .enumerate()
        {
            let e = rel_err(g, w);
            worst = worst.max(e);
            assert!(
                e < 1e-4,
                "{case} ({arch}): position {t}: relative error {e:e}"
            );
        }

        // Greedy decoding through the cache: same tokens, same logits.
        let gen_ids = read(&fx.join("generated_ids.npy"));
        let gen_logits = read(&fx.join("generated_logits.npy"));
        let mut last = logits[(ids.len() - 1) * vocab..].to_vec();
        for (step, (&tok, w)) in gen_ids
            .i64()
            .iter()
            .zip(gen_logits.f32().chunks(vocab))
            .enumerate()
        {
            let e = rel_err(&last, w);
            assert!(e < 1e-4, "{case}: step {step}: relative error {e:e}");
            assert_eq!(
                llava_edge::ops::argmax(&last) as i64,
                tok,
                "{case}: step {step}: greedy token"
            );
            last = model
                .forward(
                    model.embed(&[tok as u32]).unwrap(),
                    &mut cache,
                    Logits::Last,
                    &pool,
                )
                .unwrap();
        }
        println!("{case} ({arch}): {} prompt tokens, worst relative logit error {worst:e}, 8 greedy tokens equal", ids.len());
    }
}

/// With the default F16 cache, keys and values are rounded to 11 significant bits (relative
/// error up to 2^-11 = 4.9e-4 each). Softmax-weighted sums average those errors rather than
/// add them, so the logits should move by about one such rounding (measured: 2.9e-4 and
/// 3.7e-4); the bound allows four. Tokens must agree wherever the reference's top two logits
/// are further apart than twice the error.
#[test]
fn f16_kv_cache_stays_close() {
    let tmp = TempDir::new("text-f16kv");
    let pool = ThreadPool::new(2);
    for case in ["llava15", "llava_ov"] {
        let dir = fixtures_dir().join(case);
        let path = tmp.path(&format!("{case}.gguf"));
        write_text_gguf(&dir, &path);
        let f = GgufFile::open(&path).unwrap();
        let model = TextModel::load(&f).unwrap();
        let fx = dir.join("text_only");
        let ids: Vec<u32> = read(&fx.join("input_ids.npy"))
            .i64()
            .iter()
            .map(|&x| x as u32)
            .collect();
        let vocab = model.config.n_vocab;
        let mut cache = model.new_cache(ids.len() + 16, KvType::F16);
        let mut last = model
            .forward(model.embed(&ids).unwrap(), &mut cache, Logits::Last, &pool)
            .unwrap();
        let gen_ids = read(&fx.join("generated_ids.npy"));
        let gen_logits = read(&fx.join("generated_logits.npy"));
        let mut worst = 0f32;
        for (step, (&tok, w)) in gen_ids
            .i64()
            .iter()
            .zip(gen_logits.f32().chunks(vocab))
            .enumerate()
        {
            let e = rel_err(&last, w);
            worst = worst.max(e);
            assert!(
                e < 4.0 * 4.9e-4,
                "{case}: step {step}: relative error {e:e}"
            );
            let mut sorted = w.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            if sorted[0] - sorted[1] > 2.0 * e * scale {
                assert_eq!(
                    llava_edge::ops::argmax(&last) as i64,
                    tok,
                    "{case}: step {step}"
                );
            }
            last = model
                .forward(
                    model.embed(&[tok as u32]).unwrap(),
                    &mut cache,
                    Logits::Last,
                    &pool,
                )
                .unwrap();
        }
        println!("{case}: F16 KV cache, worst relative logit error {worst:e}");
    }
}

/// Quantized weights (quantized by `gguf-tools quantize`, bytes equal to ggml's): the logits
/// move by the quantization error and greedy tokens agree where the reference's margin exceeds
/// it. Printed errors are the measured ones; the bounds come from each format's step size.
#[test]
fn quantized_text_weights_stay_close() {
    use common::fixtures::quantize;
    use gguf_tools::mix::Mix;
    let tmp = TempDir::new("text-quant");
    let pool = ThreadPool::new(2);
    // Bound model: a matrix product's output carries about the RMS relative error of its weights
    // (the error and the signal both sum over the row), and the errors of the ~15 products in
    // sequence (7 per layer, 2 layers, the output) add in quadrature: logits move by r * sqrt(15).
    // RMS relative weight error r for these fixtures' O(1) normal weights: F16 2^-11/sqrt(3)
    // = 2.8e-4; Q8_0 a step of amax/127 (amax of 32 normals ~2.5 sigma) over sqrt(12) = 5.7e-3;
    // Q4_0 a step of amax/8 over sqrt(12) = 9.0e-2. Q8_0 and Q4_0 products also quantize the
    // activations to Q8_0 (as llama.cpp does): another 5.7e-3, added in quadrature. The bound
    // allows twice the prediction.
    let chain = 15f32.sqrt();
    let with_act = |r: f32| (r * r + 5.7e-3f32 * 5.7e-3).sqrt();
    for (mix, r) in [
        (Mix::F16, 2.8e-4f32),
        // BF16: 2^-8 / sqrt(3); f32 activations, as F16.
        (Mix::BF16, 2.3e-3),
        (Mix::Q8_0, with_act(5.7e-3)),
        (Mix::Q4_0, with_act(9.0e-2)),
        // Q5_0: half Q4_0's step.
        (Mix::Q5_0, with_act(4.5e-2)),
        // Q4_1 / Q5_1: a step of (max - min) / 15 (/ 31), ~5 sigma over 32 normals.
        (Mix::Q4_1, with_act(9.6e-2)),
        (Mix::Q5_1, with_act(4.8e-2)),
    ] {
        let bound = 2.0 * r * chain;
        let mut worst_all = 0f32;
        for case in ["llava15", "llava_ov"] {
            let dir = fixtures_dir().join(case);
            let f32_path = tmp.path(&format!("{case}-f32.gguf"));
            write_text_gguf(&dir, &f32_path);
            let q_path = tmp.path(&format!("{case}-{mix}.gguf"));
            quantize(&f32_path, &q_path, mix);
            let f = GgufFile::open(&q_path).unwrap();
            let model = TextModel::load(&f).unwrap();
            // The legacy types again with rows interleaved for decode, as `run` loads them: the
            // same weights, so only the order of float sums may differ from the plain file's.
            let mut fi = GgufFile::open(&q_path).unwrap();
            let interleaved = llava_edge::text::interleave_weights(&mut fi, &pool).unwrap();
            assert_eq!(
                interleaved > 0,
                matches!(
                    mix,
                    Mix::Q4_0 | Mix::Q4_1 | Mix::Q5_0 | Mix::Q5_1 | Mix::Q8_0
                ),
                "{case} {mix}"
            );
            let model_i = TextModel::load(&fi).unwrap();
            let fx = dir.join("text_only");
            let ids: Vec<u32> = read(&fx.join("input_ids.npy"))
                .i64()
                .iter()
                .map(|&x| x as u32)
                .collect();
            let vocab = model.config.n_vocab;
            let mut cache = model.new_cache(ids.len() + 16, KvType::F32);
            let mut last = model
                .forward(model.embed(&ids).unwrap(), &mut cache, Logits::Last, &pool)
                .unwrap();
            let mut cache_i = model_i.new_cache(ids.len() + 16, KvType::F32);
            let mut last_i = model_i
                .forward(
                    model_i.embed(&ids).unwrap(),
                    &mut cache_i,
                    Logits::Last,
                    &pool,
                )
                .unwrap();
            let gen_ids = read(&fx.join("generated_ids.npy"));
            let gen_logits = read(&fx.join("generated_logits.npy"));
            let mut worst = 0f32;
            for (step, (&tok, w)) in gen_ids
                .i64()
                .iter()
                .zip(gen_logits.f32().chunks(vocab))
                .enumerate()
            {
                let e = rel_err(&last, w);
                worst = worst.max(e);
                // The same products summed in another order (Q4_0: the same arithmetic, so equal
                // bits here; Q5_0: offset and exact signed codes, ~5e-7 apart a product). The
                // next product quantizes its input to 8 bits, so a value on a rounding boundary
                // can flip one code and move the logits by up to one activation step: bound the
                // difference by the activation-rounding share of the bound above.
                let ei = rel_err(&last_i, &last);
                assert!(
                    ei < 2.0 * 5.7e-3 * chain,
                    "{case} {mix}: step {step}: interleaved vs plain {ei:e}"
                );
                assert!(e < bound, "{case} {mix}: step {step}: relative error {e:e}");
                let mut sorted = w.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                if sorted[0] - sorted[1] > 2.0 * e * scale {
                    assert_eq!(
                        llava_edge::ops::argmax(&last) as i64,
                        tok,
                        "{case} {mix}: step {step}"
                    );
                }
                last = model
                    .forward(
                        model.embed(&[tok as u32]).unwrap(),
                        &mut cache,
                        Logits::Last,
                        &pool,
                    )
                    .unwrap();
                last_i = model_i
                    .forward(
                        model_i.embed(&[tok as u32]).unwrap(),
                        &mut cache_i,
                        Logits::Last,
                        &pool,
                    )
                    .unwrap();
            }
            worst_all = worst_all.max(worst);
        }
        println!("{mix}: worst relative logit error {worst_all:e} (bound {bound:e})");
    }
}

#[test]
fn long_inputs_run_in_batches_that_continue_the_cache() {
    // 1100 rows in one call run as batches of 512, 512 and 76; the same rows in calls of 100
    // each run whole. Every position's logits agree, and the Last request returns the last
    // row's.
    let tmp = TempDir::new("text-ubatch");
    let pool = ThreadPool::new(2);
    let dir = fixtures_dir().join("llava_ov");
    let path = tmp.path("ov.gguf");
    write_text_gguf(&dir, &path);
    let f = GgufFile::open(&path).unwrap();
    let model = TextModel::load(&f).unwrap();
    let vocab = model.config.n_vocab;
    let n = 1100;
    assert!(n > 2 * llava_edge::text::UBATCH);
    let ids: Vec<u32> = (0..n as u64)
        .map(|i| (3 + (i * 7919) % (vocab as u64 - 3)) as u32)
        .collect();
    let mut cache = model.new_cache(n, KvType::F32);
    let whole = model
        .forward(model.embed(&ids).unwrap(), &mut cache, Logits::All, &pool)
        .unwrap();
    assert_eq!(whole.len(), n * vocab);
    assert_eq!(cache.len(), n);
    let mut cache = model.new_cache(n, KvType::F32);
    let mut parts = Vec::new();
    for chunk in ids.chunks(100) {
        let x = model.embed(chunk).unwrap();
        parts.extend(model.forward(x, &mut cache, Logits::All, &pool).unwrap());
    }
    let e = rel_err(&whole, &parts);
    assert!(e < 1e-4, "batched vs chunked logits: rel err {e}");
    let mut cache = model.new_cache(n, KvType::F32);
    let last = model
        .forward(model.embed(&ids).unwrap(), &mut cache, Logits::Last, &pool)
        .unwrap();
    let e = rel_err(&last, &whole[(n - 1) * vocab..]);
    assert!(e < 1e-4, "last row's logits: rel err {e}");
}
