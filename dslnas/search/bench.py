"""``dslnas bench``: how fast the search step runs, measured the way the search runs it.

:func:`benchmark` builds exactly what ``search()`` builds (a :class:`~dslnas.search.loop.Searcher`:
the same supernet, method parts, transforms, optimisers and cuDNN settings) and feeds it batches
of the right shape that are already on the device: random ones (``dataset="synthetic"``, shaped
like CIFAR-10) or real ones drawn from the search's own device-resident loader. Batches are
drawn outside the timed regions, so the times are those of the two steps only.

Per run:

1. one counted iteration under ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs of one
   weight step and of one architecture step; torch's counter sees matmuls, convolutions and
   attention only, so element-wise ops, BN, pooling and the optimisers count zero; one
   correction: the weight gradient of a grouped convolution, which torch counts as dense);
2. ``warmup`` untimed iterations (cuDNN autotuning, allocator warm-up);
3. ``steps`` timed iterations in the method's order (``arch_first`` / ``weights_first``),
   each step timed on its own: CUDA events on the GPU (no host sync between steps; one
   ``synchronize`` at the end), ``time.perf_counter`` on the CPU.

Fused cells and CUDA graphs follow ``search()``'s defaults (``fused``/``cuda_graphs``). A CUDA
graph replays a whole iteration, so with graphs the weight step is timed as a weights-only
iteration (the kind the search replays between architecture steps) and the architecture step
is a full iteration minus that median; the graphs' own warm-up and capture come before
``warmup``.

Reported: median ms of each step, images/s of a full search iteration (the train batch of the
weight step plus the val batch of the architecture step, over the sum of the two medians), peak
memory (``torch.cuda.max_memory_allocated`` over the timed steps on CUDA; the process's peak
resident set size from ``getrusage`` on the CPU, which covers the whole process lifetime), the
device name, torch version, FLOPs, the achieved TFLOP/s and, on a GPU whose peak is in
:data:`PEAK_TFLOPS`, the utilisation that implies.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .commands import (
    DATASET_SHAPES,
    add_speed_flags,
    DEFAULT_DATA,
    SET_HELP,
    _device,
    _did_you_mean,
    _nonneg_int,
    _user_error,
    resolve_method,
)

__all__ = ["benchmark", "BenchResult", "PEAK_TFLOPS", "peak_tflops", "device_name",
           "add_command", "cmd_bench", "format_result", "FLOP_COUNTER", "count_flops"]

FLOP_COUNTER = ("torch.utils.flop_counter.FlopCounterMode, one iteration: matmuls, "
                "convolutions and attention only (element-wise ops, BN, pooling, optimisers "
                "count 0); grouped-conv weight gradients divided by groups (torch counts them "
                "as dense)")


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                        transposed, _output_padding, groups, output_mask, out_shape=None,
                        **kwargs) -> int:
    """torch's ``convolution_backward`` formula with the weight gradient of a grouped
    convolution counted right: torch counts it as a dense convolution, ``groups`` times too
    many (a depthwise 3x3 at 16 channels: its backward counted 17x its forward instead of 2x)."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):
        return [shape[1], shape[0]] + list(shape[2:])
    flops = 0
    if output_mask[0]:          # grad_input: a transposed convolution with the same weight
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:          # grad_weight: a convolution of input and grad_output per group
        if transposed:
            dense = conv_flop_count(t(grad_out_shape), t(x_shape), t(out_shape[1]), False)
        else:
            dense = conv_flop_count(t(x_shape), t(grad_out_shape), t(out_shape[1]), False)
        flops += dense // max(1, int(groups))
    return flops


