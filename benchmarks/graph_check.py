"""CUDA graphs vs eager for the search iteration: same start, same batches; prints the largest
differences of weights / alphas / buffers / metric sums and the ms per iteration of each.

    python benchmarks/graph_check.py [--methods darts pc-darts drnas] [--iters 30] [--frozen 5]
                                     [--batch 64] [--deterministic-kernels] [--compile]
                                     [--channels-last] [--kinds eager twin graphed compiled]

Three runs per method, each from a fresh Searcher with the same seed (so the same weights, α
and CUDA RNG stream), over the same random CIFAR-shaped batches: ``--frozen`` iterations with α
frozen (the warm-up graph), then ``--iters`` normal ones (the arch+weights graph); for a method
with an inner loop (idarts-ift, ``inner_steps`` T > 1) the steps follow its epoch instead: T
weights-only steps, then an architecture-only one (a val-only one while frozen), so each of its
graph kinds is captured and compared:

* eager:   ``Searcher.weight_step`` / ``arch_step`` (what runs without graphs; float lr);
* twin:    ``GraphedStep(capture=False)``: the factored iteration, tensor lr, no graphs;
* graphed: ``GraphedStep()``: 3 warm-up iterations per kind on a side stream, capture, replays;
* compiled (with ``--compile``): the graphed run with every cell ``torch.compile``d first
  (compiling happens in the graph's warm-up iterations; its time is printed apart).

What to expect: twin vs graphed 0 (same kernels; with --deterministic-kernels at least for
darts), eager vs graphed small but not 0 (fused SGD multiplies by the float32 lr tensor instead
of the double). Timing: mean over the last ``--iters - 6`` normal iterations (after warm-up and
capture), synchronised, input copies included.
"""
import argparse
import gc
import time
import traceback

import attrs
import torch

from dslnas.ir.lower import compile_file
from dslnas.methods.spec import get_method, space_family
from dslnas.search.graphs import Batch, GraphedStep
from dslnas.search.loop import Searcher


def eager_iteration(s: Searcher, b: Batch, **kind) -> None:
    """The body of Searcher.train_epoch's loop without graphs."""
    s.iteration(*b, **kind)


def iteration_kind(i: int, frozen: int, inner_steps: int) -> dict:
    """What ``Searcher.train_epoch`` runs as its ``i``-th step, with α frozen for the first
    ``frozen`` iterations. With ``inner_steps`` T > 1 (idarts-ift's inner loop) a cycle of T + 1
    steps: T weights-only steps, then an architecture-only step (a val-only one while frozen),
    so every graph kind of the inner loop is captured and replayed."""
    is_frozen = i < frozen
    if inner_steps <= 1:
        return dict(do_arch=not is_frozen, frozen=is_frozen)
    if i % (inner_steps + 1) < inner_steps:
        return dict(do_arch=False, frozen=False)
    return dict(do_arch=not is_frozen, frozen=is_frozen, weights=False)


def snapshot(s: Searcher) -> dict[str, dict[str, torch.Tensor]]:
    with torch.no_grad():
        return {
            "weights": {k: v.detach().cpu().clone() for k, v in s.supernet.named_parameters()
                        if not k.startswith("alphas.")},
            "alphas": {**{k: v.detach().cpu().clone() for k, v in s.supernet.alphas.items()},
                       **{k: v.detach().cpu().clone() for k, v in s.extra.items()}},
            "buffers": {k: v.detach().cpu().clone().double()
                        for k, v in s.supernet.named_buffers()},
            "sums": {"sums": s._sums.detach().cpu().clone()},
        }


def max_diff(a, b) -> dict[str, float]:
    out = {}
    for part in a:
        d = 0.0
        for k in a[part]:
            x, y = a[part][k].double(), b[part][k].double()
            d = max(d, (x - y).abs().max().item() if x.numel() else 0.0)
        out[part] = d
    return out


