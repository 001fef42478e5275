#!/usr/bin/env bash
# Compiles the Vulkan compute shaders (kernels/vulkan/*.comp) to the SPIR-V that the crate
# embeds (kernels/vulkan/spv/*.spv, committed so that a machine without glslc still builds).
# One source per op family; each variant is the source compiled with its defines.
# `--check` compiles into a temporary folder and fails if anything differs from the committed
# files (CI runs it so the SPIR-V never drifts from the sources).
set -euo pipefail
cd "$(dirname "$0")/../kernels/vulkan"
command -v glslc >/dev/null || { echo "build-spirv: glslc not found (Debian: apt-get install glslc)" >&2; exit 1; }

out=spv
check=0
if [ "${1:-}" = "--check" ]; then
  check=1
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"

# name  source  defines... (one a line; build.rs reads the same file)
grep -v '^#' variants.txt | while read -r name src defs; do
  [ -n "$name" ] || continue
  flags=()
  for d in $defs; do flags+=("-D$d"); done
  # -O: glslc's optimiser is deterministic for a given glslc, so the check is byte for byte.
  glslc --target-env=vulkan1.1 -O -I . "${flags[@]}" -fshader-stage=compute "$src" -o "$out/$name.spv"
done

if [ $check = 1 ]; then
  if ! diff -r -q "$out" spv; then
    echo "build-spirv: kernels/vulkan/spv is out of date with the shader sources; run scripts/build-spirv.sh and commit" >&2
    exit 1
  fi
  echo "build-spirv: committed SPIR-V matches the sources ($(ls spv | wc -l) shaders)"
fi
