//! Quantized block formats: one `#[repr(C)]` block type per ggml format (from the kernel header),
//! each with reference quantize and dequantize that are bit-exact with ggml.
