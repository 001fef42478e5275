//! The text decoder on a Vulkan device (CI: Mesa's lavapipe) against transformers on every
//! fixture, partial offload (`-ngl`) against the CPU, quantized weights, and a device memory
//! budget too small for the model. Where no Vulkan device exists each test returns after one
//! line saying so, unless LLAVA_EDGE_REQUIRE_VULKAN=1 (CI sets it).
//!
//! Bounds: the device keeps keys and values in F16, as the CPU's default cache, so the logits
//! carry the F16 cache's rounding (tests/text_fixtures.rs `f16_kv_cache_stays_close`: about
//! one rounding of 2^-11 = 4.9e-4 relative, four allowed); the shaders' f32 sums in another
//! order add ~1e-6. Tokens must agree wherever the reference's top two logits are further
//! apart than twice the error.
#![cfg(feature = "vulkan")]

mod common;

use common::fixtures::TEXT_CASES as CASES;
use common::hf_text::write_text_gguf;
use common::npy::{fixtures_dir, read};
use common::rel_err;
use common::TempDir;
use llava_edge::backend::vulkan::Vulkan;
use llava_edge::gguf::GgufFile;
use llava_edge::text::{KvType, Logits, TextError, TextModel};
use llava_edge::threadpool::ThreadPool;

const F16_CACHE: f32 = 4.0 * 4.9e-4;

/// The device as a backend with `budget` bytes, or None (after one line) where there is no
/// Vulkan at all.
fn device(budget: Option<u64>) -> Option<Vulkan> {
    common::vulkan::open_or_skip("text ").map(|v| Vulkan::new(v, budget))
}

struct Fixture {
    ids: Vec<u32>,
    want: Vec<f32>,
    gen_ids: Vec<i64>,
    gen_logits: Vec<f32>,
}

fn fixture(case: &str) -> Fixture {
    let fx = fixtures_dir().join(case).join("text_only");
    Fixture {
        ids: read(&fx.join("input_ids.npy"))
            .i64()
            .iter()
            .map(|&x| x as u32)
            .collect(),
        want: read(&fx.join("logits.npy")).f32().to_vec(),
        gen_ids: read(&fx.join("generated_ids.npy")).i64().to_vec(),
        gen_logits: read(&fx.join("generated_logits.npy")).f32().to_vec(),
    }
}

/// Whether `got` must pick the reference's token: its top two logits are further apart than
/// twice the error `e` (relative to the largest).
fn decisive(want: &[f32], e: f32) -> bool {
    let mut sorted = want.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    sorted[0] - sorted[1] > 2.0 * e * scale
}

/// Prompt logits (all positions), then the reference's greedy tokens fed back through the
/// cache; returns the last-position logits of the prompt and every step, and the greedy picks.
fn run(
    model: &TextModel,
    fx: &Fixture,
    ty: KvType,
    pool: &ThreadPool,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut cache = model.try_new_cache(fx.ids.len() + 16, ty).unwrap();
    let prompt = model
        .forward(model.embed(&fx.ids).unwrap(), &mut cache, Logits::All, pool)
        .unwrap();
    let vocab = model.config.n_vocab;
    let mut steps = vec![prompt[(fx.ids.len() - 1) * vocab..].to_vec()];
    for &tok in &fx.gen_ids[..fx.gen_ids.len() - 1] {
        steps.push(
            model
                .forward(
                    model.embed(&[tok as u32]).unwrap(),
                    &mut cache,
                    Logits::Last,
                    pool,
                )
                .unwrap(),
        );
    }
    (prompt, steps)
}

/// Each position's prompt logits within `bound` (relative) of the reference's; returns the
/// worst error.
fn check_prompt(what: &str, prompt: &[f32], fx: &Fixture, vocab: usize, bound: f32) -> f32 {
    let mut worst = 0f32;
    for (t, (g, w)) in prompt.chunks(vocab).zip(fx.want.chunks(vocab)).enumerate() {
        let e = rel_err(g, w);
        worst = worst.max(e);
        assert!(e < bound, "{what}: position {t}: relative error {e:e}");
    }
    worst
}

