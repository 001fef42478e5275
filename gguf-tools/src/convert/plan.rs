//! What a conversion writes: the GGUF tensors planned from checkpoint tensors (found under the
//! names transformers has used, shapes checked against the config), and the writer that
//! quantizes them one at a time.

use std::cell::RefCell;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::keys::general;
use llava_edge::gguf::{GgufWriter, TensorSpec, Value};

use super::safetensors::Checkpoint;
use super::ConvertError;
use crate::mix::{self, Mix, TensorShape};

/// GGUF metadata, in the order it is written.
pub type Metadata = Vec<(String, Value)>;

/// A tensor to write: its GGUF name, dims (ggml order) and source values.
pub struct Out {
    pub name: String,
    pub dims: Vec<u64>,
    pub data: Source,
}

/// Where a tensor's values come from.
pub enum Source {
    /// A checkpoint tensor, its rows permuted per head for llama's rotary layout when set.
    Hf {
        name: String,
        permute_heads: Option<usize>,
    },
    /// Values computed by the converter (a folded projector).
    Values(Vec<f32>),
}

/// Checkpoint tensor names under the language model, hub-style and transformers-5.
pub fn lm_names(rest: &str) -> Vec<String> {
    vec![
        format!("language_model.model.{rest}"),
        format!("model.language_model.{rest}"),
        format!("model.{rest}"),
    ]
}

/// Checkpoint tensor names under the vision tower.
pub fn vt_names(rest: &str) -> Vec<String> {
    vec![
        format!("vision_tower.vision_model.{rest}"),
        format!("model.vision_tower.vision_model.{rest}"),
        format!("model.vision_tower.{rest}"),
    ]
}

/// Checkpoint tensor names under the projector.
pub fn mm_names(rest: &str) -> Vec<String> {
    vec![
        format!("multi_modal_projector.{rest}"),
        format!("model.multi_modal_projector.{rest}"),
    ]
}

/// Finds checkpoint tensors and records which were used.
pub struct Finder<'a> {
    pub ck: &'a Checkpoint,
    used: RefCell<Vec<String>>,
}

impl<'a> Finder<'a> {
    pub fn new(ck: &'a Checkpoint) -> Finder<'a> {
        Finder {
            ck,
            used: RefCell::new(Vec::new()),
        }
    }

    /// The first of `candidates` the checkpoint holds.
    pub fn resolve(&self, candidates: &[String]) -> Option<String> {
        candidates
            .iter()
            .find(|n| self.ck.tensors.contains_key(n.as_str()))
            .cloned()
    }

    /// Resolves a tensor and checks its shape against the one the config implies; returns its
    /// name and ggml dims. A missing tensor is an error only when `required`.
    pub fn find(
        &self,
        candidates: &[String],
        want: &[usize],
        required: bool,
    ) -> Result<Option<(String, Vec<u64>)>, ConvertError> {
        let Some(name) = self.resolve(candidates) else {
            return match required {
                true => Err(ConvertError::MissingTensor(candidates[0].clone())),
                false => Ok(None),
            };
        };
        let shape = &self.ck.tensors[&name].shape;
        if shape != want {
            return Err(ConvertError::TensorShape {
                tensor: name,
                shape: shape.clone(),
                want: want.to_vec(),
            });
        }
        self.used.borrow_mut().push(name.clone());
        Ok(Some((
            name,
            shape.iter().rev().map(|&x| x as u64).collect(),
        )))
    }

    /// Plans GGUF tensor `gguf` from the checkpoint's (skipped when absent and not `required`).
    pub fn add(
        &self,
        outs: &mut Vec<Out>,
        gguf: &str,
        candidates: &[String],
        want: &[usize],
        required: bool,
        permute_heads: Option<usize>,
    ) -> Result<(), ConvertError> {
        if let Some((name, dims)) = self.find(candidates, want, required)? {
            outs.push(Out {
                name: gguf.into(),
                dims,
                data: Source::Hf {
                    name,
                    permute_heads,
                },
            });
        }
        Ok(())
    }

    /// Checkpoint tensors no planned tensor used.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.ck
            .tensors
            .keys()
            .filter(|n| !used.contains(n))
            .cloned()
            .collect()
    }
}

/// llama.cpp's Q/K row permutation: each head's (2, hd/2) halves become (hd/2, 2) pairs.
fn permute_rows(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let hd = rows / n_head;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..hd / 2 {
                let (old, new) = (h * hd + i * hd / 2 + j, h * hd + 2 * j + i);
                out[new * cols..(new + 1) * cols].copy_from_slice(&w[old * cols..(old + 1) * cols]);
            }
        }
    }
    out
}

/// Writes `outs` with the per-tensor types of `mix` (F32 when None), one tensor in memory at a time.
pub fn write(
    ck: &Checkpoint,
    path: &Path,
    mut md: Metadata,
    outs: &[Out],
    mix: Option<Mix>,
    n_layer: Option<usize>,
    progress: bool,
) -> Result<usize, ConvertError> {
    let shapes: Vec<TensorShape> = outs
        .iter()
        .map(|o| TensorShape {
            name: &o.name,
            dims: &o.dims,
        })
        .collect();
    let types: Vec<GgmlType> = match mix {
        None => vec![GgmlType::F32; outs.len()],
        Some(m) => {
            let plan = mix::plan(m, &shapes, &vec![GgmlType::F32; outs.len()], n_layer);
            md.push((general::FILE_TYPE.into(), Value::U32(m.file_type())));
            md.push((general::QUANTIZATION_VERSION.into(), Value::U32(2)));
            plan.types
                .iter()
                .map(|t| t.unwrap_or(GgmlType::F32))
                .collect()
        }
    };
    if mix.is_none() {
        md.push((general::FILE_TYPE.into(), Value::U32(0)));
    }
    let specs: Vec<TensorSpec> = outs
        .iter()
        .zip(&types)
        .map(|(o, &t)| TensorSpec::new(o.name.clone(), &o.dims, t))
        .collect();
    let mut w = GgufWriter::create(path, &md, &specs)?;
    let bar = if progress {
        ProgressBar::new(outs.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("static template"),
    );
    for (o, &t) in outs.iter().zip(&types) {
        bar.set_message(o.name.clone());
        let data = match &o.data {
            Source::Hf {
                name,
                permute_heads,
            } => {
                let (shape, data) = ck.read_f32(name)?;
                match permute_heads {
                    // Shapes were checked against the heads when the tensor was planned.
                    Some(h) => {
                        let cols = shape.get(1).copied().unwrap_or(1);
                        permute_rows(&data, shape[0], cols, *h)
                    }
                    None => data,
                }
            }
            Source::Values(v) => v.clone(),
        };
        let mut bytes = Vec::new();
        llava_edge::quant::quantize(t, &data, &mut bytes)?;
        w.write_tensor(&o.name, &bytes)?;
        bar.inc(1);
    }
    w.finish()?;
    bar.finish_and_clear();
    Ok(outs.len())
}
