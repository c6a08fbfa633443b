"""Short NB201 search per method on the GPU, with benchmark accuracies; prints a table.

Run on the device machine (see docs/results.md for the exact call):
    python benchmarks/gpu_methods.py --data DIR --benchmark TABLE.csv --methods darts pc-darts ...
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=10000)
    ap.add_argument("--space", default="spaces/nb201.nas")
    ap.add_argument("--out", default="/tmp/gpu-runs")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    rows = []
    for m in args.methods:
        out = Path(args.out) / m
        cmd = [sys.executable, "-m", "dslnas.cli", "search", args.space, "--method", m,
               "--epochs", str(args.epochs), "--subset", str(args.subset), "--data", args.data,
               "--benchmark", args.benchmark, "--out", str(out), "--device", args.device,
               "--dataset", args.dataset, "--no-progress", "--no-download"]
        cmd += [x for s in args.set for x in ("--set", s)]
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - t0
        if p.returncode:
            print(p.stdout[-2000:], p.stderr[-3000:], flush=True)
            rows.append((m, "FAILED", "", "", ""))
            continue
        lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        per_epoch = [l["seconds"] for l in lines]
        bench = lines[-1].get("benchmark") or {}
        rows.append((m, f"{per_epoch[0]:.1f}", f"{min(per_epoch):.1f}",
                     f"{bench.get('cifar10', float('nan')):.2f}", lines[-1].get("nb201", "")))
        print(f"{m}: wall {wall:.0f}s", rows[-1], flush=True)
    print(f"\n| method | s/epoch (first) | s/epoch (best) | C10 test (NB201 table) | genotype |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
