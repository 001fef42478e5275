//! The command line's flags, as clap reads them, and the llama.cpp spellings it maps first.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use llava_edge::load::{Device, LoadOptions};
use llava_edge::speculative::SpecConfig;

#[derive(Parser)]
#[command(
    name = "llava-edge",
    version,
    about = "Run LLaVA-family vision-language models on edge hardware"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Answer a prompt, optionally about images, streaming the reply to stdout.
    Run(Box<RunArgs>),
    /// Measure load time, image encode time, prefill and decode speed, time to first token
    /// and peak memory (medians over repeats).
    Bench(Box<BenchArgs>),
    /// Serve the model over HTTP with OpenAI's chat API (POST /v1/chat/completions, GET
    /// /v1/models, /health, /metrics), batching concurrent requests.
    #[cfg(feature = "server")]
    Serve(Box<ServeArgs>),
}

#[cfg(feature = "server")]
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Text model GGUF.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Vision projector GGUF (needed for images).
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// Address to listen on (loopback by default: other machines reach the server only when
    /// asked for, e.g. --host 0.0.0.0).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: one the system chooses; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Conversations decoded together (each with its own KV cache of -c positions).
    #[arg(long = "parallel", visible_alias = "np", default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// Context size per slot in tokens (default: 4096, or the model's trained context when
    /// smaller; 0: the model's trained context).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Threads (default: the physical cores this process may use).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// The one directory image URLs may name with file:// (none by default).
    #[arg(long = "allowed-dir")]
    pub allowed_dir: Option<PathBuf>,
    /// Largest request body in MB.
    #[arg(long = "body-limit-mb", default_value_t = 20)]
    pub body_limit_mb: usize,
    /// Memory for cached image embeddings, in MB.
    #[arg(long = "image-cache-mb", default_value_t = 256)]
    pub image_cache_mb: usize,
    /// The model's name in /v1/models and responses (default: the model file's name).
    #[arg(long)]
    pub alias: Option<String>,
    /// Chat template: vicuna, mistral, chatml, or a Jinja template file (default: the model
    /// file's own template).
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// KV cache type: f16 or f32.
    #[arg(long = "cache-type", default_value = "f16")]
    pub cache_type: String,
    /// Keep the weights exactly as mapped from the file (llama.cpp's --no-repack).
    #[arg(long = "no-repack")]
    pub no_repack: bool,
    /// Pad images to a square with the mean colour instead of centre-cropping.
    #[arg(long = "pad-square")]
    pub pad_square: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Speculative decoding (used while one request is decoding).
    #[command(flatten)]
    pub draft: DraftArgs,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Text model GGUF.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Vision projector GGUF (needed for --image).
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// An image (repeat for several, in the order of their <image> placeholders).
    #[arg(long)]
    pub image: Vec<PathBuf>,
    /// A video: a directory of frames, an animated GIF, or a video file (needs ffmpeg).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Pad images to a square with the mean colour instead of centre-cropping (LLaVA-1.5's
    /// original `image_aspect_ratio = pad`).
    #[arg(long = "pad-square")]
    pub pad_square: bool,
    /// Frames sampled uniformly from the video at most.
    #[arg(long = "max-frames", default_value_t = 16)]
    pub max_frames: usize,
    /// The prompt (with --interactive, the first turn's). Without -p or -f it is read from
    /// stdin (all of it; with --interactive, turns are read from stdin instead).
    #[arg(short = 'p', long, conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from this file (one trailing newline dropped, as llama.cpp does).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Keep chatting: after each answer read the next turn from stdin (`/image PATH` attaches
    /// an image to the next turn, `/quit` or end of input stops). Earlier turns and their images
    /// stay in the KV cache, so each turn encodes and prefills only what it adds.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// A system prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Tokens to generate at most; -1: until the model ends its turn or the context is full.
    #[arg(
        short = 'n',
        long = "n-predict",
        visible_alias = "predict",
        default_value = "256",
        allow_negative_numbers = true,
        value_parser = parse_n_predict
    )]
    pub n_predict: usize,
    /// Context size in tokens (default: 4096, or the model's trained context when smaller;
    /// 0: the model's trained context).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Threads (default: the physical cores this process may use).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Temperature (0 = greedy).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (1 = off).
    #[arg(long = "top-p", allow_negative_numbers = true, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long = "min-p", allow_negative_numbers = true, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(
        long = "repeat-penalty",
        allow_negative_numbers = true,
        default_value_t = 1.0
    )]
    pub repeat_penalty: f32,
    /// Seed of the sampler.
    #[arg(short = 's', long, default_value_t = 0x5eed)]
    pub seed: u64,
    /// Chat template: vicuna, mistral, chatml, or a Jinja template file (default: the model
    /// file's own template).
    #[arg(long = "chat-template")]
    pub chat_template: Option<String>,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// KV cache type: f16 or f32.
    #[arg(long = "cache-type", default_value = "f16")]
    pub cache_type: String,
    /// Print each reply with its token ids and timings as one JSON object per line (JSON
    /// Lines) instead of streaming it.
    #[arg(long)]
    pub json: bool,
    /// Print each image's token count and other details to stderr.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Keep the weights (Q4_0 .. Q8_0, Q4_K .. Q6_K) exactly as mapped from the file (no interleaving
    /// at load: less load time and shared page-cache memory, slower decode). llama.cpp's
    /// --no-repack.
    #[arg(long = "no-repack")]
    pub no_repack: bool,
    /// Run the vision encoder's F16 products in bfloat16 pairs where the CPU has a bfloat16
    /// dot instruction (AVX512-BF16): about twice the GEMM rate, at PyTorch's bfloat16
    /// precision instead of exact F16 weights against f32 inputs.
    #[arg(long = "vision-bf16")]
    pub vision_bf16: bool,
    #[command(flatten)]
    pub draft: DraftArgs,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Text model GGUF.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Vision projector GGUF.
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// Image for the encode and time-to-first-token measurements (default: a built-in 640x480 picture).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Threads (default: the physical cores this process may use).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Prompt tokens for the prefill measurement.
    #[arg(short = 'p', long, default_value_t = 512)]
    pub n_prompt: usize,
    /// Tokens generated for the decode measurement.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_gen: usize,
    /// Tokens already in the KV cache when prefill and decode are timed (llama-bench's
    /// `-d`): each starts from a cache of that depth, as llama-bench's pp and tg tests do.
    #[arg(short = 'd', long, default_value_t = 0)]
    pub depth: usize,
    /// Repeats (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// A directory with llama.cpp's `llama-bench` (built outside this repository): run it on
    /// the same file and threads, alternating with ours, and print the ratios.
    #[arg(long = "vs-llama-cpp")]
    pub vs_llama_cpp: Option<PathBuf>,
    /// Keep the weights (Q4_0 .. Q8_0, Q4_K .. Q6_K) exactly as mapped from the file (no interleaving
    /// at load: less load time and shared page-cache memory, slower decode). llama.cpp's
    /// --no-repack.
    #[arg(long = "no-repack")]
    pub no_repack: bool,
    /// Run the vision encoder's F16 products in bfloat16 pairs where the CPU has a bfloat16
    /// dot instruction (AVX512-BF16): about twice the GEMM rate, at PyTorch's bfloat16
    /// precision instead of exact F16 weights against f32 inputs.
    #[arg(long = "vision-bf16")]
    pub vision_bf16: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub draft: DraftBenchArgs,
}

