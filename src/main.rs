//! The `llava-edge` command line: parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llava_edge::bench::{self, BenchConfig};
use llava_edge::image::load_image;

#[derive(Parser)]
#[command(
    name = "llava-edge",
    version,
    about = "Run LLaVA-family vision-language models on edge hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure load time, image encode time, prefill and decode speed, time to first token
    /// and peak memory (medians over repeats).
    Bench {
        /// Text model GGUF.
        #[arg(short = 'm', long)]
        model: PathBuf,
        /// Vision projector GGUF.
        #[arg(long)]
        mmproj: Option<PathBuf>,
        /// Image for the encode and time-to-first-token measurements (default: a built-in 640x480 picture).
        #[arg(long)]
        image: Option<PathBuf>,
        /// Threads.
        #[arg(short = 't', long)]
        threads: Option<usize>,
        /// Prompt tokens for the prefill measurement.
        #[arg(short = 'p', long, default_value_t = 512)]
        n_prompt: usize,
        /// Tokens generated for the decode measurement.
        #[arg(short = 'n', long, default_value_t = 128)]
        n_gen: usize,
        /// Repeats (medians are reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Bench {
            model,
            mmproj,
            image,
            threads,
            n_prompt,
            n_gen,
            repeat,
            json,
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let img = image.as_deref().map(load_image).transpose()?;
            let cfg = BenchConfig {
                n_prompt,
                n_gen,
                repeat,
                threads,
                ttft_prompt: 20,
            };
            let r = bench::run(&model, mmproj.as_deref(), img.as_ref(), &cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("model            {}", model.display());
                println!("threads          {}", r.threads);
                println!("load             {:.0} ms", r.load_ms);
                if let (Some(e), Some(n)) = (r.image_encode_ms, r.image_tokens) {
                    println!("image encode     {e:.0} ms ({n} tokens)");
                }
                println!("prefill pp{:<5}  {:.2} tok/s", r.n_prompt, r.prefill_tok_s);
                println!("decode  tg{:<5}  {:.2} tok/s", r.n_gen, r.decode_tok_s);
                if let Some(t) = r.ttft_ms {
                    println!(
                        "first token      {t:.0} ms (image + {} prompt tokens)",
                        cfg.ttft_prompt
                    );
                }
                println!("peak RSS         {:.0} MiB", r.peak_rss_mib);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llava-edge: error: {e}");
            ExitCode::FAILURE
        }
    }
}
