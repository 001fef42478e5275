//! The GGUF header: magic, version, metadata and tensor infos, each read through a cursor that
//! checks every length against the bytes that are there before allocating or indexing.

use std::collections::HashMap;
use std::path::Path;

use super::error::{GgufError, Result};
use super::value::{Array, Value, ValueType};
use super::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS};
use crate::dtype::GgmlType;

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
/// rearrange a tensor in its private copy of the pages (see `GgufFile::tensors_mut`).
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

/// Deepest nesting of arrays accepted; real files nest at most once, and a bound keeps a
/// hostile file from exhausting the stack.
const MAX_ARRAY_DEPTH: u32 = 8;

/// The parsed header: everything before the tensor data.
pub(super) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
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
    /// Parses and checks everything before the tensor data of the file at `path` (for
    /// messages), whose bytes are `buf`.
    pub(super) fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
        let mut c = Cursor { buf, pos: 0, path };
        let (version, n_tensors, n_kv) = read_preamble(&mut c)?;
        let (metadata, seen) = read_metadata(&mut c, n_kv)?;
        let alignment = alignment(path, &metadata, &seen)?;
        let tensors = read_tensor_infos(&mut c, n_tensors, alignment)?;
        let data_offset = (c.pos as u64).next_multiple_of(alignment);
        check_extents(path, &tensors, data_offset, buf.len() as u64)?;
        Ok(Header {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        })
    }
}

/// Magic, version and the two counts, the counts bounded by the bytes that could hold them.
fn read_preamble(c: &mut Cursor) -> Result<(u32, u64, u64)> {
    let (path, buf) = (c.path, c.buf);
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
    Ok((version, n_tensors, n_kv))
}

/// The metadata pairs, and where each key starts (for messages); a key may appear once.
type Metadata = (Vec<(String, Value)>, HashMap<String, usize>);
fn read_metadata(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
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
    Ok((metadata, seen))
}

/// `general.alignment`: a power of two up to 2^30, [`DEFAULT_ALIGNMENT`] where absent.
fn alignment(
    path: &Path,
    metadata: &[(String, Value)],
    seen: &HashMap<String, usize>,
) -> Result<u64> {
    match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 30 => Ok(a),
            _ => Err(GgufError::Invalid {
                path: path.to_path_buf(),
                what: format!("metadata key '{ALIGNMENT_KEY}'"),
                offset: seen.get(ALIGNMENT_KEY).copied().unwrap_or(0) as u64,
                problem: format!("alignment {v} is not a power of two up to 2^30"),
            }),
        },
    }
}

/// The tensor infos: dimensions, type and offset each checked, names unique.
fn read_tensor_infos(c: &mut Cursor, n_tensors: u64, alignment: u64) -> Result<Vec<TensorInfo>> {
    let path = c.path;
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
        let ty =
            GgmlType::from_id(ty_id).ok_or_else(|| bad(format!("unknown ggml type id {ty_id}")))?;
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
    Ok(tensors)
}

/// Every tensor's data lies inside the data section (starting at `data_offset` in a file of
/// `file_len` bytes), and no two overlap.
fn check_extents(
    path: &Path,
    tensors: &[TensorInfo],
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    let data_len = file_len.saturating_sub(data_offset);
    for t in tensors {
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
    Ok(())
}
