//! `llava-edge run`: a prompt (and images or a video) in, the reply streamed out; with `-i`,
//! a chat that reads turns from stdin.

use std::io::Write;
use std::path::PathBuf;

use llava_edge::load::{self, LoadError, LoadOptions, LoadWarning, ModelFiles};
use llava_edge::pipeline::{
    Conversation, Finish, Pipeline, PipelineError, Request, Timings, Tokenize,
};
use llava_edge::sampling::{Sampler, SamplerConfig};
use llava_edge::speculative::{open_draft, Drafter, LookupDrafter, ModelDrafter, Speculation};
use llava_edge::text::{KvCache, TextError, TextModel};
use llava_edge::threadpool::ThreadPool;
use llava_edge::tokenizer::Tokenizer;

use super::args::RunArgs;
use super::interrupt;

/// Loads the model `a` names and answers its prompt (or chats, with `-i`).
pub fn run(a: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
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
    let spec_config = a.draft.config(None)?;
    let kv = load::kv_type(&a.cache_type)?;
    let first_prompt = first_prompt(&a)?;
    for path in a.image.iter().chain(&a.video) {
        if !path.exists() {
            return Err(format!("{}: no such file or directory", path.display()).into());
        }
    }
    let mut opts = LoadOptions {
        mmproj: a.mmproj.clone(),
        repack: !a.no_repack,
        vision_bf16: a.vision_bf16,
        pad_square: a.pad_square,
        chat_template: a.chat_template.clone(),
        ..LoadOptions::new(a.model.clone())
    };
    a.device.apply(&mut opts)?;
    let pool = ThreadPool::new(a.threads.unwrap_or_else(load::default_threads));
    let files = ModelFiles::open(&opts, &pool)?;
    let loaded = files.pipeline(&opts, pool).map_err(load_error_for_cli)?;
    print_load_warnings(&loaded.warnings);
    let p = loaded.pipeline;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let trained = p.text.config.n_ctx_train;
    let n_ctx = load::context_size(a.ctx_size, trained);
    if a.ctx_size.is_none() && n_ctx < load::DEFAULT_CONTEXT {
        eprintln!("note: context {n_ctx} positions, the model's trained length (-c sets another)");
    } else if n_ctx > trained {
        eprintln!(
            "note: the context ({n_ctx} positions) is longer than the {trained} the model was \
             trained for: replies that reach past that may degrade"
        );
    }
    let cache = p.text.try_new_cache(n_ctx, kv)?;
    let placed = p.text.placement();
    if a.verbose {
        eprintln!("{}", placement_line(&placed, p.text.config.n_layer));
        if let Some(v) = &p.vision {
            eprintln!(
                "vision encoder: {}",
                if v.device().is_some() { "GPU" } else { "CPU" }
            );
        }
    }
    if placed.device.is_none() && opts.device.is_none() && opts.gpu_layers.is_some_and(|n| n > 0) {
        eprintln!(
            "note: -ngl ignored: no GPU found, so the model runs on the CPU (a Vulkan device that \
             is the CPU itself runs only with --device vulkan)"
        );
    }
    let draft_file = match &a.draft.draft_model {
        Some(d) => Some(open_draft(d, &files.text, !a.no_repack, &p.pool)?),
        None => None,
    };
    let draft_model = draft_file.as_ref().map(TextModel::load).transpose()?;
    let drafter: Option<Box<dyn Drafter + '_>> = match &draft_model {
        Some(m) => {
            let mut d = ModelDrafter::new(m, m.try_new_cache(n_ctx, kv)?);
            d.p_min = a.draft.draft_p_min;
            d.sampling = Some(Sampler::new(SamplerConfig {
                seed: a.seed ^ 0xd4af_7000,
                ..sampler_config.clone()
            }));
            Some(Box::new(d))
        }
        None if a.draft.lookup => Some(Box::new(LookupDrafter::new(a.draft.lookup_ngram, 1))),
        None => None,
    };
    let spec = drafter.map(|d| Speculation::new(d, spec_config));
    converse(
        &a,
        &p,
        first_prompt,
        cache,
        Sampler::new(sampler_config),
        spec,
        load_ms,
    )
}

