//! Chat templates against the prompts the transformers processors rendered for the fixtures,
//! and detection from each checkpoint's own Jinja template.

mod common;

use common::npy::fixtures_dir;
use llava_edge::chat::{ChatTemplate, Message, Role, SpecialTokens, TemplateError, VICUNA_SYSTEM};
use serde_json::Value;

#[test]
fn rendered_prompts_equal_the_references() {
    let cases = [
        ("llava_v1", ChatTemplate::Vicuna),
        ("llava15", ChatTemplate::Vicuna),
        ("llava_next_mistral", ChatTemplate::Mistral),
        ("llava_next_vicuna", ChatTemplate::Vicuna),
        ("llava_ov", ChatTemplate::ChatMl),
    ];
    let mut checked = 0;
    for (case, template) in cases {
        let dir = fixtures_dir().join(case);
        let case_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let jinja = case_json["chat_template"].as_str().unwrap();
        assert_eq!(
            ChatTemplate::detect(jinja),
            Some(template.clone()),
            "{case}"
        );
        let own = ChatTemplate::jinja(jinja, SpecialTokens::default()).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let meta = entry.unwrap().path().join("meta.json");
            if !meta.exists() {
                continue;
            }
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
            let want = m["prompt"].as_str().unwrap();
            let images = want.matches("<image>").count();
            let videos = want.matches("<video>").count();
            let text = want
                .rsplit("<image>\n")
                .next()
                .unwrap()
                .rsplit("<video>\n")
                .next()
                .unwrap();
            // The question is what follows the media and the role marker.
            let question = [
                "Describe a red circle on a blue background.",
                "What is shown in this image?",
                "What is different between these images?",
                "What happens in this video?",
            ]
            .into_iter()
            .find(|q| text.contains(q))
            .unwrap_or_else(|| panic!("{}: unknown question in {want:?}", meta.display()));
            let msg = Message {
                role: Role::User,
                images,
                videos,
                text: question.to_string(),
            };
            let system = want.starts_with(VICUNA_SYSTEM).then_some(VICUNA_SYSTEM);
            assert_eq!(
                template.render(system, std::slice::from_ref(&msg)).unwrap(),
                want,
                "{}",
                meta.display()
            );
            // The checkpoint's own Jinja template gives the same prompt.
            assert_eq!(
                own.render(system, &[msg]).unwrap(),
                want,
                "{}: own template",
                meta.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} prompts checked");
}

#[test]
fn multi_turn_and_names() {
    let t = ChatTemplate::ChatMl;
    let msgs = [
        Message {
            role: Role::User,
            images: 1,
            videos: 0,
            text: "Hi".into(),
        },
        Message {
            role: Role::Assistant,
            images: 0,
            videos: 0,
            text: "Hello".into(),
        },
        Message {
            role: Role::User,
            images: 0,
            videos: 0,
            text: "More".into(),
        },
    ];
    assert_eq!(
        t.render(None, &msgs).unwrap(),
        "<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nMore<|im_end|>\n<|im_start|>assistant\n"
    );
    for t in ChatTemplate::ALL {
        assert_eq!(ChatTemplate::from_name(t.name()), Some(t.clone()));
    }
    assert_eq!(ChatTemplate::detect("{{ bos_token }}{{ messages }}"), None);
}

/// A later turn's text (`next_turn`) continues the first turn's prompt plus the answer exactly as
/// rendering the whole conversation would, so a chat can keep its KV cache between turns.
#[test]
fn next_turn_continues_the_rendered_conversation() {
    let mut templates = ChatTemplate::ALL.to_vec();
    for name in expected()["templates"].as_object().unwrap().keys() {
        templates.push(shipped(name).0);
    }
    for template in templates {
        for system in [None, Some("Be brief.")] {
            let u1 = Message {
                role: Role::User,
                images: 1,
                videos: 0,
                text: "What is this?".into(),
            };
            let a1 = Message {
                role: Role::Assistant,
                images: 0,
                videos: 0,
                text: "A cat.".into(),
            };
            let u2 = Message {
                role: Role::User,
                images: 1,
                videos: 0,
                text: "And this one?".into(),
            };
            let first = template.render(system, std::slice::from_ref(&u1)).unwrap();
            let whole = template.render(system, &[u1, a1, u2.clone()]).unwrap();
            let next = template.next_turn(&u2).unwrap();
            // The answer follows the first prompt directly or after the one space the model
            // generates at the start of its answer.
            let continued = [
                format!("{first}A cat.{next}"),
                format!("{first} A cat.{next}"),
                // llama3-llava-next puts a newline before every text.
                format!("{first}\nA cat.{next}"),
            ];
            assert!(
                continued.contains(&whole),
                "{template}: {whole:?} is not {first:?} + answer + {next:?}"
            );
            assert_eq!(next.matches("<image>").count(), 1, "{template}");
            assert!(
                !next.contains("Be brief."),
                "{template}: system prompt repeated"
            );
        }
    }
}

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chat_templates")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data_dir().join("expected.json")).unwrap())
        .unwrap()
}

