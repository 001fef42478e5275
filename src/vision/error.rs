//! What can go wrong loading or running the vision encoder.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::gguf::GgufError;
use crate::meta_error::MetaError;

/// What can go wrong loading or running the vision encoder.
#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    /// A key or tensor is missing, malformed or out of range.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The projector's output is not the text model's embedding width: the mmproj belongs to
    /// another model (a multiple would otherwise be read as more, narrower rows).
    #[error(
        "the mmproj {mmproj} projects to rows of {n_out} values, but the text model {model} \
         embeds tokens in {n_embd}: the two files come from different models; use the mmproj \
         converted with this model"
    )]
    WidthMismatch {
        mmproj: PathBuf,
        n_out: usize,
        model: PathBuf,
        n_embd: usize,
    },
    /// Pixels of the wrong size for this encoder.
    #[error("pixel tile has {got} values, the encoder takes 3 x {size} x {size}")]
    BadPixels { got: usize, size: usize },
    /// The device running the encoder failed or lacks an op.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<GgufError> for VisionError {
    fn from(e: GgufError) -> VisionError {
        VisionError::Meta(e.into())
    }
}
