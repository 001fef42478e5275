//! llava-edge: a runtime for LLaVA-family vision-language models on edge hardware.
//!
//! Data flows one way: [`gguf`] (bytes of a file) -> tensor views -> [`quant`] block formats and
//! kernels -> model -> [`pipeline`] -> [`load`] (files to a ready pipeline) -> [`bench`] and the
//! command line. Lower layers never import higher ones.

pub mod backend;
pub mod bench;
pub mod chat;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dtype;
pub mod ffi;
pub mod gguf;
pub mod image;
pub mod kernels;
pub mod load;
pub mod meta_error;
pub mod ops;
pub mod pipeline;
pub mod quant;
pub mod sampling;
#[cfg(feature = "server")]
pub mod server;
pub mod speculative;
pub mod text;
pub mod threadpool;
pub mod tokenizer;
pub mod vision;
#[cfg(feature = "vulkan")]
pub mod vulkan;
