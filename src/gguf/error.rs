//! The typed errors of GGUF reading and writing. Each names the file and, where it applies,
//! the key or tensor and the byte offset, so a user can tell exactly what is wrong.

use std::path::PathBuf;

use crate::dtype::GgmlType;

/// Something wrong with a GGUF file, or with a request made of one.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped, read or written.
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{path}: not a GGUF file (first bytes {found:02x?}, expected \"GGUF\")")]
    BadMagic { path: PathBuf, found: Vec<u8> },
    /// A version this reader does not handle.
    #[error("{path}: GGUF version {version} is not supported (only 2 and 3 are){hint}")]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        hint: &'static str,
    },
    /// The file ends before a field that must be there.
    #[error(
        "{path}: truncated: {what} at offset {offset} needs {needed} bytes, file has {file_len}"
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },
    /// A field holds a value that cannot be right.
    #[error("{path}: {what} at offset {offset}: {problem}")]
    Invalid {
        path: PathBuf,
        what: String,
        offset: u64,
        problem: String,
    },
    /// A tensor's description or placement is inconsistent.
    #[error("{path}: tensor '{tensor}': {problem}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    /// A metadata key that was asked for is absent.
    #[error("{path}: missing metadata key '{key}'")]
    MissingKey { path: PathBuf, key: String },
    /// A metadata key holds a value of another type than the one asked for.
    #[error("{path}: metadata key '{key}' is {found}, expected {expected}")]
    WrongKeyType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
    /// A tensor that was asked for is absent.
    #[error("{path}: missing tensor '{tensor}'")]
    MissingTensor { path: PathBuf, tensor: String },
    /// A tensor of a type that the requested operation cannot handle.
    #[error("{path}: tensor '{tensor}' has type {ty}, which {what} does not support")]
    UnsupportedType {
        path: PathBuf,
        tensor: String,
        ty: GgmlType,
        what: &'static str,
    },
    /// A writer was used out of order or given data that does not match what it declared.
    #[error("{path}: {problem}")]
    Write { path: PathBuf, problem: String },
}

/// Shorthand for results of this module.
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
