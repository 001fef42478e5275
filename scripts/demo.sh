#!/usr/bin/env bash
# The main job on the small built-in example: convert the tiny LLaVA-1.5 checkpoint that
# transformers made for the tests (tests/fixtures/llava15/hf) to GGUF, then ask llava-edge about
# an image. The weights are random, so the answer is gibberish; the point is the whole path
# (convert, tokenizer, chat template, image preprocessing, vision tower, projector, decoder),
# which the tests hold to transformers' outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup puts cargo in ~/.cargo/bin, which a shell opened before the install (or a fresh
# Raspberry Pi OS / JetPack login shell) may not have on PATH yet.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "demo: cargo not found: install Rust with rustup (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh), then run this again" >&2; exit 1; }
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)  # bindgen reads the kernels' header
command -v cc >/dev/null || need+=(build-essential)            # the C kernels (Pi OS Lite has no compiler)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "demo: ${need[*]} needed; install as root (apt-get install ${need[*]})" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "demo: installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
out=${TMPDIR:-/tmp}/llava-edge-demo
mkdir -p "$out"
# The first build takes a few minutes: cargo shows its progress.
echo "demo: building llava-edge and gguf-tools (release; a few minutes the first time)" >&2
cargo build --release -p llava-edge -p gguf-tools --bins
bin=target/release
echo "demo: converting tests/fixtures/llava15/hf to GGUF in $out" >&2
"$bin/gguf-tools" convert --hf tests/fixtures/llava15/hf \
  --out "$out/llava15.gguf" --mmproj "$out/llava15-mmproj.gguf" --type f16
# (head closes the pipe early: inspect's broken pipe is not a failure.)
{ "$bin/gguf-tools" inspect "$out/llava15-mmproj.gguf" || true; } | head -24
echo "demo: asking about tests/fixtures/images/sq180.png" >&2
"$bin/llava-edge" run -m "$out/llava15.gguf" --mmproj "$out/llava15-mmproj.gguf" \
  --image tests/fixtures/images/sq180.png -p "What is shown in this image?" -n 16 --temp 0 -v
