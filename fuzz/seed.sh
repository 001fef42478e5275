#!/usr/bin/env bash
# Builds the seed corpus for the gguf_reader fuzz target: the small real vocab file whole, the
# heads of the large ones (where all the header structure is), and the files our writer tests make.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=${LLAVA_EDGE_SHARED:-$here/../../shared}
out=$here/corpus/gguf_reader
mkdir -p "$out"
cp "$shared/vocab/ggml-vocab-llama-spm.gguf" "$out/llama-spm.gguf"
head -c 262144 "$shared/vocab/ggml-vocab-qwen2.gguf" > "$out/qwen2-head.gguf"
head -c 262144 "$shared/vocab/ggml-vocab-llama-bpe.gguf" > "$out/llama-bpe-head.gguf"
(cd "$here/.." && LLAVA_EDGE_SEED_DIR="$out" cargo test -q --test gguf_roundtrip >/dev/null)
ls -la "$out"
