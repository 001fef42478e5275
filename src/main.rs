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
    /// Answer a prompt, optionally about images, streaming the reply to stdout.
    Run(Box<RunArgs>),
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
        /// Threads (default: the physical cores this process may use).
        #[arg(short = 't', long)]
        threads: Option<usize>,
        /// Prompt tokens for the prefill measurement.
        #[arg(short = 'p', long, default_value_t = 512)]
        n_prompt: usize,
        /// Tokens generated for the decode measurement.
        #[arg(short = 'n', long, default_value_t = 128)]
        n_gen: usize,
        /// Tokens already in the KV cache when prefill and decode are timed (llama-bench's
        /// `-d`): each starts from a cache of that depth, as llama-bench's pp and tg tests do.
        #[arg(short = 'd', long, default_value_t = 0)]
        depth: usize,
        /// Repeats (medians are reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// A directory with llama.cpp's `llama-bench` (built outside this repository): run it on
        /// the same file and threads, alternating with ours, and print the ratios.
        #[arg(long = "vs-llama-cpp")]
        vs_llama_cpp: Option<PathBuf>,
        /// Keep the weights (Q4_0 .. Q8_0, Q4_K .. Q6_K) exactly as mapped from the file (no interleaving
        /// at load: less load time and shared page-cache memory, slower decode). llama.cpp's
        /// --no-repack.
        #[arg(long = "no-repack")]
        no_repack: bool,
        /// Run the vision encoder's F16 products in bfloat16 pairs where the CPU has a bfloat16
        /// dot instruction (AVX512-BF16): about twice the GEMM rate, at PyTorch's bfloat16
        /// precision instead of exact F16 weights against f32 inputs.
        #[arg(long = "vision-bf16")]
        vision_bf16: bool,
        /// Layers to offload to a GPU (llama-bench's -ngl): accepted and ignored, as no GPU
        /// backend is built in yet.
        #[arg(
            long = "n-gpu-layers",
            visible_alias = "gpu-layers",
            allow_hyphen_values = true
        )]
        n_gpu_layers: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Text model GGUF.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Vision projector GGUF (needed for --image).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// An image (repeat for several, in the order of their <image> placeholders).
    #[arg(long)]
    image: Vec<PathBuf>,
    /// A video: a directory of frames, an animated GIF, or a video file (needs ffmpeg).
    #[arg(long)]
    video: Option<PathBuf>,
    /// Pad images to a square with the mean colour instead of centre-cropping (LLaVA-1.5's
    /// original `image_aspect_ratio = pad`).
    #[arg(long = "pad-square")]
    pad_square: bool,
    /// Frames sampled uniformly from the video at most.
    #[arg(long = "max-frames", default_value_t = 16)]
    max_frames: usize,
    /// The prompt (with --interactive, the first turn's). Without -p or -f it is read from
    /// stdin (all of it; with --interactive, turns are read from stdin instead).
    #[arg(short = 'p', long, conflicts_with = "file")]
    prompt: Option<String>,
    /// Read the prompt from this file (one trailing newline dropped, as llama.cpp does).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Keep chatting: after each answer read the next turn from stdin (`/image PATH` attaches
    /// an image to the next turn, `/quit` or end of input stops). Earlier turns and their images
    /// stay in the KV cache, so each turn encodes and prefills only what it adds.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
    /// Tokens to generate at most; -1: until the model ends its turn or the context is full.
    #[arg(
        short = 'n',
        long = "n-predict",
        visible_alias = "predict",
        default_value = "256",
        allow_negative_numbers = true,
        value_parser = parse_n_predict
    )]
    n_predict: usize,
    /// Context size in tokens (default: 4096, or the model's trained context when smaller;
    /// 0: the model's trained context).
    #[arg(short = 'c', long = "ctx-size")]
    ctx_size: Option<usize>,
    /// Threads (default: the physical cores this process may use).
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Layers to offload to a GPU (llama.cpp's -ngl): accepted so llama.cpp command lines
    /// work, but no GPU backend is built in yet, so everything runs on the CPU.
    #[arg(
        long = "n-gpu-layers",
        visible_alias = "gpu-layers",
        allow_hyphen_values = true
    )]
    n_gpu_layers: Option<String>,
    /// Temperature (0 = greedy).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.8)]
    temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// Top-p (1 = off).
    #[arg(long = "top-p", allow_negative_numbers = true, default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0 = off).
    #[arg(long = "min-p", allow_negative_numbers = true, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(
        long = "repeat-penalty",
        allow_negative_numbers = true,
        default_value_t = 1.0
    )]
    repeat_penalty: f32,
    /// Seed of the sampler.
    #[arg(short = 's', long, default_value_t = 0x5eed)]
    seed: u64,
    /// Chat template: vicuna, mistral, chatml, or a Jinja template file (default: the model
    /// file's own template).
    #[arg(long = "chat-template")]
    chat_template: Option<String>,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// KV cache type: f16 or f32.
    #[arg(long = "cache-type", default_value = "f16")]
    cache_type: String,
    /// Print each reply with its token ids and timings as one JSON object per line (JSON
    /// Lines) instead of streaming it.
    #[arg(long)]
    json: bool,
    /// Print each image's token count and other details to stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Keep the weights (Q4_0 .. Q8_0, Q4_K .. Q6_K) exactly as mapped from the file (no interleaving
    /// at load: less load time and shared page-cache memory, slower decode). llama.cpp's
    /// --no-repack.
    #[arg(long = "no-repack")]
    no_repack: bool,
    /// Run the vision encoder's F16 products in bfloat16 pairs where the CPU has a bfloat16
    /// dot instruction (AVX512-BF16): about twice the GEMM rate, at PyTorch's bfloat16
    /// precision instead of exact F16 weights against f32 inputs.
    #[arg(long = "vision-bf16")]
    vision_bf16: bool,
}