/// Answers the first prompt and, with `-i`, the turns read from stdin after it.
fn converse(
    a: &RunArgs,
    p: &Pipeline<'_, Tokenizer>,
    first_prompt: Option<String>,
    mut cache: KvCache,
    mut sampler: Sampler,
    mut spec: Option<Speculation<'_>>,
    load_ms: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let n_ctx = cache.n_ctx();
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
        let before = spec.as_ref().map(|s| s.stats.clone());
        let turn = interrupt::during_reply(|cancel| {
            let on_text = |piece: &str| {
                if stream {
                    let _ = stdout.write_all(piece.as_bytes());
                    let _ = stdout.flush();
                }
            };
            match spec.as_mut() {
                Some(s) => p.chat_speculative(
                    &mut conv,
                    &req,
                    &mut cache,
                    &mut sampler,
                    s,
                    cancel,
                    on_text,
                ),
                None => {
                    p.chat_cancellable(&mut conv, &req, &mut cache, &mut sampler, cancel, on_text)
                }
            }
        });
        // This turn's share of the drafting counts.
        let drafted = spec.as_ref().zip(before).map(|(s, b)| {
            (
                s.stats.proposed - b.proposed,
                s.stats.accepted - b.accepted,
                s.stats.verify_passes - b.verify_passes,
            )
        });
        match turn {
            Ok((reply, t)) => {
                report(a, p, &reply, &t, first_turn.then_some(load_ms), drafted)?;
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
            Err(e) if a.interactive => eprintln!("error: {}", request_error_for_cli(e)),
            Err(e) => return Err(request_error_for_cli(e).into()),
        }
        if !a.interactive {
            break;
        }
    }
    Ok(())
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
fn report<T: Tokenize>(
    a: &RunArgs,
    p: &Pipeline<'_, T>,
    reply: &str,
    t: &Timings,
    load_ms: Option<f64>,
    drafted: Option<(usize, usize, usize)>,
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
            "draft": drafted.map(|(proposed, accepted, passes)| serde_json::json!({
                "proposed": proposed,
                "accepted": accepted,
                "verify_passes": passes,
                "acceptance": accepted as f64 / proposed.max(1) as f64,
            })),
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
        if let Some((proposed, accepted, passes)) = drafted {
            eprintln!(
                "draft: {accepted} of {proposed} proposals accepted ({:.0}%) in {passes} verify \
                 passes",
                100.0 * accepted as f64 / proposed.max(1) as f64
            );
        }
    }
    Ok(())
}

/// Load warnings as the command line shows them, with the flag that changes each.
pub fn print_load_warnings(warnings: &[LoadWarning]) {
    for w in warnings {
        match w {
            LoadWarning::KeptAsMapped { .. } => {
                eprintln!("note: {w}; --no-repack skips the attempt")
            }
            LoadWarning::NoBf16Dot => {
                eprintln!("note: this CPU has no bfloat16 dot instruction; --vision-bf16 ignored")
            }
            LoadWarning::ModelTemplateNotUsed { .. } => {
                eprintln!("warning: {w} (--chat-template NAME|FILE chooses one)")
            }
            LoadWarning::FewerDeviceLayers { .. } => {
                eprintln!("warning: {w} (-ngl N asks for fewer)")
            }
            LoadWarning::VisionOnCpu { .. } => eprintln!("warning: {w}"),
        }
    }
}

/// A load error, with the flag it came from where the library cannot know it.
fn load_error_for_cli(e: LoadError) -> Box<dyn std::error::Error> {
    match e {
        LoadError::TemplateFile { path, problem } => {
            format!("--chat-template {}: {problem}", path.display()).into()
        }
        e @ LoadError::DeviceUnavailable { .. } => format!("{e} (--device cpu)").into(),
        e => e.into(),
    }
}

/// A request error, with the flag that fixes it where there is one.
fn request_error_for_cli(e: PipelineError) -> String {
    match e {
        PipelineError::NoVisionEncoder(what) => format!("{what} was given but no --mmproj"),
        e @ PipelineError::Text(TextError::ContextFull { .. }) => format!("{e} (raise -c)"),
        e => e.to_string(),
    }
}

/// Where the text layers run, for `-v`.
pub fn placement_line(p: &llava_edge::text::Placement, n_layer: usize) -> String {
    match &p.device {
        None => "device: CPU".into(),
        Some(name) => format!(
            "device: {name}: {} of {n_layer} text layers{}, {:.1} MiB of device memory (weights \
             and caches)",
            p.device_layers,
            if p.output_on_device {
                " and the output"
            } else {
                ""
            },
            p.device_bytes as f64 / (1u64 << 20) as f64
        ),
    }
}
