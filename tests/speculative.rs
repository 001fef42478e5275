//! Speculative decoding against plain decoding on the converted transformers fixtures: greedy
//! replies must be the target's alone, token for token, whether the draft is the target itself
//! (everything accepted), another model of the same vocabulary (llava_v1 drafting for llava15:
//! the same SentencePiece tokenizer, other weights, so proposals get rejected) or prompt lookup;
//! the caches rolled back after rejections must be the caches of a plain decode; and the
//! sampling rule must keep the target's distribution (a chi-square test on five tokens).

mod common;

use std::sync::atomic::AtomicBool;

use common::npy::fixtures_dir;
use common::TempDir;
use gguf_tools::convert::{convert, OutType};
use llava_edge::chat::ChatTemplate;
use llava_edge::gguf::GgufFile;
use llava_edge::pipeline::{Conversation, Pipeline, Request, Timings};
use llava_edge::sampling::{Sampler, SamplerConfig};
use llava_edge::speculative::{
    accept_or_resample, check_vocab, open_draft, Drafter, LookupDrafter, ModelDrafter, SpecConfig,
    Speculation, TurnInput,
};
use llava_edge::text::{KvCache, KvType, Logits, TextModel};
use llava_edge::threadpool::ThreadPool;
use llava_edge::tokenizer::Tokenizer;
use llava_edge::vision::VisionEncoder;

/// The fixture `case` converted to F32 text and mmproj files in `tmp`.
fn converted(tmp: &TempDir, case: &str) -> (GgufFile, GgufFile) {
    let (tp, vp) = (
        tmp.path(&format!("{case}.gguf")),
        tmp.path(&format!("{case}-mmproj.gguf")),
    );
    convert(
        &fixtures_dir().join(case).join("hf"),
        &tp,
        &vp,
        OutType::F32,
        false,
    )
    .unwrap();
    (GgufFile::open(&tp).unwrap(), GgufFile::open(&vp).unwrap())
}

fn pipeline<'a>(tf: &'a GgufFile, vf: &'a GgufFile) -> Pipeline<'a, Tokenizer> {
    Pipeline {
        text: TextModel::load(tf).unwrap(),
        vision: Some(VisionEncoder::load(vf).unwrap()),
        tokenizer: Tokenizer::from_gguf(tf).unwrap(),
        template: ChatTemplate::detect(tf.get_str("tokenizer.chat_template").unwrap()).unwrap(),
        pool: ThreadPool::new(2),
    }
}

fn greedy() -> Sampler {
    Sampler::new(SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    })
}

fn requests() -> Vec<Request> {
    let image = |name: &str| {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures_dir().join("llava15").join(name).join("meta.json"))
                .unwrap(),
        )
        .unwrap();
        fixtures_dir().join(meta["images"][0].as_str().unwrap())
    };
    let req = |prompt: &str, images| Request {
        prompt: prompt.to_string(),
        images,
        video: None,
        max_frames: 16,
        system: None,
        n_predict: 40,
        stop: vec![],
    };
    vec![
        req("Describe a red circle on a blue background.", vec![]),
        req("What is shown in this image?", vec![image("sq180")]),
        req("What is shown in this image?", vec![image("wide200x110")]),
    ]
}

/// Two turns of `req` (the second text only), plainly or with `spec`; the turns' timings and
/// the cache after them.
fn two_turns(
    p: &Pipeline<'_, Tokenizer>,
    req: &Request,
    mut spec: Option<&mut Speculation<'_>>,
) -> (Vec<Timings>, KvCache, Conversation) {
    let mut cache = p.text.new_cache(1024, KvType::F32);
    let mut conv = Conversation::default();
    let mut sampler = greedy();
    let cancel = AtomicBool::new(false);
    let second = Request {
        prompt: "And again?".into(),
        images: vec![],
        n_predict: 17,
        ..req.clone()
    };
    let mut out = Vec::new();
    for r in [req, &second] {
        let (_, t) = match spec.as_deref_mut() {
            Some(s) => {
                p.chat_speculative(&mut conv, r, &mut cache, &mut sampler, s, &cancel, |_| {})
            }
            None => p.chat_cancellable(&mut conv, r, &mut cache, &mut sampler, &cancel, |_| {}),
        }
        .unwrap();
        out.push(t);
    }
    (out, cache, conv)
}

