#!/usr/bin/env bash
# The whole pipeline on 64-bit ARM, under qemu-aarch64: llava-edge, gguf-tools and the
# end-to-end tests cross-built once, then run as on a Pi 5 (-cpu cortex-a76: NEON + SDOT) and a
# Pi 4 (-cpu cortex-a72: NEON only). Every transformers fixture must give the prompt ids and
# greedy tokens it gives on x86: in the library tests (one process per test file) and through
# the programs (the native tests/cli_fixtures.rs drives the ARM gguf-tools and llava-edge).
# Needs what scripts/cross-aarch64.sh needs, and qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
# Left out under emulation: cli (spawns the binary: cli_fixtures covers that path),
# hparam_mutation and convert_fuzz (thousands of loads of the same code: minutes under qemu),
# the kernel tests (kernels/tests/run_rust_qemu.sh), quant_ggml (x86 reference builds).
tests=(kernel_dispatch pipeline_fixtures multimodal_fixtures convert_fixtures text_fixtures
  vision_fixtures anyres_fixtures image_preprocess chat_templates tokenizer_reference)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
scripts/cross-aarch64.sh build --release -p llava-edge -p gguf-tools --bins
# The test executables cargo built (in deps/; the programs it lists too are not), from its
# JSON messages (paths hold no quotes).
mapfile -t bins < <(scripts/cross-aarch64.sh test --release --no-run --message-format=json "${args[@]}" |
  grep -o '"executable":"[^"]*/deps/[^"]*"' | cut -d'"' -f4)
[ ${#bins[@]} -eq ${#tests[@]} ] || { echo "expected ${#tests[@]} test binaries, got ${#bins[@]}" >&2; exit 1; }
# The native driver of the ARM programs (already built by CI's test step).
driver=$(cargo test --release --test cli_fixtures --no-run --message-format=json |
  grep -o '"executable":"[^"]*/deps/[^"]*"' | cut -d'"' -f4)
arm=target/aarch64-unknown-linux-gnu/release
echo "-- built in $((SECONDS - t0)) s"

declare -A gemm=([cortex-a76]=Dotprod [cortex-a72]=Neon)
for cpu in cortex-a76 cortex-a72; do
  t1=$SECONDS
  qemu="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu"
  passed=0
  log=$(mktemp)
  for b in "${bins[@]}"; do
    if ! LLAVA_EDGE_EXPECT_GEMM=${gemm[$cpu]} $qemu "$b" --nocapture >"$log" 2>&1; then
      cat "$log"
      echo "FAILED under -cpu $cpu: $b" >&2
      exit 1
    fi
    grep -E "^kernels:" "$log" || true
    n=$(grep -oE "test result: ok\. [0-9]+ passed" "$log" | grep -oE "[0-9]+" | head -1)
    passed=$((passed + n))
  done
  t2=$SECONDS
  if ! LLAVA_EDGE_CLI_RUNNER="$qemu" LLAVA_EDGE_CLI_BIN=$arm/llava-edge LLAVA_EDGE_GGUF_TOOLS_BIN=$arm/gguf-tools \
    "$driver" --nocapture >"$log" 2>&1; then
    cat "$log"
    echo "FAILED under -cpu $cpu: llava-edge run on the fixtures" >&2
    exit 1
  fi
  cli=$(grep -E "fixtures of .* cases" "$log")
  rm -f "$log"
  echo "-- -cpu $cpu: $passed tests passed in ${#bins[@]} test binaries ($((t2 - t1)) s); ARM gguf-tools + llava-edge run: $cli ($((SECONDS - t2)) s)"
done
echo "-- aarch64 end-to-end: $((SECONDS - t0)) s in all"
