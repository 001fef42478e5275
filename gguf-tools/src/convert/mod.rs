//! `gguf-tools convert`: a Hugging Face LLaVA-family checkpoint (LLaVA, LLaVA-1.5, LLaVA-NeXT,
//! LLaVA-OneVision) to a text-model GGUF and an mmproj GGUF in llama.cpp's layout.
//!
//! Text: `general.architecture` llama (also for Mistral) or qwen2, llama.cpp's tensor names and
//! `{arch}.*` keys, Q/K rows permuted for llama as llama.cpp's converter does, and the
//! tokenizer as `tokenizer.ggml.*`. Vision: `general.architecture = clip`, `clip.vision.*` keys,
//! `v.*` / `mm.*` / `model.image_newline` tensors, and our `llava_edge.vision.*` keys for what
//! llama.cpp's layout does not say (feature layer, select strategy, activation, OneVision's tile
//! cap): see `llava_edge::vision::encoder::keys`.

pub mod safetensors;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::{Array, GgufWriter, TensorSpec, Value};
use llava_edge::vision::encoder::keys;

use crate::mix::{self, Mix, TensorShape};
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

/// Converts the checkpoint in `hf` to `model` and `mmproj`.
pub fn convert(
    hf: &Path,
    model: &Path,
    mmproj: &Path,
    ty: OutType,
    progress: bool,
) -> Result<Converted, ConvertError> {
    if !hf.is_dir() {
        return Err(ConvertError::MissingFile(hf.to_path_buf()));
    }
    let cfg = read_json(&hf.join("config.json"))?;
    let family = cfg["model_type"].as_str().unwrap_or("").to_string();
    if !["llava", "llava_next", "llava_onevision"].contains(&family.as_str()) {
        return Err(ConvertError::Unsupported(format!("model_type '{family}'")));
    }
    let tc = &cfg["text_config"];
    let vc = &cfg["vision_config"];
    let text_type = tc["model_type"].as_str().unwrap_or("");
    let arch = match text_type {
        "llama" | "mistral" => "llama",
        "qwen2" => "qwen2",
        other => return Err(ConvertError::Unsupported(format!("text model '{other}'"))),
    };
    let siglip = match vc["model_type"].as_str().unwrap_or("") {
        "clip_vision_model" => false,
        "siglip_vision_model" => true,
        other => return Err(ConvertError::Unsupported(format!("vision model '{other}'"))),
    };
    let ck = Checkpoint::open(hf)?;
    let u = |v: &serde_json::Value, k: &str| -> Result<usize, ConvertError> {
        v[k].as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| ConvertError::Checkpoint {
                path: hf.join("config.json"),
                problem: format!("missing {k}"),
            })
    };
    let (d, n_layer, n_head) = (
        u(tc, "hidden_size")?,
        u(tc, "num_hidden_layers")?,
        u(tc, "num_attention_heads")?,
    );
    let n_kv = tc["num_key_value_heads"]
        .as_u64()
        .map_or(n_head, |x| x as usize);
    let head_dim = tc["head_dim"].as_u64().map_or(d / n_head, |x| x as usize);
    let theta = tc["rope_parameters"]["rope_theta"]
        .as_f64()
        .or_else(|| tc["rope_theta"].as_f64())
        .unwrap_or(10000.0);
    let vocab = u(tc, "vocab_size")?;
    let tied = cfg["tie_word_embeddings"]
        .as_bool()
        .or_else(|| tc["tie_word_embeddings"].as_bool())
        .unwrap_or(false);

    // ---- text model ----
    let mut outs: Vec<Out> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    let mut add = |outs: &mut Vec<Out>,
                   gguf: String,
                   candidates: Vec<String>,
                   permute: Option<usize>|
     -> Result<(), ConvertError> {
        let name = resolve(&ck, &candidates)
            .ok_or_else(|| ConvertError::MissingTensor(candidates[0].clone()))?;
        let dims = ck.tensors[&name]
            .shape
            .iter()
            .rev()
            .map(|&x| x as u64)
            .collect();
        used.push(name.clone());
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
        None,
    )?;
    for i in 0..n_layer {
        let p = |s: &str| lm_names(&format!("layers.{i}.{s}"));
        let perm = |h| (arch == "llama").then_some(h);
        add(
            &mut outs,
            format!("blk.{i}.attn_norm.weight"),
            p("input_layernorm.weight"),
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.attn_q.weight"),
            p("self_attn.q_proj.weight"),
            perm(n_head),
        )?;
        add(
            &mut outs,
            format!("blk.{i}.attn_k.weight"),
            p("self_attn.k_proj.weight"),
            perm(n_kv),
        )?;
        add(
            &mut outs,
            format!("blk.{i}.attn_v.weight"),
            p("self_attn.v_proj.weight"),
            None,
        )?;
        for (b, h) in [("q", n_head), ("k", n_kv), ("v", 0)] {
            let c = p(&format!("self_attn.{b}_proj.bias"));
            if resolve(&ck, &c).is_some() {
                add(
                    &mut outs,
                    format!("blk.{i}.attn_{b}.bias"),
                    c,
                    if b == "v" { None } else { perm(h) },
                )?;
            }
        }
        add(
            &mut outs,
            format!("blk.{i}.attn_output.weight"),
            p("self_attn.o_proj.weight"),
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_norm.weight"),
            p("post_attention_layernorm.weight"),
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_gate.weight"),
            p("mlp.gate_proj.weight"),
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_up.weight"),
            p("mlp.up_proj.weight"),
            None,
        )?;
        add(
            &mut outs,
            format!("blk.{i}.ffn_down.weight"),
            p("mlp.down_proj.weight"),
            None,
        )?;
    }
    add(
        &mut outs,
        "output_norm.weight".into(),
        lm_names("norm.weight"),
        None,
    )?;
    let head = vec![
        "language_model.lm_head.weight".to_string(),
        "lm_head.weight".to_string(),
    ];
    if !tied || resolve(&ck, &head).is_some() {
        add(&mut outs, "output.weight".into(), head, None)?;
    }
    let k = |s: &str| format!("{arch}.{s}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::string(arch)),
        (
            "general.name".into(),
            Value::string(
                hf.file_name()
                    .map_or("model".into(), |n| n.to_string_lossy().into_owned()),
            ),
        ),
        (
            k("context_length"),
            Value::U32(tc["max_position_embeddings"].as_u64().unwrap_or(4096) as u32),
        ),
        (k("embedding_length"), Value::U32(d as u32)),
        (k("block_count"), Value::U32(n_layer as u32)),
        (
            k("feed_forward_length"),
            Value::U32(u(tc, "intermediate_size")? as u32),
        ),
        (k("attention.head_count"), Value::U32(n_head as u32)),
        (k("attention.head_count_kv"), Value::U32(n_kv as u32)),
        (k("rope.freq_base"), Value::F32(theta as f32)),
        (k("rope.dimension_count"), Value::U32(head_dim as u32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(tc["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32),
        ),
        (k("vocab_size"), Value::U32(vocab as u32)),
    ];
    if head_dim != d / n_head {
        md.push((k("attention.key_length"), Value::U32(head_dim as u32)));
        md.push((k("attention.value_length"), Value::U32(head_dim as u32)));
    }
    md.extend(tokenizer::tokenizer_metadata(hf, vocab, arch == "qwen2")?);
    let text_mix = match ty {
        OutType::F32 => None,
        OutType::Mix(m) => Some(m),
    };
    let n_text = write(&ck, model, md, &outs, text_mix, Some(n_layer), progress)?;

    // ---- mmproj ----
    let mut vouts: Vec<Out> = Vec::new();
    let mut vadd =
        |gguf: &str, candidates: Vec<String>, required: bool| -> Result<(), ConvertError> {
            match resolve(&ck, &candidates) {
                Some(name) => {
                    let dims = ck.tensors[&name]
                        .shape
                        .iter()
                        .rev()
                        .map(|&x| x as u64)
                        .collect();
                    used.push(name.clone());
                    vouts.push(Out {
                        name: gguf.into(),
                        dims,
                        data: Source::Hf {
                            name,
                            permute_heads: None,
                        },
                    });
                    Ok(())
                }
                None if required => Err(ConvertError::MissingTensor(candidates[0].clone())),
                None => Ok(()),
            }
        };
    vadd(
        "v.patch_embd.weight",
        vt_names("embeddings.patch_embedding.weight"),
        true,
    )?;
    vadd(
        "v.patch_embd.bias",
        vt_names("embeddings.patch_embedding.bias"),
        false,
    )?;
    vadd(
        "v.class_embd",
        vt_names("embeddings.class_embedding"),
        !siglip,
    )?;
    vadd(
        "v.position_embd.weight",
        vt_names("embeddings.position_embedding.weight"),
        true,
    )?;
    vadd("v.pre_ln.weight", vt_names("pre_layrnorm.weight"), !siglip)?;
    vadd("v.pre_ln.bias", vt_names("pre_layrnorm.bias"), !siglip)?;
    let vl = u(vc, "num_hidden_layers")?;
    // Store only the layers that run up to the feature layer (-2 for CLIP: 23 of 24), as
    // llama.cpp's converter does: llama.cpp runs every stored layer.
    let feature_layer = cfg["vision_feature_layer"].as_i64().unwrap_or(-2);
    let n_run = if feature_layer < 0 {
        vl as i64 + 1 + feature_layer
    } else {
        feature_layer
    };
    let n_run = usize::try_from(n_run)
        .ok()
        .filter(|&n| n <= vl)
        .ok_or_else(|| ConvertError::Checkpoint {
            path: hf.join("config.json"),
            problem: format!("vision_feature_layer {feature_layer} does not exist in {vl} layers"),
        })?;
    for i in 0..n_run {
        for (ours, theirs) in [
            ("attn_q", "self_attn.q_proj"),
            ("attn_k", "self_attn.k_proj"),
            ("attn_v", "self_attn.v_proj"),
            ("attn_out", "self_attn.out_proj"),
            ("ln1", "layer_norm1"),
            ("ln2", "layer_norm2"),
            ("ffn_up", "mlp.fc1"),
            ("ffn_down", "mlp.fc2"),
        ] {
            for wb in ["weight", "bias"] {
                vadd(
                    &format!("v.blk.{i}.{ours}.{wb}"),
                    vt_names(&format!("encoder.layers.{i}.{theirs}.{wb}")),
                    true,
                )?;
            }
        }
    }
    vadd("v.post_ln.weight", vt_names("post_layernorm.weight"), false)?;
    vadd("v.post_ln.bias", vt_names("post_layernorm.bias"), false)?;
    let act_proj = cfg["projector_hidden_act"].as_str().unwrap_or("gelu");
    let linear = matches!(act_proj, "linear" | "identity");
    vadd("mm.0.weight", mm_names("linear_1.weight"), true)?;
    vadd("mm.0.bias", mm_names("linear_1.bias"), true)?;
    if !linear {
        vadd("mm.2.weight", mm_names("linear_2.weight"), true)?;
        vadd("mm.2.bias", mm_names("linear_2.bias"), true)?;
    }
    vadd(
        "model.image_newline",
        vec!["image_newline".into(), "model.image_newline".into()],
        family != "llava",
    )?;

    let pc = read_json(&hf.join("processor_config.json"))
        .ok()
        .map(|j| j["image_processor"].clone())
        .filter(|j| !j.is_null())
        .or_else(|| read_json(&hf.join("preprocessor_config.json")).ok())
        .ok_or_else(|| {
            ConvertError::MissingFile(hf.join("processor_config.json or preprocessor_config.json"))
        })?;
    let floats = |k: &str| -> Result<Value, ConvertError> {
        let v: Option<Vec<f32>> = pc[k].as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_f64().map(|f| f as f32))
                .collect()
        });
        v.filter(|v| v.len() == 3)
            .map(|v| Value::Array(Array::F32(v)))
            .ok_or_else(|| ConvertError::Checkpoint {
                path: hf.join("processor_config.json"),
                problem: format!("{k} must hold 3 numbers"),
            })
    };
    let act = vc["hidden_act"].as_str().unwrap_or(if siglip {
        "gelu_pytorch_tanh"
    } else {
        "quick_gelu"
    });
    let mut vmd: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::string("clip")),
        ("clip.has_vision_encoder".into(), Value::Bool(true)),
        ("clip.has_text_encoder".into(), Value::Bool(false)),
        (
            "clip.projector_type".into(),
            Value::string(if linear { "linear" } else { "mlp" }),
        ),
        ("clip.use_gelu".into(), Value::Bool(act != "quick_gelu")),
        (
            "clip.vision.image_size".into(),
            Value::U32(u(vc, "image_size")? as u32),
        ),
        (
            "clip.vision.patch_size".into(),
            Value::U32(u(vc, "patch_size")? as u32),
        ),
        (
            "clip.vision.embedding_length".into(),
            Value::U32(u(vc, "hidden_size")? as u32),
        ),
        (
            "clip.vision.feed_forward_length".into(),
            Value::U32(u(vc, "intermediate_size")? as u32),
        ),
        ("clip.vision.block_count".into(), Value::U32(n_run as u32)),
        (
            "clip.vision.attention.head_count".into(),
            Value::U32(u(vc, "num_attention_heads")? as u32),
        ),
        (
            "clip.vision.attention.layer_norm_epsilon".into(),
            Value::F32(vc["layer_norm_eps"].as_f64().unwrap_or(1e-5) as f32),
        ),
        ("clip.vision.projection_dim".into(), Value::U32(d as u32)),
        ("clip.vision.image_mean".into(), floats("image_mean")?),
        ("clip.vision.image_std".into(), floats("image_std")?),
        (
            keys::FEATURE_LAYER.into(),
            Value::I32(cfg["vision_feature_layer"].as_i64().unwrap_or(-2) as i32),
        ),
        (
            keys::SELECT_STRATEGY.into(),
            Value::string(
                cfg["vision_feature_select_strategy"]
                    .as_str()
                    .unwrap_or("default"),
            ),
        ),
        (keys::ACTIVATION.into(), Value::string(act)),
        (keys::N_LAYER_ORIG.into(), Value::U32(vl as u32)),
    ];
    if let Some(pins) = cfg["image_grid_pinpoints"].as_array() {
        // Flattened (height, width) pairs as the Hugging Face config lists them, as llama.cpp's
        // converter writes them.
        let flat: Vec<i32> = pins
            .iter()
            .flat_map(|p| {
                p.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_i64().map(|v| v as i32))
            })
            .collect();
        vmd.push((
            "clip.vision.image_grid_pinpoints".into(),
            Value::Array(Array::I32(flat)),
        ));
        vmd.push((
            "clip.vision.mm_patch_merge_type".into(),
            Value::string("spatial_unpad"),
        ));
    }
    if let Some(n) = cfg["vision_aspect_ratio"]
        .as_str()
        .and_then(|s| s.strip_prefix("anyres_max_"))
        .and_then(|n| n.parse::<u32>().ok())
    {
        vmd.push((keys::ANYRES_MAX.into(), Value::U32(n)));
    }
    // The mmproj stays F16 when the text model is quantized: vision is the quality bottleneck.
    let vmix = text_mix.map(|_| Mix::F16);
    let n_vis = write(&ck, mmproj, vmd, &vouts, vmix, None, progress)?;
    let unused = ck
        .tensors
        .keys()
        .filter(|n| !used.contains(n))
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
        let Source::Hf {
            name,
            permute_heads,
        } = &o.data;
        let (shape, mut data) = ck.read_f32(name)?;
        if let Some(h) = permute_heads {
            let cols = shape.get(1).copied().unwrap_or(1);
            data = permute_rows(&data, shape[0], cols, *h);
        }
        let mut bytes = Vec::new();
        llava_edge::quant::quantize(t, &data, &mut bytes)?;
        w.write_tensor(&o.name, &bytes)?;
        bar.inc(1);
    }
    w.finish()?;
    bar.finish_and_clear();
    Ok(outs.len())
}
