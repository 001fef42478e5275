//! Chat templates against the prompts the transformers processors rendered for the fixtures,
//! and detection from each checkpoint's own Jinja template.

mod common;

use common::npy::fixtures_dir;
use llava_edge::chat::{ChatTemplate, Message, Role, VICUNA_SYSTEM};

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
        assert_eq!(ChatTemplate::detect(jinja), Some(template), "{case}");
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
            assert_eq!(template.render(system, &[msg]), want, "{}", meta.display());
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
        t.render(None, &msgs),
        "<|im_start|>user\n<image>\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nMore<|im_end|>\n<|im_start|>assistant\n"
    );
    for t in ChatTemplate::ALL {
        assert_eq!(ChatTemplate::from_name(t.name()), Some(t));
    }
    assert_eq!(ChatTemplate::detect("{{ bos_token }}{{ messages }}"), None);
}

/// A later turn's text (`next_turn`) continues the first turn's prompt plus the answer exactly as
/// rendering the whole conversation would, so a chat can keep its KV cache between turns.
#[test]
fn next_turn_continues_the_rendered_conversation() {
    for template in ChatTemplate::ALL {
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
            let first = template.render(system, std::slice::from_ref(&u1));
            let whole = template.render(system, &[u1, a1, u2.clone()]);
            let next = template.next_turn(&u2);
            // The answer follows the first prompt directly or after the one space the model
            // generates at the start of its answer.
            let continued = [
                format!("{first}A cat.{next}"),
                format!("{first} A cat.{next}"),
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
