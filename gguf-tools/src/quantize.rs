//! `gguf-tools quantize IN OUT MIX`: rewrites a text model with the per-tensor types of a
//! llama.cpp mix, or a vision projector (mmproj) with its matrices in the mix's type. Streaming: one tensor is converted at a time, its rows split across threads,
//! and written before the next is read; the input stays memory-mapped.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::keys::general;
use llava_edge::gguf::{GgufError, GgufFile, GgufWriter, TensorInfo, TensorSpec, Value};
use llava_edge::quant::{self, QuantError};

use crate::mix::{self, Mix, TensorShape};

/// What can go wrong while quantizing.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// Reading the input or writing the output failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// A tensor could not be converted.
    #[error("{path}: tensor '{tensor}': {source}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        #[source]
        source: QuantError,
    },
    /// The output would replace the input while it is being read.
    #[error("output {output} is the input {input} (the same file); write the quantized model to another file")]
    SameFile { input: PathBuf, output: PathBuf },
    /// The input already holds quantized tensors and requantizing was not allowed.
    #[error("{path}: tensor '{tensor}' is already {ty}; requantizing loses quality, pass --allow-requantize to do it anyway")]
    AlreadyQuantized {
        path: PathBuf,
        tensor: String,
        ty: GgmlType,
    },
}

/// Options of one run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The mix to apply.
    pub mix: Mix,
    /// Threads to quantize with.
    pub threads: usize,
    /// Allow dequantizing already-quantized tensors to quantize them again.
    pub allow_requantize: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// What a run did, per tensor: name, input type, output type.
pub struct Report {
    /// (name, input type, output type) in file order.
    pub tensors: Vec<(String, GgmlType, GgmlType)>,
    /// Tensors whose rows did not fit the chosen type's blocks (a fallback type was used).
    pub fallbacks: Vec<String>,
    /// Total input and output tensor bytes.
    pub bytes_in: u64,
    /// Total output tensor bytes.
    pub bytes_out: u64,
}

/// Quantizes `input` into `output` with `opts.mix`.
pub fn quantize_file(input: &Path, output: &Path, opts: &Options) -> Result<Report, QuantizeError> {
    if crate::paths::same_file(input, output) {
        return Err(QuantizeError::SameFile {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
        });
    }
    let src = GgufFile::open(input)?;
    let shapes: Vec<TensorShape> = src
        .tensors()
        .iter()
        .map(|t| TensorShape {
            name: &t.name,
            dims: &t.dims,
        })
        .collect();
    let current: Vec<GgmlType> = src.tensors().iter().map(|t| t.ty).collect();
    let arch = src.get_str(general::ARCHITECTURE).unwrap_or("llama");
    let n_layer = src
        .get(&format!("{arch}.block_count"))
        .and_then(|v| v.as_u64())
        .map(|n| n as usize);
    let plan = if arch == "clip" {
        mix::plan_vision(opts.mix, &shapes, &current)
    } else {
        mix::plan(opts.mix, &shapes, &current, n_layer)
    };

    for (t, target) in src.tensors().iter().zip(&plan.types) {
        if target.is_some() && t.ty.is_quantized() && !opts.allow_requantize {
            return Err(QuantizeError::AlreadyQuantized {
                path: input.to_path_buf(),
                tensor: t.name.clone(),
                ty: t.ty,
            });
        }
    }

    let mut metadata: Vec<(String, Value)> = src
        .metadata()
        .iter()
        .filter(|(k, _)| k != general::FILE_TYPE && k != general::QUANTIZATION_VERSION)
        .cloned()
        .collect();
    metadata.push((general::QUANTIZATION_VERSION.into(), Value::U32(2)));
    metadata.push((general::FILE_TYPE.into(), Value::U32(opts.mix.file_type())));

    let specs: Vec<TensorSpec> = src
        .tensors()
        .iter()
        .zip(&plan.types)
        .map(|(t, target)| TensorSpec::new(t.name.clone(), &t.dims, target.unwrap_or(t.ty)))
        .collect();
    let mut writer = GgufWriter::create(output, &metadata, &specs)?;

    let bar = if opts.progress {
        let total = src.tensors().iter().map(|t| t.n_elements).sum();
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}")
                .expect("static template is valid"),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let mut report = Report {
        tensors: Vec::new(),
        fallbacks: plan.fallbacks.clone(),
        bytes_in: 0,
        bytes_out: 0,
    };
    for (t, target) in src.tensors().iter().zip(&plan.types) {
        bar.set_message(format!("{} -> {}", t.name, target.unwrap_or(t.ty)));
        let view = src.view(t);
        report.bytes_in += t.size;
        match target {
            None => {
                writer.write_tensor(&t.name, view.data)?;
                report.bytes_out += t.size;
            }
            Some(ty) => {
                let fail = |source| QuantizeError::Tensor {
                    path: input.to_path_buf(),
                    tensor: t.name.clone(),
                    source,
                };
                let out = convert_rows(t, view.data, *ty, opts.threads).map_err(fail)?;
                writer.write_tensor(&t.name, &out)?;
                report.bytes_out += out.len() as u64;
            }
        }
        report
            .tensors
            .push((t.name.clone(), t.ty, target.unwrap_or(t.ty)));
        bar.inc(t.n_elements);
    }
    writer.finish()?;
    bar.finish_and_clear();
    Ok(report)
}

/// Converts one tensor to `target`, splitting its rows over `threads` threads. Each thread
/// decodes its rows to f32 and encodes them, so the f32 copy is never made for the whole tensor.
fn convert_rows(
    t: &TensorInfo,
    data: &[u8],
    target: GgmlType,
    threads: usize,
) -> Result<Vec<u8>, QuantError> {
    let row_len = t.row_len() as usize;
    let n_rows = t.n_rows() as usize;
    let in_row = data.len() / n_rows.max(1);
    let out_row = target
        .bytes_for(row_len as u64)
        .ok_or(QuantError::RowLength {
            ty: target,
            len: row_len,
        })? as usize;
    let threads = threads.clamp(1, n_rows.max(1));
    let rows_per = n_rows.div_ceil(threads);
    let mut out = vec![0u8; out_row * n_rows];
    std::thread::scope(|s| {
        let jobs: Vec<_> = out
            .chunks_mut((out_row * rows_per).max(1))
            .zip(data.chunks((in_row * rows_per).max(1)))
            .map(|(dst, src)| {
                s.spawn(move || -> Result<(), QuantError> {
                    let mut f32s = vec![0f32; row_len];
                    let mut enc = Vec::with_capacity(out_row);
                    for (d, r) in dst.chunks_mut(out_row).zip(src.chunks(in_row)) {
                        quant::dequantize(t.ty, r, &mut f32s)?;
                        enc.clear();
                        quant::quantize(target, &f32s, &mut enc)?;
                        d.copy_from_slice(&enc);
                    }
                    Ok(())
                })
            })
            .collect();
        jobs.into_iter()
            .try_for_each(|j| j.join().expect("quantize worker panicked"))
    })?;
    Ok(out)
}
