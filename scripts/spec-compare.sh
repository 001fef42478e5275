#!/usr/bin/env bash
# Speculative decoding, ours against llama.cpp's llama-speculative on one target/draft pair,
# alternating per k: `llava-edge bench --draft-model` (plain and speculative decode in one run,
# acceptance, verify cost) and `llama-speculative` (greedy, same k, prompt, threads and token
# count), plus llama-bench's plain decode of the target. With FORCE set (e.g. "1.0 0.8"), also
# our runs with --draft-force-accept at each rate (llama.cpp has no such switch). Nothing is
# built or downloaded; results go to OUTDIR as one file per run. FORCED_ONLY=1 runs only the
# forced-acceptance runs.
#
# Usage: scripts/spec-compare.sh LLAVA_EDGE LLAMA_BIN_DIR TARGET DRAFT OUTDIR [N] [KS] [THREADS]
#   (LLAMA_ENV, e.g. LD_PRELOAD=..., is set for llama.cpp's binaries; FORCE as above)
set -euo pipefail
ours=$1 ldir=$2 target=$3 draft=$4 out=$5
n=${6:-32} ks=${7:-"2 4 8"} t=${8:-2}
prompt="Tell me a story about a robot who learns to paint."
mkdir -p "$out"
llama() { env ${LLAMA_ENV:-} "$@"; }
[ -n "${FORCED_ONLY:-}" ] ||
    llama "$ldir/llama-bench" -m "$target" -t "$t" -p 0 -n "$n" -r 2 -o json >"$out/llama-bench.json" 2>/dev/null
for k in $ks; do
    [ -n "${FORCED_ONLY:-}" ] || "$ours" bench -m "$target" --draft-model "$draft" --draft-max "$k" -p 16 -n "$n" -t "$t" \
        --repeat 1 --json >"$out/ours-k$k.json" 2>"$out/ours-k$k.err"
    [ -n "${FORCED_ONLY:-}" ] || llama "$ldir/llama-speculative" -m "$target" -md "$draft" -t "$t" -td "$t" -c 512 \
        --spec-draft-n-max "$k" -n "$n" --temp 0 --seed 1 -p "$prompt" >"$out/llama-k$k.out" 2>&1
    for a in ${FORCE:-}; do
        "$ours" bench -m "$target" --draft-model "$draft" --draft-max "$k" -p 16 -n "$n" -t "$t" \
            --repeat 1 --json --draft-force-accept "$a" >"$out/ours-k$k-a$a.json" 2>"$out/ours-k$k-a$a.err"
    done
done
