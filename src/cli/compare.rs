//! `bench --vs-llama-cpp`: llama.cpp's own tools run on the same files, image and threads,
//! alternating with our measurements, their peak memory watched through /proc, and the two
//! side by side. A tool for comparing runtimes, not part of the library.

use std::path::Path;
use std::time::{Duration, Instant};

use llava_edge::bench::{self, BenchConfig, BenchResult};
use llava_edge::gguf::keys::tokenizer::CHAT_TEMPLATE;
use llava_edge::gguf::GgufFile;
use llava_edge::image::load_image;

use super::args::BenchArgs;
use super::run::print_load_warnings;

/// Runs our benchmark and llama.cpp's tools from `dir` in turn, `a.repeat` times each, and
/// prints the medians side by side with their ratios.
pub fn side_by_side(
    a: &BenchArgs,
    cfg: &BenchConfig,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let threads = cfg.threads;
    // Every run loads the same files, so their load warnings are shown once.
    let mut warned = false;
    let mut warn_once = |r: &BenchResult| {
        if !std::mem::replace(&mut warned, true) {
            print_load_warnings(&r.warnings);
        }
    };
    // Alternate one run of each per repeat, so drift on a shared machine hits both.
    let one = BenchConfig {
        repeat: 1,
        ..cfg.clone()
    };
    let (mut ours, mut theirs, mut bounds) = (Vec::new(), Vec::new(), Vec::new());
    let mut mib_per_token = 0.0;
    for _ in 0..a.repeat.max(1) {
        let r = bench::run(&a.model, None, None, &one)?;
        warn_once(&r);
        ours.push((r.prefill_tok_s, r.decode_tok_s));
        bounds.push((r.decode_bound_tok_s, r.read_gbs));
        mib_per_token = r.decode_mib_per_token;
        theirs.push(llama_cpp_speeds(dir, &a.model, &one)?);
    }
    let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    // With an mmproj, the image numbers too: encode and time to first token.
    let mut images = (Vec::new(), Vec::new());
    if let Some(mm) = &a.mmproj {
        let picture = match &a.image {
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
        for _ in 0..a.repeat.max(1) {
            let one_image = BenchConfig {
                n_prompt: 1,
                n_gen: 0,
                depth: 0,
                ..one.clone()
            };
            let r = bench::run(&a.model, Some(mm), Some(&pic), &one_image)?;
            warn_once(&r);
            images
                .0
                .push((r.image_encode_ms.unwrap_or(0.0), r.ttft_ms.unwrap_or(0.0)));
            images
                .1
                .push(llama_cpp_image(dir, &a.model, mm, &picture, threads)?);
        }
        if a.image.is_none() {
            let _ = std::fs::remove_file(&picture);
        }
    }
    let (opp, otg) = (med(&ours, |x| x.0), med(&ours, |x| x.1));
    let at = if a.depth > 0 {
        format!(" @ d{}", a.depth)
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
        format!("pp{}{at}", a.n_prompt),
        opp / lpp
    );
    println!(
        "{:<14} {otg:>12.2} {ltg:>12.2} {:>8.2}",
        format!("tg{}{at}", a.n_gen),
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
        format!("tg{} bound", a.n_gen),
        100.0 * otg / bound,
        100.0 * ltg / bound
    );
    // Both peaks span every run above: ours this process's, llama.cpp's the
    // highest its tools' own high-water marks reached.
    let (orss, lrss) = (bench::peak_rss_mib(), llama_cpp_peak_rss_mib());
    println!(
        "{:<14} {orss:>12.0} {lrss:>12.0} {:>8.2}",
        "peak RSS MiB",
        lrss / orss
    );
    println!(
        "(tok/s: ratio ours/llama.cpp; ms and MiB: ratio llama.cpp/ours, so above 1 is \
         better either way; medians of {} alternating runs, {threads} threads{})",
        a.repeat.max(1),
        if a.vision_bf16 {
            "; our vision products in bf16 (--vision-bf16), llama.cpp's in f16"
        } else {
            ""
        }
    );
    Ok(())
}

/// The largest peak resident set size of the llama.cpp tools run so far, MiB.
static TOOL_PEAK_KIB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The largest peak resident set size of the llama.cpp tools this process ran, MiB (0 before
/// any ran, or where /proc is missing).
pub fn llama_cpp_peak_rss_mib() -> f64 {
    TOOL_PEAK_KIB.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
}

/// Runs `cmd` to completion like `Command::output`, watching the child's own high-water RSS
/// (`VmHWM` of /proc/PID/status, every 10 ms while it runs) into [`llama_cpp_peak_rss_mib`].
/// `getrusage(RUSAGE_CHILDREN)` would not do: a child spawned with a shared address space
/// (posix_spawn's vfork) carries the parent's own peak into its maximum when it execs, so
/// llama.cpp's figure was never below ours. Readings count only once the child has exec'd
/// (its `Name:` is the tool's), for the same reason.
fn output_watching_rss(cmd: &mut std::process::Command) -> std::io::Result<std::process::Output> {
    let name: String = Path::new(cmd.get_program())
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(15).collect())
        .unwrap_or_default();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let status = format!("/proc/{}/status", child.id());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|st| {
                    let is_tool = st
                        .lines()
                        .find_map(|l| l.strip_prefix("Name:"))
                        .is_some_and(|n| n.trim() == name);
                    let hwm = st.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
                    is_tool.then(|| hwm.split_whitespace().next()?.parse::<u64>().ok())?
                }) {
                    TOOL_PEAK_KIB.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let out = child.wait_with_output();
        done.store(true, std::sync::atomic::Ordering::Release);
        out
    })
}

