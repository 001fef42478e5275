//! `gguf-tools`: inspect, quantize and convert GGUF files. Parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gguf_tools::mix::{Mix, ALL_MIXES};
use gguf_tools::quantize::{quantize_file, Options};
use llava_edge::dtype::GgmlType;
use llava_edge::gguf::GgufFile;

#[derive(Parser)]
#[command(
    name = "gguf-tools",
    version,
    about = "Inspect, quantize and convert GGUF files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face LLaVA / LLaVA-NeXT / LLaVA-OneVision checkpoint to a text model
    /// and an mmproj file in llama.cpp's layout.
    Convert {
        /// The checkpoint directory (config.json, safetensors, tokenizer, processor config).
        #[arg(long)]
        hf: PathBuf,
        /// Output text model.
        #[arg(long)]
        out: PathBuf,
        /// Output vision projector.
        #[arg(long)]
        mmproj: PathBuf,
        /// f32, f16, q8_0, q4_0, q4_k_m (or any quantize mix) for the text model; the mmproj is
        /// f32 for f32 and f16 otherwise.
        #[arg(long = "type", default_value = "f16")]
        ty: String,
    },
    /// Write a random-weight model with the exact shapes of a real one (llama.cpp layout).
    Synth {
        /// qwen2-0.5b, tinyllama-1.1b, llama-7b, vicuna-7b, mistral-7b, clip-vit-l-336,
        /// siglip-so400m-384.
        #[arg(long)]
        shape: String,
        /// f16 or f32 (quantize the result for other types).
        #[arg(long, default_value = "f16")]
        r#type: String,
        /// A GGUF whose tokenizer.ggml.* keys to copy (text shapes).
        #[arg(long)]
        vocab: Option<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Print a file's metadata, tensor table and totals by type.
    Inspect {
        /// The GGUF file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a text model with a llama.cpp quantization mix, or an mmproj file with its encoder and projector matrices in the mix's type (norms and biases stay as they
    /// are; token embedding and output follow llama.cpp's choices for the mix).
    Quantize {
        /// Input GGUF (F32, F16 or BF16 weights).
        input: PathBuf,
        /// Output GGUF; written to OUT.partial and renamed when complete.
        output: PathBuf,
        /// The mix: F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K.
        #[arg(value_parser = parse_mix)]
        mix: Mix,
        /// Threads (default: all cores).
        #[arg(short = 't', long)]
        threads: Option<usize>,
        /// Allow requantizing already-quantized tensors.
        #[arg(long)]
        allow_requantize: bool,
    },
}

/// Tensor names grouped by layer (`...encoder.layers.2 (16 tensors)`), so the note stays one
/// short line.
fn unused_summary(names: &[String]) -> String {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for n in names {
        let parts: Vec<&str> = n.split('.').collect();
        let group = match parts.iter().position(|p| *p == "layers") {
            Some(i) if i + 1 < parts.len() => parts[..i + 2].join("."),
            _ => n
                .trim_end_matches(".weight")
                .trim_end_matches(".bias")
                .to_string(),
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, c)) => *c += 1,
            None => groups.push((group, 1)),
        }
    }
    groups
        .iter()
        .map(|(g, c)| {
            if *c > 1 {
                format!("{g} ({c} tensors)")
            } else {
                g.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_mix(s: &str) -> Result<Mix, String> {
    Mix::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = ALL_MIXES.iter().map(|m| m.name()).collect();
        format!("unknown mix '{s}'; one of {}", names.join(", "))
    })
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Convert {
            hf,
            out,
            mmproj,
            ty,
        } => {
            let t = gguf_tools::convert::OutType::from_name(&ty).ok_or_else(|| {
                format!("unknown --type '{ty}' (f32, f16, q8_0, q4_0, q4_k_m, ...)")
            })?;
            let start = std::time::Instant::now();
            let r = gguf_tools::convert::convert(&hf, &out, &mmproj, t, true)?;
            eprintln!(
                "{}: {} tensors; {}: {} tensors; {:.1} s",
                out.display(),
                r.text_tensors,
                mmproj.display(),
                r.vision_tensors,
                start.elapsed().as_secs_f64(),
            );
            if !r.unused.is_empty() {
                eprintln!(
                    "note: {} checkpoint tensors are not used at inference and were not written \
                     (as llama.cpp's converter leaves out, e.g., the vision layers after the one \
                     the projector reads): {}",
                    r.unused.len(),
                    unused_summary(&r.unused)
                );
            }
        }
        Command::Synth {
            shape,
            r#type,
            vocab,
            out,
            seed,
        } => {
            let ty = llava_edge::dtype::GgmlType::from_name(&r#type)
                .ok_or_else(|| format!("unknown type '{type}'", type = r#type))?;
            let start = std::time::Instant::now();
            gguf_tools::synth::synth(&shape, ty, vocab.as_deref(), &out, seed)?;
            let size = std::fs::metadata(&out)?.len();
            eprintln!(
                "{}: {shape}, {ty}, {:.1} MiB in {:.1} s",
                out.display(),
                size as f64 / (1 << 20) as f64,
                start.elapsed().as_secs_f64()
            );
        }
        Command::Inspect { file, json } => {
            let f = GgufFile::open(&file)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&gguf_tools::inspect::json_report(&f))?
                );
            } else {
                print!("{}", gguf_tools::inspect::text_report(&f));
            }
        }
        Command::Quantize {
            input,
            output,
            mix,
            threads,
            allow_requantize,
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let opts = Options {
                mix,
                threads,
                allow_requantize,
                progress: true,
            };
            let start = std::time::Instant::now();
            let r = quantize_file(&input, &output, &opts)?;
            if let Some(first) = r.fallbacks.first() {
                // One line, not one per tensor: a 0.5B model has a hundred such matrices.
                let mut used: Vec<(GgmlType, usize)> = Vec::new();
                for (name, _, ty) in &r.tensors {
                    if r.fallbacks.contains(name) {
                        match used.iter_mut().find(|(t, _)| t == ty) {
                            Some((_, n)) => *n += 1,
                            None => used.push((*ty, 1)),
                        }
                    }
                }
                let used: Vec<String> = used.iter().map(|(t, n)| format!("{t} x{n}")).collect();
                eprintln!(
                    "note: {} tensors (first {first}) have rows that do not fit the mix's blocks; \
                     llama.cpp's fallback types used: {}",
                    r.fallbacks.len(),
                    used.join(", ")
                );
            }
            eprintln!(
                "{}: {} tensors, {:.1} MiB -> {:.1} MiB in {:.2} s ({} threads)",
                output.display(),
                r.tensors.len(),
                r.bytes_in as f64 / (1 << 20) as f64,
                r.bytes_out as f64 / (1 << 20) as f64,
                start.elapsed().as_secs_f64(),
                threads
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gguf-tools: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod unused_note_tests {
    #[test]
    fn unused_tensors_are_summarised_by_layer() {
        let names: Vec<String> = ["weight", "bias"]
            .iter()
            .map(|s| format!("vision_tower.encoder.layers.2.fc1.{s}"))
            .chain(["vision_tower.post_layernorm.weight".to_string()])
            .collect();
        assert_eq!(
            super::unused_summary(&names),
            "vision_tower.encoder.layers.2 (2 tensors), vision_tower.post_layernorm"
        );
    }
}
