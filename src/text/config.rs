//! Hyperparameters of a text model, from the `{arch}.*` GGUF keys llama.cpp writes.
//!
//! Every value is checked here, against the others and against what the kernels take, so that
//! a file that cannot describe a working model is a [`TextError::BadValue`] naming the key,
//! never a panic (or a huge allocation) later in the forward pass.

use crate::gguf::{GgufError, GgufFile};
use crate::kernels::MAX_HEAD_DIM;
use crate::ops::rope::RopeStyle;

use super::TextError;

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

/// Widest hidden size accepted (the largest released decoders use 16384): a bound that keeps
/// every product of widths below far from overflow.
pub const MAX_EMBD: usize = 1 << 16;

/// Longest trained context accepted (released models reach 10M positions); a larger value is
/// a damaged file, not a model.
pub const MAX_CTX_TRAIN: usize = 1 << 24;

/// Most tokens a vocabulary may have: token ids are u32 and the kernels index rows with i32.
pub const MAX_VOCAB: usize = i32::MAX as usize;

impl TextConfig {
    /// Reads the configuration; `n_vocab` comes from the token embedding's shape.
    pub fn from_gguf(f: &GgufFile) -> Result<TextConfig, TextError> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(TextError::UnknownArch {
                    path: f.path().to_path_buf(),
                    arch: other.to_string(),
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let bad = |k: &str, value: &dyn std::fmt::Display, expected: String| TextError::BadValue {
            path: f.path().to_path_buf(),
            key: key(k),
            value: value.to_string(),
            expected,
        };
        // A value is read as u64 and checked against its range before it becomes a usize, so
        // no later product of two of them can overflow.
        let int = |k: &str, d: Option<u64>, lo: u64, hi: usize| -> Result<usize, TextError> {
            let v = match (f.get(&key(k)), d) {
                (None, Some(d)) => d,
                _ => f.get_u64(&key(k))?,
            };
            if v < lo || v > hi as u64 {
                return Err(bad(k, &v, format!("must be between {lo} and {hi}")));
            }
            Ok(v as usize)
        };
        let n_embd = int("embedding_length", None, 1, MAX_EMBD)?;
        let n_head = int("attention.head_count", None, 1, n_embd)?;
        if !n_embd.is_multiple_of(n_head) {
            return Err(bad(
                "attention.head_count",
                &n_head,
                format!("must divide embedding_length {n_embd}"),
            ));
        }
        let head_dim = int(
            "attention.key_length",
            Some((n_embd / n_head) as u64),
            1,
            MAX_HEAD_DIM,
        )?;
        // One head size serves keys and values here (as in every supported architecture).
        int(
            "attention.value_length",
            Some(head_dim as u64),
            1,
            MAX_HEAD_DIM,
        )
        .and_then(|v| {
            if v == head_dim {
                Ok(())
            } else {
                Err(bad(
                    "attention.value_length",
                    &v,
                    format!("must equal the key length {head_dim}"),
                ))
            }
        })?;
        let n_head_kv = int("attention.head_count_kv", Some(n_head as u64), 1, n_head)?;
        if !n_head.is_multiple_of(n_head_kv) {
            return Err(bad(
                "attention.head_count_kv",
                &n_head_kv,
                format!("must divide head_count {n_head}"),
            ));
        }
        // Dimensions rotate in pairs, within a head.
        let rope_dim = int("rope.dimension_count", Some(head_dim as u64), 0, head_dim)?;
        if !rope_dim.is_multiple_of(2) {
            return Err(bad(
                "rope.dimension_count",
                &rope_dim,
                "must be even (dimensions rotate in pairs)".into(),
            ));
        }
        let float = |k: &str, d: Option<f64>| -> Result<f64, TextError> {
            match (f.get(&key(k)), d) {
                (None, Some(d)) => Ok(d),
                _ => Ok(f.get_f64(&key(k))?),
            }
        };
        let rope_theta = float("rope.freq_base", Some(10000.0))?;
        if !(rope_theta.is_finite() && rope_theta > 0.0 && (rope_theta as f32).is_finite()) {
            return Err(bad(
                "rope.freq_base",
                &rope_theta,
                "must be a finite positive number".into(),
            ));
        }
        let rms_eps = float("attention.layer_norm_rms_epsilon", None)?;
        if !((rms_eps as f32) > 0.0 && rms_eps < 1.0) {
            return Err(bad(
                "attention.layer_norm_rms_epsilon",
                &rms_eps,
                "must be a small positive number (below 1)".into(),
            ));
        }
        let n_vocab = f
            .tensor_info("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| GgufError::MissingTensor {
                path: f.path().to_path_buf(),
                tensor: "token_embd.weight".into(),
            })?;
        if n_vocab == 0 || n_vocab > MAX_VOCAB as u64 {
            return Err(TextError::BadConfig {
                path: f.path().to_path_buf(),
                problem: format!(
                    "token_embd.weight has {n_vocab} rows: a vocabulary holds 1 to {MAX_VOCAB}"
                ),
            });
        }
        let n_vocab = n_vocab as usize;
        let nv = Some(n_vocab as u64);
        // Written by llama.cpp's converter beside the embedding; one that disagrees means the
        // file was put together from two models.
        if int("vocab_size", nv, 0, usize::MAX)? != n_vocab {
            return Err(bad(
                "vocab_size",
                &f.get_u64(&key("vocab_size"))?,
                format!("must equal the {n_vocab} rows of token_embd.weight"),
            ));
        }
        // The tokenizer's ids index the embedding, and sampled ids index the tokenizer: the two
        // must be the same table (llama.cpp's converter pads the token list to the embedding).
        if let Some(tokens) = f.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
            if tokens.len() != n_vocab {
                return Err(TextError::VocabMismatch {
                    path: f.path().to_path_buf(),
                    n_tokens: tokens.len(),
                    n_vocab,
                });
            }
        }
        Ok(TextConfig {
            arch,
            n_layer: int("block_count", None, 0, usize::MAX)?,
            n_embd,
            n_ff: int("feed_forward_length", None, 1, usize::MAX)?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_theta: rope_theta as f32,
            rms_eps: rms_eps as f32,
            n_ctx_train: int("context_length", Some(4096), 1, MAX_CTX_TRAIN)?,
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
