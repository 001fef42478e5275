//! The streaming GGUF writer.
//!
//! The header (metadata and every tensor's shape, type and offset) is written first, from the
//! declared specs; tensor data then follows one tensor, or one chunk of a tensor, at a time, so
//! a model is never held whole in memory. Output goes to a temporary file beside the target and
//! is renamed into place only by [`GgufWriter::finish`]: a failed run never clobbers a file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{GgufError, Result};
use super::value::{Array, Value};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use crate::dtype::GgmlType;

/// The description of one tensor to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order (innermost first).
    pub dims: Vec<u64>,
    /// Element type of the data that will be written.
    pub ty: GgmlType,
}

impl TensorSpec {
    /// A spec from its parts.
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        }
    }
}

struct Planned {
    spec: TensorSpec,
    size: u64,
}

/// Writes a GGUF v3 file: create it with the metadata and tensor specs, write each tensor's
/// data in the declared order, then [`finish`](GgufWriter::finish).
pub struct GgufWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    alignment: u64,
    tensors: Vec<Planned>,
    current: usize,
    written_in_current: u64,
}

impl GgufWriter {
    /// Validates the specs, then writes the header to a temporary file beside `path`.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, Value)],
        tensors: &[TensorSpec],
    ) -> Result<GgufWriter> {
        let path = path.as_ref().to_path_buf();
        let fail = |problem: String| GgufError::Write {
            path: path.clone(),
            problem,
        };
        let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            Some((_, v)) => {
                return Err(fail(format!(
                    "{ALIGNMENT_KEY} must be a UINT32 power of two, got {v}"
                )))
            }
        };
        for (i, (k, _)) in metadata.iter().enumerate() {
            if metadata[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(fail(format!("metadata key '{k}' given twice")));
            }
        }
        let mut planned = Vec::with_capacity(tensors.len());
        for (i, spec) in tensors.iter().enumerate() {
            if tensors[..i].iter().any(|t| t.name == spec.name) {
                return Err(fail(format!("tensor '{}' given twice", spec.name)));
            }
            if spec.dims.len() > MAX_DIMS {
                return Err(fail(format!(
                    "tensor '{}' has {} dimensions",
                    spec.name,
                    spec.dims.len()
                )));
            }
            let row = spec.dims.first().copied().unwrap_or(1);
            let size = spec
                .dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|_| row % spec.ty.block_size() as u64 == 0)
                .and_then(|n| spec.ty.bytes_for(n))
                .ok_or_else(|| {
                    fail(format!(
                        "tensor '{}': shape {:?} does not fit type {}",
                        spec.name, spec.dims, spec.ty
                    ))
                })?;
            planned.push(Planned {
                spec: spec.clone(),
                size,
            });
        }

        let mut header = Vec::new();
        header.extend_from_slice(GGUF_MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut header, k.as_bytes());
            header.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            put_value(&mut header, v);
        }
        let mut offset = 0u64;
        for t in &planned {
            put_str(&mut header, t.spec.name.as_bytes());
            header.extend_from_slice(&(t.spec.dims.len() as u32).to_le_bytes());
            for d in &t.spec.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.spec.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.size).next_multiple_of(alignment);
        }
        let padded = (header.len() as u64).next_multiple_of(alignment);
        header.resize(padded as usize, 0);

        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".partial");
        let tmp_path = path.with_file_name(tmp_name);
        let file = File::create(&tmp_path).map_err(|source| GgufError::Io {
            path: tmp_path.clone(),
            op: "create",
            source,
        })?;
        let mut w = GgufWriter {
            path,
            tmp_path,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            alignment,
            tensors: planned,
            current: 0,
            written_in_current: 0,
        };
        w.put(&header)?;
        w.skip_empty();
        Ok(w)
    }

    /// The name of the tensor whose data is expected next, if any.
    pub fn next_tensor(&self) -> Option<&TensorSpec> {
        self.tensors.get(self.current).map(|t| &t.spec)
    }

    /// Writes the whole data of tensor `name`, which must be the next one declared.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        if self.written_in_current != 0 {
            return Err(self.fail(format!(
                "write_tensor('{name}') while a chunked tensor is half written"
            )));
        }
        let expected = self.check_next(name)?;
        if data.len() as u64 != expected {
            return Err(self.fail(format!(
                "tensor '{name}': {} bytes given, its shape and type need {expected}",
                data.len()
            )));
        }
        self.write_chunk(name, data)
    }

    /// Appends a chunk of tensor `name`'s data; the tensor is complete once its declared size
    /// has been written, and the next one may start.
    pub fn write_chunk(&mut self, name: &str, chunk: &[u8]) -> Result<()> {
        let size = self.check_next(name)?;
        let room = size - self.written_in_current;
        if chunk.len() as u64 > room {
            return Err(self.fail(format!(
                "tensor '{name}': chunk of {} bytes exceeds the {room} bytes still expected",
                chunk.len()
            )));
        }
        self.put(chunk)?;
        self.written_in_current += chunk.len() as u64;
        if self.written_in_current == size {
            let pad = size.next_multiple_of(self.alignment) - size;
            self.put(&vec![0u8; pad as usize])?;
            self.current += 1;
            self.written_in_current = 0;
            self.skip_empty();
        }
        Ok(())
    }

    /// Checks that every tensor was written, flushes, and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(t) = self.tensors.get(self.current) {
            return Err(self.fail(format!(
                "finish() before the data of tensor '{}' was written",
                t.spec.name
            )));
        }
        let out = self.out.take().expect("writer is open until finish");
        let file = out.into_inner().map_err(|e| GgufError::Io {
            path: self.tmp_path.clone(),
            op: "flush",
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| GgufError::Io {
            path: self.tmp_path.clone(),
            op: "sync",
            source,
        })?;
        std::fs::rename(&self.tmp_path, &self.path).map_err(|source| GgufError::Io {
            path: self.path.clone(),
            op: "rename into place",
            source,
        })
    }

    fn skip_empty(&mut self) {
        // Zero-byte tensors need no data call.
        while self.tensors.get(self.current).is_some_and(|t| t.size == 0) {
            self.current += 1;
        }
    }

    fn check_next(&self, name: &str) -> Result<u64> {
        match self.tensors.get(self.current) {
            Some(t) if t.spec.name == name => Ok(t.size),
            Some(t) => Err(self.fail(format!(
                "data for tensor '{name}' given, but '{}' comes next in the declared order",
                t.spec.name
            ))),
            None => Err(self.fail(format!(
                "data for tensor '{name}' given after every declared tensor was written"
            ))),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("writer is open until finish");
        out.write_all(bytes).map_err(|source| GgufError::Io {
            path: self.tmp_path.clone(),
            op: "write",
            source,
        })
    }

    fn fail(&self, problem: String) -> GgufError {
        GgufError::Write {
            path: self.path.clone(),
            problem,
        }
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        // Not finished: remove the partial file so no half-written model is left behind.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s);
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.push(*x as u8),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(u8::from(*x)),
        Value::String(s) => put_str(buf, s),
        Value::Array(a) => put_array(buf, a),
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(buf: &mut Vec<u8>, a: &Array) {
    buf.extend_from_slice(&(a.elem_type() as u32).to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! each {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => buf.extend(v.iter().map(|&x| x as u8)),
        Array::U16(v) => each!(v),
        Array::I16(v) => each!(v),
        Array::U32(v) => each!(v),
        Array::I32(v) => each!(v),
        Array::F32(v) => each!(v),
        Array::U64(v) => each!(v),
        Array::I64(v) => each!(v),
        Array::F64(v) => each!(v),
        Array::Bool(v) => buf.extend(v.iter().map(|&x| u8::from(x))),
        Array::String(v) => {
            for s in v {
                put_str(buf, s);
            }
        }
        Array::Array(v) => {
            for inner in v {
                put_array(buf, inner);
            }
        }
    }
}