fn run_prompt(a: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    use llava_edge::chat::ChatTemplate;
    use llava_edge::gguf::GgufFile;
    use llava_edge::pipeline::{Conversation, Finish, Pipeline, Request};
    use llava_edge::sampling::{Sampler, SamplerConfig};
    use llava_edge::text::{KvType, TextModel};
    use llava_edge::threadpool::ThreadPool;
    use llava_edge::tokenizer::Tokenizer;
    use llava_edge::vision::VisionEncoder;
    use std::io::Write;

    let t0 = std::time::Instant::now();
    // Flags and the prompt are checked before the model loads, so a mistake costs no load.
    let sampler_config = SamplerConfig {
        temp: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: 64,
        seed: a.seed,
    };
    sampler_config.validate()?;
    let kv = match a.cache_type.as_str() {
        "f16" => KvType::F16,
        "f32" => KvType::F32,
        other => return Err(format!("unknown cache type '{other}' (f16 or f32)").into()),
    };
    let first_prompt = first_prompt(&a)?;
    for path in a.image.iter().chain(&a.video) {
        if !path.exists() {
            return Err(format!("{}: no such file or directory", path.display()).into());
        }
    }
    if let Some(n) = &a.n_gpu_layers {
        eprintln!(
            "note: -ngl {n} ignored: no GPU backend is built into llava-edge yet, so the model \
             runs on the CPU"
        );
    }
    let threads = a.threads.unwrap_or_else(default_threads);
    let pool = ThreadPool::new(threads);
    let mut tf = GgufFile::open(&a.model)?;
    if !a.no_repack {
        if let Err(e) = llava_edge::text::interleave_weights(&mut tf, &pool) {
            // The file still loads as mapped; only decode is slower.
            eprintln!("note: weights kept as mapped ({e}); --no-repack skips the attempt");
        }
    }
    // Weights paged in at load, so the first request's time to first token is compute.
    tf.populate();
    let text = TextModel::load(&tf)?;
    let tokenizer = Tokenizer::from_gguf(&tf)?;
    let vf = a.mmproj.as_deref().map(GgufFile::open).transpose()?;
    if let Some(f) = &vf {
        f.populate();
    }
    let mut vision = vf.as_ref().map(VisionEncoder::load).transpose()?;
    if let Some(v) = &vision {
        v.check_text_width(text.config.n_embd, tf.path())?;
    }
    if let Some(v) = vision.as_mut() {
        v.pad_square = a.pad_square;
        if a.vision_bf16 && !v.use_bf16_products() {
            eprintln!("note: this CPU has no bfloat16 dot instruction; --vision-bf16 ignored");
        }
    }
    let tokens = llava_edge::chat::SpecialTokens::from_tokenizer(&tokenizer);
    let template = match &a.chat_template {
        Some(name) => match ChatTemplate::from_name(name) {
            Some(t) => t,
            None if std::path::Path::new(name).is_file() => std::fs::read_to_string(name)
                .map_err(|e| e.to_string())
                .and_then(|src| ChatTemplate::jinja(&src, tokens).map_err(|e| e.to_string()))
                .map_err(|e| format!("--chat-template {name}: {e}"))?,
            None => {
                let names: Vec<&str> = ChatTemplate::ALL.iter().map(|t| t.name()).collect();
                return Err(format!(
                    "unknown chat template '{name}': one of {}, or a Jinja template file",
                    names.join(", ")
                )
                .into());
            }
        },
        None => {
            let fallback = match text.config.arch {
                llava_edge::text::Arch::Qwen2 => ChatTemplate::ChatMl,
                llava_edge::text::Arch::Llama => ChatTemplate::Vicuna,
            };
            let file_template = tf.get("tokenizer.chat_template").and_then(|v| v.as_str());
            let (t, why) = ChatTemplate::for_model(file_template, tokens, fallback);
            if let Some(e) = why {
                eprintln!(
                    "warning: {}: tokenizer.chat_template not used ({e}); using the built-in \
                     '{}' template instead (--chat-template NAME|FILE chooses one)",
                    tf.path().display(),
                    t.name()
                );
            }
            t
        }
    };
    let p = Pipeline {
        text,
        vision,
        tokenizer,
        template,
        pool,
    };
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let trained = p.text.config.n_ctx_train;
    let n_ctx = match a.ctx_size {
        Some(0) => trained,
        Some(n) => n,
        None => trained.min(4096),
    };
    if a.ctx_size.is_none() && n_ctx < 4096 {
        eprintln!("note: context {n_ctx} positions, the model's trained length (-c sets another)");
    } else if n_ctx > trained {
        eprintln!(
            "note: the context ({n_ctx} positions) is longer than the {trained} the model was \
             trained for: replies that reach past that may degrade"
        );
    }
    let mut cache = p.text.try_new_cache(n_ctx, kv)?;
    let mut sampler = Sampler::new(sampler_config);
    let mut conv = Conversation::default();
    let (mut first, mut images, mut video) = (first_prompt, a.image.clone(), a.video.clone());
    let mut stdin = std::io::stdin().lock();
    if a.interactive {
        interrupt::install();
    }
    loop {
        let prompt = match first.take() {
            Some(p) => p,
            None => match read_turn(&mut stdin, &mut images)? {
                Some(p) => p,
                None => break,
            },
        };
        let req = Request {
            prompt,
            images: std::mem::take(&mut images),
            video: video.take(),
            max_frames: a.max_frames,
            system: a.system.clone(),
            n_predict: a.n_predict,
            stop: a.stop.clone(),
        };
        let mut stdout = std::io::stdout();
        let stream = !a.json;
        let first_turn = conv.turns == 0;
        let turn = interrupt::during_reply(|cancel| {
            p.chat_cancellable(&mut conv, &req, &mut cache, &mut sampler, cancel, |piece| {
                if stream {
                    let _ = stdout.write_all(piece.as_bytes());
                    let _ = stdout.flush();
                }
            })
        });
        match turn {
            Ok((reply, t)) => {
                report(&a, &p, &reply, &t, first_turn.then_some(load_ms))?;
                match t.finish {
                    Finish::ContextFull if a.interactive => eprintln!(
                        "note: the context ({n_ctx} positions) filled up during this reply: the \
                         turn is taken back out of the conversation, which goes on from before \
                         it (-c sets a larger context)"
                    ),
                    Finish::ContextFull => eprintln!(
                        "note: the context ({n_ctx} positions) is full: the reply stops there \
                         (-c sets a larger context)"
                    ),
                    Finish::Cancelled => {
                        eprintln!("(interrupted: Ctrl-C again at the prompt exits)")
                    }
                    _ => {}
                }
            }
            // A bad image or a turn that does not fit leaves the conversation as it was.
            Err(e) if a.interactive => eprintln!("error: {e}"),
            Err(e) => return Err(e.into()),
        }
        if !a.interactive {
            break;
        }
    }
    Ok(())
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

/// The first turn's prompt: -p, the file of -f, or (without either, and without -i) all of
/// stdin when it is not a terminal.
fn first_prompt(a: &RunArgs) -> Result<Option<String>, Box<dyn std::error::Error>> {
    use std::io::{IsTerminal, Read};
    if let Some(p) = &a.prompt {
        return Ok(Some(p.clone()));
    }
    let mut text = if let Some(f) = &a.file {
        std::fs::read_to_string(f)
            .map_err(|e| format!("{}: cannot read the prompt file: {e}", f.display()))?
    } else if a.interactive {
        return Ok(None);
    } else if std::io::stdin().is_terminal() {
        return Err(
            "no prompt: give one with -p TEXT or -f FILE, pipe it to stdin, or chat with -i".into(),
        );
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading the prompt from stdin: {e}"))?;
        s
    };
    if text.ends_with('\n') {
        text.pop();
    }
    if text.trim().is_empty() && a.image.is_empty() && a.video.is_none() {
        let from = a
            .file
            .as_ref()
            .map_or("stdin".to_string(), |f| f.display().to_string());
        return Err(format!("the prompt read from {from} is empty").into());
    }
    Ok(Some(text))
}

/// Threads by default: one per physical core this process may run on, as llama.cpp does (two
/// SMT siblings share a core's SIMD units and its memory bandwidth, so a second thread on a
/// core slows the others down more than it adds).
fn default_threads() -> usize {
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    physical_cores().map_or(available, |p| p.clamp(1, available))
}

/// Distinct (package, core) pairs among the CPUs in this process's affinity mask, from sysfs;
/// `None` where that cannot be read.
#[cfg(target_os = "linux")]
fn physical_cores() -> Option<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set, and sched_getaffinity writes at most its size.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    let allowed = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    let mut cores = Vec::new();
    for cpu in allowed {
        let topo = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let read = |f: &str| -> Option<i64> {
            std::fs::read_to_string(format!("{topo}/{f}"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        cores.push((read("physical_package_id")?, read("core_id")?));
    }
    distinct_cores(cores)
}

#[cfg(not(target_os = "linux"))]
fn physical_cores() -> Option<usize> {
    None
}

/// How many different cores `(package, core)` pairs name (SMT siblings share one).
fn distinct_cores(mut cores: Vec<(i64, i64)>) -> Option<usize> {
    cores.sort_unstable();
    cores.dedup();
    (!cores.is_empty()).then_some(cores.len())
}

/// Ctrl-C in `-i`: the first stops the reply being generated; one while no reply is being
/// generated (at the prompt), or a second during the same reply, ends the program.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    static CANCEL: AtomicBool = AtomicBool::new(false);
    static IN_REPLY: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_sigint(_: libc::c_int) {
        if IN_REPLY.load(Ordering::SeqCst) && !CANCEL.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: write and _exit are async-signal-safe; nothing else runs here.
        unsafe {
            libc::write(2, b"\n".as_ptr().cast(), 1);
            libc::_exit(130);
        }
    }

    /// Routes SIGINT to the handler above.
    pub fn install() {
        // SAFETY: the handler only touches atomics and async-signal-safe calls; a zeroed
        // sigaction is a valid starting point (empty mask, no flags).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGINT, &act, std::ptr::null_mut());
        }
    }

    /// Runs one reply with the flag a Ctrl-C raises.
    pub fn during_reply<R>(f: impl FnOnce(&AtomicBool) -> R) -> R {
        CANCEL.store(false, Ordering::SeqCst);
        IN_REPLY.store(true, Ordering::SeqCst);
        let r = f(&CANCEL);
        IN_REPLY.store(false, Ordering::SeqCst);
        r
    }
}

/// The next user turn from `input`: `/image PATH` lines queue images for it; `None` at the end
/// of input or on `/quit`.
fn read_turn(
    input: &mut impl std::io::BufRead,
    images: &mut Vec<PathBuf>,
) -> Result<Option<String>, Box<dyn std::error::Error>> {
    loop {
        eprint!("\n> ");
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim();
        if let Some(path) = line.strip_prefix("/image ") {
            let path = PathBuf::from(path.trim());
            if path.is_file() {
                eprintln!("(image {} attached to the next turn)", path.display());
                images.push(path);
            } else {
                eprintln!("error: {}: no such file", path.display());
            }
            continue;
        }
        match line {
            "/quit" | "/exit" => return Ok(None),
            "" => continue,
            text => return Ok(Some(text.to_string())),
        }
    }
}

/// One turn's timings (and, with --json, the reply) as `run` prints them.
fn report<T: llava_edge::pipeline::Tokenize>(
    a: &RunArgs,
    p: &llava_edge::pipeline::Pipeline<'_, T>,
    reply: &str,
    t: &llava_edge::pipeline::Timings,
    load_ms: Option<f64>,
) -> Result<(), Box<dyn std::error::Error>> {
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let per_s = |n: usize, d: std::time::Duration| {
        if secs(d) > 0.0 {
            n as f64 / secs(d)
        } else {
            0.0
        }
    };
    if a.json {
        let j = serde_json::json!({
            "reply": reply,
            "tokens": t.tokens,
            "finish_reason": t.finish.reason(),
            "finish": t.finish.detail(),
            "load_ms": load_ms,
            "image_encode_ms": secs(t.image_encode) * 1e3,
            "image_tokens": t.image_tokens,
            "prompt_tokens": t.prompt_tokens,
            "prefill_tok_s": per_s(t.prompt_tokens, t.prefill),
            "generated_tokens": t.generated,
            "decode_tok_s": per_s(t.generated.saturating_sub(1), t.decode),
            "first_token_ms": secs(t.first_token) * 1e3,
            "chat_template": p.template.name(),
        });
        // JSON Lines: one compact object a turn, so `-i --json` output parses line by line.
        println!("{}", serde_json::to_string(&j)?);
    } else {
        println!();
        if a.verbose {
            for (i, n) in t.image_tokens.iter().enumerate() {
                eprintln!("media {i}: {n} tokens");
            }
            eprintln!("chat template: {}", p.template.name());
        }
        eprintln!(
            "{}image encode {:.0} ms | prefill {} tokens, {:.1} tok/s | decode {} tokens, {:.1} tok/s | first token {:.0} ms",
            load_ms.map_or(String::new(), |l| format!("load {l:.0} ms | ")),
            secs(t.image_encode) * 1e3,
            t.prompt_tokens,
            per_s(t.prompt_tokens, t.prefill),
            t.generated,
            per_s(t.generated.saturating_sub(1), t.decode),
            secs(t.first_token) * 1e3
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Run(a) => run_prompt(*a)?,
        Command::Bench {
            model,
            mmproj,
            image,
            threads,
            n_prompt,
            n_gen,
            depth,
            repeat,
            json,
            vs_llama_cpp,
            no_repack,
            vision_bf16,
            n_gpu_layers,
        } => {
            if let Some(n) = n_gpu_layers {
                eprintln!("note: -ngl {n} ignored: no GPU backend is built into llava-edge yet");
            }
            let threads = threads.unwrap_or_else(default_threads);
            let img = image.as_deref().map(load_image).transpose()?;
            let cfg = BenchConfig {
                n_prompt,
                n_gen,
                depth,
                repeat,
                threads,
                ttft_prompt: 20,
                repack: !no_repack,
                vision_bf16,
            };
            if let Some(dir) = vs_llama_cpp {
                // Alternate one run of each per repeat, so drift on a shared machine hits both.
                let one = BenchConfig {
                    repeat: 1,
                    ..cfg.clone()
                };
                let (mut ours, mut theirs, mut bounds) = (Vec::new(), Vec::new(), Vec::new());
                let mut mib_per_token = 0.0;
                for _ in 0..repeat.max(1) {
                    let r = bench::run(&model, None, None, &one)?;
                    ours.push((r.prefill_tok_s, r.decode_tok_s));
                    bounds.push((r.decode_bound_tok_s, r.read_gbs));
                    mib_per_token = r.decode_mib_per_token;
                    theirs.push(bench::llama_cpp_speeds(&dir, &model, &one)?);
                }
                let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
                    let mut x: Vec<f64> = v.iter().map(f).collect();
                    x.sort_by(f64::total_cmp);
                    x[x.len() / 2]
                };
                // With an mmproj, the image numbers too: encode and time to first token.
                let mut images = (Vec::new(), Vec::new());
                if let Some(mm) = &mmproj {
                    let picture = match &image {
                        Some(p) => p.clone(),
                        None => {
                            let p = std::env::temp_dir()
                                .join(format!("llava-edge-bench-{}.png", std::process::id()));
                            let pic = bench::test_image(640, 480);
                            image::save_buffer(
                                &p,
                                &pic.data,
                                pic.width as u32,
                                pic.height as u32,
                                image::ExtendedColorType::Rgb8,
                            )?;
                            p
                        }
                    };
                    let pic = load_image(&picture)?;
                    for _ in 0..repeat.max(1) {
                        let one_image = BenchConfig {
                            n_prompt: 1,
                            n_gen: 0,
                            depth: 0,
                            ..one.clone()
                        };
                        let r = bench::run(&model, Some(mm), Some(&pic), &one_image)?;
                        images
                            .0
                            .push((r.image_encode_ms.unwrap_or(0.0), r.ttft_ms.unwrap_or(0.0)));
                        images
                            .1
                            .push(bench::llama_cpp_image(&dir, &model, mm, &picture, threads)?);
                    }
                    if image.is_none() {
                        let _ = std::fs::remove_file(&picture);
                    }
                }
                let (opp, otg) = (med(&ours, |x| x.0), med(&ours, |x| x.1));
                let at = if depth > 0 {
                    format!(" @ d{depth}")
                } else {
                    String::new()
                };
                let (lpp, ltg) = (med(&theirs, |x| x.0), med(&theirs, |x| x.1));
                println!(
                    "{:<14} {:>12} {:>12} {:>8}",
                    "", "llava-edge", "llama.cpp", "ratio"
                );
                println!(
                    "{:<14} {opp:>12.2} {lpp:>12.2} {:>8.2}",
                    format!("pp{n_prompt}{at}"),
                    opp / lpp
                );
                println!(
                    "{:<14} {otg:>12.2} {ltg:>12.2} {:>8.2}",
                    format!("tg{n_gen}{at}"),
                    otg / ltg
                );
                if !images.0.is_empty() {
                    let (oe, ot) = (med(&images.0, |x| x.0), med(&images.0, |x| x.1));
                    let (le, lt) = (med(&images.1, |x| x.0), med(&images.1, |x| x.1));
                    println!("{:<14} {oe:>12.0} {le:>12.0} {:>8.2}", "encode ms", le / oe);
                    println!("{:<14} {ot:>12.0} {lt:>12.0} {:>8.2}", "ttft ms", lt / ot);
                }
                let (bound, gbs) = (med(&bounds, |x| x.0), med(&bounds, |x| x.1));
                println!(
                    "{:<14} {:>11.0}% {:>11.0}%   (of {bound:.1} tok/s: {mib_per_token:.1} MiB a token at \
                     {gbs:.1} GB/s)",
                    format!("tg{n_gen} bound"),
                    100.0 * otg / bound,
                    100.0 * ltg / bound
                );
                // Both peaks span every run above: ours this process's, llama.cpp's the
                // highest its tools' own high-water marks reached.
                let (orss, lrss) = (bench::peak_rss_mib(), bench::llama_cpp_peak_rss_mib());
                println!(
                    "{:<14} {orss:>12.0} {lrss:>12.0} {:>8.2}",
                    "peak RSS MiB",
                    lrss / orss
                );
                println!(
                    "(tok/s: ratio ours/llama.cpp; ms and MiB: ratio llama.cpp/ours, so above 1 is \
                     better either way; medians of {} alternating runs, {threads} threads{})",
                    repeat.max(1),
                    if vision_bf16 {
                        "; our vision products in bf16 (--vision-bf16), llama.cpp's in f16"
                    } else {
                        ""
                    }
                );
                return Ok(());
            }
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
                if r.depth > 0 {
                    println!("depth            {} tokens in the cache first", r.depth);
                }
                println!("prefill pp{:<5}  {:.2} tok/s", r.n_prompt, r.prefill_tok_s);
                println!(
                    "decode  tg{:<5}  {:.2} tok/s ({:.0}% of the memory bound: {:.1} MiB a token \
                     at {:.1} GB/s read by these threads)",
                    r.n_gen,
                    r.decode_tok_s,
                    100.0 * r.decode_tok_s / r.decode_bound_tok_s,
                    r.decode_mib_per_token,
                    r.read_gbs
                );
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

/// llama.cpp spellings clap cannot take as they are (`-ngl` is not a one-letter flag).
fn llama_cpp_args(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| {
        if a == "-ngl" {
            "--n-gpu-layers".into()
        } else {
            a
        }
    })
    .collect()
}

/// A hint for a command line that starts with a flag instead of a command (`llava-edge -m
/// M -p P`, as llama-cli is called).
fn missing_verb(args: &[std::ffi::OsString]) -> Option<String> {
    let first = args.get(1)?.to_str()?;
    let help = ["-h", "--help", "-V", "--version"];
    (first.starts_with('-') && !help.contains(&first)).then(|| {
        format!(
            "no command before '{first}': did you mean `llava-edge run {}`? (commands: run, \
             bench; llava-edge --help lists them)",
            args[1..]
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )
    })
}

fn main() -> ExitCode {
    let args = llama_cpp_args(std::env::args_os());
    if let Some(hint) = missing_verb(&args) {
        eprintln!("llava-edge: error: {hint}");
        return ExitCode::from(2);
    }
    match run(Cli::parse_from(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llava-edge: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smt_siblings_count_once() {
        let cores = vec![(0, 0), (0, 1), (0, 0), (0, 1), (1, 0)];
        assert_eq!(distinct_cores(cores), Some(3));
        assert_eq!(distinct_cores(Vec::new()), None);
        let t = default_threads();
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!((1..=available).contains(&t), "{t} threads of {available}");
    }

    #[test]
    fn n_predict_takes_minus_one_for_no_limit() {
        assert_eq!(parse_n_predict("-1"), Ok(usize::MAX));
        assert_eq!(parse_n_predict("12"), Ok(12));
        assert!(parse_n_predict("-2").is_err());
        assert!(parse_n_predict("x").is_err());
    }
}
