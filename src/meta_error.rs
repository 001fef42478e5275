//! What can be wrong with a model file's metadata or weights, shared by the text model and the
//! vision encoder: each wraps [`MetaError`] and adds what only it can get wrong.

use std::fmt;
use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::ops::OpError;

/// Which kind of model file a [`MetaError`] is about, for the advice in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A text model (`general.architecture` llama, qwen2, ...).
    Model,
    /// A vision encoder and projector (`general.architecture = clip`).
    Mmproj,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Model => "model",
            FileKind::Mmproj => "mmproj",
        })
    }
}

/// A file whose keys or tensors cannot describe a model these kernels run.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The file is malformed, or a key or tensor is missing or of the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A tensor has the wrong shape or an unsupported type.
    #[error("{path}: {source}")]
    Tensor {
        path: PathBuf,
        #[source]
        source: OpError,
    },
    /// Settings that together cannot describe a working model.
    #[error("{path}: {problem}")]
    BadConfig { path: PathBuf, problem: String },
    /// One setting outside what the model or these kernels can run.
    #[error("{path}: {key} = {value}: {expected}; the file is damaged or not a supported {kind}")]
    BadValue {
        path: PathBuf,
        kind: FileKind,
        key: String,
        value: String,
        expected: String,
    },
}
