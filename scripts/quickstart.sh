#!/usr/bin/env bash
# Install dslnas into .venv (CPU PyTorch) and run a real, small architecture search on a CPU:
# DARTS (first order) on a narrow NAS-Bench-201 space, on the digits dataset that scikit-learn
# ships (works offline); then trains the cell it found from scratch and tests it, as the
# evaluation phase does (docs/training.md). Takes a few minutes on 2 cores. Extra arguments go
# to the search (e.g. --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0        # the CPU build; a plain `torch` pulls a CUDA build
python -m pip install -q -e .
dslnas compile spaces/nb201.nas --set C=8 --set N=2
rm -rf runs/quickstart runs/quickstart-train  # each run starts afresh (a used --out is refused)
dslnas search spaces/nb201.nas --method darts --dataset digits \
  --set C=8 --set N=2 --epochs 15 --seed 0 --out runs/quickstart "$@"
dslnas train runs/quickstart --set C=8 --set N=2 --epochs 20 --batch-size 64 \
  --out runs/quickstart-train