/// Each generation step's logits within `bound` of the reference's, and its greedy token the
/// reference's wherever `must_agree(reference logits, error)`; returns the worst error and how
/// many tokens were compared.
fn check_steps(
    what: &str,
    steps: &[Vec<f32>],
    fx: &Fixture,
    vocab: usize,
    bound: f32,
    must_agree: impl Fn(&[f32], f32) -> bool,
) -> (f32, usize) {
    let (mut worst, mut checked) = (0f32, 0);
    for (step, (got, (w, &tok))) in steps
        .iter()
        .zip(fx.gen_logits.chunks(vocab).zip(&fx.gen_ids))
        .enumerate()
    {
        let e = rel_err(got, w);
        worst = worst.max(e);
        assert!(e < bound, "{what}: step {step}: relative error {e:e}");
        if must_agree(w, e) {
            assert_eq!(
                llava_edge::ops::argmax(got) as i64,
                tok,
                "{what}: step {step}: greedy token"
            );
            checked += 1;
        }
    }
    (worst, checked)
}

/// Every fixture's text model wholly on the device with a `ty` cache against transformers:
/// prompt and step logits within `bound`, the greedy token equal wherever `must_agree`.
fn every_fixture_on_vulkan(tag: &str, ty: KvType, bound: f32, must_agree: fn(&[f32], f32) -> bool) {
    if device(None).is_none() {
        return;
    }
    let tmp = TempDir::new(tag);
    let pool = ThreadPool::new(2);
    for case in CASES {
        let path = tmp.path(&format!("{case}.gguf"));
        write_text_gguf(&fixtures_dir().join(case), &path);
        let f = GgufFile::open(&path).unwrap();
        let mut model = TextModel::load(&f).unwrap();
        let placed = model.offload(device(None).unwrap(), usize::MAX).unwrap();
        assert_eq!(placed.device_layers, model.config.n_layer, "{case}");
        assert!(placed.output_on_device, "{case}");
        let fx = fixture(case);
        let vocab = model.config.n_vocab;
        let (prompt, steps) = run(&model, &fx, ty, &pool);
        let worst = check_prompt(case, &prompt, &fx, vocab, bound);
        let (worst_step, checked) = check_steps(case, &steps, &fx, vocab, bound, must_agree);
        println!(
            "{case}: Vulkan ({}), {ty:?} cache, {} prompt tokens, worst relative logit error \
             {:e}, {checked}/{} greedy tokens compared and equal",
            placed.device.unwrap_or_default(),
            fx.ids.len(),
            worst.max(worst_step),
            steps.len()
        );
    }
}

#[test]
fn every_text_fixture_on_vulkan_matches_transformers() {
    every_fixture_on_vulkan("vk-text", KvType::F16, F16_CACHE, decisive);
}

/// With an f32 cache on the device (the `KV_F32` attention, stores by plain copies) nothing is
/// rounded to F16: the logits match transformers within the CPU's own exact-cache bound
/// (tests/text_fixtures.rs: 1e-4 relative; f32 sums in another order and Vulkan's exp
/// precision add ~1e-6), and every greedy token is equal.
#[test]
fn an_f32_cache_on_vulkan_matches_transformers_as_the_cpu_does() {
    every_fixture_on_vulkan("vk-f32kv", KvType::F32, 1e-4, |_, _| true);
}

