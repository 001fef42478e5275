//! The language model: LLaMA / Vicuna / Mistral (llama.cpp's `llama` architecture) and Qwen2
//! decoders, read from GGUF files in llama.cpp's layout.

pub mod config;
pub mod error;
pub mod kv_cache;
pub mod model;
#[cfg(feature = "vulkan")]
pub mod offload;

pub use config::{Arch, TextConfig};
pub use error::TextError;
pub use kv_cache::{KvCache, KvType};
pub use model::{interleave_weights, Logits, Placement, TextModel, UBATCH};
