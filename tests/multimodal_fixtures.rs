//! Whole multimodal forward passes against transformers: our encoder on the reference pixel
//! values, our anyres/OneVision packing, the rows spliced in at the reference's image (or
//! video) tokens, then every position's logits and eight greedy steps. Covers LLaVA, 1.5,
//! NeXT (Mistral, Vicuna) and OneVision (single image at several sizes, two images, video).

mod common;

use common::hf_text::write_text_gguf;
use common::hf_vision::write_mmproj_gguf;
use common::npy::{fixtures_dir, read};
use common::safetensors::read_f32;
use common::TempDir;
use common::{json, pair, rel_err};
use llava_edge::gguf::GgufFile;
use llava_edge::text::{KvType, Logits, TextModel};
use llava_edge::threadpool::ThreadPool;
use llava_edge::vision::anyres::{pack_anyres, pack_video, plan_tiles, PackSpec};
use llava_edge::vision::VisionEncoder;
use serde_json::Value;

#[test]
fn image_prompts_match_transformers() {
    let tmp = TempDir::new("mm");
    let pool = ThreadPool::new(2);
    let mut checked = 0;
    for case in [
        "llava_v1",
        "llava15",
        "llava_next_mistral",
        "llava_next_vicuna",
        "llava_ov",
        "llava_ov_mixed",
        "llava15_tokjson",
        "llava_next_vicuna_tokjson",
    ] {
        let dir = fixtures_dir().join(case);
        let cj = json(&dir.join("case.json"));
        let (tp, vp) = (
            tmp.path(&format!("{case}.gguf")),
            tmp.path(&format!("{case}-mmproj.gguf")),
        );
        write_text_gguf(&dir, &tp);
        write_mmproj_gguf(&dir, &vp);
        let (tf, vf) = (GgufFile::open(&tp).unwrap(), GgufFile::open(&vp).unwrap());
        let text = TextModel::load(&tf).unwrap();
        let enc = VisionEncoder::load(&vf).unwrap();
        let s = enc.config.image_size;
        let p = s / enc.config.patch_size;
        let dt = text.config.n_embd;
        let pins: Vec<(usize, usize)> = cj["image_grid_pinpoints_hw"]
            .as_array()
            .map(|a| a.iter().map(pair).collect())
            .unwrap_or_default();
        let max_tiles = cj["vision_aspect_ratio"]
            .as_str()
            .and_then(|s| s.strip_prefix("anyres_max_"))
            .map(|n| n.parse().unwrap());
        let newline = if pins.is_empty() {
            Vec::new()
        } else {
            read_f32(&dir.join("hf/model.safetensors"), "image_newline").1
        };
        let media_tok = [cj["image_token_id"].as_i64(), cj["video_token_id"].as_i64()];

        for entry in std::fs::read_dir(&dir).unwrap() {
            let fx = entry.unwrap().path();
            let Ok(meta) = std::fs::read_to_string(fx.join("meta.json")) else {
                continue;
            };
            let meta: Value = serde_json::from_str(&meta).unwrap();
            if meta["kind"] == "text" {
                continue;
            }
            // Project every tile the reference ran through the vision tower.
            let px = match fx.join("pixel_values.npy") {
                q if q.exists() => read(&q),
                _ => read(&fx.join("pixel_values_videos.npy")),
            };
            let n_tiles = px.f32().len() / (3 * s * s);
            let mut tiles = Vec::new();
            for t in 0..n_tiles {
                let feats = enc
                    .features(&px.f32()[t * 3 * s * s..(t + 1) * 3 * s * s], &pool)
                    .unwrap();
                tiles.extend(enc.project(&feats, &pool).unwrap());
            }
            let per_tile = p * p * dt;
            // Pack them as the model does for this kind of prompt.
            let packed: Vec<f32> = match meta["kind"].as_str().unwrap() {
                "video" => pack_video(&tiles, n_tiles, p, dt, &newline).unwrap(),
                "multi_image" => tiles
                    .chunks(per_tile)
                    .flat_map(|t| t.iter().chain(&newline).copied())
                    .collect(),
                _ if pins.is_empty() => tiles,
                _ => {
                    let orig = pair(&meta["image_sizes_hw"][0]);
                    let plan = plan_tiles(orig, &pins, s).unwrap();
                    assert_eq!(
                        n_tiles,
                        1 + plan.grid_hw.0 * plan.grid_hw.1,
                        "{}",
                        fx.display()
                    );
                    pack_anyres(
                        &tiles,
                        dt,
                        plan.grid_hw,
                        orig,
                        &newline,
                        PackSpec { p, max_tiles },
                    )
                    .unwrap()
                    .features
                }
            };
            let ids: Vec<i64> = read(&fx.join("input_ids.npy")).i64().to_vec();
            let n_media = ids
                .iter()
                .filter(|&&t| media_tok.contains(&Some(t)))
                .count();
            assert_eq!(
                n_media * dt,
                packed.len(),
                "{}: media token count",
                fx.display()
            );
            let mut rows = Vec::with_capacity(ids.len() * dt);
            let mut next = packed.chunks(dt);
            for &id in &ids {
                if media_tok.contains(&Some(id)) {
                    rows.extend_from_slice(next.next().unwrap());
                } else {
                    rows.extend(text.embed(&[id as u32]).unwrap());
                }
            }
            let vocab = text.config.n_vocab;
            let mut cache = text.new_cache(ids.len() + 16, KvType::F32);
            let logits = text.forward(rows, &mut cache, Logits::All, &pool).unwrap();
            let want = read(&fx.join("logits.npy"));
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
                    "{}: position {t}: relative error {e:e}",
                    fx.display()
                );
            }
            let mut last = logits[(ids.len() - 1) * vocab..].to_vec();
            let gen_ids = read(&fx.join("generated_ids.npy"));
            let gen_logits = read(&fx.join("generated_logits.npy"));
            for (step, (&tok, w)) in gen_ids
                .i64()
                .iter()
                .zip(gen_logits.f32().chunks(vocab))
                .enumerate()
            {
                let e = rel_err(&last, w);
                worst = worst.max(e);
                assert!(
                    e < 1e-4,
                    "{}: step {step}: relative error {e:e}",
                    fx.display()
                );
                assert_eq!(
                    llava_edge::ops::argmax(&last) as i64,
                    tok,
                    "{}: step {step}",
                    fx.display()
                );
                last = text
                    .forward(
                        text.embed(&[tok as u32]).unwrap(),
                        &mut cache,
                        Logits::Last,
                        &pool,
                    )
                    .unwrap();
            }
            println!(
                "{case}/{}: {n_media} media tokens, worst relative logit error {worst:e}",
                fx.file_name().unwrap().to_string_lossy()
            );
            checked += 1;
        }
    }
    assert!(checked >= 28, "{checked} fixtures");
}

