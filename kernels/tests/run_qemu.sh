#!/usr/bin/env bash
# Cross-builds the aarch64 kernels and their test driver and runs them under qemu-aarch64: once
# on a CPU with the dot-product extension (-cpu max) and once on a Cortex-A72 without it
# (Raspberry Pi 4 class). Needs Debian's gcc-aarch64-linux-gnu and qemu-user.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc=aarch64-linux-gnu-gcc
flags=(-O2 -ffp-contract=off -I"$here/include" -static)
$cc "${flags[@]}" -c "$here/cpu/scalar.c" -o "$out/scalar.o"
$cc "${flags[@]}" -c "$here/cpu/gemm_pack.c" -o "$out/gemm_pack.o"
$cc "${flags[@]}" -c "$here/cpu/attention.c" -o "$out/attention_scalar.o"
$cc "${flags[@]}" -DLE_ATTN_NEON -c "$here/cpu/attention.c" -o "$out/attention_neon.o"
$cc "${flags[@]}" -c "$here/cpu/gemm_f16.c" -o "$out/gemm_f16_scalar.o"
$cc "${flags[@]}" -DLE_F16_NEON -c "$here/cpu/gemm_f16.c" -o "$out/gemm_f16_neon.o"
$cc "${flags[@]}" -c "$here/cpu/activation.c" -o "$out/activation_scalar.o"
$cc "${flags[@]}" -DLE_ACT_NEON -c "$here/cpu/activation.c" -o "$out/activation_neon.o"
$cc "${flags[@]}" -c "$here/cpu/neon.c" -o "$out/neon.o"
$cc "${flags[@]}" -march=armv8.2-a+dotprod -c "$here/cpu/neon_dotprod.c" -o "$out/dotprod.o"
$cc "${flags[@]}" -march=armv8.2-a+dotprod -c "$here/cpu/gemm_dotprod.c" -o "$out/gemm_dotprod.o"
$cc "${flags[@]}" -DLE_GEMM_PLAIN_NEON -c "$here/cpu/gemm_dotprod.c" -o "$out/gemm_neon.o"
$cc "${flags[@]}" "$here/tests/test_kernels.c" "$out"/*.o -lm -o "$out/test_kernels"
for cpu in max cortex-a72; do
  echo "-- qemu-aarch64 -cpu $cpu"
  qemu-aarch64 -cpu "$cpu" "$out/test_kernels"
done
