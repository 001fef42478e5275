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
use super::header::{Header, TensorInfo};
use super::value::{Array, Value};
use crate::dtype::GgmlType;

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