/// OneVision prompts with several images of different shapes and sizes, through the whole
/// pipeline from the PNG files (converter, chat template, tokenizer, preprocessing, encoder,
/// splicing, decoding): prompt ids, each image's rows and the greedy reply equal transformers'.
/// In a multi-image prompt transformers pads each image to a square with the mean colour before
/// its one base tile; squashing it instead leaves a wide or tall image's rows far off.
#[test]
fn onevision_images_of_mixed_shapes_answer_like_transformers() {
    use gguf_tools::convert::{convert, OutType};
    use llava_edge::chat::{ChatTemplate, SpecialTokens};
    use llava_edge::image::load_image;
    use llava_edge::image::preprocess::{pad_square_tile, Normalize};
    use llava_edge::pipeline::{Pipeline, Request, Timings};
    use llava_edge::sampling::{Sampler, SamplerConfig};
    use llava_edge::tokenizer::Tokenizer;

    let case = "llava_ov_mixed";
    let dir = fixtures_dir().join(case);
    let tmp = TempDir::new("ov-mixed");
    let (tp, vp) = (tmp.path("text.gguf"), tmp.path("mmproj.gguf"));
    convert(&dir.join("hf"), &tp, &vp, OutType::F32, false).unwrap();
    let (tf, vf) = (GgufFile::open(&tp).unwrap(), GgufFile::open(&vp).unwrap());
    let tokenizer = Tokenizer::from_gguf(&tf).unwrap();
    // The checkpoint's own Jinja template, as the command line uses it.
    let (template, why) = ChatTemplate::for_model(
        tf.get_str("tokenizer.chat_template").ok(),
        SpecialTokens::from_tokenizer(&tokenizer),
        ChatTemplate::ChatMl,
    );
    assert!(
        matches!(template, ChatTemplate::Jinja(_)),
        "template not used: {why:?}"
    );
    let p = Pipeline {
        text: TextModel::load(&tf).unwrap(),
        vision: Some(VisionEncoder::load(&vf).unwrap()),
        tokenizer,
        template,
        pool: ThreadPool::new(2),
    };
    let enc = p.vision.as_ref().unwrap();
    let (s, d) = (enc.config.image_size, p.text.config.n_embd);
    let norm = Normalize {
        mean: enc.config.mean,
        std: enc.config.std,
    };
    let image_tok = json(&dir.join("case.json"))["image_token_id"]
        .as_i64()
        .unwrap() as u32;
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let fx = entry.unwrap().path();
        let Ok(meta) = std::fs::read_to_string(fx.join("meta.json")) else {
            continue;
        };
        let meta: Value = serde_json::from_str(&meta).unwrap();
        let name = fx.file_name().unwrap().to_string_lossy().into_owned();
        let images: Vec<_> = meta["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| fixtures_dir().join(i.as_str().unwrap()))
            .collect();
        let multi = meta["kind"] == "multi_image";

        // Each image's one base tile, as the processor made it: within one 8-bit level.
        if multi {
            let want = read(&fx.join("pixel_values.npy"));
            assert_eq!(want.shape(), &[images.len(), 1, 3, s, s], "{name}");
            let one_level = 1.0 / 255.0 / norm.std.iter().cloned().fold(f32::MAX, f32::min);
            for (i, path) in images.iter().enumerate() {
                let ours = pad_square_tile(&load_image(path).unwrap(), s, &norm);
                let want = &want.f32()[i * 3 * s * s..(i + 1) * 3 * s * s];
                let diff = ours
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    diff <= one_level * 1.001,
                    "{name}: image {i}: base tile differs by {diff} (one level {one_level})"
                );
            }
        }

        let req = Request {
            prompt: "What is different between these images?".into(),
            images,
            video: None,
            max_frames: 1,
            system: None,
            n_predict: 8,
            stop: vec![],
        };
        let req = Request {
            prompt: if multi {
                req.prompt
            } else {
                "What is shown in this image?".into()
            },
            ..req
        };
        let (seq, rows) = p.prompt_embeddings(&req, &mut Timings::default()).unwrap();
        let want_ids: Vec<u32> = read(&fx.join("input_ids.npy"))
            .i64()
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(seq, want_ids, "{name}: prompt token ids");
        let got: Vec<f32> = seq
            .iter()
            .enumerate()
            .filter(|&(_, &id)| id == image_tok)
            .flat_map(|(i, _)| rows[i * d..(i + 1) * d].iter().copied())
            .collect();
        let want = read(&fx.join("image_features.npy"));
        let e = rel_err(&got, want.f32());
        // Our pixels may differ from torchvision's by one 8-bit level here and there (checked
        // above); through the tower that moves rows by at most 1.4e-3, a distorted tile by ~0.5.
        assert!(e < 5e-3, "{name}: image rows relative error {e:e}");

        let mut cache = p.text.new_cache(1024, KvType::F32);
        let mut greedy = Sampler::new(SamplerConfig {
            temp: 0.0,
            ..SamplerConfig::default()
        });
        let (_, t) = p.generate(&req, &mut cache, &mut greedy, |_| {}).unwrap();
        let gen: Vec<u32> = read(&fx.join("generated_ids.npy"))
            .i64()
            .iter()
            .map(|&x| x as u32)
            .take_while(|&id| !p.tokenizer.is_eog(id))
            .collect();
        assert_eq!(t.tokens, gen, "{name}: greedy tokens");
        println!(
            "{case}/{name}: {} prompt ids equal, image rows within {e:e}, {} greedy tokens equal",
            want_ids.len(),
            gen.len()
        );
        checked += 1;
    }
    assert_eq!(checked, 7, "fixtures of {case}");
}
