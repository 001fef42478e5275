//! The GGUF reader: validates the whole header up front, then hands out zero-copy views of
//! tensor data straight from the memory map.
//!
//! Every count, length and offset is checked against the bytes that are actually there before
//! anything is allocated or indexed, so a malformed or hostile file yields a [`GgufError`] and
//! never a panic, an out-of-bounds read or a huge allocation.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::{Mmap, MmapMut, MmapOptions};

use super::error::{GgufError, Result};
use super::value::{Array, Value, ValueType};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use crate::dtype::GgmlType;

/// Deepest nesting of arrays accepted; real files nest at most once, and a bound keeps a
/// hostile file from exhausting the stack.
const MAX_ARRAY_DEPTH: u32 = 8;

/// One tensor's description from the header, with its place in the data section checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the innermost (contiguous, row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
    /// Number of elements (product of `dims`).
    pub n_elements: u64,
    /// How the bytes are arranged in memory now (always [`Layout::Rows`] in the file).
    pub layout: Layout,
}

/// How a tensor's bytes are arranged in memory. The file always holds ggml's rows; a loader may
/// rearrange a tensor in its private copy of the pages (see [`GgufFile::tensors_mut`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// ggml's rows of blocks, as in the file.
    #[default]
    Rows,
    /// Each run of eight rows interleaved for decode, in the kernels' block for the type
    /// (`le_block_q4_0x8` for Q4_0 .. `le_block_q5_1x8` for Q5_1); the rows after the last
    /// multiple of eight stay plain (`crate::quant::interleave`).
    Interleaved8,
}

impl TensorInfo {
    /// Row length (elements of the innermost dimension), 1 for a 0-d tensor.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (product of all dimensions but the first).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

enum Backing {
    Map(Mmap),
    /// The map after [`GgufFile::tensors_mut`]: still private, now writable.
    Written(MmapMut),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Written(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open, validated GGUF file.
pub struct GgufFile {
    path: PathBuf,
    backing: Backing,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

/// A tensor's description together with its bytes in the file.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    /// The tensor's description.
    pub info: &'a TensorInfo,
    /// The raw tensor data (exactly `info.size` bytes).
    pub data: &'a [u8],
    path: &'a Path,
}

impl GgufFile {
    /// Opens and validates `path`, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let io = |op, source| GgufError::Io {
            path: path.clone(),
            op,
            source,
        };
        let file = File::open(&path).map_err(|e| io("open", e))?;
        let meta = file.metadata().map_err(|e| io("stat", e))?;
        if meta.is_dir() {
            // Mapping a directory fails with "No such device", which says nothing useful.
            let msg = "is a directory, not a GGUF file (give the .gguf file; a Hugging Face \
                       checkpoint directory is converted first with `gguf-tools convert`)";
            return Err(io(
                "open",
                std::io::Error::new(std::io::ErrorKind::IsADirectory, msg),
            ));
        }
        let len = meta.len();
        // Mapping an empty file fails on Linux; an empty file is simply truncated.
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the map lives as long as `GgufFile`; as with every mmap-based loader
            // (llama.cpp's too), another process truncating or rewriting the file while it is
            // open is outside what we can guard against. Private (copy-on-write), so pages
            // that tensors_mut later rewrites become ours and the file never changes; pages
            // never written stay shared with the page cache as with a shared map.
            Backing::Map(
                unsafe { MmapOptions::new().map_copy_read_only(&file) }
                    .map_err(|e| io("mmap", e))?,
            )
        };
        Self::parse(path, backing)
    }