/// Where the model runs.
#[derive(clap::Args)]
pub struct DeviceArgs {
    /// Device for the model: cpu, vulkan (vulkan:N for the loader's Nth device) or cuda
    /// (default: a GPU where one is present, else the CPU; a Vulkan device that is the CPU
    /// itself, such as Mesa's lavapipe, only when asked for).
    #[arg(long)]
    pub device: Option<String>,
    /// Text layers on the GPU (llama.cpp's -ngl): the last N, the rest on the CPU; N of at
    /// least the layer count puts the output matrix there too; all, auto or -1: every layer
    /// (the default).
    #[arg(
        long = "n-gpu-layers",
        visible_alias = "gpu-layers",
        allow_hyphen_values = true
    )]
    pub n_gpu_layers: Option<String>,
}

impl DeviceArgs {
    /// Sets `opts`'s device and GPU layers from the flags.
    pub fn apply(&self, opts: &mut LoadOptions) -> Result<(), String> {
        let (name, index) = match self.device.as_deref().map(|d| d.split_once(':')) {
            Some(Some(("vulkan", n))) => {
                let i = n.parse::<usize>().map_err(|_| {
                    format!("--device vulkan:{n}: a device number (0 for the first)")
                })?;
                (Some("vulkan"), Some(i))
            }
            _ => (self.device.as_deref(), None),
        };
        opts.device = name
            .map(Device::from_name)
            .transpose()
            .map_err(|e| format!("--device: {e}"))?;
        opts.vulkan_index = index;
        opts.gpu_layers = match self.n_gpu_layers.as_deref().map(str::trim) {
            None | Some("all" | "auto" | "-1") => None,
            Some(n) => Some(n.parse::<usize>().map_err(|_| {
                format!("-ngl '{n}': a layer count (0 or more), or all, auto or -1 for every layer")
            })?),
        };
        Ok(())
    }
}

