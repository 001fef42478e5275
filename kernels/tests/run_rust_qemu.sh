#!/usr/bin/env bash
# Cross-builds the Rust kernel tests for aarch64 and runs them under qemu-aarch64, so the
# run-time dispatch and every NEON/SDOT path is exercised through the same tests as on x86:
# once on a CPU with the dot-product extension (-cpu max) and once on a Cortex-A72 without it.
# Needs the aarch64-unknown-linux-gnu Rust target, gcc-aarch64-linux-gnu and qemu-user.
set -euo pipefail
cd "$(dirname "$0")/../.."
rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"
tests=(--lib --test kernels_gemm --test kernels_attention --test kernels_simd --test kernels_rows)
for cpu in max cortex-a72; do
  echo "-- Rust kernel tests, qemu-aarch64 -cpu $cpu"
  log=$(mktemp)
  if ! CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu $cpu" \
    cargo test -q --release --target aarch64-unknown-linux-gnu "${tests[@]}" -- --nocapture >"$log" 2>&1; then
    cat "$log"
    exit 1
  fi
  grep -E "variants|test result|checked|identical" "$log" || true
  rm -f "$log"
done
