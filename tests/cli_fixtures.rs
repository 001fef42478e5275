//! Every transformers fixture through the programs as a user runs them: `gguf-tools convert`
//! on the checkpoint, then `llava-edge run --json`, greedy, on the fixture's images or video and
//! question. The reply's token ids must equal the reference's greedy tokens (up to its first
//! end-of-generation token) and the prompt's length its input_ids'.
//!
//! The programs are this build's unless `LLAVA_EDGE_CLI_BIN` (a llava-edge binary) and
//! `LLAVA_EDGE_GGUF_TOOLS_BIN` (a gguf-tools binary; otherwise the converter runs in this
//! process) name others, run behind `LLAVA_EDGE_CLI_RUNNER` (a command line such as
//! `qemu-aarch64 -cpu cortex-a76`): that is how scripts/ci-aarch64-e2e.sh checks the
//! cross-built ARM programs against the same references.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures::QUESTIONS;
use common::npy::{fixtures_dir, read};
use common::TempDir;
use gguf_tools::convert::{convert, OutType};
use llava_edge::gguf::GgufFile;
use llava_edge::tokenizer::Tokenizer;
use serde_json::Value;

/// `LLAVA_EDGE_CLI_RUNNER` split into words, then `program`.
fn command(program: &str) -> Command {
    let runner = std::env::var("LLAVA_EDGE_CLI_RUNNER").unwrap_or_default();
    let mut words: Vec<&str> = runner.split_whitespace().collect();
    words.push(program);
    let mut c = Command::new(words[0]);
    c.args(&words[1..]);
    c
}

fn run_ok(mut c: Command, what: &str) -> String {
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {c:?}: {e}"));
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success(),
        "{what}: {c:?} exited with {}\n--- stdout\n{out}\n--- stderr\n{err}",
        o.status
    );
    out.into_owned()
}

/// The checkpoint in `case_dir/hf` as an F32 text model and mmproj.
fn convert_case(case_dir: &Path, tmp: &TempDir, case: &str) -> (PathBuf, PathBuf) {
    let (tp, vp) = (
        tmp.path(&format!("{case}.gguf")),
        tmp.path(&format!("{case}-mmproj.gguf")),
    );
    let hf = case_dir.join("hf");
    match std::env::var("LLAVA_EDGE_GGUF_TOOLS_BIN") {
        Ok(bin) => {
            let mut c = command(&bin);
            c.arg("convert").arg("--hf").arg(&hf).arg("--out").arg(&tp);
            c.arg("--mmproj").arg(&vp).args(["--type", "f32"]);
            run_ok(c, case);
        }
        Err(_) => {
            convert(&hf, &tp, &vp, OutType::F32, false).unwrap();
        }
    }
    (tp, vp)
}

fn ids(path: &Path) -> Vec<u32> {
    read(path).i64().iter().map(|&x| x as u32).collect()
}

#[test]
fn every_fixture_answers_like_transformers_from_the_command_line() {
    let bin = std::env::var("LLAVA_EDGE_CLI_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_llava-edge").to_string());
    let tmp = TempDir::new("cli-fixtures");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("hf/config.json").is_file())
        .collect();
    cases.sort();
    let (mut checked, mut tokens) = (0, 0);
    for dir in &cases {
        let case = dir.file_name().unwrap().to_string_lossy().into_owned();
        let (tp, vp) = convert_case(dir, &tmp, &case);
        let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&tp).unwrap()).unwrap();
        let mut fixtures: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.join("meta.json").is_file())
            .collect();
        fixtures.sort();
        for fx in fixtures {
            let name = format!("{case}/{}", fx.file_name().unwrap().to_string_lossy());
            let meta: Value =
                serde_json::from_str(&std::fs::read_to_string(fx.join("meta.json")).unwrap())
                    .unwrap();
            let prompt = meta["prompt"].as_str().unwrap();
            let question = QUESTIONS
                .iter()
                .find(|q| prompt.contains(*q))
                .unwrap_or_else(|| panic!("{name}: prompt {prompt:?} asks none of QUESTIONS"));
            let mut c = command(&bin);
            c.arg("run").arg("-m").arg(&tp).arg("--mmproj").arg(&vp);
            // Greedy with the f32 cache the references were checked against, eight tokens as
            // the generator made.
            c.args([
                "--temp",
                "0",
                "-n",
                "8",
                "-c",
                "2048",
                "--cache-type",
                "f32",
            ]);
            c.args(["-t", "2", "--json", "-p", question]);
            if prompt.starts_with(llava_edge::chat::VICUNA_SYSTEM) {
                c.args(["--system", llava_edge::chat::VICUNA_SYSTEM]);
            }
            for image in meta["images"].as_array().into_iter().flatten() {
                c.arg("--image")
                    .arg(fixtures_dir().join(image.as_str().unwrap()));
            }
            // The video's frames, in a directory of their own (as --video takes them).
            if let Some(frames) = meta["video_frames"].as_array() {
                let d = tmp.path(&format!("{}-frames", name.replace('/', "-")));
                std::fs::create_dir_all(&d).unwrap();
                for (i, f) in frames.iter().enumerate() {
                    let src = fixtures_dir().join(f.as_str().unwrap());
                    std::fs::copy(src, d.join(format!("{i:03}.png"))).unwrap();
                }
                c.arg("--video").arg(&d);
            }
            let out = run_ok(c, &name);
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 1, "{name}: one JSON line expected:\n{out}");
            let j: Value = serde_json::from_str(lines[0]).unwrap();
            let want_prompt = ids(&fx.join("input_ids.npy"));
            assert_eq!(
                j["prompt_tokens"].as_u64(),
                Some(want_prompt.len() as u64),
                "{name}: prompt length\n{out}"
            );
            let got: Vec<u32> = j["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect();
            let want: Vec<u32> = ids(&fx.join("generated_ids.npy"))
                .into_iter()
                .take_while(|&id| !tokenizer.is_eog(id))
                .collect();
            assert_eq!(got, want, "{name}: greedy tokens\n{out}");
            println!(
                "{name}: {} prompt tokens, {} greedy tokens equal",
                want_prompt.len(),
                want.len()
            );
            checked += 1;
            tokens += want.len();
        }
    }
    println!(
        "{checked} fixtures of {} cases: greedy tokens equal ({tokens} tokens)",
        cases.len()
    );
    assert!(checked >= 35, "only {checked} fixtures found");
}