/// The logits of one more token `id` after what `cache` holds (a cache that holds other keys
/// or values than it should gives other logits).
fn next_logits(m: &TextModel, cache: &mut KvCache, id: u32, pool: &ThreadPool) -> Vec<f32> {
    m.forward(m.embed(&[id]).unwrap(), cache, Logits::Last, pool)
        .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn greedy_replies_with_drafting_are_the_targets_token_for_token() {
    let tmp = TempDir::new("speculative");
    let (tf, vf) = converted(&tmp, "llava15");
    let (df, _) = converted(&tmp, "llava_v1");
    check_vocab(&tf, &df).expect("llava_v1 shares llava15's tokenizer");
    let p = pipeline(&tf, &vf);
    let draft = TextModel::load(&df).unwrap();
    let itself = TextModel::load(&tf).unwrap();
    let pool = ThreadPool::new(2);
    let (mut rejections, mut lookup_accepted) = (0, 0);
    for req in requests() {
        let (plain, mut plain_cache, plain_conv) = two_turns(&p, &req, None);
        let plain_tokens: Vec<_> = plain.iter().map(|t| t.tokens.clone()).collect();
        assert!(plain_tokens[0].len() > 10, "{plain_tokens:?}");
        for k in [1, 3, 8] {
            let drafters: Vec<(&str, Box<dyn Drafter + '_>)> = vec![
                (
                    "itself",
                    Box::new(ModelDrafter::new(
                        &itself,
                        itself.new_cache(1024, KvType::F32),
                    )),
                ),
                (
                    "llava_v1",
                    Box::new(ModelDrafter::new(
                        &draft,
                        draft.new_cache(1024, KvType::F32),
                    )),
                ),
                ("lookup", Box::new(LookupDrafter::new(3, 1))),
            ];
            for (name, drafter) in drafters {
                let config = SpecConfig {
                    max: k,
                    ..SpecConfig::default()
                };
                let mut spec = Speculation::new(drafter, config);
                let (turns, mut cache, conv) = two_turns(&p, &req, Some(&mut spec));
                let tokens: Vec<_> = turns.iter().map(|t| t.tokens.clone()).collect();
                let what = format!("{name} k={k} prompt {:?}", req.prompt);
                assert_eq!(tokens, plain_tokens, "{what}: tokens");
                assert_eq!(turns[1].finish, plain[1].finish, "{what}");
                // The target's cache after rollbacks holds what a plain decode's does.
                assert_eq!(cache.len(), plain_cache.len(), "{what}: cache length");
                assert_eq!(conv.turns, plain_conv.turns);
                let a = next_logits(&p.text, &mut cache, 5, &pool);
                let b = next_logits(&p.text, &mut plain_cache, 5, &pool);
                assert!(max_diff(&a, &b) < 1e-4, "{what}: {}", max_diff(&a, &b));
                plain_cache.truncate(plain_cache.len() - 1);
                let s = &spec.stats;
                assert!(s.verify_passes > 0 || name == "lookup", "{what}: {s:?}");
                match name {
                    "itself" => assert_eq!(s.accepted, s.proposed, "{what}: {s:?}"),
                    "llava_v1" => rejections += s.proposed - s.accepted,
                    _ => lookup_accepted += s.accepted,
                }
                println!(
                    "{what}: {} proposed, {} accepted, {} verify passes",
                    s.proposed, s.accepted, s.verify_passes
                );
            }
        }
    }
    assert!(rejections > 0, "the other-weights draft was never rejected");
    assert!(
        lookup_accepted > 0,
        "prompt lookup never proposed a kept token"
    );
}

/// The draft's own cache, rolled back after rejections, holds what a plain run of the draft
/// over the same tokens gives; and a draft of another width than the target's sees the text
/// only.
#[test]
fn draft_cache_rolls_back_to_a_plain_runs_and_skips_media_of_another_width() {
    let tmp = TempDir::new("speculative-draft");
    let (tf, vf) = converted(&tmp, "llava15");
    let (df, _) = converted(&tmp, "llava_v1");
    let p = pipeline(&tf, &vf);
    let draft = TextModel::load(&df).unwrap();
    let pool = ThreadPool::new(2);
    let req = &requests()[1];
    let mut cache = p.text.new_cache(1024, KvType::F32);
    let mut drafter = ModelDrafter::new(&draft, draft.new_cache(1024, KvType::F32));
    let mut spec = Speculation::new(
        Box::new(&mut drafter),
        SpecConfig {
            max: 4,
            ..SpecConfig::default()
        },
    );
    let mut conv = Conversation::default();
    let (_, t) = p
        .chat_speculative(
            &mut conv,
            req,
            &mut cache,
            &mut greedy(),
            &mut spec,
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap();
    assert!(
        spec.stats.proposed > spec.stats.accepted,
        "{:?}",
        spec.stats
    );
    drop(spec);
    assert_eq!(drafter.sees_media(), Some(true), "both are 64 wide");
    assert_eq!(t.media.len(), 1);
    // A plain run of the draft: the prompt's rows as the pipeline built them (its own text
    // embeddings, the projector's image rows), then the reply tokens the target evaluated
    // (MaxTokens: all but the last).
    let mut t2 = Timings::default();
    let (seq, rows) = p.prompt_embeddings(req, &mut t2).unwrap();
    let image = t2.media[0].clone();
    let kept = &t.tokens[..t.tokens.len() - 1];
    let mut plain = draft.new_cache(1024, KvType::F32);
    let mut x = draft.embed(&seq[..image.start]).unwrap();
    x.extend_from_slice(&rows[image.start * 64..image.end * 64]);
    x.extend(draft.embed(&seq[image.end..]).unwrap());
    x.extend(draft.embed(kept).unwrap());
    draft.forward(x, &mut plain, Logits::Last, &pool).unwrap();
    let mut rolled = drafter.into_cache();
    assert_eq!(rolled.len(), plain.len());
    let a = next_logits(&draft, &mut rolled, 7, &pool);
    let b = next_logits(&draft, &mut plain, 7, &pool);
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));

    // Media rows of another width are left out: the draft's cache is shorter.
    let mut narrow = ModelDrafter::new(&draft, draft.new_cache(64, KvType::F32));
    let ids: Vec<u32> = (3..13).collect();
    let input = TurnInput {
        ids: &ids,
        media: std::slice::from_ref(&(2..6)),
        rows: &vec![0.5; ids.len() * 32],
    };
    narrow.prefill(&input, &pool).unwrap();
    assert_eq!(narrow.sees_media(), Some(false));
    assert_eq!(narrow.cache().len(), 6);
}

