//! GGUF files: a validating, memory-mapped reader and a streaming writer.