/// A matrix larger than one device buffer may be (lavapipe's 128 MiB: a 0.5B model's tied
/// output) is held in blocks of rows, each product writing its columns of the output: the
/// logits are the unblocked ones, bit for bit (each row's sum is the same arithmetic).
#[test]
fn matrices_in_blocks_of_rows_give_the_same_logits() {
    if device(None).is_none() {
        return;
    }
    let tmp = TempDir::new("vk-blocks");
    let pool = ThreadPool::new(2);
    // llava_ov: Qwen2 (biases, tied output); F32 and Q8_0 (the integer products).
    for (case, q8) in [("llava_ov", false), ("llava15", true)] {
        let mut path = tmp.path(&format!("{case}.gguf"));
        write_text_gguf(&fixtures_dir().join(case), &path);
        if q8 {
            let q = tmp.path(&format!("{case}-q8.gguf"));
            common::fixtures::quantize(&path, &q, gguf_tools::mix::Mix::Q8_0);
            path = q;
        }
        let f = GgufFile::open(&path).unwrap();
        let fx = fixture(case);
        let mut whole = TextModel::load(&f).unwrap();
        whole.offload(device(None).unwrap(), usize::MAX).unwrap();
        // 3000 bytes: 64-value F32 rows 11 to a block (Q8_0: 44), so every matrix is split,
        // most not at a multiple of the shaders' tiles.
        let mut blocked = TextModel::load(&f).unwrap();
        let dev = device(None).unwrap().with_max_weight_buffer(3000);
        blocked.offload(dev, usize::MAX).unwrap();
        let (a, b) = (
            run(&whole, &fx, KvType::F16, &pool),
            run(&blocked, &fx, KvType::F16, &pool),
        );
        assert_eq!(a.0, b.0, "{case}: prompt logits");
        assert_eq!(a.1, b.1, "{case}: step logits");
    }
}

/// The greedy continuation of the prompt, `n` tokens, and each step's logits.
fn greedy(model: &TextModel, ids: &[u32], n: usize, pool: &ThreadPool) -> (Vec<u32>, Vec<f32>) {
    let mut cache = model.try_new_cache(ids.len() + n + 1, KvType::F16).unwrap();
    let mut logits = model
        .forward(model.embed(ids).unwrap(), &mut cache, Logits::Last, pool)
        .unwrap();
    let (mut out, mut all) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let tok = llava_edge::ops::argmax(&logits) as u32;
        out.push(tok);
        all.extend_from_slice(&logits);
        logits = model
            .forward(model.embed(&[tok]).unwrap(), &mut cache, Logits::Last, pool)
            .unwrap();
    }
    (out, all)
}

#[test]
fn every_split_of_layers_gives_the_cpu_greedy_tokens() {
    if device(None).is_none() {
        return;
    }
    let tmp = TempDir::new("vk-ngl");
    let pool = ThreadPool::new(2);
    // llava15: LLaMA; llava_ov: Qwen2, with Q/K/V biases and the tied output.
    for case in ["llava15", "llava_ov"] {
        let path = tmp.path(&format!("{case}.gguf"));
        write_text_gguf(&fixtures_dir().join(case), &path);
        let f = GgufFile::open(&path).unwrap();
        let cpu = TextModel::load(&f).unwrap();
        let fx = fixture(case);
        let (want, want_logits) = greedy(&cpu, &fx.ids, 12, &pool);
        let n_layer = cpu.config.n_layer;
        for ngl in 0..=n_layer + 1 {
            let mut model = TextModel::load(&f).unwrap();
            let placed = model.offload(device(None).unwrap(), ngl).unwrap();
            assert_eq!(placed.device_layers, ngl.min(n_layer), "{case} -ngl {ngl}");
            assert_eq!(placed.output_on_device, ngl >= n_layer, "{case} -ngl {ngl}");
            let (got, logits) = greedy(&model, &fx.ids, 12, &pool);
            // Both sides round keys and values to F16; only the order of f32 sums differs.
            let e = rel_err(&logits, &want_logits);
            assert!(e < F16_CACHE, "{case} -ngl {ngl}: relative error {e:e}");
            assert_eq!(got, want, "{case} -ngl {ngl}: greedy tokens");
        }
    }
}

