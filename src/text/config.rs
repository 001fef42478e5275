//! Hyperparameters of a text model, from the `{arch}.*` GGUF keys llama.cpp writes.

use crate::gguf::{GgufError, GgufFile};
use crate::ops::rope::RopeStyle;

/// The decoder families supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA, Vicuna, Mistral (llama.cpp converts Mistral as `llama`).
    Llama,
    /// Qwen2 (q/k/v biases, NeoX rotary layout).
    Qwen2,
}

/// Everything the forward pass needs to know about the model's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    /// Architecture.
    pub arch: Arch,
    /// Decoder blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Feed-forward inner size.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_head`).
    pub n_head_kv: usize,
    /// Per-head size.
    pub head_dim: usize,
    /// Dimensions of a head that rotate.
    pub rope_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Context length the model was trained with.
    pub n_ctx_train: usize,
    /// Vocabulary size (rows of the token embedding).
    pub n_vocab: usize,
}

impl TextConfig {
    /// Reads the configuration; `n_vocab` comes from the token embedding's shape.
    pub fn from_gguf(f: &GgufFile) -> Result<TextConfig, super::TextError> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(super::TextError::UnknownArch {
                    path: f.path().to_path_buf(),
                    arch: other.to_string(),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let get = |k: &str| -> Result<usize, GgufError> { Ok(f.get_u64(&key(k))? as usize) };
        let get_or = |k: &str, d: usize| -> Result<usize, GgufError> {
            if f.get(&key(k)).is_some() {
                get(k)
            } else {
                Ok(d)
            }
        };
        let n_embd = get("embedding_length")?;
        let n_head = get("attention.head_count")?;
        if n_head == 0 || n_embd % n_head != 0 {
            return Err(super::TextError::BadConfig {
                path: f.path().to_path_buf(),
                problem: format!(
                    "embedding_length {n_embd} is not a multiple of head_count {n_head}"
                ),
            });
        }
        let head_dim = get_or("attention.key_length", n_embd / n_head)?;
        let n_head_kv = get_or("attention.head_count_kv", n_head)?;
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(super::TextError::BadConfig {
                path: f.path().to_path_buf(),
                problem: format!(
                    "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
                ),
            });
        }
        let rope_dim = get_or("rope.dimension_count", head_dim)?;
        let rope_theta = match f.get(&key("rope.freq_base")) {
            Some(_) => f.get_f64(&key("rope.freq_base"))? as f32,
            None => 10000.0,
        };
        let n_vocab = f
            .tensor_info("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| GgufError::MissingTensor {
                path: f.path().to_path_buf(),
                tensor: "token_embd.weight".into(),
            })? as usize;
        Ok(TextConfig {
            arch,
            n_layer: get("block_count")?,
            n_embd,
            n_ff: get("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim: rope_dim.min(head_dim),
            rope_theta,
            rms_eps: f.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            n_ctx_train: get_or("context_length", 4096)?,
            n_vocab,
        })
    }

    /// The rotary layout llama.cpp uses for this architecture.
    pub fn rope_style(&self) -> RopeStyle {
        match self.arch {
            Arch::Llama => RopeStyle::Normal,
            Arch::Qwen2 => RopeStyle::Neox,
        }
    }
}
