//! `gguf-tools convert` on every fixture checkpoint, tensor by tensor: the f32 files equal,
//! value for value, those of an independent minimal writer (tests/common) whose output the
//! model tests hold to transformers; the f16 files equal the f32 values rounded to nearest even;
//! and bad checkpoints are clear errors.

mod common;

use common::hf_text::write_text_gguf;
use common::hf_vision::write_mmproj_gguf;
use common::npy::fixtures_dir;
use common::TempDir;
use gguf_tools::convert::{convert, ConvertError, OutType};
use gguf_tools::mix::Mix;
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::GgufFile;

fn f32s(f: &GgufFile, name: &str) -> Vec<f32> {
    let t = f.tensor(name).unwrap();
    llava_edge::quant::to_f32(t.info.ty, t.data, t.info.n_elements as usize).unwrap()
}

#[test]
fn converted_tensors_equal_the_checkpoint() {
    let tmp = TempDir::new("convert");
    let mut compared = 0;
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
        let (t32, v32) = (
            tmp.path(&format!("{case}-t32.gguf")),
            tmp.path(&format!("{case}-v32.gguf")),
        );
        let (t16, v16) = (
            tmp.path(&format!("{case}-t16.gguf")),
            tmp.path(&format!("{case}-v16.gguf")),
        );
        convert(&dir.join("hf"), &t32, &v32, OutType::F32, false).unwrap();
        convert(&dir.join("hf"), &t16, &v16, OutType::Mix(Mix::F16), false).unwrap();
        let (rt, rv) = (
            tmp.path(&format!("{case}-rt.gguf")),
            tmp.path(&format!("{case}-rv.gguf")),
        );
        write_text_gguf(&dir, &rt);
        write_mmproj_gguf(&dir, &rv);
        for (ours, f16, reference) in [(&t32, &t16, &rt), (&v32, &v16, &rv)] {
            let (a, h, r) = (
                GgufFile::open(ours).unwrap(),
                GgufFile::open(f16).unwrap(),
                GgufFile::open(reference).unwrap(),
            );
            for t in r.tensors() {
                // The reference writer keeps every vision layer; the converter stores those
                // up to the feature layer, as llama.cpp does.
                let Some(ti) = a.tensor_info(&t.name) else {
                    assert!(
                        t.name.starts_with("v.blk."),
                        "{case}: {} missing from the converted file",
                        t.name
                    );
                    continue;
                };
                assert_eq!(ti.dims, t.dims, "{case}: {} shape", t.name);
                let want = f32s(&r, &t.name);
                assert_eq!(f32s(&a, &t.name), want, "{case}: {} values", t.name);
                let hi = h.tensor_info(&t.name).unwrap();
                let rounded: Vec<f32> = want
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_f32())
                    .collect();
                if hi.ty == GgmlType::F16 {
                    assert_eq!(f32s(&h, &t.name), rounded, "{case}: {} f16 values", t.name);
                } else {
                    assert_eq!(hi.ty, GgmlType::F32, "{case}: {} kept as", t.name);
                    assert_eq!(f32s(&h, &t.name), want, "{case}: {} f32 values", t.name);
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 250, "{compared} tensors compared");
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let tmp = TempDir::new("convert-bad");
    let out = (tmp.path("m.gguf"), tmp.path("p.gguf"));
    let e = convert(&tmp.path("nope"), &out.0, &out.1, OutType::F32, false)
        .err()
        .unwrap();
    assert!(matches!(e, ConvertError::MissingFile(_)), "{e}");
    // A directory without config.json.
    let d = tmp.path("empty");
    std::fs::create_dir_all(&d).unwrap();
    let e = convert(&d, &out.0, &out.1, OutType::F32, false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("config.json"), "{e}");
    // An architecture we do not convert.
    let src = fixtures_dir().join("llava15/hf");
    let d = tmp.path("bert");
    std::fs::create_dir_all(&d).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(d.join("config.json"))
        .unwrap()
        .replace("\"model_type\": \"llava\"", "\"model_type\": \"bert\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let e = convert(&d, &out.0, &out.1, OutType::F32, false)
        .err()
        .unwrap();
    assert!(
        matches!(e, ConvertError::Unsupported(_)) && e.to_string().contains("bert"),
        "{e}"
    );
    // A truncated safetensors file.
    let d = tmp.path("trunc");
    std::fs::create_dir_all(&d).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
    }
    let st = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    let e = convert(&d, &out.0, &out.1, OutType::F32, false)
        .err()
        .unwrap();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    assert!(
        !out.0.exists() && !out.1.exists(),
        "nothing half-written is left"
    );
}

/// A LLaMA tokenizer saved as `tokenizer.json` only (transformers 5 writes no
/// `tokenizer.model`) converts to the same SentencePiece vocabulary, key for key and bit for
/// bit, as its `tokenizer.model`: llama model, pieces, scores, types, special ids, flags.
#[test]
fn tokenizer_json_alone_gives_the_tokenizer_model_vocabulary() {
    use gguf_tools::convert::tokenizer::tokenizer_metadata;
    use llava_edge::gguf::{Array, Value};
    let tmp = TempDir::new("convert-tokjson");
    for case in [
        "llava_v1",
        "llava15",
        "llava_next_mistral",
        "llava_next_vicuna",
    ] {
        let hf = fixtures_dir().join(case).join("hf");
        assert!(hf.join("tokenizer.model").exists(), "{case}");
        // The same checkpoint with tokenizer.model hidden.
        let only_json = tmp.path(case);
        std::fs::create_dir_all(&only_json).unwrap();
        for f in std::fs::read_dir(&hf).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap();
            if name != "tokenizer.model" && name != "model.safetensors" {
                std::fs::copy(&f, only_json.join(name)).unwrap();
            }
        }
        let want = tokenizer_metadata(&hf, 512, false).unwrap();
        let got = tokenizer_metadata(&only_json, 512, false).unwrap();
        let keys = |md: &[(String, Value)]| md.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&got), keys(&want), "{case}: keys");
        for ((k, g), (_, w)) in got.iter().zip(&want) {
            match (g, w) {
                // Bit for bit: SentencePiece scores its first merge -0.0.
                (Value::Array(Array::F32(g)), Value::Array(Array::F32(w))) => {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(g), bits(w), "{case}: {k}");
                }
                _ => assert_eq!(g, w, "{case}: {k}"),
            }
        }
        let get = |k: &str| &got.iter().find(|(n, _)| n == k).unwrap().1;
        assert_eq!(get("tokenizer.ggml.model").as_str(), Some("llama"));
        let Value::Array(Array::I32(types)) = get("tokenizer.ggml.token_type") else {
            panic!("{case}: token types")
        };
        let Value::Array(Array::String(tokens)) = get("tokenizer.ggml.tokens") else {
            panic!("{case}: tokens")
        };
        // <unk> UNKNOWN, <s> </s> CONTROL, 256 byte pieces BYTE, <image> CONTROL.
        assert_eq!(&types[..3], &[2, 3, 3], "{case}");
        assert_eq!(types.iter().filter(|&&t| t == 6).count(), 256, "{case}");
        assert_eq!(tokens[3], b"<0x00>", "{case}");
        let image = tokens.iter().position(|t| t == b"<image>").unwrap();
        assert_eq!(types[image], 3, "{case}");
    }
}

