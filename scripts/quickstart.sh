#!/usr/bin/env bash
# Install dslnas into .venv (CPU PyTorch) and run a real, small architecture search on a CPU:
# DARTS (first order) on a narrow NAS-Bench-201 space, on the digits dataset that scikit-learn
# ships (works offline). Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0        # the CPU build; a plain `torch` pulls a CUDA build
python -m pip install -q -e .
dslnas compile spaces/nb201.nas --set C=8 --set N=2
rm -rf runs/quickstart                        # each run starts afresh (the search refuses a used --out)
dslnas search spaces/nb201.nas --method darts --dataset digits \
  --set C=8 --set N=2 --epochs 15 --seed 0 --out runs/quickstart "$@"
