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
