//! The one load path (`llava_edge::load`) on the converted LLaVA-1.5 fixture: the pipeline it
//! builds answers like transformers, one loaded pipeline serves several threads at once, and
//! what the command line used to print comes back as warnings and typed errors instead.

mod common;

use common::npy::{fixtures_dir, read};
use common::TempDir;
use gguf_tools::convert::{convert, OutType};
use llava_edge::chat::ChatTemplate;
use llava_edge::gguf::Value;
use llava_edge::load::{LoadError, LoadOptions, LoadWarning, ModelFiles};
use llava_edge::pipeline::{Pipeline, Request};
use llava_edge::sampling::{Sampler, SamplerConfig};
use llava_edge::text::KvType;
use llava_edge::threadpool::ThreadPool;
use llava_edge::tokenizer::Tokenizer;

fn request() -> Request {
    Request {
        prompt: "What is shown in this image?".into(),
        images: vec![fixtures_dir().join("images/sq180.png")],
        video: None,
        max_frames: 16,
        system: None,
        n_predict: 8,
        stop: vec![],
    }
}

/// The prompt ids and greedy tokens of `request()`.
fn answer(p: &Pipeline<'_, Tokenizer>) -> (Vec<u32>, Vec<u32>) {
    let mut cache = p.text.new_cache(512, KvType::F32);
    let mut greedy = Sampler::new(SamplerConfig {
        temp: 0.0,
        ..SamplerConfig::default()
    });
    let (_, t) = p
        .generate(&request(), &mut cache, &mut greedy, |_| {})
        .unwrap();
    (t.prompt, t.tokens)
}

#[test]
fn the_load_path_builds_a_pipeline_that_answers_like_transformers_on_many_threads() {
    let tmp = TempDir::new("load-path");
    let (tp, vp) = (tmp.path("text.gguf"), tmp.path("mmproj.gguf"));
    let dir = fixtures_dir().join("llava15");
    convert(&dir.join("hf"), &tp, &vp, OutType::F32, false).unwrap();
    let opts = LoadOptions {
        mmproj: Some(vp.clone()),
        ..LoadOptions::new(tp.clone())
    };
    let pool = ThreadPool::new(2);
    let files = ModelFiles::open(&opts, &pool).unwrap();
    let loaded = files.pipeline(&opts, pool).unwrap();
    assert_eq!(loaded.warnings, []);
    let p = &loaded.pipeline;
    // The checkpoint's own template, as the command line chooses it.
    assert!(
        matches!(p.template, ChatTemplate::Jinja(_)),
        "{}",
        p.template
    );
    let ids = |name: &str| -> Vec<u32> {
        read(&dir.join("sq180").join(name))
            .i64()
            .iter()
            .map(|&x| x as u32)
            .collect()
    };
    let (prompt, tokens) = answer(p);
    assert_eq!(prompt, ids("input_ids.npy"), "prompt token ids");
    let until_eog: Vec<u32> = ids("generated_ids.npy")
        .into_iter()
        .take_while(|&id| !p.tokenizer.is_eog(id))
        .collect();
    assert_eq!(tokens, until_eog, "greedy tokens");

    // One loaded pipeline, borrowed by three threads answering at the same time.
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(|| answer(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for a in answers {
        assert_eq!(a, (prompt.clone(), tokens.clone()));
    }
}

#[test]
fn template_problems_are_a_warning_or_an_error_that_names_no_flag() {
    let tmp = TempDir::new("load-templates");
    let (tp, vp) = (tmp.path("text.gguf"), tmp.path("mmproj.gguf"));
    convert(
        &fixtures_dir().join("llava15/hf"),
        &tp,
        &vp,
        OutType::F32,
        false,
    )
    .unwrap();
    // A file template that fails on every conversation: the built-in stands in, with a
    // warning naming the file.
    let bad = tmp.path("bad-template.gguf");
    common::with_key(
        &tp,
        &bad,
        "tokenizer.chat_template",
        Some(Value::String("{{ raise_exception('no') }}".into())),
    );
    let opts = LoadOptions::new(bad.clone());
    let pool = ThreadPool::new(1);
    let files = ModelFiles::open(&opts, &pool).unwrap();
    let loaded = files.pipeline(&opts, pool).unwrap();
    assert_eq!(loaded.pipeline.template, ChatTemplate::Vicuna);
    match loaded.warnings.as_slice() {
        [w @ LoadWarning::ModelTemplateNotUsed { file, used, .. }] => {
            assert_eq!((file, *used), (&bad, "vicuna"));
            let text = w.to_string();
            assert!(text.contains("no") && !text.contains("--"), "{text}");
        }
        other => panic!("warnings {other:?}"),
    }

    // A template asked for by name or file, in place of the file's own.
    let named = LoadOptions {
        chat_template: Some("chatml".into()),
        ..LoadOptions::new(tp.clone())
    };
    let files = ModelFiles::open(&named, &ThreadPool::new(1)).unwrap();
    let p = files.pipeline(&named, ThreadPool::new(1)).unwrap().pipeline;
    assert_eq!(p.template, ChatTemplate::ChatMl);
    for (name, unknown) in [("nope", true), (bad.to_str().unwrap(), false)] {
        let opts = LoadOptions {
            chat_template: Some(name.into()),
            ..LoadOptions::new(tp.clone())
        };
        let files = ModelFiles::open(&opts, &ThreadPool::new(1)).unwrap();
        let Err(e) = files.pipeline(&opts, ThreadPool::new(1)) else {
            panic!("{name}: accepted");
        };
        match (&e, unknown) {
            (LoadError::UnknownTemplate { .. }, true) => {}
            (LoadError::TemplateFile { path, .. }, false) => assert_eq!(path, &bad),
            _ => panic!("{name}: {e:?}"),
        }
        assert!(
            e.to_string().contains(name) && !e.to_string().contains("--"),
            "{e}"
        );
    }
}

#[test]
fn missing_and_wrong_files_are_load_errors_naming_the_file() {
    let tmp = TempDir::new("load-files");
    let missing = tmp.path("missing.gguf");
    let opts = LoadOptions::new(missing.clone());
    let Err(e) = ModelFiles::open(&opts, &ThreadPool::new(1)) else {
        panic!("a missing file opened");
    };
    assert!(matches!(e, LoadError::Text(_)), "{e:?}");
    assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");

    // A text model with a missing mmproj: the mmproj's error, naming it.
    let (tp, vp) = (tmp.path("text.gguf"), tmp.path("mmproj.gguf"));
    convert(
        &fixtures_dir().join("llava15/hf"),
        &tp,
        &vp,
        OutType::F32,
        false,
    )
    .unwrap();
    let opts = LoadOptions {
        mmproj: Some(missing.clone()),
        ..LoadOptions::new(tp.clone())
    };
    let Err(e) = ModelFiles::open(&opts, &ThreadPool::new(1)) else {
        panic!("a missing mmproj opened");
    };
    assert!(matches!(e, LoadError::Vision(_)), "{e:?}");
    assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");
    // The text model given as the mmproj: refused when the models load.
    let opts = LoadOptions {
        mmproj: Some(tp.clone()),
        ..LoadOptions::new(tp.clone())
    };
    let files = ModelFiles::open(&opts, &ThreadPool::new(1)).unwrap();
    match files.models(&opts) {
        Err(e @ LoadError::Vision(_)) => {
            assert!(e.to_string().contains(tp.to_str().unwrap()), "{e}")
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a text model loaded as an mmproj"),
    }
}