def count_flops(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` by torch's FlopCounterMode (with the grouped-conv correction)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn(*args)
    return int(counter.get_total_flops())

# Dense (no sparsity) datasheet peaks in TFLOP/s, matched by substring of the CUDA device name,
# first match wins. fp32: the CUDA cores (no tensor cores); tf32: the tensor cores on fp32
# tensors, what cuDNN uses for convolutions while torch.backends.cudnn.allow_tf32 is on (default).
PEAK_TFLOPS: list[tuple[str, str, dict[str, float]]] = [
    ("NVL", "", {}),                    # H100/H200 NVL: other clocks; not tabulated, no guess
    ("H100 PCIe", "NVIDIA H100 PCIe datasheet, dense", {"fp32": 51.2, "tf32": 378.0}),
    ("H100", "NVIDIA H100 SXM5 datasheet, dense", {"fp32": 67.0, "tf32": 495.0}),
    ("H200", "NVIDIA H200 SXM datasheet, dense", {"fp32": 67.0, "tf32": 495.0}),
    ("A100", "NVIDIA A100 datasheet, dense", {"fp32": 19.5, "tf32": 156.0}),
]


def peak_tflops(name: str) -> tuple[dict[str, float] | None, str]:
    """(peaks by precision, where they come from) for a CUDA device name; (None, why) if unknown."""
    for key, source, peaks in PEAK_TFLOPS:
        if key in name:
            if peaks:
                return dict(peaks), source
            break
    return None, f"no peak tabulated for {name!r} (see dslnas.search.bench.PEAK_TFLOPS)"


def device_name(device) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo (platform data elsewhere)."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@attrs.frozen
class BenchResult:
    """One benchmark: see the module doc and docs/performance.md for every field."""

    space: str
    method: str
    device: str                     # "cpu" | "cuda"
    device_name: str
    torch_version: str
    threads: int                    # torch.get_num_threads() (the CPU's intra-op threads)
    dataset: str                    # "synthetic" or the real dataset's name
    batch_size: int                 # per step: the weight step's train batch = the val batch
    steps: int                      # timed iterations
    epoch: int                      # the search epoch the supernet was set up for (stages)
    warmup: int                     # untimed iterations before them
    order: str                      # arch_first | weights_first
    inner_steps: int                # weight steps per architecture step in the search
    channels_last: bool
    fused: bool                     # fused search cells (supernet/fused.py) in the supernet
    compiled: bool                  # cells torch.compiled (Supernet.compile_cells)
    compile_s: float | None         # the first compiled iteration (compiling included), s
    compiled_graphs: int | None     # graphs dynamo compiled in this run (cell shapes x steps)
    cuda_graphs: bool               # iterations replayed as CUDA graphs
    timing: str                     # how the steps were timed
    notes: list[str]                # e.g. why CUDA graphs are off
    weight_step_ms: float           # medians
    arch_step_ms: float
    iteration_ms: float             # weight_step_ms + arch_step_ms
    weight_step_ms_all: list[float]
    arch_step_ms_all: list[float]
    wall_iteration_ms: float        # mean wall time per timed iteration, both steps, end to end
    images_per_s: float             # 2 * batch_size / iteration_ms
    train_images_per_s: float       # train images per s of an epoch with alpha not frozen
    peak_memory_bytes: int
    peak_memory_kind: str
    flops_weight_step: int
    flops_arch_step: int
    flops_iteration: int
    flop_counter: str
    achieved_tflops: float          # flops_iteration / iteration_ms
    peak_tflops: dict[str, float] | None
    peak_reference: str
    utilisation: dict[str, float] | None     # achieved / peak per precision, 0..1
    utilisation_basis: str | None            # the precision the convolutions ran in
    profile: dict[str, Any] | None = None    # per step: ATen ops, kernels (search/profiling.py)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _synthetic_batches(shape: tuple[int, int, int], classes: int, batch_size: int, device,
                       channels_last: bool, seed: int):
    """One train and one val batch of normalised-looking random images, on ``device``."""
    import torch
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)

    def batch():
        x = torch.randn(batch_size, *shape, generator=g).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (batch_size,), generator=g).to(device)
        return x, y
    train, val = batch(), batch()
    return lambda: (train, val)


def _real_batches(dataset: str, root, ir, batch_size: int, device, channels_last: bool,
                  seed: int, split: str, subset: int | None, download: bool):
    """Batches from the search's own loader (device-resident, augmented on the device)."""
    from ..methods.spec import space_family
    from .datasets import load_dataset
    from .loader import SearchData
    norm = "nb201" if space_family(ir) == "nb201" else "darts"
    ds = load_dataset(dataset, Path(root).expanduser(), norm=norm, download=download)
    data = SearchData.from_dataset(ds, batch_size=batch_size, device=device, split=split,
                                   split_seed=0, seed=seed, subset=subset,
                                   channels_last=channels_last)
    return lambda: (data.train.next(), data.val.next())


class _Timer:
    """Times calls: CUDA events on a GPU (resolved at the end, no host sync in between),
    ``time.perf_counter`` on the CPU. ``block()`` measures a whole run of calls on the wall
    clock, synchronising only at its two ends."""

    def __init__(self, device):
        self.device = device
        self.cuda = device.type == "cuda"
        self.times: dict[str, list[float]] = {}
        self._events: list[tuple[str, Any, Any]] = []

    def sync(self) -> None:
        if self.cuda:
            import torch
            torch.cuda.synchronize(self.device)

    def time(self, name: str, fn, *args, **kwargs) -> None:
        import torch
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args, **kwargs)
            end.record()
            self._events.append((name, start, end))
        else:
            t0 = time.perf_counter()
            fn(*args, **kwargs)
            self.times.setdefault(name, []).append(1e3 * (time.perf_counter() - t0))

    @contextmanager
    def block(self, out: list):
        """Append the block's wall-clock seconds to ``out``."""
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        out.append(time.perf_counter() - t0)

    def collect(self) -> dict[str, list[float]]:
        self.sync()
        for name, start, end in self._events:
            self.times.setdefault(name, []).append(float(start.elapsed_time(end)))
        self._events.clear()
        return self.times


def _time_eager(s, order, next_batches, timer: _Timer, steps: int, warmup: int) -> float:
    """Warm up, then time each step of ``steps`` iterations on its own; wall s of the timed run."""
    for _ in range(warmup):
        tb, vb = next_batches()
        for _, step in order:
            step(tb, vb)
    timer.sync()
    if timer.cuda:
        import torch
        torch.cuda.reset_peak_memory_stats(timer.device)
    wall: list[float] = []
    batches = [next_batches() for _ in range(steps)]          # drawn outside the timed block
    with timer.block(wall):
        for tb, vb in batches:
            for name, step in order:
                timer.time(name, step, tb, vb)
    return wall[0]


def _time_graphed(graphed, next_batches, timer: _Timer, steps: int, warmup: int) -> float:
    """CUDA graphs: one replay per iteration, so the steps cannot be timed apart. Time
    ``steps`` weights-only iterations (the search's kind between architecture steps) as the
    weight step and ``steps`` full iterations; the architecture step is their difference.
    Each kind first runs the graph's own warm-up and capture, then ``warmup`` replays."""
    from .graphs import Batch
    kinds = (("weight", False), ("iteration", True))
    for _, do_arch in kinds:
        for _ in range(graphed.warmup + 1 + warmup):
            tb, vb = next_batches()
            graphed.step(Batch(*tb, *vb), do_arch=do_arch, frozen=False)
    timer.sync()
    if timer.cuda:
        import torch
        torch.cuda.reset_peak_memory_stats(timer.device)
    wall: list[float] = []
    for name, do_arch in kinds:
        batches = [Batch(*tb, *vb) for tb, vb in (next_batches() for _ in range(steps))]
        with timer.block(wall):
            for b in batches:
                timer.time(name, graphed.step, b, do_arch=do_arch, frozen=False)
    return wall[1]


def benchmark(ir, method, *, device="cpu", batch_size: int | None = None, steps: int = 10,
              warmup: int = 2, dataset: str = "synthetic", data_root=DEFAULT_DATA,
              download: bool = True, subset: int | None = None, seed: int = 0,
              channels_last: bool = False, fused: bool | None = None,
              cuda_graphs: bool | None = None, compile_cells: bool | None = None,
              profile: bool = False, trace_dir=None, epoch: int = 0,
              _graph_capture: bool = True) -> BenchResult:
    """Time the weight and architecture steps of searching ``ir`` with ``method``.

    ``method`` is a resolved :class:`~dslnas.methods.spec.MethodSpec` (per-family defaults
    folded in, as ``resolve_method`` returns it); ``batch_size`` defaults to its schedule's.
    ``dataset``: ``"synthetic"`` (random CIFAR-10-shaped batches: 3 x 32 x 32, the space's
    classes) or a name ``load_dataset`` knows (then ``data_root``, ``download`` and ``subset``
    apply). ``fused`` and ``cuda_graphs`` mean what they mean for ``search()``, with the same
    defaults (fused cells wherever they fit; CUDA graphs on for a CUDA search of a graph-safe
    method). ``compile_cells`` likewise (default on for CUDA and methods that allow it); the
    FLOPs are counted before compiling. ``profile``: also count what each step dispatches
    (ATen ops; kernels and their time on CUDA) over one more iteration after the timed ones,
    run without graphs (``search.profiling``); ``trace_dir``: write those steps as Chrome
    traces too. ``epoch``: set the supernet up as the search has it at that (0-based) epoch:
    stage transforms advanced to its stage (DrNAS progressive: pruned by the initial α, and
    widened). ``_graph_capture=False`` (tests): the graphs' eager twin, on any device.
    Raises MethodError / DataError like ``search()``.
    """
    import torch

    from .graphs import attach_graphs
    from .loop import Searcher, _determinism, compile_by_default

    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got {steps} and {warmup}")
    device = torch.device(device)
    if batch_size is None:
        batch_size = method.schedule.batch_size
    method = attrs.evolve(method, schedule=attrs.evolve(method.schedule, batch_size=batch_size))
    sched = method.schedule
    notes: list[str] = []
    # the data first, as search() (its streams have their own generators; no global RNG used)
    if dataset == "synthetic":
        classes = int(dict(ir.params).get("classes", 10))
        shape = (int(dict(ir.params).get("in_channels", 3)), 32, 32)
        next_batches = _synthetic_batches(shape, classes, batch_size, device, channels_last, seed)
    else:
        next_batches = _real_batches(dataset, data_root, ir, batch_size, device, channels_last,
                                     seed, sched.split, subset, download)
    with _determinism(False, device):            # what search() sets: cuDNN autotuning on CUDA
        s = Searcher(ir, method, device=device, seed=seed, channels_last=channels_last,
                     fused=fused)
        s.epoch = epoch
        s.begin_epoch()                           # stage transforms at that epoch, as search()
        s.supernet.train()

        def weight(tb, vb):
            s.weight_step(*tb)

        def arch(tb, vb):
            s.arch_step(tb, vb)

        order = [("arch", arch), ("weight", weight)] if sched.order == "arch_first" else \
            [("weight", weight), ("arch", arch)]

        # 1. FLOPs of one (eager) iteration, each step counted on its own; a graph replays
        #    the same kernels
        flops = {}
        tb, vb = next_batches()
        for name, step in order:
            flops[name] = count_flops(step, tb, vb)

        # compiled cells as search() has them: compiled now, compiled code built by the first
        # warm-up iteration (its time is reported apart: a search pays it once)
        if compile_cells is None:
            compile_cells = compile_by_default(device, False)
        compile_s = None
        if compile_cells:
            from torch._dynamo.utils import counters
            graphs_before = counters["stats"]["unique_graphs"]
            s.compile_cells()
            t0 = time.perf_counter()
            for name, step in order:
                step(tb, vb)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            compile_s = time.perf_counter() - t0

        # 2. CUDA graphs as search() attaches them
        graphed = attach_graphs(s, cuda_graphs, capture=_graph_capture, log=notes.append)

        # 3. warm-up and timed iterations
        timer = _Timer(device)
        if graphed is None:
            wall = _time_eager(s, order, next_batches, timer, steps, warmup)
            timing = ("eager: each step timed on its own ("
                      + ("CUDA events" if timer.cuda else "perf_counter") + ")")
        else:
            wall = _time_graphed(graphed, next_batches, timer, steps, warmup)
            if graphed.failed is not None:
                notes.append(f"cuda graphs: failed ({graphed.failed}); timed eagerly")
            timing = ("cuda graphs: weight step = a weights-only iteration, arch step = a full "
                      "iteration minus it (" + ("CUDA events" if timer.cuda else "perf_counter")
                      + ")")
        times = timer.collect()
        compiled_graphs = (counters["stats"]["unique_graphs"] - graphs_before
                           if compile_cells else None)
        if timer.cuda:
            peak = int(torch.cuda.max_memory_allocated(device))
            peak_kind = "torch.cuda.max_memory_allocated over the timed steps (tensors only)"
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = int(rss if sys.platform == "darwin" else rss * 1024)
            peak_kind = ("process max RSS from getrusage: the whole process over its "
                         "lifetime, not the steps alone")

        # 4. what each step dispatches, after the timed steps (a profiler session can slow
        #    later launches), run eagerly: a graph replay would be one launch to the profiler
        #    (a search runs eager steps between replays too: an epoch's partial last batch)
        profiled = None
        if profile or trace_dir:
            from .profiling import profile_steps
            profiled = profile_steps(order, next_batches(), device, trace_dir)

    w_all = times["weight"]
    w_ms = statistics.median(w_all)
    if graphed is None:
        a_all = times["arch"]
        a_ms = statistics.median(a_all)
        it_ms = w_ms + a_ms
    else:
        it_ms = statistics.median(times["iteration"])
        a_ms = it_ms - w_ms
        a_all = [t - w_ms for t in times["iteration"]]
    T = max(1, int(sched.inner_steps))
    total_flops = flops["weight"] + flops["arch"]
    achieved = total_flops / (it_ms * 1e-3) / 1e12
    name = device_name(device)
    if device.type == "cuda":
        peaks, ref = peak_tflops(name)
        basis = "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"
    else:
        peaks, ref, basis = None, "no peak tabulated for CPUs", None
    util = None if peaks is None else {k: achieved / v for k, v in peaks.items()}
    return BenchResult(
        space=ir.name, method=method.name, device=device.type, device_name=name,
        torch_version=torch.__version__, threads=torch.get_num_threads(), dataset=dataset,
        batch_size=batch_size, steps=steps, epoch=epoch, warmup=warmup, order=sched.order,
        inner_steps=T,
        channels_last=channels_last, fused=bool(s.is_fused), compiled=bool(compile_cells),
        compile_s=compile_s, compiled_graphs=compiled_graphs,
        cuda_graphs=graphed is not None and graphed.capture and graphed.failed is None,
        timing=timing, notes=notes,
        weight_step_ms=w_ms, arch_step_ms=a_ms, iteration_ms=it_ms,
        weight_step_ms_all=w_all, arch_step_ms_all=a_all,
        wall_iteration_ms=1e3 * wall / steps,
        images_per_s=2 * batch_size / (it_ms * 1e-3),
        train_images_per_s=T * batch_size / ((T * w_ms + a_ms) * 1e-3),
        peak_memory_bytes=peak, peak_memory_kind=peak_kind,
        flops_weight_step=flops["weight"], flops_arch_step=flops["arch"],
        flops_iteration=total_flops, flop_counter=FLOP_COUNTER, achieved_tflops=achieved,
        peak_tflops=peaks, peak_reference=ref, utilisation=util,
        utilisation_basis=basis if peaks is not None else None, profile=profiled)


# ============================================================================================
# the command
# ============================================================================================

def add_command(subparsers) -> None:
    """Register ``dslnas bench`` on the CLI's subparsers."""
    b = subparsers.add_parser(
        "bench", help="time the search step: images/s, step times, peak memory, FLOPs",
        description="Build what `dslnas search` builds for SPACE.nas and the method, feed it "
                    "batches already on the device, and time the weight step and the "
                    "architecture step (median over --steps after --warmup). Under CUDA "
                    "graphs the weight step is timed as a weights-only iteration and the "
                    "architecture step as a full one minus it; compiling is timed apart "
                    "(compile_s). See docs/performance.md.",
        epilog=SET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("space", help="a .nas file")
    b.add_argument("--method", "-m", help="a method name (see `dslnas methods`)")
    b.add_argument("--method-file", metavar="SPEC.toml", help="a custom combination of parts")
    b.add_argument("--steps", type=_nonneg_int("--steps"), default=10,
                   help="timed iterations (default 10)")
    b.add_argument("--warmup", type=_nonneg_int("--warmup"), default=2,
                   help="untimed iterations first (default 2)")
    b.add_argument("--batch-size", type=_nonneg_int("--batch-size"),
                   help="default: the method's batch size for this space")
    b.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    b.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a part option, schedule field or network parameter, as for "
                        "`dslnas search` (see below)")
    b.add_argument("--dataset", help="synthetic (default: random CIFAR-10-shaped batches) | "
                                     "cifar10 | cifar100 | svhn | digits")
    b.add_argument("--data", metavar="DIR",
                   help=f"dataset folder for a real dataset (default {DEFAULT_DATA}); "
                        f"implies --dataset cifar10 when --dataset is not given")
    b.add_argument("--no-download", action="store_true",
                   help="never download the dataset; fail if it is not in --data")
    b.add_argument("--channels-last", action="store_true",
                   help="supernet and batches in channels-last memory format")
    add_speed_flags(b)
    b.add_argument("--epoch", type=_nonneg_int("--epoch"), default=0,
                   help="time the steps as at this 0-based search epoch: DrNAS' progressive "
                        "stages pruned (by the initial α) and widened up to it (default 0)")
    b.add_argument("--seed", type=_nonneg_int("--seed"), default=0, help="random seed (default 0)")
    b.add_argument("--profile", action="store_true",
                   help="also count what each step dispatches: ATen ops, and on CUDA kernels "
                        "and their summed time, with the largest of them")
    b.add_argument("--trace", metavar="DIR",
                   help="write the profiled steps as Chrome traces (DIR/weight_step.json, "
                        "DIR/arch_step.json); implies --profile")
    b.add_argument("--json", action="store_true", help="one JSON object")
    b.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from .datasets import DataError
    from .loop import MethodError, SearchError
    try:
        return _bench(args)
    except (DataError, MethodError, SearchError) as e:
        raise _user_error(str(e)) from None


def _bench(args) -> int:
    import torch

    from ..ir.lower import compile_file
    from ..methods.spec import space_family
    from .datasets import DATASETS
    from .loop import check_method

    for flag, v, lo in (("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                        ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0)):
        if v is not None and v < lo:
            raise _user_error(f"{flag} must be >= {lo}, got {v}")
    if args.dataset is None:
        dataset = "cifar10" if args.data else "synthetic"
    else:
        dataset = args.dataset.lower().replace("-", "").replace("_", "")
    if dataset != "synthetic" and dataset not in DATASETS:
        choices = ("synthetic",) + tuple(DATASETS)
        raise _user_error(f"unknown dataset {args.dataset!r}{_did_you_mean(dataset, choices)}; "
                          f"choose one of {', '.join(choices)}")
    space_file = str(Path(args.space).resolve()) if Path(args.space).exists() else args.space
    ir0 = compile_file(space_file)
    method, network, _ = resolve_method(args.method, args.method_file, args.set,
                                        space_family(ir0), dict(ir0.params),
                                        batch_size=args.batch_size)
    # the network's input and output follow the dataset (synthetic: CIFAR-10's) unless set
    channels, classes = DATASET_SHAPES["cifar10" if dataset == "synthetic" else dataset]
    if dataset != "synthetic":
        for key, want in (("in_channels", channels), ("classes", classes)):
            if network.get(key, want) != want:
                raise _user_error(f"--set {key}={network[key]}: dataset {dataset} has {want}")
    network = {"in_channels": channels, "classes": classes, **network}
    ir = compile_file(space_file, network)
    check_method(ir, method)
    device = _device(args.device)
    try:
        result = benchmark(ir, method, device=device, batch_size=args.batch_size,
                           steps=args.steps, warmup=args.warmup, dataset=dataset,
                           data_root=args.data or DEFAULT_DATA, download=not args.no_download,
                           seed=args.seed, channels_last=args.channels_last,
                           fused=args.fused, cuda_graphs=args.cuda_graphs,
                           compile_cells=args.compile_cells, profile=args.profile,
                           trace_dir=args.trace, epoch=args.epoch)
    except torch.cuda.OutOfMemoryError:
        raise _user_error(f"out of GPU memory at batch size {method.schedule.batch_size}; "
                          f"try a smaller --batch-size") from None
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_result(result))
    return 0


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def format_result(r: BenchResult) -> str:
    """The human table of ``dslnas bench``."""
    def tflops(flops, ms):
        return flops / (ms * 1e-3) / 1e12

    dev = f"{r.device} ({r.device_name}" + (f", {r.threads} threads)" if r.device == "cpu"
                                           else ")")
    lines = [
        f"space {r.space}, method {r.method}, device {dev}, torch {r.torch_version}",
        f"batch {r.batch_size} train + {r.batch_size} val per iteration, {r.dataset} data, "
        f"order {r.order}, {r.steps} timed iterations after {r.warmup} warm-up"
        + (f", as at epoch {r.epoch}" if r.epoch else ""),
        f"fused cells {'on' if r.fused else 'off'}, cuda graphs {'on' if r.cuda_graphs else 'off'}"
        + (f", compiled cells ({r.compiled_graphs} graphs, {r.compile_s:.1f} s to compile)"
           if r.compiled else "")
        + (", channels-last" if r.channels_last else "") + f"; timing {r.timing}",
        *(f"note: {n}" for n in r.notes),
        "",
        f"{'':<12}{'median ms':>11}{'GFLOP':>10}{'TFLOP/s':>9}",
        f"{'weight step':<12}{r.weight_step_ms:>11.2f}{r.flops_weight_step / 1e9:>10.2f}"
        f"{tflops(r.flops_weight_step, r.weight_step_ms):>9.3f}",
        f"{'arch step':<12}{r.arch_step_ms:>11.2f}{r.flops_arch_step / 1e9:>10.2f}"
        f"{tflops(r.flops_arch_step, r.arch_step_ms) if r.arch_step_ms > 0 else math.nan:>9.3f}",
        f"{'iteration':<12}{r.iteration_ms:>11.2f}{r.flops_iteration / 1e9:>10.2f}"
        f"{r.achieved_tflops:>9.3f}",
        "",
        f"images/s:     {r.images_per_s:,.1f} (train + val images of one iteration / its time;"
        f" wall {r.wall_iteration_ms:.2f} ms per iteration)",
    ]
    if r.inner_steps != 1:
        lines.append(f"train img/s:  {r.train_images_per_s:,.1f} (one arch step per "
                     f"{r.inner_steps} weight steps)")
    lines.append(f"peak memory:  {_gib(r.peak_memory_bytes)} ({r.peak_memory_kind})")
    if r.utilisation is not None:
        util = ", ".join(f"{100 * v:.2f}% of {k} {r.peak_tflops[k]:g} TFLOP/s"
                         for k, v in r.utilisation.items())
        lines.append(f"utilisation:  {util} ({r.peak_reference}; convolutions ran in "
                     f"{r.utilisation_basis})")
    else:
        lines.append(f"utilisation:  n/a ({r.peak_reference})")
    lines.append("FLOPs:        torch's FlopCounterMode, one iteration (matmuls, convolutions, "
                 "attention only; grouped-conv weight gradients corrected)")
    if r.profile is not None:
        lines += ["", *_format_profile(r.profile)]
    return "\n".join(lines)


def _format_profile(profile: dict[str, Any]) -> list[str]:
    """The ``--profile`` part of the human output: counts per step, then its largest items."""
    lines = ["profile (one iteration without graphs; torch.profiler):"]
    for name, p in profile.items():
        kernels = "" if p["kernels"] is None else \
            f", {p['kernels']} kernels, {p['kernel_ms']:.2f} ms of kernel time"
        lines.append(f"  {name} step: {p['aten_ops']} ATen ops{kernels}")
        unit = "kernel" if p["kernels"] is not None else "ATen op"
        for item, calls, ms in p["top"][:6]:
            lines.append(f"    {ms:>9.2f} ms {calls:>5}x  {unit} {item[:70]}")
    return lines
