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

/// A copy of the fixture checkpoint `case` (every file) in `dir`.
fn copy_checkpoint(case: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let src = fixtures_dir().join(case).join("hf");
    std::fs::create_dir_all(dir).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir.to_path_buf()
}

/// Overwrites the values of F32 tensor `name` in a safetensors file, in place.
fn patch_tensor(path: &std::path::Path, name: &str, values: &[f32]) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (
        8 + n + off[0].as_u64().unwrap() as usize,
        8 + n + off[1].as_u64().unwrap() as usize,
    );
    assert_eq!(b - a, values.len() * 4, "{name}");
    for (dst, v) in bytes[a..b].chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// `projector_hidden_act = "linear"` with a second linear that is not the identity: the
/// mmproj projects as linear_2(linear_1(x)) computed from the checkpoint's weights (it dropped
/// linear_2 before).
#[test]
fn a_linear_projector_keeps_its_second_linear() {
    use common::rel_err;
    use common::safetensors::read_f32;
    use llava_edge::threadpool::ThreadPool;
    use llava_edge::vision::VisionEncoder;
    let tmp = TempDir::new("convert-linear2");
    let hf = copy_checkpoint("llava_v1", &tmp.path("hf"));
    let st = hf.join("model.safetensors");
    let (s2, _) = read_f32(&st, "multi_modal_projector.linear_2.weight");
    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
    let mut rand = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.below(2001) as f32 - 1000.0) / 1000.0) * scale)
            .collect()
    };
    let w2 = rand(s2[0] * s2[1], 1.0 / (s2[1] as f32).sqrt());
    let b2 = rand(s2[0], 0.1);
    patch_tensor(&st, "multi_modal_projector.linear_2.weight", &w2);
    patch_tensor(&st, "multi_modal_projector.linear_2.bias", &b2);
    let (t, v) = (tmp.path("t.gguf"), tmp.path("v.gguf"));
    let r = convert(&hf, &t, &v, OutType::F32, false).unwrap();
    assert!(
        r.unused
            .iter()
            .all(|n| !n.contains("multi_modal_projector")),
        "{:?}",
        r.unused
    );
    let (_, w1) = read_f32(&st, "multi_modal_projector.linear_1.weight");
    let (_, b1) = read_f32(&st, "multi_modal_projector.linear_1.bias");
    let (hidden, n_in, n_out) = (b1.len(), w1.len() / b1.len(), b2.len());
    let feats = common::npy::read(&fixtures_dir().join("llava_v1/sq180/vision_features.npy"));
    let feats = feats.f32();
    let mut want = Vec::new();
    for x in feats.chunks(n_in) {
        let h: Vec<f64> = (0..hidden)
            .map(|j| {
                b1[j] as f64
                    + (0..n_in)
                        .map(|i| w1[j * n_in + i] as f64 * x[i] as f64)
                        .sum::<f64>()
            })
            .collect();
        want.extend((0..n_out).map(|o| {
            (b2[o] as f64
                + (0..hidden)
                    .map(|j| w2[o * hidden + j] as f64 * h[j])
                    .sum::<f64>()) as f32
        }));
    }
    let f = GgufFile::open(&v).unwrap();
    let enc = VisionEncoder::load(&f).unwrap();
    let got = enc.project(feats, &ThreadPool::new(2)).unwrap();
    let e = rel_err(&got, &want);
    assert!(e < 1e-5, "relative error {e:e}");
}

/// Outputs that are one file (the same path, a hard or symbolic link) or one of the
/// checkpoint's own files are refused before anything is written; a run that fails leaves
/// existing outputs as they were, with no temporary files behind.
#[test]
fn outputs_never_overwrite_each_other_or_the_checkpoint() {
    let tmp = TempDir::new("convert-paths");
    let hf = copy_checkpoint("llava15", &tmp.path("hf"));
    let x = tmp.path("x.gguf");
    std::fs::write(&x, b"keep").unwrap();
    let e = convert(&hf, &x, &x, OutType::F32, false).err().unwrap();
    assert!(matches!(e, ConvertError::SameOutput { .. }), "{e}");
    let hard = tmp.path("hard.gguf");
    std::fs::hard_link(&x, &hard).unwrap();
    let e = convert(&hf, &x, &hard, OutType::F32, false).err().unwrap();
    assert!(matches!(e, ConvertError::SameOutput { .. }), "{e}");
    #[cfg(unix)]
    {
        let soft = tmp.path("soft.gguf");
        std::os::unix::fs::symlink(&x, &soft).unwrap();
        let e = convert(&hf, &soft, &x, OutType::F32, false).err().unwrap();
        assert!(matches!(e, ConvertError::SameOutput { .. }), "{e}");
    }
    // Not yet written, spelled two ways.
    let e = convert(
        &hf,
        &tmp.path("new.gguf"),
        &tmp.0.join(".").join("new.gguf"),
        OutType::F32,
        false,
    )
    .err()
    .unwrap();
    assert!(matches!(e, ConvertError::SameOutput { .. }), "{e}");
    let e = convert(&hf, &hf.join("model.safetensors"), &x, OutType::F32, false)
        .err()
        .unwrap();
    assert!(matches!(e, ConvertError::OutputIsInput { .. }), "{e}");
    assert_eq!(std::fs::read(&x).unwrap(), b"keep");

    // The mmproj half fails (no processor config): the text model is not replaced either.
    let (m, p) = (tmp.path("m.gguf"), tmp.path("p.gguf"));
    std::fs::write(&m, b"old model").unwrap();
    std::fs::write(&p, b"old mmproj").unwrap();
    std::fs::remove_file(hf.join("processor_config.json")).unwrap();
    let e = convert(&hf, &m, &p, OutType::F32, false).err().unwrap();
    assert!(e.to_string().contains("processor_config.json"), "{e}");
    assert_eq!(std::fs::read(&m).unwrap(), b"old model");
    assert_eq!(std::fs::read(&p).unwrap(), b"old mmproj");
    let left: Vec<String> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("converting") || n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A path to config.json where the checkpoint directory belongs is a clear error naming the
/// directory to give; converted models are named from the checkpoint, not "hf".
#[test]
fn checkpoint_path_and_model_name() {
    let tmp = TempDir::new("convert-name");
    let (t, v) = (tmp.path("t.gguf"), tmp.path("v.gguf"));
    let hf = fixtures_dir().join("llava15/hf");
    let e = convert(&hf.join("config.json"), &t, &v, OutType::F32, false)
        .err()
        .unwrap();
    assert!(matches!(e, ConvertError::NotADirectory { .. }), "{e}");
    assert!(e.to_string().contains(&hf.display().to_string()), "{e}");

    convert(&hf, &t, &v, OutType::F32, false).unwrap();
    for f in [&t, &v] {
        let f = GgufFile::open(f).unwrap();
        assert_eq!(f.get_str("general.name").ok(), Some("llava15"));
    }
    // The repository name transformers records wins.
    let copy = copy_checkpoint("llava15", &tmp.path("checkpoint"));
    let cfg = std::fs::read_to_string(copy.join("config.json"))
        .unwrap()
        .replacen('{', "{\"_name_or_path\": \"llava-hf/llava-1.5-7b-hf\",", 1);
    std::fs::write(copy.join("config.json"), cfg).unwrap();
    convert(&copy, &t, &v, OutType::F32, false).unwrap();
    let f = GgufFile::open(&t).unwrap();
    assert_eq!(f.get_str("general.name").ok(), Some("llava-1.5-7b-hf"));
}
