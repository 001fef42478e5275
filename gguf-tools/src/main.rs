//! `gguf-tools`: inspect, quantize and convert GGUF files. Parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
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