/// The fixtures saved without tokenizer.model convert to a SentencePiece vocabulary whose byte
/// pieces are BYTE (not a byte-level BPE with `<0x..>` texts typed NORMAL).
#[test]
fn tokenizer_json_only_checkpoints_convert_to_sentencepiece() {
    let tmp = TempDir::new("convert-tokjson-only");
    for case in ["llava15_tokjson", "llava_next_vicuna_tokjson"] {
        let hf = fixtures_dir().join(case).join("hf");
        assert!(!hf.join("tokenizer.model").exists(), "{case}");
        let (t, v) = (tmp.path("t.gguf"), tmp.path("v.gguf"));
        convert(&hf, &t, &v, OutType::F32, false).unwrap();
        let f = GgufFile::open(&t).unwrap();
        assert_eq!(
            f.get_str("tokenizer.ggml.model").ok(),
            Some("llama"),
            "{case}"
        );
        assert_eq!(
            f.get_str("tokenizer.ggml.pre").ok(),
            Some("default"),
            "{case}"
        );
        assert!(f.get("tokenizer.ggml.merges").is_none(), "{case}");
        let tok = llava_edge::tokenizer::Tokenizer::from_gguf(&f).unwrap();
        // A byte-fallback reply token renders as its byte, not as "<0x32>".
        let id = (0..512u32)
            .find(|&i| tok.vocab().text(i) == Some(&b"<0x32>"[..]))
            .unwrap();
        assert_eq!(tok.piece(id, false), b"2", "{case}");
    }
}
