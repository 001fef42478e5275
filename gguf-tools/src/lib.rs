//! gguf-tools: inspect, quantize and convert GGUF files. The binary is a thin shell over this.

pub mod convert;
pub mod inspect;
pub mod mix;
pub mod paths;
pub mod quantize;
pub mod synth;
