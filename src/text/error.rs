//! What can go wrong loading or running a text model.

use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::meta_error::MetaError;

/// What can go wrong loading or running a text model.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A key or tensor is missing, malformed or out of range.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// `general.architecture` names a model this runtime does not run.
    #[error("{path}: architecture '{arch}' is not supported (supported: llama, mistral, qwen2)")]
    UnknownArch { path: PathBuf, arch: String },
    /// The tokenizer's token list and the embedding disagree on the vocabulary.
    #[error(
        "{path}: tokenizer.ggml.tokens holds {n_tokens} tokens but token_embd.weight has \
         {n_vocab} rows; the tokenizer and the weights come from different models"
    )]
    VocabMismatch {
        path: PathBuf,
        n_tokens: usize,
        n_vocab: usize,
    },
    /// A KV cache larger than this machine's memory, or than any address space.
    #[error(
        "a KV cache of {n_ctx} positions needs {need_mib} MiB ({n_layer} layers x 2 x {width} \
         values a position), more than the {limit_mib} MiB of memory here: use a smaller context"
    )]
    CacheTooLarge {
        n_ctx: usize,
        n_layer: usize,
        width: usize,
        need_mib: u64,
        limit_mib: u64,
    },
    /// The request does not fit in the context.
    #[error(
        "context full: {needed} positions needed, the context holds {n_ctx}; start a new \
         conversation or re-create the cache with a longer context"
    )]
    ContextFull { needed: usize, n_ctx: usize },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: usize },
    /// The device running some of the layers failed or refused.
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
}

impl From<GgufError> for TextError {
    fn from(e: GgufError) -> TextError {
        TextError::Meta(e.into())
    }
}
