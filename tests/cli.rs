//! The `llava-edge` binary as a user runs it, on the tiny LLaVA-1.5 fixture converted to GGUF:
//! replies cut by the context or by -n (with and without -i), JSON Lines, the ways a prompt
//! arrives (-p, -f, stdin), llama.cpp's flag spellings, refused sampler values, stop strings,
//! Ctrl-C in -i, and the messages for common mistakes.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_llava-edge");
const TIMEOUT: Duration = Duration::from_secs(120);

/// The converted fixture pair, made once per test process.
fn model() -> &'static (PathBuf, PathBuf) {
    common::converted_llava15("cli")
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// The JSON Lines on stdout.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{self:?}")))
            .collect()
    }

    fn one_json(&self) -> Value {
        let mut v = self.json_lines();
        assert_eq!(v.len(), 1, "{self:?}");
        v.remove(0)
    }
}

/// Collects a child's output on threads, so a test can look at it while the child runs.
struct Running {
    child: Child,
    /// Stdin, for a child started with `Input::Open`.
    input: Option<std::process::ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// What a child reads on stdin.
enum Input<'a> {
    Null,
    /// This text, then the end of input.
    Text(&'a str),
    /// A pipe the test writes to.
    Open,
}

fn spawn(args: &[&str], input: Input) -> Running {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if matches!(input, Input::Null) {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut open = None;
    if let Input::Open = input {
        open = child.stdin.take();
    }
    if let Input::Text(text) = input {
        let mut w = child.stdin.take().unwrap();
        let text = text.to_string();
        // Dropping the pipe after writing is the end of input.
        std::thread::spawn(move || {
            let _ = w.write_all(text.as_bytes());
        });
    }
    let collect = |mut r: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let h = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, h)
    };
    let (stdout, h1) = collect(Box::new(child.stdout.take().unwrap()));
    let (stderr, h2) = collect(Box::new(child.stderr.take().unwrap()));
    Running {
        child,
        input: open,
        stdout,
        stderr,
        readers: vec![h1, h2],
    }
}