/// One decode step of several sequences at once (the server's batch) on the device gives each
/// the logits it gets alone.
#[test]
fn batched_slots_on_vulkan_equal_each_sequence_alone() {
    if device(None).is_none() {
        return;
    }
    let tmp = TempDir::new("vk-slots");
    let pool = ThreadPool::new(2);
    let path = tmp.path("llava_ov.gguf");
    write_text_gguf(&fixtures_dir().join("llava_ov"), &path);
    let f = GgufFile::open(&path).unwrap();
    let mut model = TextModel::load(&f).unwrap();
    model.offload(device(None).unwrap(), usize::MAX).unwrap();
    let ids = fixture("llava_ov").ids;
    // Three sequences at different depths.
    let prompts = [&ids[..3], &ids[..ids.len() - 1], &ids[2..]];
    let mut alone = Vec::new();
    let mut caches = Vec::new();
    for p in prompts {
        let mut c = model.try_new_cache(ids.len() + 4, KvType::F16).unwrap();
        model
            .forward(model.embed(p).unwrap(), &mut c, Logits::Last, &pool)
            .unwrap();
        let mut solo = model.try_new_cache(ids.len() + 4, KvType::F16).unwrap();
        model
            .forward(model.embed(p).unwrap(), &mut solo, Logits::Last, &pool)
            .unwrap();
        alone.push(
            model
                .forward(model.embed(&[7]).unwrap(), &mut solo, Logits::Last, &pool)
                .unwrap(),
        );
        caches.push(c);
    }
    let mut refs: Vec<_> = caches.iter_mut().collect();
    let x = model.embed(&[7, 7, 7]).unwrap();
    let batched = model.forward_slots(x, &mut refs, &pool).unwrap();
    let vocab = model.config.n_vocab;
    for (i, (b, a)) in batched.chunks(vocab).zip(&alone).enumerate() {
        // The same shaders on the same rows; only the product tiles' grouping of tokens
        // differs, which the shaders do not let change a row's sums.
        let e = rel_err(b, a);
        assert!(e < 1e-6, "sequence {i}: batched vs alone {e:e}");
    }
}

#[test]
fn quantized_weights_on_vulkan_stay_close() {
    use gguf_tools::mix::Mix;
    if device(None).is_none() {
        return;
    }
    let tmp = TempDir::new("vk-quant");
    let pool = ThreadPool::new(2);
    // As tests/text_fixtures.rs `quantized_text_weights_stay_close`: the logits move by the RMS
    // relative weight error r times sqrt(15 products), activations quantized to int8 blocks
    // (5.7e-3) for the integer products; twice the prediction allowed, plus the F16 cache.
    let chain = 15f32.sqrt();
    let with_act = |r: f32| (r * r + 5.7e-3f32 * 5.7e-3).sqrt();
    for (mix, r) in [
        (Mix::F16, 2.8e-4f32),
        (Mix::Q8_0, with_act(5.7e-3)),
        (Mix::Q4_0, with_act(9.0e-2)),
        (Mix::Q5_1, with_act(4.8e-2)),
    ] {
        let bound = 2.0 * r * chain + F16_CACHE;
        let case = "llava15";
        let f32_path = tmp.path(&format!("{case}-f32.gguf"));
        write_text_gguf(&fixtures_dir().join(case), &f32_path);
        let q_path = tmp.path(&format!("{case}-{mix}.gguf"));
        common::fixtures::quantize(&f32_path, &q_path, mix);
        // Interleaved for the CPU's decode, as `run` loads files: the upload puts rows back.
        let mut f = GgufFile::open(&q_path).unwrap();
        llava_edge::text::interleave_weights(&mut f, &pool).unwrap();
        let mut model = TextModel::load(&f).unwrap();
        model.offload(device(None).unwrap(), usize::MAX).unwrap();
        let fx = fixture(case);
        let vocab = model.config.n_vocab;
        let (_, steps) = run(&model, &fx, KvType::F16, &pool);
        let (worst, _) = check_steps(&mix.to_string(), &steps, &fx, vocab, bound, decisive);
        println!("{case} {mix} on Vulkan: worst relative logit error {worst:e} (bound {bound:e})");
    }
}

