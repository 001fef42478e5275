//! The vision side: the CLIP / SigLIP encoder and the projector into the text model's space,
//! read from an `mmproj` GGUF in llama.cpp's layout.

pub mod anyres;
mod embed;
pub mod encoder;
pub mod error;
#[cfg(feature = "vulkan")]
mod offload;

pub use encoder::{Activation, Tower, TowerOn, VisionConfig, VisionEncoder};
pub use error::VisionError;