    /// Validates an in-memory GGUF image; `label` names it in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: impl Into<PathBuf>) -> Result<GgufFile> {
        Self::parse(label.into(), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<GgufFile> {
        let header = Header::parse(&path, backing.bytes())?;
        Ok(GgufFile {
            path,
            backing,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            key_index: header
                .metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata: header.metadata,
            tensor_index: header
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: header.tensors,
        })
    }

    /// Faults every tensor page of the map in now, read-only, so the first pass over the
    /// weights (the first prefill or image encode) does not pay ~one page fault per 4 KiB. The
    /// pages are the page cache's (shared, not copied). A hint: where the kernel lacks
    /// MADV_POPULATE_READ (before Linux 5.14) each page is touched instead.
    pub fn populate(&self) {
        let data = self.backing.bytes();
        let from = (self.data_offset as usize).min(data.len());
        populate(&data[from..]);
    }

    /// The path (or label) the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data (`general.alignment`, 32 by default).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Total size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// All metadata key/value pairs, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// All tensor descriptions, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The value of metadata key `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The value of a key that must be present.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    fn wrong_type(&self, key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::WrongKeyType {
            path: self.path.clone(),
            key: key.to_string(),
            expected,
            found: format!("{} ({v})", v.value_type().name()),
        }
    }

    /// A required UTF-8 string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.wrong_type(key, "a UTF-8 string", v))
    }

    /// A required non-negative integer value of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// A required float value (f32 or f64).
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong_type(key, "a float", v))
    }

    /// A required array value.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| self.wrong_type(key, "an array", v))
    }

    /// The description of tensor `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The whole file's bytes, the one buffer every [`TensorView`] of this file borrows from
    /// (to join tensors that lie back to back without trusting their addresses alone).
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// A zero-copy view of tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })?;
        Ok(self.view(info))
    }

    /// The bytes of the tensors `select` picks, writable, with their descriptions (to set
    /// [`TensorInfo::layout`] after rearranging them). The map becomes writable but stays
    /// private: a page written becomes this process's own memory (the same amount the mapped
    /// page took) and the file is never modified. Tensors whose bytes overlap another picked
    /// tensor's (a hostile file) are left out, so the slices are disjoint. [`prefault`] each
    /// slice before rewriting it.
    pub fn tensors_mut(
        &mut self,
        select: impl Fn(&TensorInfo) -> bool,
    ) -> Result<Vec<(&mut TensorInfo, &mut [u8])>> {
        if let Backing::Map(_) = self.backing {
            let Backing::Map(m) = std::mem::replace(&mut self.backing, Backing::Owned(Vec::new()))
            else {
                unreachable!("matched above")
            };
            match m.make_mut() {
                Ok(w) => self.backing = Backing::Written(w),
                Err(source) => {
                    // make_mut consumed the map: map the file again so the views keep working,
                    // and report why nothing can be rewritten (e.g. strict overcommit refusing
                    // a writable private map of a large file).
                    let file = File::open(&self.path).map_err(|e| GgufError::Io {
                        path: self.path.clone(),
                        op: "reopen",
                        source: e,
                    })?;
                    // SAFETY: as in `open`.
                    let m =
                        unsafe { MmapOptions::new().map_copy_read_only(&file) }.map_err(|e| {
                            GgufError::Io {
                                path: self.path.clone(),
                                op: "mmap",
                                source: e,
                            }
                        })?;
                    self.backing = Backing::Map(m);
                    return Err(GgufError::Io {
                        path: self.path.clone(),
                        op: "mprotect (private copy of tensor pages)",
                        source,
                    });
                }
            }
        }
        let base = self.data_offset as usize;
        let mut picked: Vec<&mut TensorInfo> =
            self.tensors.iter_mut().filter(|t| select(t)).collect();
        picked.sort_by_key(|t| t.offset);
        let mut keep = vec![true; picked.len()];
        for i in 1..picked.len() {
            let prev_end = picked[i - 1].offset + picked[i - 1].size;
            if picked[i].offset < prev_end {
                keep[i - 1] = false;
                keep[i] = false;
            }
        }
        let bytes: &mut [u8] = match &mut self.backing {
            Backing::Written(m) => m,
            Backing::Owned(v) => v,
            Backing::Map(_) => unreachable!("made writable above"),
        };
        let mut rest = bytes;
        let mut at = 0usize;
        let mut out = Vec::new();
        for (t, keep) in picked.into_iter().zip(keep) {
            if !keep || t.size == 0 {
                continue;
            }
            // In bounds: every tensor's range was checked against the file in Header::parse,
            // and the picked ranges are sorted and disjoint.
            let start = base + t.offset as usize;
            let tail = std::mem::take(&mut rest);
            let (_, from_start) = tail.split_at_mut(start - at);
            let (data, after) = from_start.split_at_mut(t.size as usize);
            rest = after;
            at = start + t.size as usize;
            out.push((t, data));
        }
        Ok(out)
    }

    /// A zero-copy view of a tensor this file describes.
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        // Offsets and sizes were checked against the file length in `Header::parse`, and `info`
        // is one of ours (a foreign one is clamped to an empty view rather than trusted).
        let start = self.data_offset.saturating_add(info.offset) as usize;
        let end = start.saturating_add(info.size as usize);
        let data = self.backing.bytes().get(start..end).unwrap_or(&[]);
        TensorView {
            info,
            data,
            path: &self.path,
        }
    }
}

