//! Hyperparameters of a text model, from the `{arch}.*` GGUF keys llama.cpp writes.
//!
//! Every value is checked here, against the others and against what the kernels take, so that
//! a file that cannot describe a working model is a [`MetaError::BadValue`] naming the key,
//! never a panic (or a huge allocation) later in the forward pass.

use crate::gguf::keys::{general, llm, tensors, tokenizer};
use crate::gguf::{GgufError, GgufFile};
use crate::kernels::MAX_HEAD_DIM;
use crate::meta_error::{FileKind, MetaError};
use crate::ops::rope::RopeStyle;

use super::error::TextError;

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

/// The `{arch}.*` keys of one file, each read with its range checked.
struct Hparams<'a> {
    f: &'a GgufFile,
    arch: &'a str,
}

impl Hparams<'_> {
    fn key(&self, k: &str) -> String {
        llm::key(self.arch, k)
    }

    /// A [`MetaError::BadValue`] naming the full key.
    fn bad(&self, k: &str, value: &dyn std::fmt::Display, expected: String) -> TextError {
        MetaError::BadValue {
            path: self.f.path().to_path_buf(),
            kind: FileKind::Model,
            key: self.key(k),
            value: value.to_string(),
            expected,
        }
        .into()
    }

    /// An integer in `lo..=hi` (`d` where absent, when given). Read as u64 and checked before
    /// it becomes a usize, so no later product of two of them can overflow.
    fn int(&self, k: &str, d: Option<u64>, lo: u64, hi: usize) -> Result<usize, TextError> {
        let v = match (self.f.get(&self.key(k)), d) {
            (None, Some(d)) => d,
            _ => self.f.get_u64(&self.key(k))?,
        };
        if v < lo || v > hi as u64 {
            return Err(self.bad(k, &v, format!("must be between {lo} and {hi}")));
        }
        Ok(v as usize)
    }

    /// A number (`d` where absent, when given).
    fn float(&self, k: &str, d: Option<f64>) -> Result<f64, TextError> {
        match (self.f.get(&self.key(k)), d) {
            (None, Some(d)) => Ok(d),
            _ => Ok(self.f.get_f64(&self.key(k))?),
        }
    }

    /// Hidden size, query heads, head size and key/value heads, each dividing the one before.
    fn heads(&self) -> Result<(usize, usize, usize, usize), TextError> {
        let n_embd = self.int(llm::EMBEDDING_LENGTH, None, 1, MAX_EMBD)?;
        let n_head = self.int(llm::HEAD_COUNT, None, 1, n_embd)?;
        if !n_embd.is_multiple_of(n_head) {
            return Err(self.bad(
                llm::HEAD_COUNT,
                &n_head,
                format!("must divide embedding_length {n_embd}"),
            ));
        }
        let head_dim = self.int(
            llm::KEY_LENGTH,
            Some((n_embd / n_head) as u64),
            1,
            MAX_HEAD_DIM,
        )?;
        // One head size serves keys and values here (as in every supported architecture).
        let v = self.int(llm::VALUE_LENGTH, Some(head_dim as u64), 1, MAX_HEAD_DIM)?;
        if v != head_dim {
            return Err(self.bad(
                llm::VALUE_LENGTH,
                &v,
                format!("must equal the key length {head_dim}"),
            ));
        }
        let n_head_kv = self.int(llm::HEAD_COUNT_KV, Some(n_head as u64), 1, n_head)?;
        if !n_head.is_multiple_of(n_head_kv) {
            return Err(self.bad(
                llm::HEAD_COUNT_KV,
                &n_head_kv,
                format!("must divide head_count {n_head}"),
            ));
        }
        Ok((n_embd, n_head, head_dim, n_head_kv))
    }

    /// Rotated dimensions of a head (in pairs, within the head) and the base frequency.
    fn rope(&self, head_dim: usize) -> Result<(usize, f64), TextError> {
        let rope_dim = self.int(
            llm::ROPE_DIMENSION_COUNT,
            Some(head_dim as u64),
            0,
            head_dim,
        )?;
        if !rope_dim.is_multiple_of(2) {
            return Err(self.bad(
                llm::ROPE_DIMENSION_COUNT,
                &rope_dim,
                "must be even (dimensions rotate in pairs)".into(),
            ));
        }
        let theta = self.float(llm::ROPE_FREQ_BASE, Some(10000.0))?;
        if !(theta.is_finite() && theta > 0.0 && (theta as f32).is_finite()) {
            return Err(self.bad(
                llm::ROPE_FREQ_BASE,
                &theta,
                "must be a finite positive number".into(),
            ));
        }
        Ok((rope_dim, theta))
    }

    /// The vocabulary size: the token embedding's rows, which `vocab_size` and the tokenizer's
    /// token list must agree with.
    fn vocab(&self) -> Result<usize, TextError> {
        let f = self.f;
        let n_vocab = f
            .tensor_info(tensors::TOKEN_EMBD)
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| GgufError::MissingTensor {
                path: f.path().to_path_buf(),
                tensor: tensors::TOKEN_EMBD.into(),
            })?;
        if n_vocab == 0 || n_vocab > MAX_VOCAB as u64 {
            return Err(MetaError::BadConfig {
                path: f.path().to_path_buf(),
                problem: format!(
                    "token_embd.weight has {n_vocab} rows: a vocabulary holds 1 to {MAX_VOCAB}"
                ),
            }
            .into());
        }
        let n_vocab = n_vocab as usize;
        // Written by llama.cpp's converter beside the embedding; one that disagrees means the
        // file was put together from two models.
        if self.int(llm::VOCAB_SIZE, Some(n_vocab as u64), 0, usize::MAX)? != n_vocab {
            return Err(self.bad(
                llm::VOCAB_SIZE,
                &f.get_u64(&self.key(llm::VOCAB_SIZE))?,
                format!("must equal the {n_vocab} rows of token_embd.weight"),
            ));
        }
        // The tokenizer's ids index the embedding, and sampled ids index the tokenizer: the two
        // must be the same table (llama.cpp's converter pads the token list to the embedding).
        if let Some(tokens) = f.get(tokenizer::TOKENS).and_then(|v| v.as_array()) {
            if tokens.len() != n_vocab {
                return Err(TextError::VocabMismatch {
                    path: f.path().to_path_buf(),
                    n_tokens: tokens.len(),
                    n_vocab,
                });
            }
        }
        Ok(n_vocab)
    }
}

