//! `gguf-tools convert`: a Hugging Face LLaVA-family checkpoint (LLaVA, LLaVA-1.5, LLaVA-NeXT,
//! LLaVA-OneVision) to a text-model GGUF and an mmproj GGUF in llama.cpp's layout.
//!
//! Text: `general.architecture` llama (also for Mistral) or qwen2, llama.cpp's tensor names and
//! `{arch}.*` keys, Q/K rows permuted for llama as llama.cpp's converter does, and the
//! tokenizer as `tokenizer.ggml.*`. Vision: `general.architecture = clip`, `clip.vision.*` keys,
//! `v.*` / `mm.*` / `model.image_newline` tensors, and our `llava_edge.vision.*` keys for what
//! llama.cpp's layout does not say (feature layer, select strategy, activation, OneVision's tile
//! cap). Every key and tensor name comes from `llava_edge::gguf::keys`, as the runtime reads
//! them. [`text::TextPlan`] and [`vision::VisionPlan`] mirror the runtime's `TextConfig` and
//! `VisionConfig`; [`plan`] finds the checkpoint tensors and writes them.

pub mod config;
pub mod plan;
pub mod projector;
pub mod safetensors;
pub mod text;
pub mod tokenizer;
pub mod vision;

use std::path::{Path, PathBuf};

use crate::mix::Mix;
use crate::paths::Staged;
use config::Section;
use plan::{write, Finder};
use safetensors::Checkpoint;
use text::TextPlan;
use vision::VisionPlan;

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

/// A JSON file of the checkpoint.
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
pub(crate) const MAX_WIDTH: usize = 1 << 20;
/// Most layers the converter accepts.
pub(crate) const MAX_LAYERS: usize = 1 << 12;
/// Largest image side (and patch) the converter accepts.
pub(crate) const MAX_IMAGE: usize = 1 << 14;

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
    let arch = text::arch(&tc)?;
    let siglip = vision::is_siglip(&vc)?;
    let text = TextPlan::read(arch, &cfg_path, &top, &tc)?;

    let ck = Checkpoint::open(hf)?;
    let find = Finder::new(&ck);
    let outs = text.tensors(&find)?;
    let name = model_name(hf, &cfg);
    let mut md = text.metadata(&name);
    md.extend(tokenizer::tokenizer_metadata(
        hf,
        text.n_vocab,
        arch == "qwen2",
    )?);
    let text_mix = match ty {
        OutType::F32 => None,
        OutType::Mix(m) => Some(m),
    };

    let vision = VisionPlan::read(&top, &vc, siglip, &family)?;
    let vouts = vision.tensors(&find, text.n_embd)?;
    let vmd = vision.metadata(hf, &top, &vc, &name, text.n_embd)?;
    // The mmproj stays F16 when the text model is quantized: vision is the quality bottleneck.
    let vmix = text_mix.map(|_| Mix::F16);
    let staged = Staged::new(&[model, mmproj]);
    let n_text = write(
        &ck,
        staged.path(0),
        md,
        &outs,
        text_mix,
        Some(text.n_layer),
        progress,
    )?;
    let n_vis = write(&ck, staged.path(1), vmd, &vouts, vmix, None, progress)?;
    staged.commit().map_err(|e| ConvertError::Checkpoint {
        path: model.to_path_buf(),
        problem: format!("moving the converted files into place: {e}"),
    })?;
    Ok(Converted {
        text_tensors: n_text,
        vision_tensors: n_vis,
        unused: find.unused(),
    })
}
