//! The whole path a user runs, against transformers: `gguf-tools convert` on each fixture
//! checkpoint, then the pipeline on the fixture's image files and question: chat template,
//! tokenizer, preprocessing, encoder, anyres packing, decoder. The prompt's token ids (image
//! positions included) must equal the reference's input_ids, and greedy generation must give
//! the reference's tokens up to the first end-of-generation token.

mod common;

use common::fixtures::{
    assert_answers_like_reference, convert_case, cpu_pipeline, fixture_metas, fixture_request,
    QUESTIONS,
};
use common::npy::{fixtures_dir, read};
use common::TempDir;
use gguf_tools::convert::OutType;
use llava_edge::gguf::GgufFile;
use llava_edge::pipeline::Request;
use llava_edge::sampling::{Sampler, SamplerConfig};
use llava_edge::text::KvType;

#[test]
fn converted_checkpoints_answer_like_transformers() {
    let tmp = TempDir::new("pipeline");
    let mut checked = 0;
    for case in [
        "llava_v1",
        "llava15",
        "llava_next_mistral",
        "llava_next_vicuna",
        "llava_ov",
        "llava15_tokjson",
        "llava_next_vicuna_tokjson",
    ] {
        let dir = fixtures_dir().join(case);
        let (r, tp, vp) = convert_case(&tmp, case, "", OutType::F32);
        // Never used: the vision post-layernorm, the layers after the feature layer (CLIP's
        // last, which llama.cpp's converter drops too), and for the original LLaVA the identity
        // linear_2 that stands in for its single linear projector.
        let allowed = |n: &String| {
            n.contains("post_layernorm")
                || (case != "llava_ov" && n.contains("encoder.layers.2."))
                || (case == "llava_v1" && n.contains("linear_2"))
        };
        assert!(
            r.unused.iter().all(allowed),
            "{case}: unused tensors {:?}",
            r.unused
        );
        let (tf, vf) = (GgufFile::open(&tp).unwrap(), GgufFile::open(&vp).unwrap());
        let p = cpu_pipeline(&tf, &vf);
        for (fx, meta) in fixture_metas(&dir) {
            let req = fixture_request(&meta, &tmp.path(&format!("{case}-frames")));
            let mut cache = p.text.new_cache(2048, KvType::F32);
            let (n_prompt, n_gen) = assert_answers_like_reference(&p, &fx, &req, &mut cache);
            println!(
                "{case}/{}: {n_prompt} prompt tokens equal, {n_gen} greedy tokens equal",
                fx.file_name().unwrap().to_string_lossy(),
            );
            checked += 1;
        }
    }
    assert!(checked >= 28, "{checked} fixtures");
}

/// Quantized files through the whole pipeline: F16 mmproj with F16 or Q8_0 text weights. The
/// greedy tokens must equal the reference's for every step up to the first whose top-two
/// margin is within the logit error the format predicts (see text_fixtures.rs for the model:
/// F16 ~1.1e-3, Q8_0 with Q8_0 activations ~3.1e-2 of the largest logit; twice that allowed).
#[test]
fn quantized_files_keep_the_reference_tokens_while_margins_allow() {
    use gguf_tools::mix::Mix;
    let tmp = TempDir::new("pipeline-quant");
    let mut steps_checked = 0;
    for (mix, err) in [(Mix::F16, 2.2e-3f32), (Mix::Q8_0, 6.2e-2)] {
        for case in ["llava15", "llava_next_mistral"] {
            let dir = fixtures_dir().join(case);
            let (_, tp, vp) = convert_case(&tmp, case, &format!("-{mix}"), OutType::Mix(mix));
            let (tf, vf) = (GgufFile::open(&tp).unwrap(), GgufFile::open(&vp).unwrap());
            let p = cpu_pipeline(&tf, &vf);
            for fixture in ["sq180", "wide260x120", "wide200x110"] {
                let fx = dir.join(fixture);
                if !fx.exists() {
                    continue;
                }
                let meta: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(fx.join("meta.json")).unwrap())
                        .unwrap();
                let images = vec![fixtures_dir().join(meta["images"][0].as_str().unwrap())];
                let req = Request {
                    prompt: QUESTIONS[1].to_string(),
                    images,
                    video: None,
                    max_frames: 16,
                    system: None,
                    n_predict: 8,
                    stop: vec![],
                };
                let mut cache = p.text.new_cache(1024, KvType::F16);
                let mut greedy = Sampler::new(SamplerConfig {
                    temp: 0.0,
                    ..SamplerConfig::default()
                });
                let (_, t) = p.generate(&req, &mut cache, &mut greedy, |_| {}).unwrap();
                let gen = read(&fx.join("generated_ids.npy"));
                let logits = read(&fx.join("generated_logits.npy"));
                let vocab = p.text.config.n_vocab;
                for (step, (&want, l)) in
                    gen.i64().iter().zip(logits.f32().chunks(vocab)).enumerate()
                {
                    let mut sorted = l.to_vec();
                    sorted.sort_by(|a, b| b.total_cmp(a));
                    let scale = l.iter().fold(0f32, |m, v| m.max(v.abs()));
                    if sorted[0] - sorted[1] <= 2.0 * err * scale || p.tokenizer.is_eog(want as u32)
                    {
                        break;
                    }
                    assert_eq!(
                        t.tokens.get(step).copied(),
                        Some(want as u32),
                        "{case}/{fixture} {mix}: step {step}"
                    );
                    steps_checked += 1;
                }
            }
        }
    }
    assert!(
        steps_checked >= 4,
        "only {steps_checked} steps had margins to check"
    );
    println!("{steps_checked} greedy steps checked");
}

