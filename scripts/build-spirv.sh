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

# name  source  defines...
variants=(
  "mul_mat_f32 mul_mat.comp TYPE_F32"
  "mul_mat_f16 mul_mat.comp TYPE_F16"
  "mul_mat_q4_0 mul_mat.comp TYPE_Q4_0"
  "mul_mat_q4_1 mul_mat.comp TYPE_Q4_1"
  "mul_mat_q5_0 mul_mat.comp TYPE_Q5_0"
  "mul_mat_q5_1 mul_mat.comp TYPE_Q5_1"
  "mul_mat_q8_0 mul_mat.comp TYPE_Q8_0"
  "mul_mat_q4_k mul_mat.comp TYPE_Q4_K"
  "mul_mat_q5_k mul_mat.comp TYPE_Q5_K"
  "mul_mat_q6_k mul_mat.comp TYPE_Q6_K"
  "quantize_q8 quantize_q8.comp"
  "mul_mat_q8_q8_0 mul_mat_q8.comp TYPE_Q8_0"
  "mul_mat_q8_q8_0_dot mul_mat_q8.comp TYPE_Q8_0 INT_DOT"
  "mul_mat_q8_q4_0 mul_mat_q8.comp TYPE_Q4_0"
  "mul_mat_q8_q4_0_dot mul_mat_q8.comp TYPE_Q4_0 INT_DOT"
  "mul_mat_q8_q4_1 mul_mat_q8.comp TYPE_Q4_1"
  "mul_mat_q8_q4_1_dot mul_mat_q8.comp TYPE_Q4_1 INT_DOT"
  "mul_mat_q8_q5_0 mul_mat_q8.comp TYPE_Q5_0"
  "mul_mat_q8_q5_0_dot mul_mat_q8.comp TYPE_Q5_0 INT_DOT"
  "mul_mat_q8_q5_1 mul_mat_q8.comp TYPE_Q5_1"
  "mul_mat_q8_q5_1_dot mul_mat_q8.comp TYPE_Q5_1 INT_DOT"
  "mul_mat_q8_q4_k mul_mat_q8.comp TYPE_Q4_K"
  "mul_mat_q8_q4_k_dot mul_mat_q8.comp TYPE_Q4_K INT_DOT"
  "mul_mat_q8_q5_k mul_mat_q8.comp TYPE_Q5_K"
  "mul_mat_q8_q5_k_dot mul_mat_q8.comp TYPE_Q5_K INT_DOT"
  "mul_mat_q8_q6_k mul_mat_q8.comp TYPE_Q6_K"
  "mul_mat_q8_q6_k_dot mul_mat_q8.comp TYPE_Q6_K INT_DOT"
  "rms_norm norm.comp RMS_NORM"
  "layer_norm norm.comp LAYER_NORM"
  "rope_normal rope.comp"
  "rope_neox rope.comp NEOX"
  "silu_mul eltwise.comp SILU_MUL"
  "gelu_erf eltwise.comp GELU_ERF"
  "gelu_tanh eltwise.comp GELU_TANH"
  "gelu_quick eltwise.comp GELU_QUICK"
  "add eltwise.comp ADD"
  "softmax softmax.comp"
  "bilinear bilinear.comp"
  "f32_to_f16 f32_to_f16.comp"
  "attention attention.comp"
  "attention_kv_f32 attention.comp KV_F32"
  "patch_embed_f32 patch_embed.comp TYPE_F32"
  "patch_embed_f16 patch_embed.comp TYPE_F16"
  "residual_layer_norm residual_norm.comp"
)

for v in "${variants[@]}"; do
  read -r name src defs <<<"$v"
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
