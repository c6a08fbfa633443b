"""What one search step dispatches: operator and kernel counts from ``torch.profiler``.

A supernet step on the GPU is bound by how many kernels it launches and how long each runs,
not by its FLOPs (docs/performance.md). :func:`profile_steps` runs each step of one iteration
under the profiler and summarises it per step:

* ``aten_ops``: top-level ATen operator calls (forward and backward), what eager PyTorch
  dispatches: a dispatch count, not a kernel count (views, ``unbind`` and allocations launch
  none; an op may launch several). Under compiled cells the fused Triton/C++ kernels are not
  ATen calls, so this counts only what runs outside them (extern convolutions, the optimiser,
  glue).
* ``kernels`` and ``kernel_ms`` (CUDA only): device kernels (memcpy/memset included; not the
  user annotations Kineto mirrors onto the GPU timeline, such as ``Optimizer.step#SGD.step``,
  which span other kernels) and the sum of their durations: the GPU's busy time in the step. A step much longer than its kernel time
  is waiting on launches or the host; one close to it is bound by the kernels themselves.
* ``top``: the largest items: kernels by device time on CUDA, ATen ops by CPU time elsewhere,
  each ``[name, calls, ms]``.

The counts are those of the steps the search runs (the same compiled code a CUDA graph
captures); the profiled iteration itself runs without graphs, and the profiler's own overhead
makes its times longer than the timed ones.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

__all__ = ["profile_steps", "summarise"]

TOP = 12


def _top_level(event) -> bool:
    """An ATen op not called from inside another ATen op."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def summarise(events, cuda: bool) -> dict[str, Any]:
    """Counts of one profiled step (``prof.events()``), as in the module doc."""
    from torch.autograd import DeviceType
    ops = [e for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")
           and _top_level(e)]
    out: dict[str, Any] = {"aten_ops": len(ops), "kernels": None, "kernel_ms": None}
    if cuda:
        kernels = [e for e in events if e.device_type == DeviceType.CUDA
                   and not e.is_user_annotation]
        timed = [(e.name, e.time_range.elapsed_us() / 1e3) for e in kernels]
        out["kernels"] = len(kernels)
        out["kernel_ms"] = sum(ms for _, ms in timed)
    else:
        timed = [(e.name, e.cpu_time_total / 1e3) for e in ops]
    groups: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for name, ms in timed:
        groups[name][0] += 1
        groups[name][1] += ms
    top = sorted(groups.items(), key=lambda kv: -kv[1][1])[:TOP]
    out["top"] = [[name, int(n), round(ms, 4)] for name, (n, ms) in top]
    return out


def profile_steps(order, batches, device, trace_dir=None) -> dict[str, Any]:
    """Profile each ``(name, step)`` of ``order`` once on ``batches`` (train, val), each in a
    profiler session of its own (so every event belongs to one step); a summary per step name.
    ``trace_dir``: also write each step as a Chrome trace, ``NAME_step.json`` there."""
    from pathlib import Path

    import torch
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    tb, vb = batches
    result: dict[str, Any] = {}
    for name, step in order:
        with profile(activities=activities) as prof:
            step(tb, vb)
            if cuda:
                torch.cuda.synchronize(device)
        result[name] = summarise(prof.events(), cuda)
        if trace_dir:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(Path(trace_dir) / f"{name}_step.json"))
    return result