/// `-n`: a count, or -1 for no limit (llama.cpp's meaning).
fn parse_n_predict(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(usize::MAX),
        Ok(n) if n >= 0 => usize::try_from(n).map_err(|e| e.to_string()),
        _ => Err(format!(
            "'{s}' is not a token count (0 or more, or -1 for no limit)"
        )),
    }
}

/// llama.cpp spellings clap cannot take as they are (`-ngl` is not a one-letter flag).
pub fn llama_cpp_args(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| {
        if a == "-ngl" {
            "--n-gpu-layers".into()
        } else if a == "-np" {
            "--parallel".into()
        } else {
            a
        }
    })
    .collect()
}

/// A hint for a command line that starts with a flag instead of a command (`llava-edge -m
/// M -p P`, as llama-cli is called).
pub fn missing_verb(args: &[std::ffi::OsString]) -> Option<String> {
    let first = args.get(1)?.to_str()?;
    let help = ["-h", "--help", "-V", "--version"];
    (first.starts_with('-') && !help.contains(&first)).then(|| {
        format!(
            "no command before '{first}': did you mean `llava-edge run {}`? (commands: run, \
             bench, serve; llava-edge --help lists them)",
            args[1..]
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )
    })
}

/// Speculative decoding's flags (run and bench).
#[derive(clap::Args, Clone, Debug)]
pub struct DraftArgs {
    /// A smaller model with the same vocabulary (e.g. Qwen2 0.5B for a 7B, or any LLaMA-vocab
    /// model for a Vicuna LLaVA) that proposes tokens the model verifies several at a time in
    /// one pass: speculative decoding. Greedy output is unchanged; sampling keeps the model's
    /// distribution. Image rows reach it when its width is the model's.
    #[arg(
        long = "draft-model",
        visible_alias = "model-draft",
        conflicts_with = "lookup"
    )]
    pub draft_model: Option<PathBuf>,
    /// Proposals per verify pass at most.
    #[arg(long = "draft-max", visible_alias = "draft", default_value_t = 8)]
    pub draft_max: usize,
    /// Fewer proposals than this run a plain decode step instead.
    #[arg(long = "draft-min", default_value_t = 0)]
    pub draft_min: usize,
    /// Stop drafting when the draft model's own choice is less likely than this (0 = always
    /// draft --draft-max tokens).
    #[arg(long = "draft-p-min", default_value_t = 0.0)]
    pub draft_p_min: f32,
    /// Draft by prompt lookup: propose what followed the latest earlier occurrence of the
    /// last few tokens in the prompt and reply (no second model; helps answers that quote or
    /// repeat).
    #[arg(long = "lookup", visible_alias = "draft-lookup")]
    pub lookup: bool,
    /// Longest n-gram prompt lookup matches (down to 1).
    #[arg(long = "lookup-ngram", default_value_t = 3)]
    pub lookup_ngram: usize,
}

impl DraftArgs {
    /// Whether any drafting was asked for.
    pub fn enabled(&self) -> bool {
        self.draft_model.is_some() || self.lookup
    }

    /// The settings, checked.
    pub fn config(&self, force_accept: Option<f64>) -> Result<SpecConfig, String> {
        if self.draft_max == 0 {
            return Err("--draft-max 0: at least 1 proposal a pass".into());
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            return Err(format!("--draft-p-min {}: from 0 to 1", self.draft_p_min));
        }
        if self.lookup_ngram == 0 {
            return Err("--lookup-ngram 0: at least 1".into());
        }
        if let Some(r) = force_accept.filter(|r| !(0.0..=1.0).contains(r)) {
            return Err(format!("--draft-force-accept {r}: from 0 to 1"));
        }
        Ok(SpecConfig {
            max: self.draft_max,
            min: self.draft_min,
            force_accept,
        })
    }
}

/// Speculative decoding's benchmark flags.
#[derive(clap::Args, Clone, Debug)]
pub struct DraftBenchArgs {
    #[command(flatten)]
    pub draft: DraftArgs,
    /// Benchmark only: keep each proposal with this probability (0 to 1) whatever the model
    /// says, so the speed-up can be measured against the acceptance rate (random-weight files
    /// accept almost nothing). Verification still runs; the output is not the model's.
    #[arg(long = "draft-force-accept")]
    pub force_accept: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_predict_takes_minus_one_for_no_limit() {
        assert_eq!(parse_n_predict("-1"), Ok(usize::MAX));
        assert_eq!(parse_n_predict("12"), Ok(12));
        assert!(parse_n_predict("-2").is_err());
        assert!(parse_n_predict("x").is_err());
    }
}