#[test]
fn a_draft_with_another_vocabulary_is_refused_naming_both_files() {
    let tmp = TempDir::new("speculative-vocab");
    let (tf, _) = converted(&tmp, "llava15");
    let (of, _) = converted(&tmp, "llava_ov");
    let e = open_draft(of.path(), &tf, false, &ThreadPool::new(1))
        .err()
        .expect("llava_ov's byte-level BPE is not llava15's SentencePiece");
    let msg = e.to_string();
    assert!(
        msg.contains("llava15.gguf") && msg.contains("llava_ov.gguf"),
        "{msg}"
    );
    assert!(msg.contains("tokenizer"), "{msg}");
    let (df, _) = converted(&tmp, "llava_v1");
    open_draft(df.path(), &tf, true, &ThreadPool::new(1)).unwrap();
}

/// Pearson's chi-square of `counts` against probabilities `p` (ids outside `p` must not occur).
fn chi_square(counts: &[usize], p: &[(u32, f64)]) -> f64 {
    let n: usize = counts.iter().sum();
    let mut x2 = 0.0;
    for (id, &c) in counts.iter().enumerate() {
        let pi = p.iter().find(|e| e.0 == id as u32).map_or(0.0, |e| e.1);
        if pi == 0.0 {
            assert_eq!(c, 0, "token {id} is outside p's support but came out");
            continue;
        }
        let e = pi * n as f64;
        x2 += (c as f64 - e).powi(2) / e;
    }
    x2
}

