//! Reading Hugging Face `.safetensors` checkpoints (single file or sharded with
//! `model.safetensors.index.json`), memory-mapped, one tensor at a time.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ConvertError;

/// Where one tensor lives.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Element type name (`F32`, `F16`, `BF16`).
    pub dtype: String,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    file: usize,
    start: usize,
    end: usize,
}

/// All tensors of a checkpoint.
pub struct Checkpoint {
    maps: Vec<(PathBuf, Mmap)>,
    /// Tensor name to location, sorted by name.
    pub tensors: BTreeMap<String, Entry>,
}

fn bad(path: &Path, problem: impl Into<String>) -> ConvertError {
    ConvertError::Checkpoint {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The largest header read (the safetensors format's own limit is 100 MB).
const MAX_HEADER: usize = 100 << 20;

/// The tensors listed in the header of one safetensors file (`bytes`, the whole file), each
/// checked: a known dtype, a shape whose byte length equals its offsets' span, offsets within
/// the data, and no two tensors sharing bytes.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Entry)>, ConvertError> {
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| bad(path, "shorter than its 8-byte header length"))?;
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_HEADER && n <= bytes.len() - 8)
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "header of {n} bytes runs past the end of the {}-byte file (or past {MAX_HEADER})",
                    bytes.len()
                ),
            )
        })?;
    let j: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(path, format!("header: {e}")))?;
    let data_len = bytes.len() - 8 - n;
    let mut out = Vec::new();
    for (name, t) in j
        .as_object()
        .ok_or_else(|| bad(path, "header is not an object"))?
    {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t["dtype"].as_str().unwrap_or("?").to_string();
        let elem: usize = match dtype.as_str() {
            "F32" => 4,
            "F16" | "BF16" => 2,
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "{name}: dtype {} is not supported (F32, F16, BF16)",
                        t["dtype"]
                    ),
                ))
            }
        };
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .filter(|a| a.len() <= 8)
            .ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "{name}: shape {} is not a list of up to 8 sizes",
                        t["shape"]
                    ),
                )
            })?
            .iter()
            .map(|v| v.as_u64().and_then(|x| usize::try_from(x).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                bad(
                    path,
                    format!("{name}: shape {} holds a non-size", t["shape"]),
                )
            })?;
        let bytes_needed = shape
            .iter()
            .try_fold(elem, |acc, &x| acc.checked_mul(x))
            .ok_or_else(|| bad(path, format!("{name}: shape {shape:?} is too large")))?;
        let off = t["data_offsets"]
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| {
                bad(
                    path,
                    format!("{name}: data_offsets {} is not a pair", t["data_offsets"]),
                )
            })?;
        let (start, end) = match (off[0].as_u64(), off[1].as_u64()) {
            (Some(a), Some(b)) if a <= b && b <= data_len as u64 => (a as usize, b as usize),
            _ => {
                return Err(bad(
                    path,
                    format!(
                        "{name}: data_offsets {} lie outside the {data_len} data bytes",
                        t["data_offsets"]
                    ),
                ))
            }
        };
        if bytes_needed != end - start {
            return Err(bad(
                path,
                format!(
                    "{name}: {} bytes do not fit shape {shape:?} of {dtype} ({bytes_needed} bytes)",
                    end - start
                ),
            ));
        }
        out.push((
            name.clone(),
            Entry {
                dtype,
                shape,
                file: 0,
                start: 8 + n + start,
                end: 8 + n + end,
            },
        ));
    }
    let mut spans: Vec<(usize, usize, &str)> = out
        .iter()
        .filter(|(_, e)| e.end > e.start)
        .map(|(name, e)| (e.start, e.end, name.as_str()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(bad(
                path,
                format!(
                    "tensors {} and {} share bytes (overlapping data_offsets)",
                    w[0].2, w[1].2
                ),
            ));
        }
    }
    Ok(out)
}

impl Checkpoint {
    /// Opens `dir/model.safetensors` or the shards listed in `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint, ConvertError> {
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| bad(&index, e.to_string()))?;
            let j: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(&index, e.to_string()))?;
            let mut names: Vec<String> = j["weight_map"]
                .as_object()
                .ok_or_else(|| bad(&index, "no weight_map"))?
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            names.sort();
            names.dedup();
            if let Some(n) = names.iter().find(|n| {
                Path::new(n.as_str()).file_name() != Some(std::ffi::OsStr::new(n.as_str()))
            }) {
                return Err(bad(
                    &index,
                    format!("shard '{n}' is not a file name in the checkpoint directory"),
                ));
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut ck = Checkpoint {
            maps: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for path in files {
            let file = File::open(&path).map_err(|_| ConvertError::MissingFile(path.clone()))?;
            // SAFETY: read-only map of a file we do not modify; kept alive with the checkpoint.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| bad(&path, e.to_string()))?;
            let entries = parse_header(&path, &map)?;
            let file_idx = ck.maps.len();
            for (name, mut e) in entries {
                e.file = file_idx;
                if ck.tensors.contains_key(&name) {
                    return Err(bad(
                        &path,
                        format!("tensor {name} is also in another shard"),
                    ));
                }
                ck.tensors.insert(name, e);
            }
            ck.maps.push((path, map));
        }
        Ok(ck)
    }

    /// Tensor `name` as f32 values and its shape.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), ConvertError> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| ConvertError::MissingTensor(name.to_string()))?;
        let bytes = &self.maps[e.file].1[e.start..e.end];
        let data = match e.dtype.as_str() {
            "F32" => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            "F16" => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok((e.shape.clone(), data))
    }
}
