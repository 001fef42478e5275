#!/usr/bin/env bash
# Cross-builds for 64-bit ARM Linux (Raspberry Pi 4/5, Jetson Orin) from an x86-64 Debian or
# Ubuntu machine: target/aarch64-unknown-linux-gnu/release/{llava-edge,gguf-tools}, to copy to
# the board. Needs gcc-aarch64-linux-gnu (C kernels, linker), libclang-dev (bindgen) and the
# aarch64-unknown-linux-gnu Rust target (added here when missing).
#
#   scripts/cross-aarch64.sh                 # the two programs
#   scripts/cross-aarch64.sh test --no-run   # any other cargo command, for the same target
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
for tool in aarch64-linux-gnu-gcc cargo rustup; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool not found (sudo apt-get install gcc-aarch64-linux-gnu libclang-dev; rustup from https://rustup.rs)" >&2
    exit 1
  }
done
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# bindgen parses the kernel header as the target sees it (its size checks are per target).
export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=/usr/aarch64-linux-gnu -I/usr/aarch64-linux-gnu/include"
if [ $# -eq 0 ]; then
  set -- build --release -p llava-edge -p gguf-tools --bins
fi
cargo "$@" --target "$target"
