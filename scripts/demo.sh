#!/usr/bin/env bash
# The main job on the small built-in example: convert the tiny LLaVA-1.5 checkpoint that
# transformers made for the tests (tests/fixtures/llava15/hf) to GGUF, then ask llava-edge about
# an image. The weights are random, so the answer is gibberish; the point is the whole path
# (convert, tokenizer, chat template, image preprocessing, vision tower, projector, decoder),
# which the tests hold to transformers' outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
fi
out=${TMPDIR:-/tmp}/llava-edge-demo
mkdir -p "$out"
cargo run -q --release -p gguf-tools -- convert --hf tests/fixtures/llava15/hf \
  --out "$out/llava15.gguf" --mmproj "$out/llava15-mmproj.gguf" --type f16
cargo run -q --release -p gguf-tools -- inspect "$out/llava15-mmproj.gguf" | head -24
cargo run -q --release -- run -m "$out/llava15.gguf" --mmproj "$out/llava15-mmproj.gguf" \
  --image tests/fixtures/images/sq180.png -p "What is shown in this image?" -n 16 --temp 0 -v