/// The rule keeps the target's distribution p whatever the draft's q, after the sampler's
/// transforms (temperature, top-k, top-p, min-p) on both: 20000 draws from a fixed seed, a
/// chi-square against p below 25 (4 degrees of freedom: p-value about 5e-5 for a correct rule;
/// outputs distributed as q instead score in the thousands, checked too).
#[test]
fn speculative_sampling_keeps_the_targets_distribution() {
    let target = [1.0f32, 0.2, 2.0, -0.5, 0.9];
    let draft = [0.1f32, 1.5, 1.9, 0.4, -1.0];
    let configs = [
        ("temp 1", 1.0, 0, 1.0, 0.0),
        ("temp 0.7, top-k 3", 0.7, 3, 1.0, 0.0),
        ("temp 1.5, top-p 0.9, min-p 0.1", 1.5, 0, 0.9, 0.1),
    ];
    const DRAWS: usize = 20_000;
    for (name, temp, top_k, top_p, min_p) in configs {
        let config = SamplerConfig {
            temp,
            top_k,
            top_p,
            min_p,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        };
        let mut sampler = Sampler::new(config.clone());
        let mut drafting = Sampler::new(SamplerConfig { seed: 7, ..config });
        let p = sampler.distribution(&target, &[]);
        let q = drafting.distribution(&draft, &[]);
        assert_ne!(p, q, "{name}: a test needs p and q to differ");
        // A draft sampled from q, and a deterministic one (q one-hot, prompt lookup's case).
        let one_hot = [(q[0].0, 1.0)];
        for (label, qq) in [("sampled draft", &q[..]), ("one-hot draft", &one_hot[..])] {
            let (mut counts, mut naive) = (vec![0usize; 5], vec![0usize; 5]);
            for _ in 0..DRAWS {
                let x = drafting.draw(qq);
                let out = accept_or_resample(&mut sampler, &p, qq, x).unwrap_or_else(|y| y);
                counts[out as usize] += 1;
                naive[x as usize] += 1;
            }
            let x2 = chi_square(&counts, &p);
            println!("{name}, {label}: chi-square {x2:.2}, counts {counts:?}, p {p:?}");
            assert!(x2 < 25.0, "{name}, {label}: chi-square {x2} against p");
            // The test has power: the draft's own tokens are far from p.
            let bad: f64 = naive
                .iter()
                .enumerate()
                .map(|(id, &c)| {
                    let pi = p.iter().find(|e| e.0 == id as u32).map_or(1e-9, |e| e.1);
                    (c as f64 - pi * DRAWS as f64).powi(2) / (pi * DRAWS as f64)
                })
                .sum();
            assert!(bad > 200.0, "{name}, {label}: q is too close to p ({bad})");
        }
    }
}