/// A second turn that keeps the first in the KV cache answers exactly as one prefill of the
/// whole conversation (first prompt, the first answer's tokens, the second turn) from an empty
/// cache, and encodes only its own image.
#[test]
fn a_second_turn_reuses_the_first_from_the_cache() {
    use llava_edge::pipeline::Conversation;
    use llava_edge::text::Logits;
    let tmp = TempDir::new("pipeline-chat");
    let mut generated = 0;
    for case in ["llava15", "llava_next_mistral", "llava_ov"] {
        let (_, tp, vp) = convert_case(&tmp, case, "", OutType::F32);
        let (tf, vf) = (GgufFile::open(&tp).unwrap(), GgufFile::open(&vp).unwrap());
        let p = cpu_pipeline(&tf, &vf);
        let image = |name: &str| fixtures_dir().join("images").join(name);
        let turn = |prompt: &str, img: &str| Request {
            prompt: prompt.into(),
            images: vec![image(img)],
            video: None,
            max_frames: 16,
            system: None,
            n_predict: 4,
            stop: vec![],
        };
        let (r1, r2) = (
            turn(QUESTIONS[1], "sq180.png"),
            turn("And this one?", "wide260x120.png"),
        );
        let greedy = || {
            Sampler::new(SamplerConfig {
                temp: 0.0,
                ..SamplerConfig::default()
            })
        };
        let mut cache = p.text.new_cache(2048, KvType::F32);
        let mut conv = Conversation::default();
        let (_, t1) = p
            .chat(&mut conv, &r1, &mut cache, &mut greedy(), |_| {})
            .unwrap();
        let (_, t2) = p
            .chat(&mut conv, &r2, &mut cache, &mut greedy(), |_| {})
            .unwrap();
        assert_eq!(t1.image_tokens.len(), 1);
        assert_eq!(
            t2.image_tokens.len(),
            1,
            "{case}: the second turn encodes its image only"
        );
        assert_eq!(conv.turns, 2);

        // The same conversation in one prefill.
        let mut t = Default::default();
        let mut rows = p.prompt_embeddings(&r1, &mut t).unwrap().1;
        rows.extend(p.text.embed(&t1.tokens).unwrap());
        rows.extend(p.turn_embeddings(&r2, false, &mut t).unwrap().1);
        let mut fresh = p.text.new_cache(2048, KvType::F32);
        let mut logits = p
            .text
            .forward(rows, &mut fresh, Logits::Last, &p.pool)
            .unwrap();
        // Greedy from there as `chat` decodes: up to n_predict tokens or an end-of-generation one.
        let mut want = Vec::new();
        for _ in 0..r2.n_predict {
            let id = llava_edge::ops::argmax(&logits) as u32;
            if p.tokenizer.is_eog(id) {
                break;
            }
            want.push(id);
            logits = p
                .text
                .forward(
                    p.text.embed(&[id]).unwrap(),
                    &mut fresh,
                    Logits::Last,
                    &p.pool,
                )
                .unwrap();
        }
        generated += want.len();
        assert_eq!(t2.tokens, want, "{case}: second turn");

        // Another cache is refused, and the conversation survives the refusal.
        let mut other = p.text.new_cache(2048, KvType::F32);
        let e = p
            .chat(&mut conv, &r2, &mut other, &mut greedy(), |_| {})
            .unwrap_err();
        assert!(
            e.to_string().contains("not this conversation's cache"),
            "{e}"
        );
        // A turn too long for the context fails before it changes anything.
        let mut small = p.text.new_cache(t1.prompt_tokens + 8, KvType::F32);
        let mut conv = Conversation::default();
        p.chat(&mut conv, &r1, &mut small, &mut greedy(), |_| {})
            .unwrap();
        let used = small.len();
        let e = p
            .chat(&mut conv, &r2, &mut small, &mut greedy(), |_| {})
            .unwrap_err();
        assert!(e.to_string().contains("context"), "{e}");
        assert_eq!((conv.turns, small.len()), (1, used));
    }
    assert!(
        generated > 0,
        "no second turn generated anything: nothing was compared"
    );
}