#[test]
fn a_small_device_budget_places_fewer_layers_and_a_cache_past_it_is_refused() {
    let Some(probe) = device(None) else {
        return;
    };
    drop(probe);
    let tmp = TempDir::new("vk-budget");
    let pool = ThreadPool::new(2);
    let path = tmp.path("llava15.gguf");
    write_text_gguf(&fixtures_dir().join("llava15"), &path);
    let f = GgufFile::open(&path).unwrap();

    // What one layer takes, measured by placing one.
    let mut one = TextModel::load(&f).unwrap();
    let layer = one.offload(device(None).unwrap(), 1).unwrap().device_bytes;
    assert!(layer > 0);
    drop(one);

    // Room for one layer and a half: the last layer goes, the first stays on the CPU, and so
    // does the output.
    let mut model = TextModel::load(&f).unwrap();
    let placed = model
        .offload(device(Some(layer + layer / 2)).unwrap(), usize::MAX)
        .unwrap();
    assert_eq!((placed.device_layers, placed.output_on_device), (1, false));
    let fx = fixture("llava15");
    let cpu = TextModel::load(&f).unwrap();
    assert_eq!(
        greedy(&model, &fx.ids, 6, &pool).0,
        greedy(&cpu, &fx.ids, 6, &pool).0
    );

    // No room at all: everything on the CPU.
    let mut none = TextModel::load(&f).unwrap();
    let placed = none.offload(device(Some(0)).unwrap(), usize::MAX).unwrap();
    assert_eq!((placed.device_layers, placed.device), (0, None));

    // Through the load path: fewer layers, said in a warning.
    let opts = llava_edge::load::LoadOptions {
        device: Some(llava_edge::load::Device::Vulkan),
        device_memory: Some(layer + layer / 2),
        ..llava_edge::load::LoadOptions::new(path.clone())
    };
    let files = llava_edge::load::ModelFiles::open(&opts, &pool).unwrap();
    let models = files.models(&opts).unwrap();
    assert_eq!(models.text.placement().device_layers, 1);
    let said: Vec<String> = models.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        said.iter()
            .any(|w| w.contains("holds 1 of the 2 text layers")
                && w.contains("out of Vulkan device memory")),
        "{said:?}"
    );

    // A cache the device's budget cannot hold is an error naming the device memory, at once.
    let e = model.try_new_cache(1 << 20, KvType::F16).err().unwrap();
    assert!(
        matches!(e, TextError::Backend(_)) && e.to_string().contains("out of Vulkan device memory"),
        "{e}"
    );
}

