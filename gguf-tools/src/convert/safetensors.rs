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
            let n = map
                .get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
                .ok_or_else(|| bad(&path, "shorter than its 8-byte header length"))?;
            let header = map
                .get(8..8usize.saturating_add(n))
                .ok_or_else(|| bad(&path, format!("header of {n} bytes runs past the end")))?;
            let j: serde_json::Value =
                serde_json::from_slice(header).map_err(|e| bad(&path, e.to_string()))?;
            let data_len = map.len() - 8 - n;
            let file_idx = ck.maps.len();
            for (name, t) in j
                .as_object()
                .ok_or_else(|| bad(&path, "header is not an object"))?
            {
                if name == "__metadata__" {
                    continue;
                }
                let dtype = t["dtype"].as_str().unwrap_or("?").to_string();
                let shape: Vec<usize> = t["shape"]
                    .as_array()
                    .ok_or_else(|| bad(&path, format!("{name}: no shape")))?
                    .iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(&path, format!("{name}: bad shape")))?;
                let off = t["data_offsets"]
                    .as_array()
                    .ok_or_else(|| bad(&path, format!("{name}: no offsets")))?;
                let (start, end) = match (
                    off.first().and_then(|v| v.as_u64()),
                    off.get(1).and_then(|v| v.as_u64()),
                ) {
                    (Some(a), Some(b)) if a <= b && (b as usize) <= data_len => {
                        (a as usize, b as usize)
                    }
                    _ => return Err(bad(&path, format!("{name}: offsets outside the data"))),
                };
                let elem = match dtype.as_str() {
                    "F32" => 4,
                    "F16" | "BF16" => 2,
                    other => {
                        return Err(bad(
                            &path,
                            format!("{name}: dtype {other} is not supported (F32, F16, BF16)"),
                        ))
                    }
                };
                if shape.iter().product::<usize>() * elem != end - start {
                    return Err(bad(
                        &path,
                        format!(
                            "{name}: {} bytes do not fit shape {shape:?} of {dtype}",
                            end - start
                        ),
                    ));
                }
                ck.tensors.insert(
                    name.clone(),
                    Entry {
                        dtype,
                        shape,
                        file: file_idx,
                        start: 8 + n + start,
                        end: 8 + n + end,
                    },
                );
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