/// The command line: `run --draft-model` and `run --lookup` print the plain run's tokens,
/// `bench --draft-model` reports acceptance and effective tok/s, and a draft with another
/// vocabulary is refused before anything runs, naming both files.
#[test]
fn command_line_drafting_keeps_the_reply_and_bench_reports_acceptance() {
    let tmp = TempDir::new("speculative-cli");
    let (tf, _) = converted(&tmp, "llava15");
    let (df, _) = converted(&tmp, "llava_v1");
    let (of, _) = converted(&tmp, "llava_ov");
    let exe = env!("CARGO_BIN_EXE_llava-edge");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(exe)
            .args(["run", "-m"])
            .arg(tf.path())
            .args([
                "-p",
                "Describe a red circle.",
                "-n",
                "24",
                "--temp",
                "0",
                "--json",
            ])
            .args(["-t", "1"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stdout, stderr)
    };
    let tokens = |stdout: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(stdout.lines().next().unwrap()).unwrap()["tokens"]
            .clone()
    };
    let (ok, plain, err) = run(&[]);
    assert!(ok, "{err}");
    let d = df.path().to_str().unwrap();
    for extra in [
        &["--draft-model", d, "--draft-max", "3"][..],
        &["--lookup"][..],
    ] {
        let (ok, out, err) = run(extra);
        assert!(ok, "{extra:?}: {err}");
        assert_eq!(tokens(&out), tokens(&plain), "{extra:?}");
        let j: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert!(
            j["draft"]["proposed"].as_u64().unwrap() > 0,
            "{extra:?}: {out}"
        );
    }
    let (ok, _, err) = run(&["--draft-model", of.path().to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("llava15.gguf") && err.contains("llava_ov.gguf"),
        "the error names both files: {err}"
    );

    let out = std::process::Command::new(exe)
        .args(["bench", "-m"])
        .arg(tf.path())
        .args([
            "--draft-model",
            d,
            "--draft-max",
            "4",
            "-p",
            "8",
            "-n",
            "16",
        ])
        .args(["--repeat", "1", "-t", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["acceptance", "effective_tok_s", "decode_tok_s", "speedup"] {
        assert!(j[key].as_f64().is_some(), "{key} in {j}");
    }
    assert_eq!(j["verify_cost"].as_array().unwrap().len(), 8);
    // Forced acceptance keeps every proposal: k+1 tokens a pass until the end.
    let out = std::process::Command::new(exe)
        .args(["bench", "-m"])
        .arg(tf.path())
        .args([
            "--draft-model",
            d,
            "--draft-max",
            "4",
            "-p",
            "8",
            "-n",
            "16",
        ])
        .args([
            "--repeat",
            "1",
            "-t",
            "1",
            "--json",
            "--draft-force-accept",
            "1",
        ])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["acceptance"].as_f64(), Some(1.0), "{j}");
}

/// Under sampling, a draft whose proposals are drawn from its own distribution (the target's
/// settings) is kept with probability min(1, p/q): the target drafting for itself keeps nearly
/// every proposal (p and q differ only by the rounding of a batched pass), where argmax
/// proposals are kept only with probability p.
#[test]
fn sampled_drafts_of_the_target_itself_are_kept() {
    let tmp = TempDir::new("speculative-sampled");
    let (tf, vf) = converted(&tmp, "llava15");
    let p = pipeline(&tf, &vf);
    let itself = TextModel::load(&tf).unwrap();
    let config = SamplerConfig {
        temp: 0.8,
        seed: 3,
        ..SamplerConfig::default()
    };
    let mut acceptance = Vec::new();
    for sampled in [false, true] {
        let mut d = ModelDrafter::new(&itself, itself.new_cache(1024, KvType::F32));
        if sampled {
            d.sampling = Some(Sampler::new(SamplerConfig {
                seed: 99,
                ..config.clone()
            }));
        }
        let mut spec = Speculation::new(Box::new(d), SpecConfig::default());
        let mut cache = p.text.new_cache(1024, KvType::F32);
        let req = Request {
            n_predict: 60,
            ..requests()[0].clone()
        };
        let (_, t) = p
            .chat_speculative(
                &mut Conversation::default(),
                &req,
                &mut cache,
                &mut Sampler::new(config.clone()),
                &mut spec,
                &AtomicBool::new(false),
                |_| {},
            )
            .unwrap();
        assert_eq!(t.tokens.len(), 60);
        println!("sampled drafts {sampled}: {:?}", spec.stats);
        acceptance.push(spec.stats.acceptance());
    }
    assert!(acceptance[1] > 0.9, "{acceptance:?}");
    assert!(acceptance[1] > acceptance[0], "{acceptance:?}");
}

/// A reply that fills the context is taken back with drafting on as without: the same tokens
/// and finish, the target's cache and the draft's back where they were before the turn.
#[test]
fn a_reply_that_fills_the_context_is_taken_back_from_both_caches() {
    let tmp = TempDir::new("speculative-full");
    let (tf, vf) = converted(&tmp, "llava15");
    let (df, _) = converted(&tmp, "llava_v1");
    let p = pipeline(&tf, &vf);
    let draft = TextModel::load(&df).unwrap();
    let req = Request {
        n_predict: 100,
        ..requests()[0].clone()
    };
    let n_ctx = 40;
    let turn = |spec: Option<&mut Speculation<'_>>| {
        let mut cache = p.text.new_cache(n_ctx, KvType::F32);
        let mut conv = Conversation::default();
        let cancel = AtomicBool::new(false);
        let (_, t) = match spec {
            Some(s) => p.chat_speculative(
                &mut conv,
                &req,
                &mut cache,
                &mut greedy(),
                s,
                &cancel,
                |_| {},
            ),
            None => p.chat_cancellable(&mut conv, &req, &mut cache, &mut greedy(), &cancel, |_| {}),
        }
        .unwrap();
        (t.tokens, t.finish, cache.len(), conv.turns)
    };
    let plain = turn(None);
    assert_eq!(plain.1, llava_edge::pipeline::Finish::ContextFull);
    assert_eq!((plain.2, plain.3), (0, 0), "taken back");
    let mut d = ModelDrafter::new(&draft, draft.new_cache(n_ctx, KvType::F32));
    let mut spec = Speculation::new(Box::new(&mut d), SpecConfig::default());
    assert_eq!(turn(Some(&mut spec)), plain);
    assert!(spec.stats.proposed > 0);
    drop(spec);
    assert_eq!(d.cache().len(), 0, "the draft's cache is taken back too");
    let mut spec = Speculation::new(Box::new(LookupDrafter::new(3, 1)), SpecConfig::default());
    assert_eq!(turn(Some(&mut spec)), plain);
}