impl TextConfig {
    /// Reads the configuration; `n_vocab` comes from the token embedding's shape.
    pub fn from_gguf(f: &GgufFile) -> Result<TextConfig, TextError> {
        let arch_name = f.get_str(general::ARCHITECTURE)?;
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
        let h = Hparams { f, arch: arch_name };
        let (n_embd, n_head, head_dim, n_head_kv) = h.heads()?;
        let (rope_dim, rope_theta) = h.rope(head_dim)?;
        let rms_eps = h.float(llm::RMS_EPS, None)?;
        if !((rms_eps as f32) > 0.0 && rms_eps < 1.0) {
            return Err(h.bad(
                llm::RMS_EPS,
                &rms_eps,
                "must be a small positive number (below 1)".into(),
            ));
        }
        let n_vocab = h.vocab()?;
        Ok(TextConfig {
            arch,
            n_layer: h.int(llm::BLOCK_COUNT, None, 0, usize::MAX)?,
            n_embd,
            n_ff: h.int(llm::FEED_FORWARD_LENGTH, None, 1, usize::MAX)?,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_theta: rope_theta as f32,
            rms_eps: rms_eps as f32,
            n_ctx_train: h.int(llm::CONTEXT_LENGTH, Some(4096), 1, MAX_CTX_TRAIN)?,
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