impl Running {
    fn stdout_len(&self) -> usize {
        self.stdout.lock().unwrap().len()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits (up to `TIMEOUT`) until `cond` holds.
    fn wait_for(&self, what: &str, cond: impl Fn(&Running) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}; stderr so far:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn interrupt(&self) {
        // SAFETY: signals our own child, whose pid we hold and have not yet waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0);
    }

    fn send(&mut self, line: &str) {
        writeln!(self.input.as_mut().unwrap(), "{line}").unwrap();
    }

    fn finish(mut self) -> Out {
        drop(self.input.take());
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("llava-edge ran past {TIMEOUT:?}: {}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for h in self.readers.drain(..) {
            h.join().unwrap();
        }
        let text =
            |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
        Out {
            code: status.code(),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        }
    }
}

fn llava(args: &[&str], stdin: Option<&str>) -> Out {
    spawn(args, stdin.map_or(Input::Null, Input::Text)).finish()
}

/// `run` on the fixture model, greedy, with more flags.
fn run(extra: &[&str], stdin: Option<&str>) -> Out {
    let m = model().0.to_str().unwrap();
    let mut args = vec!["run", "-m", m, "--temp", "0", "-t", "2"];
    args.extend_from_slice(extra);
    llava(&args, stdin)
}

const PROMPT: &str = "Describe a red circle on a blue background.";

/// The prompt's token count, read from a one-token run.
fn prompt_tokens() -> usize {
    let o = run(&["-p", PROMPT, "-n", "1", "--json"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    o.one_json()["prompt_tokens"].as_u64().unwrap() as usize
}

#[test]
fn n_predict_ends_a_reply_with_length_and_json_lines_carry_token_ids() {
    let o = run(&["-p", PROMPT, "-n", "12", "--json"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    // One compact object on one line.
    assert_eq!(o.stdout.lines().count(), 1, "{o:?}");
    let j = o.one_json();
    assert_eq!(j["finish_reason"], "length", "{o:?}");
    assert_eq!(j["finish"], "max_tokens", "{o:?}");
    let tokens = j["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 12);
    assert_eq!(j["generated_tokens"], 12);
    assert!(tokens.iter().all(|t| t.as_u64().is_some_and(|t| t < 512)));
    // Streamed, the same reply.
    let s = run(&["-p", PROMPT, "-n", "12"], None);
    assert_eq!(s.code, Some(0), "{s:?}");
    assert_eq!(s.stdout, format!("{}\n", j["reply"].as_str().unwrap()));
}

#[test]
fn a_full_context_ends_the_reply_and_keeps_it() {
    let p = prompt_tokens();
    let c = (p + 5).to_string();
    let o = run(&["-p", PROMPT, "-n", "64", "-c", &c, "--json"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    let j = o.one_json();
    assert_eq!(j["finish_reason"], "length", "{o:?}");
    assert_eq!(j["finish"], "context_full", "{o:?}");
    // Five positions after the prompt: five tokens evaluated, a sixth sampled from the last.
    assert_eq!(j["tokens"].as_array().unwrap().len(), 6, "{o:?}");
    assert!(o.stderr.contains("context"), "{o:?}");
    // Streamed: the text, then the note on stderr, not glued to it.
    let s = run(&["-p", PROMPT, "-n", "64", "-c", &c], None);
    assert_eq!(s.code, Some(0), "{s:?}");
    assert_eq!(s.stdout, format!("{}\n", j["reply"].as_str().unwrap()));
    assert!(!s.stderr.contains("error"), "{s:?}");
}

#[test]
fn n_minus_one_runs_to_the_default_context_the_models_trained_length() {
    let p = prompt_tokens();
    // The fixture was trained for 1024 positions, less than the 4096 default.
    let o = run(&["-p", PROMPT, "-n", "-1", "--json"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stderr.contains("context 1024"), "{o:?}");
    let j = o.one_json();
    assert_eq!(j["finish"], "context_full", "{o:?}");
    assert_eq!(j["tokens"].as_array().unwrap().len(), 1024 - p + 1, "{o:?}");
}

#[test]
fn a_reply_that_fills_the_context_in_chat_is_taken_back_and_the_chat_goes_on() {
    let p = prompt_tokens();
    let c = (p + 5).to_string();
    let turns = format!("{PROMPT}\n{PROMPT}\n/quit\n");
    let o = run(&["-i", "-n", "64", "-c", &c, "--json"], Some(&turns));
    assert_eq!(o.code, Some(0), "{o:?}");
    let lines = o.json_lines();
    assert_eq!(lines.len(), 2, "{o:?}");
    assert!(!o.stderr.contains("error"), "{o:?}");
    assert!(o.stderr.contains("taken back"), "{o:?}");
    // The second turn starts from the same (empty) conversation, so it is the same reply.
    for j in &lines {
        assert_eq!(j["finish"], "context_full", "{o:?}");
        assert_eq!(j["tokens"], lines[0]["tokens"], "{o:?}");
        assert_eq!(j["prompt_tokens"], p, "{o:?}");
    }
}

#[test]
fn the_prompt_comes_from_p_or_f_or_stdin_alike() {
    let tmp = common::TempDir::new("cli-prompt");
    let file = tmp.path("prompt.txt");
    std::fs::write(&file, format!("{PROMPT}\n")).unwrap();
    let by_p = run(&["-p", PROMPT, "-n", "6", "--json"], None).one_json();
    let by_f = run(&["-f", file.to_str().unwrap(), "-n", "6", "--json"], None);
    assert_eq!(by_f.code, Some(0), "{by_f:?}");
    let by_stdin = run(&["-n", "6", "--json"], Some(&format!("{PROMPT}\n")));
    assert_eq!(by_stdin.code, Some(0), "{by_stdin:?}");
    for o in [by_f.one_json(), by_stdin.one_json()] {
        assert_eq!(o["prompt_tokens"], by_p["prompt_tokens"]);
        assert_eq!(o["tokens"], by_p["tokens"]);
    }
    let missing = run(&["-f", "/nonexistent/prompt.txt"], None);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing.stderr.contains("/nonexistent/prompt.txt"),
        "{missing:?}"
    );
    let both = run(&["-p", "x", "-f", file.to_str().unwrap()], None);
    assert_ne!(both.code, Some(0), "{both:?}");
}

#[test]
fn sampler_values_out_of_range_are_refused() {
    for (flag, value, setting) in [
        ("--temp", "nan", "temperature"),
        ("--temp", "-1", "temperature"),
        ("--top-p", "1.5", "top-p"),
        ("--top-p", "NaN", "top-p"),
        ("--min-p", "-0.1", "min-p"),
        ("--repeat-penalty", "0", "repeat-penalty"),
        ("--repeat-penalty", "inf", "repeat-penalty"),
    ] {
        let m = model().0.to_str().unwrap();
        let o = llava(&["run", "-m", m, "-p", "hi", flag, value], None);
        assert_eq!(o.code, Some(1), "{flag} {value}: {o:?}");
        assert!(
            o.stderr.contains(setting) && o.stderr.contains("out of range"),
            "{flag} {value}: {o:?}"
        );
        assert!(o.stdout.is_empty(), "{o:?}");
    }
}

#[test]
fn llama_cpp_spellings_work() {
    let o = run(&["-p", PROMPT, "-n", "2", "-ngl", "99", "--json"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    // No GPU here (lavapipe is the CPU, used only when asked for): a note, and the CPU.
    assert!(o.stderr.contains("-ngl ignored: no GPU found"), "{o:?}");
    let o = run(
        &[
            "-p",
            PROMPT,
            "--predict",
            "2",
            "--gpu-layers",
            "0",
            "--json",
        ],
        None,
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    // Without the verb, a hint at `run`.
    let m = model().0.to_str().unwrap();
    let o = llava(&["-m", m, "-p", "hi"], None);
    assert_eq!(o.code, Some(2), "{o:?}");
    assert!(
        o.stderr.contains(&format!("llava-edge run -m {m} -p hi")),
        "{o:?}"
    );
}

/// Device flags that cannot work say why, with no Vulkan device needed to check them.
#[test]
fn device_flags_that_cannot_work_are_clear_errors() {
    let o = run(&["-p", PROMPT, "-n", "1", "--device", "cuda"], None);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("CUDA cannot run the model") && o.stderr.contains("--device cpu"),
        "{o:?}"
    );
    let o = run(&["-p", PROMPT, "-n", "1", "--device", "tpu"], None);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("unknown device 'tpu'"), "{o:?}");
    let o = run(&["-p", PROMPT, "-n", "1", "-ngl", "many"], None);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stderr.contains("-ngl 'many'"), "{o:?}");
    let o = run(&["-p", PROMPT, "-n", "1", "--device", "cpu", "-v"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stderr.contains("device: CPU"), "{o:?}");
}

#[test]
fn a_stop_string_is_neither_shown_nor_part_of_the_reply() {
    let full = run(&["-p", PROMPT, "-n", "24", "--json"], None).one_json();
    let reply = full["reply"].as_str().unwrap().to_string();
    // A stop string from the middle of the reply (on character boundaries).
    let chars: Vec<(usize, char)> = reply.char_indices().collect();
    assert!(chars.len() >= 8, "reply too short to cut: {reply:?}");
    let (a, b) = (chars[chars.len() / 2].0, chars[chars.len() / 2 + 2].0);
    let stop = &reply[a..b];
    let want = &reply[..reply.find(stop).unwrap()];
    let o = run(&["-p", PROMPT, "-n", "24", "--stop", stop, "--json"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    let j = o.one_json();
    assert_eq!(j["reply"], want, "stop {stop:?}: {o:?}");
    assert_eq!(j["finish"], "stop_string");
    assert_eq!(j["finish_reason"], "stop");
    let s = run(&["-p", PROMPT, "-n", "24", "--stop", stop], None);
    assert_eq!(s.stdout, format!("{want}\n"), "stop {stop:?}: {s:?}");
}

#[test]
fn ctrl_c_in_chat_stops_the_reply_then_exits_at_the_prompt() {
    let m = model().0.to_str().unwrap();
    // No -n limit and a context far larger than the test waits for: only Ctrl-C ends the reply.
    let args = [
        "run", "-m", m, "--temp", "0", "-t", "2", "-i", "-n", "-1", "-c", "200000",
    ];
    let mut r = spawn(&args, Input::Open);
    r.send(PROMPT);
    r.wait_for("the reply to start", |r| r.stdout_len() > 0);
    r.interrupt();
    r.wait_for("the interrupted note", |r| {
        r.stderr_text().contains("interrupted")
    });
    // Still running: the chat goes on to the next prompt, and ends normally.
    assert!(r.child.try_wait().unwrap().is_none(), "{}", r.stderr_text());
    r.send("/quit");
    let o = r.finish();
    assert_eq!(o.code, Some(0), "{o:?}");

    // At the prompt, after a reply, Ctrl-C ends the program.
    let mut r = spawn(&["run", "-m", m, "-t", "2", "-i", "-n", "2"], Input::Open);
    r.send(PROMPT);
    r.wait_for("the second prompt", |r| {
        r.stderr_text().matches("> ").count() >= 2
    });
    r.interrupt();
    let o = r.finish();
    assert_eq!(o.code, Some(130), "{o:?}");
}

#[test]
fn bench_runs_on_a_vocabulary_under_1000_tokens_at_depth() {
    let m = model().0.to_str().unwrap();
    let o = llava(
        &[
            "bench", "-m", m, "-t", "2", "-p", "16", "-n", "4", "-d", "1000", "--repeat", "1",
            "--json", "-ngl", "99",
        ],
        None,
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let j: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(j["depth"], 1000);
}

#[test]
fn common_mistakes_get_clear_messages() {
    let (text, mmproj) = model();
    // A directory for -m.
    let dir = text.parent().unwrap().to_str().unwrap();
    let o = run(&["-p", "hi"], None);
    assert_eq!(o.code, Some(0), "{o:?}");
    let o = llava(&["run", "-m", dir, "-p", "hi"], None);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains(dir) && o.stderr.contains("is a directory"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("No such device"), "{o:?}");
    // A video that is not there.
    let o = run(
        &[
            "--mmproj",
            mmproj.to_str().unwrap(),
            "--video",
            "/nonexistent/missing.mp4",
            "-p",
            "hi",
        ],
        None,
    );
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr.contains("/nonexistent/missing.mp4")
            && o.stderr.contains("no such file or directory"),
        "{o:?}"
    );
    assert!(!o.stderr.contains("entity not found"), "{o:?}");
    // An image that is not there: said before the model loads.
    let o = run(&["--image", "/nonexistent/cat.png", "-p", "hi"], None);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(
        o.stderr
            .contains("/nonexistent/cat.png: no such file or directory"),
        "{o:?}"
    );
}