/// The binary's flags: `run --device vulkan` with every `-ngl` gives the CPU's reply token for
/// token, `-v` names the device and its memory, and CUDA or an unknown device is a clear
/// error.
#[test]
fn run_on_vulkan_through_the_command_line_gives_the_cpu_reply() {
    if device(None).is_none() {
        return;
    }
    let (text, _) = common::converted_llava15("vk-cli");
    let m = text.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "-m",
            m,
            "--temp",
            "0",
            "-t",
            "2",
            "-n",
            "8",
            "--json",
            "-p",
            "Describe a red circle on a blue background.",
        ];
        args.extend_from_slice(extra);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_llava-edge"))
            .args(&args)
            .output()
            .unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
        (o.status.code(), out, err)
    };
    let ids = |out: &str| -> serde_json::Value {
        let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        serde_json::json!([j["prompt_tokens"], j["tokens"], j["reply"]])
    };
    let (code, cpu, err) = run(&["--device", "cpu", "-v"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("device: CPU"), "{err}");
    for ngl in ["0", "1", "2", "99"] {
        let (code, out, err) = run(&["--device", "vulkan", "-ngl", ngl, "-v"]);
        assert_eq!(code, Some(0), "-ngl {ngl}: {err}");
        assert_eq!(ids(&out), ids(&cpu), "-ngl {ngl}: prompt and reply tokens");
        if ngl == "0" {
            assert!(err.contains("device: CPU"), "{err}");
        } else {
            let layers = ngl.parse::<usize>().unwrap().min(2);
            assert!(
                err.contains(&format!("{layers} of 2 text layers"))
                    && err.contains("MiB of device"),
                "-ngl {ngl}: {err}"
            );
        }
    }
    // bench takes the same flags.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llava-edge"))
        .args([
            "bench", "-m", m, "-t", "2", "-p", "8", "-n", "2", "--repeat", "1", "--json",
            "--device", "vulkan", "-ngl", "1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["device_layers"], 1, "{j}");
    assert!(j["device"].as_str().is_some_and(|d| !d.is_empty()), "{j}");
    let (code, _, err) = run(&["--device", "cuda"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("CUDA cannot run the model"), "{err}");
    // The loader's first device by number, and one that is not there.
    let (code, out, err) = run(&["--device", "vulkan:0"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ids(&out), ids(&cpu), "vulkan:0");
    let (code, _, err) = run(&["--device", "vulkan:99"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Vulkan device 99 does not exist"), "{err}");
    let (code, _, err) = run(&["-ngl", "many"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("-ngl 'many': a layer count"), "{err}");
    let (code, _, err) = run(&["--device", "tpu"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("unknown device 'tpu'"), "{err}");
}

/// The whole path a user runs with `--device vulkan` (the load path's placement: text layers
/// and the vision encoder on the device), on every
/// converted fixture checkpoint and its image, video and text-only questions: the prompt's
/// token ids equal transformers' input_ids and greedy generation gives its tokens up to the
/// first end-of-generation token (tests/pipeline_fixtures.rs, on the device).
#[test]
fn every_pipeline_fixture_answers_like_transformers_on_vulkan() {
    if device(None).is_none() {
        return;
    }
    let checked = common::vulkan::pipeline_fixtures_on_vulkan("vk-pipeline", &CASES, |_| true);
    println!("{checked} pipeline fixtures on Vulkan: prompt ids and greedy tokens equal");
    assert!(checked >= 20, "{checked} fixtures");
}

/// `run --device vulkan` answers about an image (the mmproj and the picture through the whole
/// pipeline, the encoder on the device) with the CPU's prompt and reply, token for token, for
/// every split of the text layers.
#[test]
fn run_about_an_image_on_vulkan_gives_the_cpu_reply() {
    if device(None).is_none() {
        return;
    }
    let (text, mmproj) = common::converted_llava15("vk-image");
    let image = fixtures_dir().join("images/sq180.png");
    let run = |device: &str, ngl: &str| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_llava-edge"))
            .args([
                "run",
                "-m",
                text.to_str().unwrap(),
                "--mmproj",
                mmproj.to_str().unwrap(),
                "--image",
                image.to_str().unwrap(),
                "-p",
                "What is shown in this image?",
                "--temp",
                "0",
                "-t",
                "2",
                "-n",
                "8",
                "--json",
                "-v",
                "--device",
                device,
                "-ngl",
                ngl,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{device}: {err}");
        // The encoder is on the GPU whenever one is used, -ngl 0 included (as llama.cpp's
        // mmproj is).
        let on = if device == "cpu" { "CPU" } else { "GPU" };
        assert!(
            err.contains(&format!("vision encoder: {on}")),
            "{device}: {err}"
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            j["image_tokens"].clone(),
            j["prompt_tokens"].clone(),
            j["tokens"].clone(),
        )
    };
    let cpu = run("cpu", "all");
    assert!(cpu.0.as_array().is_some_and(|a| !a.is_empty()), "{cpu:?}");
    for ngl in ["0", "1", "all"] {
        assert_eq!(run("vulkan", ngl), cpu, "-ngl {ngl}");
    }
}