/// A shipped template (tests/data/chat_templates) with its special tokens, as the reference
/// rendered it (the tokenizer adding no BOS of its own, so the text is compared whole).
fn shipped(name: &str) -> (ChatTemplate, Value) {
    let all = expected();
    let t = all["templates"][name].clone();
    let src = std::fs::read_to_string(data_dir().join(t["file"].as_str().unwrap())).unwrap();
    let tokens = SpecialTokens {
        bos: t["bos_token"].as_str().map(String::from),
        eos: t["eos_token"].as_str().map(String::from),
        bos_added_by_tokenizer: false,
    };
    (ChatTemplate::jinja(&src, tokens).unwrap(), t)
}

/// The chat templates real checkpoints ship (LLaVA-1.5, LLaVA-NeXT Mistral / Vicuna / Llama-3,
/// OneVision, NeXT-Video, Llama-3 and Mistral instruct) render exactly what transformers'
/// `apply_chat_template` gives, for image, multi-image, video, system, multi-turn and text-only
/// conversations. Before Jinja, every one of them not matching a built-in became Vicuna.
#[test]
fn shipped_templates_render_as_transformers_does() {
    let all = expected();
    let mut checked = 0;
    for (name, t) in all["templates"].as_object().unwrap() {
        let (template, _) = shipped(name);
        let ChatTemplate::Jinja(j) = &template else {
            panic!("{name}: not a Jinja template");
        };
        assert_eq!(
            j.uses_content_parts(),
            t["content"] == "parts",
            "{name}: content form"
        );
        assert_eq!(
            j.has_system_role(),
            t["system_folded"] == false,
            "{name}: system role"
        );
        for (case, c) in t["cases"].as_object().unwrap() {
            let messages: Vec<Message> = c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message {
                    role: if m["role"] == "user" {
                        Role::User
                    } else {
                        Role::Assistant
                    },
                    images: m["images"].as_u64().unwrap() as usize,
                    videos: m["videos"].as_u64().unwrap() as usize,
                    text: m["text"].as_str().unwrap().into(),
                })
                .collect();
            let got = template
                .render(c["system"].as_str(), &messages)
                .unwrap_or_else(|e| panic!("{name}/{case}: {e}"));
            assert_eq!(got, c["expected"].as_str().unwrap(), "{name}/{case}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} renderings");
}

/// A file's template is preferred; one that cannot be used falls back, with the reason, to the
/// built-in its markers name or else to the given default.
#[test]
fn unusable_templates_fall_back_with_a_reason() {
    let llama3 = std::fs::read_to_string(data_dir().join("llama3-llava-next-8b-hf.jinja")).unwrap();
    let (t, why) = ChatTemplate::for_model(
        Some(&llama3),
        SpecialTokens::default(),
        ChatTemplate::Vicuna,
    );
    assert!(
        matches!(t, ChatTemplate::Jinja(_)) && why.is_none(),
        "{why:?}"
    );

    let (t, why) = ChatTemplate::for_model(
        Some("{% for m in messages %}[INST] {{ m['content'] }"),
        SpecialTokens::default(),
        ChatTemplate::Vicuna,
    );
    assert_eq!(t, ChatTemplate::Mistral);
    assert!(matches!(why, Some(TemplateError::Syntax(_))), "{why:?}");

    let (t, why) = ChatTemplate::for_model(
        Some("{{ bos_token }}hello"),
        SpecialTokens::default(),
        ChatTemplate::ChatMl,
    );
    assert_eq!(t, ChatTemplate::ChatMl);
    assert!(matches!(why, Some(TemplateError::NoText)), "{why:?}");

    let (t, why) = ChatTemplate::for_model(None, SpecialTokens::default(), ChatTemplate::Vicuna);
    assert_eq!((t, why.is_none()), (ChatTemplate::Vicuna, true));
}

/// The template's own `raise_exception` is an error naming its message, not a panic or a
/// silently different prompt.
#[test]
fn raise_exception_is_a_render_error() {
    let t = ChatTemplate::jinja(
        "{% for m in messages %}{% if m['content'] | length > 20 %}{{ raise_exception('too long: ' + m['content']) }}{% endif %}{{ m['content'] }}{% endfor %}",
        SpecialTokens::default(),
    )
    .unwrap();
    let e = t
        .render(
            None,
            &[llava_edge::chat::user_turn("a question that is long", 0)],
        )
        .unwrap_err();
    assert!(e.to_string().contains("too long: a question"), "{e}");
}

/// A BOS the template writes is dropped when the tokenizer adds one itself (else the model
/// reads two); kept when it does not.
#[test]
fn a_template_bos_is_not_doubled() {
    let src = std::fs::read_to_string(data_dir().join("meta-llama-3-8b-instruct.jinja")).unwrap();
    let msg = [llava_edge::chat::user_turn("Hi", 0)];
    let tokens = |added| SpecialTokens {
        bos: Some("<|begin_of_text|>".into()),
        eos: Some("<|eot_id|>".into()),
        bos_added_by_tokenizer: added,
    };
    let with = ChatTemplate::jinja(&src, tokens(false))
        .unwrap()
        .render(None, &msg)
        .unwrap();
    let without = ChatTemplate::jinja(&src, tokens(true))
        .unwrap()
        .render(None, &msg)
        .unwrap();
    assert_eq!(with, format!("<|begin_of_text|>{without}"));
    assert!(without.starts_with("<|start_header_id|>user"), "{without}");
}

/// Python string methods, `strftime_now` and loop controls, as templates use them.
#[test]
fn python_methods_and_helpers() {
    let t = ChatTemplate::jinja(
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m['content'].strip().upper() }}|{{ strftime_now('%d %b %Y') | length }}{% endfor %}",
        SpecialTokens::default(),
    )
    .unwrap();
    let out = t
        .render(None, &[llava_edge::chat::user_turn("  hello ", 0)])
        .unwrap();
    assert_eq!(out, "HELLO|11");
}

