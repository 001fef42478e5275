//! `gguf-tools convert`: a Hugging Face LLaVA-family checkpoint (LLaVA, LLaVA-1.5, LLaVA-NeXT,
//! LLaVA-OneVision) to a text-model GGUF and an mmproj GGUF in llama.cpp's layout.
//!
//! Text: `general.architecture` llama (also for Mistral) or qwen2, llama.cpp's tensor names and
//! `{arch}.*` keys, Q/K rows permuted for llama as llama.cpp's converter does, and the
//! tokenizer as `tokenizer.ggml.*`. Vision: `general.architecture = clip`, `clip.vision.*` keys,
//! `v.*` / `mm.*` / `model.image_newline` tensors, and our `llava_edge.vision.*` keys for what
//! llama.cpp's layout does not say (feature layer, select strategy, activation, OneVision's tile
//! cap): see `llava_edge::vision::encoder::keys`.

pub mod config;
pub mod projector;
pub mod safetensors;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{Array, GgufWriter, TensorSpec, Value};
use llava_edge::vision::encoder::keys;

use crate::mix::{self, Mix, TensorShape};
use crate::paths::Staged;
use config::{Section, MAX_U32};
use safetensors::Checkpoint;

/// What can go wrong converting.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file the checkpoint needs is not there.
    #[error("{0}: missing (a Hugging Face checkpoint directory needs config.json, model.safetensors or its index, tokenizer files)")]
    MissingFile(PathBuf),
    /// A file is malformed.
    #[error("{path}: {problem}")]
    Checkpoint { path: PathBuf, problem: String },
    /// A `config.json` (or processor config) value is missing, of the wrong type or out of range.
    #[error("{path}: {key} {problem}")]
    Config {
        path: PathBuf,
        key: String,
        problem: String,
    },
    /// A checkpoint tensor's shape differs from the one the config implies.
    #[error("checkpoint tensor '{tensor}' has shape {shape:?}; config.json implies {want:?} (a config that does not belong to these weights?)")]
    TensorShape {
        tensor: String,
        shape: Vec<usize>,
        want: Vec<usize>,
    },
    /// The checkpoint path names a file, not the directory holding the checkpoint.
    #[error("{path}: is a file; give the checkpoint directory that holds config.json, the safetensors and the tokenizer ({dir})")]
    NotADirectory { path: PathBuf, dir: PathBuf },
    /// The text model and the mmproj would be written to the same file.
    #[error("the text model {model} and the mmproj {mmproj} are the same file; give them different names")]
    SameOutput { model: PathBuf, mmproj: PathBuf },
    /// An output would overwrite one of the checkpoint's own files.
    #[error("output {output} is the checkpoint's own {input}; write it elsewhere")]
    OutputIsInput { output: PathBuf, input: PathBuf },
    /// A tensor the model needs is absent under every naming scheme.
    #[error("checkpoint has no tensor '{0}' (tried hub-style and transformers-5 names)")]
    MissingTensor(String),
    /// A model this converter does not handle.
    #[error("unsupported architecture: {0} (supported: llava, llava_next, llava_onevision with llama, mistral or qwen2 text and clip or siglip vision)")]
    Unsupported(String),
    /// Writing or quantizing failed.
    #[error(transparent)]
    Gguf(#[from] llava_edge::gguf::GgufError),
    /// Quantizing a tensor failed.
    #[error(transparent)]
    Quant(#[from] llava_edge::quant::QuantError),
}

/// A tensor to write: its GGUF name, dims (ggml order) and source values.
struct Out {
    name: String,
    dims: Vec<u64>,
    data: Source,
}

enum Source {
    Hf {
        name: String,
        permute_heads: Option<usize>,
    },
    /// Values computed by the converter (a folded projector).
    Values(Vec<f32>),
}

/// Finds a checkpoint tensor under hub-style or transformers-5 names.
fn resolve(ck: &Checkpoint, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .find(|n| ck.tensors.contains_key(n.as_str()))
        .cloned()
}

fn lm_names(rest: &str) -> Vec<String> {
    vec![
        format!("language_model.model.{rest}"),
        format!("model.language_model.{rest}"),
        format!("model.{rest}"),
    ]
}

fn vt_names(rest: &str) -> Vec<String> {
    vec![
        format!("vision_tower.vision_model.{rest}"),
        format!("model.vision_tower.vision_model.{rest}"),
        format!("model.vision_tower.{rest}"),
    ]
}

fn mm_names(rest: &str) -> Vec<String> {
    vec![
        format!("multi_modal_projector.{rest}"),
        format!("model.multi_modal_projector.{rest}"),
    ]
}

/// llama.cpp's Q/K row permutation: each head's (2, hd/2) halves become (hd/2, 2) pairs.
fn permute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let (old, new) = (h * hd + i * hd / 2 + j, h * hd + 2 * j + i);
                out[new * cols..(new + 1) * cols].copy_from_slice(&w[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

fn read_json(path: &Path) -> Result<serde_json::Value, ConvertError> {
    let text =
        std::fs::read_to_string(path).map_err(|_| ConvertError::MissingFile(path.to_path_buf()))?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Checkpoint {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// Output weight type of `convert --type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    /// Unquantized f32.
    F32,
    /// A llama.cpp mix for the text model (the mmproj gets F16 for anything quantized).
    Mix(Mix),
}

impl OutType {
    /// Parses `f32`, `f16`, `q8_0`, `q4_0`, `q4_k_m`, ...
    pub fn from_name(s: &str) -> Option<OutType> {
        if s.eq_ignore_ascii_case("f32") {
            Some(OutType::F32)
        } else {
            Mix::from_name(s).map(OutType::Mix)
        }
    }
}

/// What a conversion wrote.
pub struct Converted {
    /// Tensors written to the text model.
    pub text_tensors: usize,
    /// Tensors written to the mmproj file.
    pub vision_tensors: usize,
    /// Checkpoint tensors used (the rest, e.g. an unused post-layernorm, are listed).
    pub unused: Vec<String>,
}

/// Widest layer the converter accepts (the largest real models are under 32k).
const MAX_WIDTH: usize = 1 << 20;
/// Most layers the converter accepts.
const MAX_LAYERS: usize = 1 << 12;
/// Largest image side (and patch) the converter accepts.
const MAX_IMAGE: usize = 1 << 14;

/// Refuses outputs that would overwrite each other or the checkpoint, and a checkpoint path
/// that is not a directory.
fn check_paths(hf: &Path, model: &Path, mmproj: &Path) -> Result<(), ConvertError> {
    if hf.is_file() {
        return Err(ConvertError::NotADirectory {
            path: hf.to_path_buf(),
            dir: hf.parent().map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    if !hf.is_dir() {
        return Err(ConvertError::MissingFile(hf.to_path_buf()));
    }
    if crate::paths::same_file(model, mmproj) {
        return Err(ConvertError::SameOutput {
            model: model.to_path_buf(),
            mmproj: mmproj.to_path_buf(),
        });
    }
    for entry in std::fs::read_dir(hf).into_iter().flatten().flatten() {
        let input = entry.path();
        for out in [model, mmproj] {
            if crate::paths::same_file(out, &input) {
                return Err(ConvertError::OutputIsInput {
                    output: out.to_path_buf(),
                    input,
                });
            }
        }
    }
    Ok(())
}

/// The model's name: the repository name transformers recorded (`_name_or_path`), the name
/// in a Hugging Face cache path (`models--org--name/snapshots/<hash>`), or the directory's
/// own name, or its parent's where the directory has a generic name (`hf`, `model`, ...).
fn model_name(hf: &Path, cfg: &serde_json::Value) -> String {
    if let Some(n) = cfg["_name_or_path"].as_str() {
        let last = n.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if !last.is_empty() {
            return last.to_string();
        }
    }
    let abs = hf.canonicalize().unwrap_or_else(|_| hf.to_path_buf());
    let parts: Vec<String> = abs
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(repo) = parts.iter().rev().find_map(|p| p.strip_prefix("models--")) {
        if let Some(name) = repo.rsplit("--").next().filter(|n| !n.is_empty()) {
            return name.to_string();
        }
    }
    const GENERIC: [&str; 6] = [
        "hf",
        "model",
        "checkpoint",
        "checkpoints",
        "weights",
        "main",
    ];
    parts
        .iter()
        .rev()
        .find(|p| !GENERIC.contains(&p.to_ascii_lowercase().as_str()) && p.as_str() != "/")
        .cloned()
        .unwrap_or_else(|| "model".into())
}

/// Converts the checkpoint in `hf` to `model` and `mmproj`. Both are written under temporary
/// names and moved into place only when both are complete: a failed run changes neither.
pub fn convert(
    hf: &Path,
    model: &Path,
    mmproj: &Path,
    ty: OutType,
    progress: bool,
) -> Result<Converted, ConvertError> {
    check_paths(hf, model, mmproj)?;
    let cfg_path = hf.join("config.json");
    let cfg = read_json(&cfg_path)?;
    if !cfg.is_object() {
        return Err(ConvertError::Checkpoint {
            path: cfg_path,
            problem: "is not a JSON object".into(),
        });
    }
    let top = Section::new(&cfg_path, "", &cfg);
    let family = top.opt_str("model_type")?.unwrap_or("").to_string();
    if !["llava", "llava_next", "llava_onevision"].contains(&family.as_str()) {
        return Err(ConvertError::Unsupported(format!("model_type '{family}'")));
    }
    let tc = top.section("text_config")?;
    let vc = top.section("vision_config")?;
    let arch = match tc.opt_str("model_type")?.unwrap_or("") {
        "llama" | "mistral" => "llama",
        "qwen2" => "qwen2",
        other => return Err(ConvertError::Unsupported(format!("text model '{other}'"))),
    };
    let siglip = match vc.opt_str("model_type")?.unwrap_or("") {
        "clip_vision_model" => false,
        "siglip_vision_model" => true,
        other => return Err(ConvertError::Unsupported(format!("vision model '{other}'"))),
    };

    // ---- text hyperparameters, each checked before it is used ----
    let d = tc.count("hidden_size", 1, MAX_WIDTH)?;
    let n_layer = tc.count("num_hidden_layers", 1, MAX_LAYERS)?;
    let n_head = tc.count("num_attention_heads", 1, d)?;
    let n_kv = tc
        .opt_count("num_key_value_heads", 1, n_head)?
        .unwrap_or(n_head);
    if !n_head.is_multiple_of(n_kv) {
        return Err(tc.bad(
            "num_key_value_heads",
            format!("is {n_kv}, which does not divide num_attention_heads {n_head}"),
        ));
    }
    let (head_dim, head_key) = match tc.opt_count("head_dim", 1, MAX_WIDTH)? {
        Some(h) => (h, "head_dim"),
        None => (
            config::head_dim(&tc, "num_attention_heads", d, n_head)?,
            "num_attention_heads",
        ),
    };
    if !head_dim.is_multiple_of(2) {
        return Err(tc.bad(
            head_key,
            format!(
                "gives heads of {head_dim} values; rotary embeddings turn pairs, so it must be even"
            ),
        ));
    }
    let theta = match tc.get("rope_parameters") {
        serde_json::Value::Null => None,
        _ => Section::new(
            &cfg_path,
            "text_config.rope_parameters",
            tc.get("rope_parameters"),
        )
        .opt_positive("rope_theta")?,
    };
    let theta = match theta {
        Some(t) => t,
        None => tc.opt_positive("rope_theta")?.unwrap_or(10000.0),
    };
    let vocab = tc.count("vocab_size", 1, MAX_U32)?;
    let n_ff = tc.count("intermediate_size", 1, MAX_U32)?;
    let n_ctx = tc
        .opt_count("max_position_embeddings", 1, MAX_U32)?
        .unwrap_or(4096);
    let rms_eps = tc.opt_positive("rms_norm_eps")?.unwrap_or(1e-6);
    let tied = match top.opt_bool("tie_word_embeddings")? {
        Some(t) => t,
        None => tc.opt_bool("tie_word_embeddings")?.unwrap_or(false),
    };

    let ck = Checkpoint::open(hf)?;
    let used = std::cell::RefCell::new(Vec::<String>::new());
    // Resolves a tensor and checks its shape against the one the config implies.
    let find = |candidates: &[String],
                want: &[usize],
                required: bool|
     -> Result<Option<(String, Vec<u64>)>, ConvertError> {
        let Some(name) = resolve(&ck, candidates) else {
            return match required {
                true => Err(ConvertError::MissingTensor(candidates[0].clone())),
                false => Ok(None),
            };
        };
        let shape = &ck.tensors[&name].shape;
        if shape != want {
            return Err(ConvertError::TensorShape {
                tensor: name,
                shape: shape.clone(),
                want: want.to_vec(),
            });
        }
        used.borrow_mut().push(name.clone());
        Ok(Some((
            name,
            shape.iter().rev().map(|&x| x as u64).collect(),
        )))
    };

    // ---- text model ----
    let mut outs: Vec<Out> = Vec::new();
    let (q_rows, kv_rows) = (n_head * head_dim, n_kv * head_dim);
    let add = |outs: &mut Vec<Out>,
               gguf: String,
               candidates: Vec<String>,
               want: &[usize],
               permute: Option<usize>|
     -> Result<(), ConvertError> {
        let (name, dims) = find(&candidates, want, true)?.expect("required");
        outs.push(Out {
            name: gguf,
            dims,
            data: Source::Hf {
                name,
                permute_heads: permute,
            },
        });
        Ok(())
    };
    add(
        &mut outs,
        "token_embd.weight".into(),
        lm_names("embed_tokens.weight"),
        &[vocab, d],
        None,
    )?;
    for i in 0..n_layer {
        let p = |s: &str| lm_names(&format!("layers.{i}.{s}"));
        let perm = |h| (arch == "llama").then_some(h);
        add(
            &mut outs,
            format!("blk.{i}.attn_norm.weight"),
            p("input_layernorm.weight"),
            &[d],
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.attn_q.weight"),
            p("self_attn.q_proj.weight"),
            &[q_rows, d],
            perm(n_head),
        )?;
        add(
            &mut outs,
            format!("blk.{i}.attn_k.weight"),
            p("self_attn.k_proj.weight"),
            &[kv_rows, d],
            perm(n_kv),
        )?;
        add(
            &mut outs,
            format!("blk.{i}.attn_v.weight"),
            p("self_attn.v_proj.weight"),
            &[kv_rows, d],
            None,
        )?;
        for (b, h, rows) in [
            ("q", n_head, q_rows),
            ("k", n_kv, kv_rows),
            ("v", 0, kv_rows),
        ] {
            let c = p(&format!("self_attn.{b}_proj.bias"));
            if resolve(&ck, &c).is_some() {
                add(
                    &mut outs,
                    format!("blk.{i}.attn_{b}.bias"),
                    c,
                    &[rows],
                    if b == "v" { None } else { perm(h) },
                )?;
            }
        }
        add(
            &mut outs,
            format!("blk.{i}.attn_output.weight"),
            p("self_attn.o_proj.weight"),
            &[d, q_rows],
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_norm.weight"),
            p("post_attention_layernorm.weight"),
            &[d],
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_gate.weight"),
            p("mlp.gate_proj.weight"),
            &[n_ff, d],
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_up.weight"),
            p("mlp.up_proj.weight"),
            &[n_ff, d],
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_down.weight"),
            p("mlp.down_proj.weight"),
            &[d, n_ff],
            None,
        )?;
    }
    add(
        &mut outs,
        "output_norm.weight".into(),
        lm_names("norm.weight"),
        &[d],
        None,
    )?;
    let head = vec![
        "language_model.lm_head.weight".to_string(),
        "lm_head.weight".to_string(),
    ];
    if !tied || resolve(&ck, &head).is_some() {
        add(&mut outs, "output.weight".into(), head, &[vocab, d], None)?;
    }
    let name = model_name(hf, &cfg);
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::string(arch)),
        ("general.name".into(), Value::string(name.clone())),
        (k("context_length"), Value::U32(n_ctx as u32)),
        (k("embedding_length"), Value::U32(d as u32)),
        (k("block_count"), Value::U32(n_layer as u32)),
        (k("feed_forward_length"), Value::U32(n_ff as u32)),
        (k("attention.head_count"), Value::U32(n_head as u32)),
        (k("attention.head_count_kv"), Value::U32(n_kv as u32)),
        (k("rope.freq_base"), Value::F32(theta as f32)),
        (k("rope.dimension_count"), Value::U32(head_dim as u32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(rms_eps as f32),
        ),
        (k("vocab_size"), Value::U32(vocab as u32)),
    ];
    if head_dim * n_head != d {
        md.push((k("attention.key_length"), Value::U32(head_dim as u32)));
        md.push((k("attention.value_length"), Value::U32(head_dim as u32)));
    }
    md.extend(tokenizer::tokenizer_metadata(hf, vocab, arch == "qwen2")?);
    let text_mix = match ty {
        OutType::F32 => None,
        OutType::Mix(m) => Some(m),
    };

    // ---- vision hyperparameters ----
    let vd = vc.count("hidden_size", 1, MAX_WIDTH)?;
    let v_heads = vc.count("num_attention_heads", 1, vd)?;
    config::head_dim(&vc, "num_attention_heads", vd, v_heads)?;
    let v_ff = vc.count("intermediate_size", 1, MAX_U32)?;
    let patch = vc.count("patch_size", 1, MAX_IMAGE)?;
    let image = vc.count("image_size", patch, MAX_IMAGE)?;
    vc.opt_count("num_channels", 3, 3)?;
    let vl = vc.count("num_hidden_layers", 1, MAX_LAYERS)?;
    let v_eps = vc.opt_positive("layer_norm_eps")?.unwrap_or(1e-5);
    // Store only the layers that run up to the feature layer (-2 for CLIP: 23 of 24), as
    // llama.cpp's converter does: llama.cpp runs every stored layer.
    let feature_layer = top
        .opt_int("vision_feature_layer", -(vl as i64), vl as i64)?
        .unwrap_or(-2);
    let n_run = if feature_layer < 0 {
        vl as i64 + 1 + feature_layer
    } else {
        feature_layer
    };
    let n_run = usize::try_from(n_run)
        .ok()
        .filter(|&n| (1..=vl).contains(&n))
        .ok_or_else(|| {
            top.bad(
                "vision_feature_layer",
                format!("is {feature_layer}: no encoder layer of the {vl} gives it"),
            )
        })?;
    let strategy = top
        .opt_str("vision_feature_select_strategy")?
        .unwrap_or("default");
    if !["default", "full"].contains(&strategy) {
        return Err(top.bad(
            "vision_feature_select_strategy",
            format!("is '{strategy}'; default or full"),
        ));
    }
    let act_proj = top.opt_str("projector_hidden_act")?.unwrap_or("gelu");
    let linear = match act_proj {
        "linear" | "identity" => true,
        "gelu" => false,
        other => {
            return Err(ConvertError::Unsupported(format!(
                "projector_hidden_act '{other}' (gelu or linear)"
            )))
        }
    };
    let n_pos = (image / patch) * (image / patch) + usize::from(!siglip);

    // ---- mmproj ----
    let mut vouts: Vec<Out> = Vec::new();
    let vadd = |vouts: &mut Vec<Out>,
                gguf: &str,
                candidates: Vec<String>,
                want: &[usize],
                required: bool|
     -> Result<(), ConvertError> {
        if let Some((name, dims)) = find(&candidates, want, required)? {
            vouts.push(Out {
                name: gguf.into(),
                dims,
                data: Source::Hf {
                    name,
                    permute_heads: None,
                },
            });
        }
        Ok(())
    };
    vadd(
        &mut vouts,
        "v.patch_embd.weight",
        vt_names("embeddings.patch_embedding.weight"),
        &[vd, 3, patch, patch],
        true,
    )?;
    vadd(
        &mut vouts,
        "v.patch_embd.bias",
        vt_names("embeddings.patch_embedding.bias"),
        &[vd],
        false,
    )?;
    vadd(
        &mut vouts,
        "v.class_embd",
        vt_names("embeddings.class_embedding"),
        &[vd],
        !siglip,
    )?;
    vadd(
        &mut vouts,
        "v.position_embd.weight",
        vt_names("embeddings.position_embedding.weight"),
        &[n_pos, vd],
        true,
    )?;
    vadd(
        &mut vouts,
        "v.pre_ln.weight",
        vt_names("pre_layrnorm.weight"),
        &[vd],
        !siglip,
    )?;
    vadd(
        &mut vouts,
        "v.pre_ln.bias",
        vt_names("pre_layrnorm.bias"),
        &[vd],
        !siglip,
    )?;
    for i in 0..n_run {
        for (ours, theirs, w, b) in [
            ("attn_q", "self_attn.q_proj", [vd, vd], vd),
            ("attn_k", "self_attn.k_proj", [vd, vd], vd),
            ("attn_v", "self_attn.v_proj", [vd, vd], vd),
            ("attn_out", "self_attn.out_proj", [vd, vd], vd),
            ("ln1", "layer_norm1", [vd, 0], vd),
            ("ln2", "layer_norm2", [vd, 0], vd),
            ("ffn_up", "mlp.fc1", [v_ff, vd], v_ff),
            ("ffn_down", "mlp.fc2", [vd, v_ff], vd),
        ] {
            // Norm weights are vectors: the 0 marks the absent second dimension.
            let w: &[usize] = if w[1] == 0 { &w[..1] } else { &w };
            for (wb, want) in [("weight", w), ("bias", &[b][..])] {
                vadd(
                    &mut vouts,
                    &format!("v.blk.{i}.{ours}.{wb}"),
                    vt_names(&format!("encoder.layers.{i}.{theirs}.{wb}")),
                    want,
                    true,
                )?;
            }
        }
    }
    vadd(
        &mut vouts,
        "v.post_ln.weight",
        vt_names("post_layernorm.weight"),
        &[vd],
        false,
    )?;
    vadd(
        &mut vouts,
        "v.post_ln.bias",
        vt_names("post_layernorm.bias"),
        &[vd],
        false,
    )?;
    // The projector's hidden width is whatever linear_1 has.
    let l1 = resolve(&ck, &mm_names("linear_1.weight"))
        .ok_or_else(|| ConvertError::MissingTensor(mm_names("linear_1.weight")[0].clone()))?;
    let hidden = ck.tensors[&l1].shape.first().copied().unwrap_or(0);
    if !(1..=MAX_WIDTH).contains(&hidden) {
        return Err(ConvertError::TensorShape {
            shape: ck.tensors[&l1].shape.clone(),
            tensor: l1,
            want: vec![d, vd],
        });
    }
    if linear {
        // One matrix, as llama.cpp's linear projector runs: linear_2 folded into linear_1.
        let part = |rest: &str, want: &[usize]| -> Result<String, ConvertError> {
            Ok(find(&mm_names(rest), want, true)?.expect("required").0)
        };
        let names = [
            part("linear_1.weight", &[hidden, vd])?,
            part("linear_1.bias", &[hidden])?,
            part("linear_2.weight", &[d, hidden])?,
            part("linear_2.bias", &[d])?,
        ];
        let [w1, b1, w2, b2] = names.map(|n| ck.read_f32(&n).map(|(_, v)| v));
        let (w, b) = projector::fold_linear(&w1?, &b1?, &w2?, &b2?, vd, hidden, d);
        vouts.push(Out {
            name: "mm.0.weight".into(),
            dims: vec![vd as u64, d as u64],
            data: Source::Values(w),
        });
        vouts.push(Out {
            name: "mm.0.bias".into(),
            dims: vec![d as u64],
            data: Source::Values(b),
        });
    } else {
        vadd(
            &mut vouts,
            "mm.0.weight",
            mm_names("linear_1.weight"),
            &[hidden, vd],
            true,
        )?;
        vadd(
            &mut vouts,
            "mm.0.bias",
            mm_names("linear_1.bias"),
            &[hidden],
            true,
        )?;
        vadd(
            &mut vouts,
            "mm.2.weight",
            mm_names("linear_2.weight"),
            &[d, hidden],
            true,
        )?;
        vadd(
            &mut vouts,
            "mm.2.bias",
            mm_names("linear_2.bias"),
            &[d],
            true,
        )?;
    }
    vadd(
        &mut vouts,
        "model.image_newline",
        vec!["image_newline".into(), "model.image_newline".into()],
        &[d],
        family != "llava",
    )?;

    let pc_path = hf.join("processor_config.json");
    let (pc_path, pc) = match read_json(&pc_path) {
        Ok(j) if !j["image_processor"].is_null() => (pc_path, j["image_processor"].clone()),
        _ => {
            let p = hf.join("preprocessor_config.json");
            let j = read_json(&p).map_err(|_| {
                ConvertError::MissingFile(
                    hf.join("processor_config.json or preprocessor_config.json"),
                )
            })?;
            (p, j)
        }
    };
    let floats = |k: &str, nonzero: bool| -> Result<Value, ConvertError> {
        let v: Option<Vec<f32>> = pc[k].as_array().and_then(|a| {
            a.iter()
                .map(|x| x.as_f64().map(|f| f as f32))
                .collect::<Option<Vec<f32>>>()
        });
        v.filter(|v| v.len() == 3)
            .filter(|v| v.iter().all(|x| x.is_finite() && (!nonzero || *x != 0.0)))
            .map(|v| Value::Array(Array::F32(v)))
            .ok_or_else(|| ConvertError::Config {
                path: pc_path.clone(),
                key: k.into(),
                problem: format!(
                    "is {}; it must hold 3 finite numbers{}",
                    pc[k],
                    if nonzero { ", none zero" } else { "" }
                ),
            })
    };
    let act = vc.opt_str("hidden_act")?.unwrap_or(if siglip {
        "gelu_pytorch_tanh"
    } else {
        "quick_gelu"
    });
    let mut vmd: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::string("clip")),
        ("general.name".into(), Value::string(name)),
        ("clip.has_vision_encoder".into(), Value::Bool(true)),
        ("clip.has_text_encoder".into(), Value::Bool(false)),
        (
            "clip.projector_type".into(),
            Value::string(if linear { "linear" } else { "mlp" }),
        ),
        ("clip.use_gelu".into(), Value::Bool(act != "quick_gelu")),
        ("clip.vision.image_size".into(), Value::U32(image as u32)),
        ("clip.vision.patch_size".into(), Value::U32(patch as u32)),
        ("clip.vision.embedding_length".into(), Value::U32(vd as u32)),
        (
            "clip.vision.feed_forward_length".into(),
            Value::U32(v_ff as u32),
        ),
        ("clip.vision.block_count".into(), Value::U32(n_run as u32)),
        (
            "clip.vision.attention.head_count".into(),
            Value::U32(v_heads as u32),
        ),
        (
            "clip.vision.attention.layer_norm_epsilon".into(),
            Value::F32(v_eps as f32),
        ),
        ("clip.vision.projection_dim".into(), Value::U32(d as u32)),
        (
            "clip.vision.image_mean".into(),
            floats("image_mean", false)?,
        ),
        ("clip.vision.image_std".into(), floats("image_std", true)?),
        (keys::FEATURE_LAYER.into(), Value::I32(feature_layer as i32)),
        (keys::SELECT_STRATEGY.into(), Value::string(strategy)),
        (keys::ACTIVATION.into(), Value::string(act)),
        (keys::N_LAYER_ORIG.into(), Value::U32(vl as u32)),
    ];
    match top.get("image_grid_pinpoints") {
        serde_json::Value::Null => {}
        pins => {
            // Flattened (height, width) pairs as the Hugging Face config lists them, as
            // llama.cpp's converter writes them.
            let pair = |p: &serde_json::Value| -> Option<[i32; 2]> {
                let a = p.as_array().filter(|a| a.len() == 2)?;
                let side = |x: &serde_json::Value| {
                    x.as_u64()
                        .filter(|&v| (1..=MAX_IMAGE as u64).contains(&v))
                        .map(|v| v as i32)
                };
                Some([side(&a[0])?, side(&a[1])?])
            };
            let flat: Option<Vec<i32>> = pins
                .as_array()
                .filter(|a| !a.is_empty())
                .and_then(|a| a.iter().map(pair).collect::<Option<Vec<_>>>())
                .map(|v| v.concat());
            let flat = flat.ok_or_else(|| {
                top.bad(
                    "image_grid_pinpoints",
                    format!("must list [height, width] pairs of 1 to {MAX_IMAGE} pixels"),
                )
            })?;
            vmd.push((
                "clip.vision.image_grid_pinpoints".into(),
                Value::Array(Array::I32(flat)),
            ));
            vmd.push((
                "clip.vision.mm_patch_merge_type".into(),
                Value::string("spatial_unpad"),
            ));
        }
    }
    if let Some(ratio) = top.opt_str("vision_aspect_ratio")? {
        if let Some(n) = ratio.strip_prefix("anyres_max_") {
            let n = n
                .parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| top.bad("vision_aspect_ratio", format!("is '{ratio}'")))?;
            vmd.push((keys::ANYRES_MAX.into(), Value::U32(n)));
        }
    }
    // The mmproj stays F16 when the text model is quantized: vision is the quality bottleneck.
    let vmix = text_mix.map(|_| Mix::F16);
    let staged = Staged::new(&[model, mmproj]);
    let n_text = write(
        &ck,
        staged.path(0),
        md,
        &outs,
        text_mix,
        Some(n_layer),
        progress,
    )?;
    let n_vis = write(&ck, staged.path(1), vmd, &vouts, vmix, None, progress)?;
    staged.commit().map_err(|e| ConvertError::Checkpoint {
        path: model.to_path_buf(),
        problem: format!("moving the converted files into place: {e}"),
    })?;
    let unused = ck
        .tensors
        .keys()
        .filter(|n| !used.borrow().contains(n))
        .cloned()
        .collect();
    Ok(Converted {
        text_tensors: n_text,
        vision_tensors: n_vis,
        unused,
    })
}

/// Writes `outs` with the per-tensor types of `mix` (F32 when None), one tensor in memory at a time.
fn write(
    ck: &Checkpoint,
    path: &Path,
    mut md: Vec<(String, Value)>,
    outs: &[Out],
    mix: Option<Mix>,
    n_layer: Option<usize>,
    progress: bool,
) -> Result<usize, ConvertError> {
    let shapes: Vec<TensorShape> = outs
        .iter()
        .map(|o| TensorShape {
            name: &o.name,
            dims: &o.dims,
        })
        .collect();
    let types: Vec<GgmlType> = match mix {
        None => vec![GgmlType::F32; outs.len()],
        Some(m) => {
            let plan = mix::plan(m, &shapes, &vec![GgmlType::F32; outs.len()], n_layer);
            md.push(("general.file_type".into(), Value::U32(m.file_type())));
            md.push(("general.quantization_version".into(), Value::U32(2)));
            plan.types
                .iter()
                .map(|t| t.unwrap_or(GgmlType::F32))
                .collect()
        }
    };
    if mix.is_none() {
        md.push(("general.file_type".into(), Value::U32(0)));
    }
    let specs: Vec<TensorSpec> = outs
        .iter()
        .zip(&types)
        .map(|(o, &t)| TensorSpec::new(o.name.clone(), &o.dims, t))
        .collect();
    let mut w = GgufWriter::create(path, &md, &specs)?;
    let bar = if progress {
        ProgressBar::new(outs.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("static template"),
    );
    for (o, &t) in outs.iter().zip(&types) {
        bar.set_message(o.name.clone());
        let data = match &o.data {
            Source::Hf {
                name,
                permute_heads,
            } => {
                let (shape, data) = ck.read_f32(name)?;
                match permute_heads {
                    // Shapes were checked against the heads when the tensor was planned.
                    Some(h) => {
                        let cols = shape.get(1).copied().unwrap_or(1);
                        permute_rows(&data, shape[0], cols, *h)
                    }
                    None => data,
                }
            }
            Source::Values(v) => v.clone(),
        };
        let mut bytes = Vec::new();
        llava_edge::quant::quantize(t, &data, &mut bytes)?;
        w.write_tensor(&o.name, &bytes)?;
        bar.inc(1);
    }
    w.finish()?;
    bar.finish_and_clear();
    Ok(outs.len())
}
