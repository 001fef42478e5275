//! Why a tokenizer could not be built from a file's metadata.

use thiserror::Error;

/// A vocabulary that cannot be used: every variant names the metadata key at fault.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// A key the tokenizer needs is absent.
    #[error("tokenizer metadata key `{key}` is missing")]
    MissingKey {
        /// The absent key.
        key: &'static str,
    },
    /// A key is present but holds the wrong type or an unusable value.
    #[error("tokenizer metadata key `{key}` is malformed: {reason}")]
    Malformed {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `tokenizer.ggml.model` names a tokenizer this runtime does not implement.
    #[error("unsupported tokenizer model `{0}` (tokenizer.ggml.model); supported: llama, gpt2")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this runtime does not implement.
    #[error(
        "unsupported pre-tokenizer `{0}` (tokenizer.ggml.pre); supported: default, gpt-2, \
         llama-bpe/llama3, qwen2"
    )]
    UnknownPre(String),
}

pub(crate) fn malformed(key: &'static str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Malformed {
        key,
        reason: reason.into(),
    }
}