impl<'a> TensorView<'a> {
    fn typed<T: bytemuck::Pod>(&self, ty: GgmlType, what: &'static str) -> Result<&'a [T]> {
        if self.info.ty != ty {
            return Err(GgufError::UnsupportedType {
                path: self.path.to_path_buf(),
                tensor: self.info.name.clone(),
                ty: self.info.ty,
                what,
            });
        }
        bytemuck::try_cast_slice(self.data).map_err(|e| GgufError::BadTensor {
            path: self.path.to_path_buf(),
            tensor: self.info.name.clone(),
            problem: format!("data cannot be viewed as {ty}: {e:?} (general.alignment too small?)"),
        })
    }

    /// The data as f32 values (the tensor must be F32).
    pub fn as_f32(&self) -> Result<&'a [f32]> {
        self.typed(GgmlType::F32, "an f32 view")
    }

    /// The data as f16 values (the tensor must be F16).
    pub fn as_f16(&self) -> Result<&'a [f16]> {
        self.typed(GgmlType::F16, "an f16 view")
    }

    /// The data as bf16 values (the tensor must be BF16).
    pub fn as_bf16(&self) -> Result<&'a [bf16]> {
        self.typed(GgmlType::BF16, "a bf16 view")
    }
}

/// The parsed header: everything before the tensor data.
struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                file_len: self.buf.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let b = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn invalid(&self, offset: usize, what: String, problem: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            what,
            offset: offset as u64,
            problem,
        }
    }

    /// A length-prefixed byte string.
    fn bytes(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        self.take(len, what)
    }

    /// A length-prefixed string that must be UTF-8 (keys and tensor names).
    fn text(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let b = self.bytes(what)?;
        String::from_utf8(b.to_vec())
            .map_err(|e| self.invalid(at, what(), format!("not valid UTF-8 ({e})")))
    }

    fn value_type(&mut self, what: &dyn Fn() -> String) -> Result<ValueType> {
        let at = self.pos;
        let id = self.u32(&|| format!("type of {}", what()))?;
        ValueType::from_id(id)
            .ok_or_else(|| self.invalid(at, what(), format!("unknown value type {id}")))
    }

    fn value(&mut self, ty: ValueType, depth: u32, what: &dyn Fn() -> String) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(what)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => return Err(self.invalid(at, what(), format!("bool byte is {b}"))),
                }
            }
            ValueType::String => Value::String(self.bytes(what)?.to_vec()),
            ValueType::Array => Value::Array(self.array_value(depth, what)?),
        })
    }

    fn array_value(&mut self, depth: u32, what: &dyn Fn() -> String) -> Result<Array> {
        let at = self.pos;
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.invalid(
                at,
                what(),
                format!("arrays nested deeper than {MAX_ARRAY_DEPTH}"),
            ));
        }
        let elem = self.value_type(&|| format!("element type of {}", what()))?;
        let n = self.u64(&|| format!("length of {}", what()))?;
        // Bound the count by the bytes left before allocating anything for it.
        let need = n.checked_mul(elem.min_size());
        if need.is_none_or(|need| need > self.remaining()) {
            return Err(self.invalid(
                at,
                what(),
                format!(
                    "array of {n} {} elements cannot fit in the {} bytes left",
                    elem.name(),
                    self.remaining()
                ),
            ));
        }
        let n = n as usize;
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let size = std::mem::size_of::<$t>();
                let raw = self.take((n * size) as u64, what)?;
                Array::$variant(
                    raw.chunks_exact(size)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of exact size")))
                        .collect(),
                )
            }};
        }
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n as u64, what)?.to_vec()),
            ValueType::I8 => Array::I8(
                self.take(n as u64, what)?
                    .iter()
                    .map(|&b| b as i8)
                    .collect(),
            ),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let raw = self.take(n as u64, what)?;
                if let Some(i) = raw.iter().position(|&b| b > 1) {
                    return Err(self.invalid(
                        self.pos - raw.len() + i,
                        format!("element {i} of {}", what()),
                        format!("bool byte is {}", raw[i]),
                    ));
                }
                Array::Bool(raw.iter().map(|&b| b == 1).collect())
            }
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(
                        self.bytes(&|| format!("element {i} of {}", what()))?
                            .to_vec(),
                    );
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.array_value(depth + 1, &|| format!("element {i} of {}", what()))?);
                }
                Array::Array(v)
            }
        })
    }
}

