#!/usr/bin/env bash
# One device call that both measures and searches (a session is lent ~15 device-minutes, so
# one call has to do both): first `dslnas bench --profile` of NB201 DARTS (the step times, kernel
# counts and kernel time of the current code: docs/performance.md), then as much of the NB201
# reproduction table as the rest of the call allows. The bench compiles the same cells at the
# same batch size as the searches, into the same TorchInductor cache, so the searches start warm;
# the cache goes back out with the searches for the next call.
#
#   bash benchmarks/device_session.sh OUT METHODS SEEDS [BUDGET_S] [COMMIT]
#
# In the `run` tool (carry .whl, .device-data, .device-cache and runs/nb201; the module doc of
# benchmarks/reproduce_nb201.py says how to prepare them and what to do with what comes back):
#   bash benchmarks/device_session.sh $OUT darts "1 2" 560 $(git rev-parse HEAD)
# Environment: DEVICE (default cuda), BENCH (default 1; 0 skips the bench), BENCH_STEPS.
set -u
out=${1:?OUT}
methods=${2:?METHODS}
seeds=${3:?SEEDS}
budget=${4:-560}
commit=${5:-}
device=${DEVICE:-cuda}
t0=$(date +%s)
mkdir -p "$out/c"

if compgen -G ".whl/*.whl" > /dev/null; then         # lark and graphviz: not in the device image
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
if [ ! -d data/cifar-10-batches-py ]; then
    python3 .device-data/cifar10_from_jpeg.py .device-data/cifar10-jpeg.npz data/cifar-10-batches-py
fi
mkdir -p runs/nb201
cache=.device-cache/compile-cache.tgz
export TORCHINDUCTOR_CACHE_DIR=$PWD/runs/nb201/.compile-cache    # the one reproduce_nb201 uses
if [ -f "$cache" ]; then
    mkdir -p "$TORCHINDUCTOR_CACHE_DIR" && tar xzf "$cache" -C "$TORCHINDUCTOR_CACHE_DIR"
fi

if [ "${BENCH:-1}" = 1 ]; then
    echo "== dslnas bench --profile (NB201, darts)"
    timeout 240 python3 -m dslnas.cli bench spaces/nb201.nas --method darts --device "$device" \
        --batch-size 64 --steps "${BENCH_STEPS:-50}" --warmup 10 --profile --json \
        > "$out/bench-nb201-darts.json" || echo "bench: failed or timed out"
    python3 benchmarks/bench_summary.py "$out/bench-nb201-darts.json"
fi

left=$(( budget - ($(date +%s) - t0) ))
echo "== reproduction: $methods, seeds $seeds, ${left} s left"
# shellcheck disable=SC2086
python3 benchmarks/reproduce_nb201.py run --runs runs/nb201 --data data \
    --benchmark .device-data/nb201-test-accuracy.csv --methods $methods --seeds $seeds \
    --lockstep --budget "$left" --margin 25 --device "$device" ${commit:+--commit "$commit"} \
    --collect "$out/c" --collect-checkpoints --compile-cache "$cache" 2>&1 | tee "$out/log.txt"
cp runs/nb201/*.log "$out/c/" 2>/dev/null
# $OUT brings back at most 8 files of 16 MiB: one tar in 15 MiB parts
(cd "$out" && tar cf - c | split -b 15M - runs.tar.part && rm -rf c)
echo "== done in $(( $(date +%s) - t0 )) s; $(ls "$out" | tr '\n' ' ')"
