#!/usr/bin/env python3
"""How much do searches in lockstep gain? Search iterations per second with K searches in one
process (``dslnas search --seeds``: one CUDA stream and thread each, taking turns one iteration
at a time) against one search alone.

    python benchmarks/lockstep_speed.py [--space spaces/nb201.nas] [--method darts]
        [--ks 1 2 3 4] [--iters 50] [--warmup 8] [--device cuda] [--no-compile] [--set C=8]

For each K: K searchers (seeds 0..K-1, what ``search()`` builds: fused cells, compiled cells
and CUDA graphs by the same defaults) on random CIFAR-shaped batches already on the device.
Each runs ``--warmup`` iterations (the graphs' own warm-up and capture included, so compiling
happens there), then ``--iters`` timed ones. The clock starts when the last searcher has
finished its warm-up and stops when the last has finished its timed iterations, synchronised
at both ends. Printed: ms per round (one iteration of each of the K searches), ms per search
iteration, and the throughput against K=1. The searchers of one K compile one after another
(the first pays it; later ones and later Ks hit torch's caches); compiling is outside the
clock. The CPU has no streams, so CPU numbers say nothing about lockstep (there the script is
only smoke-tested, and its first K also pays the warm-up of the CPU kernels).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import attrs
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dslnas.ir.lower import compile_file                      # noqa: E402
from dslnas.methods.spec import get_method, space_family      # noqa: E402
from dslnas.search.bench import _synthetic_batches, device_name   # noqa: E402
from dslnas.search.graphs import Batch, attach_graphs         # noqa: E402
from dslnas.search.lockstep import Lockstep                   # noqa: E402
from dslnas.search.loop import Searcher, _determinism         # noqa: E402


def measure(ir, method, k: int, iters: int, warmup: int, device: torch.device,
            compile_cells: bool | None) -> dict:
    """Seconds of ``iters`` rounds of ``k`` searches in lockstep (after their warm-up)."""
    clock: dict[str, float] = {}
    steps = [0] * k

    def task(i: int):
        def run(pass_baton):
            s = Searcher(ir, method, device=device, seed=i, compile_cells=compile_cells)
            s.supernet.train()
            graphed = attach_graphs(s, None, log=lambda line: None)
            shape = (int(dict(ir.params).get("in_channels", 3)), 32, 32)
            batches = _synthetic_batches(shape, int(dict(ir.params).get("classes", 10)),
                                         method.schedule.batch_size, device, False, i)
            for n in range(warmup + iters):
                (xt, yt), (xv, yv) = batches()
                if graphed is not None:
                    graphed.step(Batch(xt, yt, xv, yv), do_arch=True, frozen=False)
                else:
                    s.iteration(xt, yt, xv, yv, do_arch=True, frozen=False)
                steps[i] += 1
                if i == k - 1 and n + 1 in (warmup, warmup + iters):   # every search is there
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    clock["start" if n + 1 == warmup else "end"] = time.perf_counter()
                pass_baton()
            return graphed is not None and graphed.failed is None
        return run

    with _determinism(False, device):
        graphs = Lockstep(device).run([task(i) for i in range(k)])
    for g in graphs:
        if isinstance(g, BaseException):
            raise g
    seconds = clock["end"] - clock["start"]
    return {"k": k, "round_ms": 1e3 * seconds / iters,
            "iteration_ms": 1e3 * seconds / (iters * k), "graphs": all(graphs),
            "iterations": sum(steps)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default=str(REPO / "spaces" / "nb201.nas"))
    p.add_argument("--method", default="darts")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compiled cells (default: as search(), on for CUDA)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=INT",
                   help="network parameter, e.g. C=8")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.iters < 1 or min(args.ks) < 1:
        p.error("--warmup, --iters and every K must be >= 1 (the clock starts after the warm-up)")
    params = {k: int(v) for k, v in (s.split("=", 1) for s in args.set)}
    ir = compile_file(args.space, params)
    method = get_method(args.method).for_family(space_family(ir))
    if args.batch_size:
        method = attrs.evolve(method, schedule=attrs.evolve(method.schedule,
                                                            batch_size=args.batch_size))
    device = torch.device(args.device)
    rows = [measure(ir, method, k, args.iters, args.warmup, device, args.compile)
            for k in args.ks]
    base = next((r["iteration_ms"] for r in rows if r["k"] == 1), None)
    print(f"{ir.name}, {method.name}, batch {method.schedule.batch_size}, "
          f"{device_name(device)}, torch {torch.__version__}")
    print("| K | ms per round | ms per search iteration | throughput vs K=1 | graphs |")
    print("|---|---|---|---|---|")
    for r in rows:
        r["throughput"] = None if base is None else base / r["iteration_ms"]
        gain = "-" if base is None else f"{r['throughput']:.2f}x"
        print(f"| {r['k']} | {r['round_ms']:.2f} | {r['iteration_ms']:.2f} | {gain} | "
              f"{'yes' if r['graphs'] else 'no'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
