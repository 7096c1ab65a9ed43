#!/usr/bin/env bash
# One GPU benchmark run for README's speed table (issue 13): ViT-B and ViT-H; fp32, bf16 and
# bf16 + torch.compile; encoder at batch 1 and 8, decoder (64 prompts), automatic masks 32x32 and
# the LVIS-proposal setting 64x64; sam_d2 / official segment-anything / segment-anything-fast
# (reported as an error row if it does not import or run with this torch).
#
# Sized for one H100/H200: every run has its own time limit (total at most ~8 minutes) and writes
# its JSON after each phase, so a run cut short keeps what it finished. At the end the whole
# table is printed (tools/benchmark.py --table). Weights are random and identical for all three.
#
#   bash scripts/bench_gpu.sh [OUT_DIR]         # PYTHON=/path/to/python to pick the interpreter
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-bench_gpu_out}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "bench_gpu.sh: CUDA is not available to $PY" >&2
    exit 2
fi
"$PY" -c "import segment_anything_fast" 2>/dev/null \
    || echo "note: segment_anything_fast does not import; its rows will carry the error" >&2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

COMMON=(--device cuda --iters 5 --amg-iters 2 --prompts 64)
run() {  # run SECONDS NAME ARGS...
    local limit=$1 name=$2
    shift 2
    echo "=== $name (limit ${limit}s)" >&2
    timeout --signal=INT "$limit" "$PY" tools/benchmark.py "${COMMON[@]}" --json "$OUT/$name.json" "$@" \
        || echo "=== $name: exit code $? (a time limit cuts the remaining phases)" >&2
}

run 70 vit_b_fp32 --variant vit_b --dtype fp32 --batch-size 1 8 --amg --proposals
run 70 vit_b_bf16 --variant vit_b --dtype bf16 --batch-size 1 8 --amg --proposals
run 80 vit_b_bf16_compile --variant vit_b --dtype bf16 --compile --batch-size 1 8
run 90 vit_h_fp32 --variant vit_h --dtype fp32 --batch-size 1 8 --amg --proposals
run 90 vit_h_bf16 --variant vit_h --dtype bf16 --batch-size 1 8 --amg --proposals
run 100 vit_h_bf16_compile --variant vit_h --dtype bf16 --compile --batch-size 1 8 --amg

echo
"$PY" tools/benchmark.py --table "$OUT"/*.json