/// llama.cpp's prefill and decode speed on the same file and threads, from its `llama-bench`
/// in `dir` (built outside this repository): `(pp tok/s, tg tok/s)` for one repetition.
pub fn llama_cpp_speeds(dir: &Path, model: &Path, cfg: &BenchConfig) -> Result<(f64, f64), String> {
    let exe = dir.join("llama-bench");
    let out = output_watching_rss(
        std::process::Command::new(&exe)
            .arg("-m")
            .arg(model)
            .args([
                "-t",
                &cfg.threads.to_string(),
                "-p",
                &cfg.n_prompt.to_string(),
                "-n",
                &cfg.n_gen.to_string(),
                "-d",
                &cfg.depth.to_string(),
            ])
            .args(["-r", "1", "-o", "json"]),
    )
    .map_err(|e| format!("{}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("llama-bench output: {e}"))?;
    let (mut pp, mut tg) = (0.0, 0.0);
    for e in j.as_array().into_iter().flatten() {
        let ts = e["avg_ts"].as_f64().unwrap_or(0.0);
        if e["n_prompt"].as_u64().unwrap_or(0) > 0 {
            pp = ts;
        } else if e["n_gen"].as_u64().unwrap_or(0) > 0 {
            tg = ts;
        }
    }
    Ok((pp, tg))
}

/// llama.cpp's image numbers from its `llama-mtmd-cli` in `dir`, on the same files, image and
/// threads: `(encode ms, time to first token ms)`. Encode is the sum of the "encoding done in"
/// times it logs (one per tile); time to first token runs from its first encode to the exit
/// of a one-token generation (its log's timestamps against our wall clock), so it includes
/// its teardown, a few ms.
pub fn llama_cpp_image(
    dir: &Path,
    model: &Path,
    mmproj: &Path,
    image: &Path,
    threads: usize,
) -> Result<(f64, f64), String> {
    let exe = dir.join("llama-mtmd-cli");
    // llama-mtmd-cli refuses a model without a chat template (our synthetic 7B files have
    // none): name one of its built-ins then; any template times the same.
    let has_template = GgufFile::open(model)
        .map(|f| f.get_str(CHAT_TEMPLATE).is_ok())
        .unwrap_or(true);
    let mut cmd = std::process::Command::new(&exe);
    if !has_template {
        cmd.args(["--chat-template", "vicuna"]);
    }
    let start = Instant::now();
    let out = output_watching_rss(
        cmd.arg("-m")
        .arg(model)
        .arg("--mmproj")
        .arg(mmproj)
        .arg("--image")
        .arg(image)
        // About 20 prompt tokens after the image, as our own measurement.
        .args([
            "-p",
            "Describe this picture in one short sentence, naming the main colours and shapes you see.",
            "-n",
            "1",
            "--temp",
            "0",
            "-t",
            &threads.to_string(),
            "--log-timestamps",
        ]),
    )
    .map_err(|e| format!("{}: {e}", exe.display()))?;
    let wall = start.elapsed().as_secs_f64() * 1e3;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            exe.display(),
            log.lines().last().unwrap_or("")
        ));
    }
    parse_mtmd_log(&log, wall)
        .ok_or_else(|| format!("{}: no image encode times in its log", exe.display()))
}

/// (encode ms, first token ms) from a llama-mtmd-cli log and the process's wall time.
fn parse_mtmd_log(log: &str, wall_ms: f64) -> Option<(f64, f64)> {
    let mut encode = 0.0;
    let mut first_start = None;
    for line in log.lines() {
        if let Some(i) = line.find("encoding done in ") {
            let rest = &line[i + "encoding done in ".len()..];
            encode += rest.split_whitespace().next()?.parse::<f64>().ok()?;
        }
        if first_start.is_none() && line.contains("encoding mtmd batch") {
            first_start = timestamp_ms(line);
        }
    }
    (encode > 0.0).then(|| (encode, wall_ms - first_start.unwrap_or(0.0)))
}

/// The "m.ss.mmm.uuu" timestamp llama.cpp's logger puts first on a line, in ms.
fn timestamp_ms(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?;
    let p: Vec<&str> = t.split('.').collect();
    if p.len() != 4 {
        return None;
    }
    let n = |s: &str| s.parse::<f64>().ok();
    Some(n(p[0])? * 60e3 + n(p[1])? * 1e3 + n(p[2])? + n(p[3])? / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_llama_cpp_is_a_clear_error() {
        let cfg = BenchConfig {
            n_prompt: 8,
            n_gen: 2,
            depth: 0,
            repeat: 1,
            threads: 1,
            ttft_prompt: 4,
            repack: true,
            vision_bf16: false,
            device: None,
            gpu_layers: None,
        };
        let e = llama_cpp_speeds(
            std::path::Path::new("/nonexistent/llama.cpp"),
            std::path::Path::new("m.gguf"),
            &cfg,
        )
        .unwrap_err();
        assert!(e.contains("/nonexistent/llama.cpp/llama-bench"), "{e}");
    }

    #[test]
    fn mtmd_logs_are_read() {
        let log = "0.02.591.129 I main: loading model: m.gguf\n\
                   0.02.651.882 I encoding mtmd batch, n_chunks = 1 (done = 1, total = 7)\n\
                   0.06.631.327 I mtmd batch encoding done in 3979 ms\n\
                   0.09.164.488 I encoding mtmd batch, n_chunks = 1 (done = 2, total = 7)\n\
                   0.13.080.601 I mtmd batch encoding done in 3916 ms\n";
        let (enc, ttft) = parse_mtmd_log(log, 20_000.0).unwrap();
        assert_eq!(enc, 7895.0);
        assert!((ttft - (20_000.0 - 2_651.882)).abs() < 1e-6, "{ttft}");
        assert!(parse_mtmd_log("no numbers here", 1.0).is_none());
    }
}