impl Header {
    fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
        let mut c = Cursor { buf, pos: 0, path };
        let magic = buf.get(..4).unwrap_or(buf);
        if magic != GGUF_MAGIC {
            if magic.len() < 4 && GGUF_MAGIC.starts_with(magic) {
                c.take(4, &|| "magic".into())?;
            }
            return Err(GgufError::BadMagic {
                path: path.to_path_buf(),
                found: magic.to_vec(),
            });
        }
        c.pos = 4;
        let version = c.u32(&|| "version".into())?;
        if version != 2 && version != 3 {
            let hint = if version == 1 {
                ": version 1 used 32-bit counts; re-convert the model with a current converter"
            } else if version & 0xffff == 0 && version != 0 {
                ": the file looks big-endian, which this reader does not handle"
            } else {
                ""
            };
            return Err(GgufError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
                hint,
            });
        }
        let n_tensors = c.u64(&|| "tensor count".into())?;
        let n_kv = c.u64(&|| "metadata count".into())?;
        // A key/value pair takes at least 12 bytes (empty key, type) and a tensor info 24
        // (empty name, n_dims, type, offset): bound the counts before reserving for them.
        if n_kv > c.remaining() / 12 {
            return Err(c.invalid(
                16,
                "metadata count".into(),
                format!("{n_kv} pairs cannot fit in a {}-byte file", buf.len()),
            ));
        }
        if n_tensors > c.remaining() / 24 {
            return Err(c.invalid(
                8,
                "tensor count".into(),
                format!(
                    "{n_tensors} tensors cannot fit in a {}-byte file",
                    buf.len()
                ),
            ));
        }

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut seen = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let at = c.pos;
            let key = c.text(&|| format!("key of metadata pair {i}"))?;
            let what = || format!("metadata key '{key}'");
            let ty = c.value_type(&what)?;
            let value = c.value(ty, 0, &what)?;
            if seen.insert(key.clone(), at).is_some() {
                return Err(c.invalid(at, what(), "key appears twice".into()));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
                _ => {
                    return Err(GgufError::Invalid {
                        path: path.to_path_buf(),
                        what: format!("metadata key '{ALIGNMENT_KEY}'"),
                        offset: seen.get(ALIGNMENT_KEY).copied().unwrap_or(0) as u64,
                        problem: format!("alignment {v} is not a power of two up to 2^30"),
                    })
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let at = c.pos;
            let name = c.text(&|| format!("name of tensor {i}"))?;
            let bad = |problem: String| GgufError::BadTensor {
                path: path.to_path_buf(),
                tensor: name.clone(),
                problem: format!("{problem} (tensor info at offset {at})"),
            };
            let n_dims = c.u32(&|| format!("n_dims of tensor '{name}'"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(bad(format!(
                    "{n_dims} dimensions, at most {MAX_DIMS} allowed"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(c.u64(&|| format!("dimension {d} of tensor '{name}'"))?);
            }
            let ty_id = c.u32(&|| format!("type of tensor '{name}'"))?;
            let offset = c.u64(&|| format!("data offset of tensor '{name}'"))?;
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| bad(format!("unknown ggml type id {ty_id}")))?;
            // ggml holds dimensions as int64: every partial product must fit, zero-sized
            // dimensions aside (else a [0, 2^40, 2^40] tensor passes and its row count overflows).
            dims.iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
            let n_elements: u64 = dims.iter().product();
            let row = dims.first().copied().unwrap_or(1);
            if row % ty.block_size() as u64 != 0 {
                return Err(bad(format!(
                    "row length {row} is not a multiple of {ty}'s block size {}",
                    ty.block_size()
                )));
            }
            let size = ty
                .bytes_for(n_elements)
                .ok_or_else(|| bad(format!("byte size of {n_elements} {ty} elements overflows")))?;
            if offset % alignment != 0 {
                return Err(bad(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            if names.insert(name.clone(), i).is_some() {
                return Err(bad("name appears twice".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
                n_elements,
                layout: Layout::Rows,
            });
        }

        let data_offset = (c.pos as u64).next_multiple_of(alignment);
        let file_len = buf.len() as u64;
        let data_len = file_len.saturating_sub(data_offset);
        for t in &tensors {
            let end = t.offset.checked_add(t.size);
            if end.is_none_or(|end| end > data_len) {
                return Err(GgufError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    problem: format!(
                        "data [{}, +{}) runs past the end of the data section ({} bytes at file offset {}); the file is truncated or corrupt",
                        t.offset, t.size, data_len, data_offset
                    ),
                });
            }
        }
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].size > pair[1].offset {
                return Err(GgufError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: pair[1].name.clone(),
                    problem: format!(
                        "data at offset {} overlaps tensor '{}' (offset {}, {} bytes)",
                        pair[1].offset, pair[0].name, pair[0].offset, pair[0].size
                    ),
                });
            }
        }

        Ok(Header {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }
}

/// Faults in `data`'s pages readable (see [`GgufFile::populate`]).
pub fn populate(data: &[u8]) {
    if data.is_empty() {
        return;
    }
    // SAFETY: sysconf has no preconditions.
    #[cfg(target_os = "linux")]
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    #[cfg(not(target_os = "linux"))]
    let page = 4096;
    #[cfg(target_os = "linux")]
    {
        let start = data.as_ptr() as usize;
        let first = start / page * page;
        // SAFETY: the range covers `data`'s pages, all in this process's mapping; the advice
        // changes no byte.
        let rc = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                start + data.len() - first,
                libc::MADV_POPULATE_READ,
            )
        };
        if rc == 0 {
            return;
        }
    }
    let mut sum = 0u8;
    for i in (0..data.len()).step_by(page) {
        sum = sum.wrapping_add(data[i]);
    }
    std::hint::black_box(sum);
}

/// Faults in `data`'s pages writable in one call, instead of two faults a page (read, then copy
/// on write) as a rewrite of a private file map would take. Only a hint: where the kernel lacks
/// MADV_POPULATE_WRITE (before Linux 5.14) the pages fault in one at a time as before.
pub fn prefault(data: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        if data.is_empty() {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = data.as_mut_ptr() as usize;
        let first = start / page * page;
        // SAFETY: the range covers `data`'s pages, all in this process's mapping; the advice
        // changes no byte (it only makes the pages present and private), so it is sound even
        // where a page is shared with a neighbouring slice another thread is writing.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                start + data.len() - first,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}