def run(kind: str, ir, method, batches, frozen: int, measure: int, seed: int):
    s = Searcher(ir, method, device="cuda", seed=seed, fused=FUSED,
                 compile_cells=(kind == "compiled"), channels_last=CHANNELS_LAST)
    s.supernet.train()
    step = None
    t_start = time.perf_counter()
    if kind != "eager":
        step = GraphedStep(s, capture=(kind in ("graphed", "compiled")),
                           log=lambda l: print(f"    [{kind}] {l}"))
        s.graphed = step
        step.begin_epoch()
    times = []
    for i, b in enumerate(batches):
        kind_i = iteration_kind(i, frozen, int(method.schedule.inner_steps))
        timed = i >= len(batches) - measure
        if timed:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        if step is None:
            eager_iteration(s, b, **kind_i)
        else:
            step.step(b, **kind_i)
        if timed:
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        s.global_step += 1
    torch.cuda.synchronize()
    total = time.perf_counter() - t_start
    info = ""
    if step is not None and kind in ("graphed", "compiled"):
        info = f"graphs captured: {len(step._graphs)}" + (f", failed: {step.failed}"
                                                          if step.failed else "")
    info += f", whole run {total:.1f} s (warm-up, compiling, capture included)"
    snap = snapshot(s)
    counts = list(s._counts)
    del s, step
    gc.collect()
    torch.cuda.empty_cache()
    return snap, 1e3 * sum(times) / max(1, len(times)), counts, info


FUSED = None
CHANNELS_LAST = False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["darts", "pc-darts", "drnas"])
    ap.add_argument("--space", default="spaces/nb201.nas")
    ap.add_argument("--iters", type=int, default=30, help="normal iterations (after --frozen)")
    ap.add_argument("--frozen", type=int, default=5, help="iterations with α frozen first")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                    help="the fused search cell (default: wherever it fits, as search() does)")
    ap.add_argument("--deterministic-kernels", action="store_true",
                    help="cudnn.deterministic and no cudnn.benchmark (default: benchmark, as "
                         "search() does on CUDA)")
    ap.add_argument("--compile", action="store_true",
                    help="add the 'compiled' run (compiled cells + CUDA graph)")
    ap.add_argument("--channels-last", action="store_true",
                    help="supernet and batches in channels-last memory format (every run)")
    ap.add_argument("--kinds", nargs="+", default=["eager", "twin", "graphed", "compiled"],
                    help="which runs to do (compiled only with --compile)")
    args = ap.parse_args()
    global FUSED, CHANNELS_LAST
    FUSED = args.fused
    CHANNELS_LAST = args.channels_last
    torch.backends.cudnn.benchmark = not args.deterministic_kernels
    torch.backends.cudnn.deterministic = args.deterministic_kernels
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cudnn.benchmark "
          f"{torch.backends.cudnn.benchmark}, batch {args.batch}, {args.frozen} frozen + "
          f"{args.iters} normal iterations, fused {args.fused}, channels-last "
          f"{args.channels_last}", flush=True)
    ir = compile_file(args.space, {"in_channels": 3, "classes": 10})
    family = space_family(ir)
    g = torch.Generator().manual_seed(1234)
    n = args.frozen + args.iters
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def images():
        return torch.randn(args.batch, 3, 32, 32, generator=g).cuda().to(memory_format=fmt)

    batches = [Batch(images(), torch.randint(0, 10, (args.batch,), generator=g).cuda(),
                     images(), torch.randint(0, 10, (args.batch,), generator=g).cuda())
               for _ in range(n)]
    measure = max(1, args.iters - 6)
    rows = []
    for name in args.methods:
        m = get_method(name).for_family(family)
        m = attrs.evolve(m, schedule=attrs.evolve(m.schedule, batch_size=args.batch,
                                                  warmup_epochs=0))
        print(f"\n== {name} ({m.relaxation}, {m.hypergradient}, order {m.schedule.order})",
              flush=True)
        res = {}
        kinds = [k for k in args.kinds if k != "compiled" or args.compile]
        for kind in kinds:
            try:
                res[kind] = run(kind, ir, m, batches, args.frozen, measure, args.seed)
                print(f"  {kind:8s} {res[kind][1]:8.1f} ms/iter  counts {res[kind][2]}  "
                      f"{res[kind][3]}", flush=True)
            except Exception:                                  # noqa: BLE001
                print(f"  {kind}: FAILED")
                traceback.print_exc()
        for a, b in (("eager", "graphed"), ("twin", "graphed"), ("eager", "twin"),
                     ("eager", "compiled"), ("graphed", "compiled")):
            if a in res and b in res:
                d = max_diff(res[a][0], res[b][0])
                print(f"  max|{a} - {b}|: " + "  ".join(f"{k} {v:.3g}" for k, v in d.items()))
        rows.append((name, {k: v[1] for k, v in res.items()}))
    print("\n| method | " + " | ".join(f"{k} ms/iter" for k in kinds) + " |")
    print("|---|" + "---|" * len(kinds))
    for name, ms in rows:
        print(f"| {name} | " + " | ".join(f"{ms[k]:.1f}" if k in ms else "failed"
                                         for k in kinds) + " |")


if __name__ == "__main__":
    main()
