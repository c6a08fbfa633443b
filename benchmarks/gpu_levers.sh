#!/usr/bin/env bash
# The GPU speed measurements of docs/performance.md: `dslnas bench` rows per method (with
# --profile: kernels and kernel time per step), lockstep throughput (NB201), then the levers
# (eager / CUDA graph / + compiled cells / + channels-last) with their differences from eager.
# One space per call: each part has its own time limit; the most wanted come first, so a call
# that runs out of the device's 10 minutes (cold compile cache) loses the oldest comparisons.
#     bash benchmarks/gpu_levers.sh OUT_DIR nb201|darts|train     # JSON rows go to OUT_DIR
# (train: `dslnas train`'s step per lever, benchmarks/train_speed.py, docs/training.md)
# Print straight to the console (no pipe): a call that hits its limit keeps what was printed.
set -u
out=${1:-/tmp/bench}
space=${2:-nb201}
mkdir -p "$out"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

bench() {   # space method steps warmup [flags]
    local space=$1 method=$2 steps=$3 warmup=$4
    shift 4
    timeout 170 python -m dslnas.cli bench "spaces/$space.nas" --method "$method" --device cuda \
        --batch-size 64 --steps "$steps" --warmup "$warmup" --profile --json "$@" \
        > "$out/$space-$method.json" || echo "bench $space $method: failed or timed out"
    python benchmarks/bench_summary.py "$out/$space-$method.json"
}
if [ "$space" = nb201 ]; then
# newest first: a call cut short by its limit keeps what matters most
echo "== dslnas bench (defaults: fused cells, CUDA graphs and compiled cells where they fit)"
bench nb201 darts 50 10
bench nb201 pc-darts 50 10
bench nb201 darts-2nd 10 2
bench nb201 drnas 50 10
echo "== lockstep: K searches in one process against one alone"
timeout 150 python benchmarks/lockstep_speed.py --ks 1 2 4 --iters 40
echo "== NB201 darts: eager vs graph vs compiled cells + graph"
timeout 200 python benchmarks/graph_check.py --methods darts --iters 40 --frozen 3 --compile \
    --kinds eager graphed compiled
echo "== NB201 darts, channels-last"
timeout 90 python benchmarks/graph_check.py --methods darts --iters 40 --frozen 3 --compile \
    --channels-last --kinds graphed compiled
echo "== the other fused methods"
bench nb201 drnas-progressive 50 10
bench nb201 idarts-nn 50 10
fi

if [ "$space" = darts ]; then
echo "== DARTS space darts: graph vs compiled cells + graph"
timeout 240 python benchmarks/graph_check.py --space spaces/darts.nas --methods darts \
    --iters 12 --frozen 2 --compile --kinds graphed compiled
bench darts darts 20 5
bench darts drnas 20 5
bench darts darts-2nd 5 1
fi

if [ "$space" = train ]; then
echo "== dslnas train, DARTS recipe (DARTS_V2, C=36, L=20, batch 96)"
timeout 280 python benchmarks/train_speed.py --recipe darts --device cuda --json "$out/train-darts.json"
echo "== dslnas train, NB201 recipe (best cell, C=16, N=5, batch 256)"
timeout 200 python benchmarks/train_speed.py --recipe nb201 --device cuda --json "$out/train-nb201.json"
fi
