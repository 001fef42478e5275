//! GGUF files: a validating, memory-mapped reader and a streaming writer.
//!
//! Layout (versions 2 and 3, little-endian): magic `GGUF`, version u32, tensor count u64,
//! metadata count u64, the metadata pairs, the tensor infos, padding to `general.alignment`,
//! then the tensor data, each tensor at an aligned offset from the data section's start.

mod error;
mod header;
pub mod keys;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, Result};
pub use header::{Layout, TensorInfo};
pub use reader::{prefault, GgufFile, TensorView};
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorSpec};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = keys::general::ALIGNMENT;
/// Alignment used when a file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