/// llava-hf checkpoints saved before transformers wrote `chat_template.jinja` keep the
/// processor's template in `chat_template.json`: the converter must carry it into the GGUF (else
/// the model runs with a guessed built-in).
#[test]
fn the_converter_keeps_a_chat_template_json() {
    use gguf_tools::convert::{convert, OutType};
    let tmp = common::TempDir::new("chat-json");
    let hf = tmp.path("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for e in std::fs::read_dir(fixtures_dir().join("llava15/hf")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "chat_template.jinja" {
            std::fs::copy(&p, hf.join(p.file_name().unwrap())).unwrap();
        }
    }
    let src = std::fs::read_to_string(data_dir().join("llava-1.5-hf.jinja")).unwrap();
    std::fs::write(
        hf.join("chat_template.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "chat_template": src })).unwrap(),
    )
    .unwrap();
    let (tp, vp) = (tmp.path("t.gguf"), tmp.path("v.gguf"));
    convert(&hf, &tp, &vp, OutType::F32, false).unwrap();
    let f = llava_edge::gguf::GgufFile::open(&tp).unwrap();
    assert_eq!(
        f.get_str("tokenizer.chat_template").ok(),
        Some(src.as_str())
    );
}

/// `tojson` as transformers defines it (Python's `json.dumps`, `ensure_ascii=False`): `", "` and
/// `": "` separators, no HTML escaping, keys in their order. The expected string is what
/// transformers 5.25 rendered from this template.
#[test]
fn tojson_writes_what_transformers_writes() {
    let t = ChatTemplate::jinja(
        "{{ {'a': 1, 'b': [1, 'é<'], 'c': none, 'd': 2.5} | tojson }}|{{ [1, {'k': true}] | tojson(indent=2) }}|{{ messages[0] | tojson }}",
        SpecialTokens::default(),
    )
    .unwrap();
    let ChatTemplate::Jinja(j) = &t else {
        unreachable!()
    };
    assert!(!j.uses_content_parts());
    let out = t
        .render(None, &[llava_edge::chat::user_turn("hi", 0)])
        .unwrap();
    assert_eq!(
        out,
        "{\"a\": 1, \"b\": [1, \"é<\"], \"c\": null, \"d\": 2.5}|[\n  1,\n  {\n    \"k\": true\n  }\n]|{\"role\": \"user\", \"content\": \"hi\"}"
    );
}
