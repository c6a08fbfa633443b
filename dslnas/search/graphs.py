"""CUDA graphs for the search: capture one whole iteration once, then replay it.

The eager NB201 iteration is bound by the host launching ~10k small kernels. Here one iteration
(architecture step, weight step, both optimiser steps, gradient clipping and the metric sums) is
captured into a CUDA graph and replayed, so a step costs one launch.

Pieces:

* :meth:`Searcher.iteration` with ``keep_grads=True`` -- the iteration the eager loop runs,
  except where capture needs it: the weights' grads are zeroed in place and the hypergradient
  is copied into the architecture parameters' persistent ``.grad``, so no gradient is allocated
  inside a graph; and the weight lr is a device tensor (:class:`TensorLr`) while it runs.
* :class:`TensorLr` -- the weight optimiser's lr as a float32 tensor on the device. The param
  groups keep their float lr (the scheduler, checkpoints and hypergradients read it);
  ``sync()`` writes it into the tensor once per epoch and ``swapped()`` lends the tensor to the
  groups while an iteration runs or is captured. Fused SGD reads a tensor lr on the device (the
  foreach kernel would call ``.item()``).
* :class:`GraphedStep` -- static input buffers that every iteration ``copy_``s its batch into;
  per kind of iteration (architecture frozen / architecture step / weights only / architecture
  step only, the last two for the inner loop of ``inner_steps`` > 1) a few warm-up
  iterations on a side stream, then a capture, then replays; all graphs share one memory pool.
  Warm-up iterations are real iterations on the real batches, so nothing is undone. A batch of
  another shape (the last, partial batch of an epoch) runs the same iteration eagerly. The
  graphs are dropped and captured again when the parameters, optimisers or their state tensors
  change (a DrNAS stage switch, a rebuilt optimiser).
* :func:`attach_graphs` -- what ``search(..., cuda_graphs=...)`` calls.

Graph-safe (:func:`graph_safety` names the first obstacle otherwise):

* every hypergradient: lr (ξ, γ, η) and finite-difference radii stay device tensors, nothing
  is read back to the host; the double-backward ones (Neumann, amended, unrolled ``exact``)
  capture their second backward like any other kernels;
* relaxations ``softmax``, ``softmax_beta`` and ``dirichlet``. Dirichlet samples come from the
  default CUDA generator, which graph capture registers: each replay advances its philox offset
  exactly as the eager kernels would;
* transforms ``partial_channels``, ``node_norm``, ``random_features``, ``progressive``;
* the fused SGD and fused Adam that :class:`Searcher` builds on CUDA. Adam's lr is the constant
  ``a_lr`` and stays a float (baked into the graph; a changed value recaptures); its groups are
  flagged ``capturable`` only while being captured (fused Adam keeps its step count on the
  device either way).

Numerics: a replay runs the same kernels as the eager ``iteration(..., keep_grads=True)``.
Against the plain eager path (``keep_grads=False``) the one difference is the lr: fused SGD
multiplies by the float32 tensor instead of the double, so results can differ in the last bit.
On CPU (no fused kernel) the two paths agree exactly; ``tests/test_graphs.py`` checks it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import torch


if TYPE_CHECKING:
    from .loop import Searcher

__all__ = ["Batch", "GraphUnsupported", "TensorLr", "graph_safety",
           "GraphedStep", "attach_graphs", "WARMUP_ITERATIONS"]

WARMUP_ITERATIONS = 3      # eager iterations per kind before its capture (torch docs use 3)


class Batch(NamedTuple):
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


class GraphUnsupported(RuntimeError):
    """This search cannot run as CUDA graphs; the message says why."""


# ============================================================================================
# the iteration
# ============================================================================================

class TensorLr:
    """The lr of each param group of ``optimizer`` as a 0-dim float32 tensor on ``device``."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.optimizer = optimizer
        self.tensors = [torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
                        for g in optimizer.param_groups]

    def sync(self) -> None:
        """Write the groups' (float) lr into the tensors: once per epoch, after the scheduler."""
        for t, g in zip(self.tensors, self.optimizer.param_groups):
            t.fill_(float(g["lr"]))

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The groups hold the tensors inside the block and their float lr again after it."""
        groups = self.optimizer.param_groups
        saved = [g["lr"] for g in groups]
        try:
            for g, t in zip(groups, self.tensors):
                g["lr"] = t
            yield
        finally:
            for g, lr in zip(groups, saved):
                g["lr"] = lr


# ============================================================================================
# what is graph-safe
# ============================================================================================

def graph_safety(s: "Searcher", *, device: bool = True) -> str | None:
    """None if ``s``'s iteration can be captured, else the first reason it cannot.
    ``device=False``: judge the method only (not the device and the optimisers' kernels)."""
    from ..methods.relaxations import Dirichlet, Softmax, SoftmaxBeta
    from ..methods.transforms import NodeNorm, PartialChannels, Progressive, RandomFeatures
    if device:
        if s.device.type != "cuda":
            return f"CUDA graphs need a CUDA device; this search runs on {s.device.type}"
        if not torch.cuda.is_available():
            return "CUDA is not available"
    if type(s.relaxation) not in (Softmax, SoftmaxBeta, Dirichlet):
        return f"relaxation {s.method.relaxation} is not known to be graph-safe"
    for t in s.transforms:
        if type(t) not in (PartialChannels, NodeNorm, RandomFeatures, Progressive):
            return f"transform {t!r} is not known to be graph-safe"
    if device:
        if not all(g.get("fused") for g in s.w_opt.param_groups):
            return ("the weight optimiser is not fused SGD (the foreach kernel reads a tensor lr "
                    "back to the host)")
        if not all(g.get("fused") for g in s.a_opt.param_groups):
            return "the architecture optimiser is not fused Adam"
    return None


def _signature(s: "Searcher", lr: TensorLr | None) -> list:
    """Everything whose identity a captured graph depends on (compared with ``is``)."""
    sig: list = [s.w_opt, s.a_opt, s.problem, s._sums, lr, s.supernet.training,
                 tuple(getattr(t, "stage", None) for t in s.transforms),
                 tuple(float(g["lr"]) for g in s.a_opt.param_groups)]
    sig += s.weights
    sig += s.arch
    sig += list(s.supernet.buffers())
    for opt, params in ((s.w_opt, s.weights), (s.a_opt, s.arch)):
        for p in params:
            sig += [v for v in opt.state.get(p, {}).values() if torch.is_tensor(v)]
    return sig


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x is y or (isinstance(x, (tuple, bool, float)) and x == y)
                                    for x, y in zip(a, b))


# ============================================================================================
# the graphed step
# ============================================================================================

class GraphedStep:
    """Runs :class:`Searcher` iterations as CUDA graph replays; see the module doc.

    ``capture=False`` gives the eager twin: the same iteration, static buffers and tensor lr,
    without graphs (any device); the GPU check compares it with the graphs bit for bit.
    Raises :class:`GraphUnsupported` (with the reason) if ``capture`` and the search cannot be
    captured. Use through ``searcher.graphed = GraphedStep(searcher)``: ``train_epoch`` then
    runs each iteration through :meth:`step`.
    """

    def __init__(self, searcher: "Searcher", *, capture: bool = True,
                 warmup: int = WARMUP_ITERATIONS, log: Callable[[str], None] | None = None):
        if capture:
            reason = graph_safety(searcher)
            if reason is not None:
                raise GraphUnsupported(reason)
        self.searcher = searcher
        self.device = searcher.device
        self.capture = capture
        self.warmup = max(1, int(warmup))
        self.log = log
        self.failed: str | None = None          # why capturing was given up (logged once)
        self.static: Batch | None = None
        self._full: tuple[int, int] | None = None
        self._lr: TensorLr | None = None
        self._graphs: dict[tuple[bool, bool, bool], tuple[torch.cuda.CUDAGraph, list]] = {}
        self._warm: dict[tuple[bool, bool, bool], int] = {}
        self._announced = False
        if capture:
            self.stream = torch.cuda.Stream(device=self.device)
            self.pool = torch.cuda.graph_pool_handle()

    # ---- per epoch ------------------------------------------------------------------------
    def begin_epoch(self, data=None) -> None:
        """Drop graphs the state has outgrown, and write this epoch's lr into the tensor."""
        s = self.searcher
        if self._lr is None or self._lr.optimizer is not s.w_opt:
            self._lr = TensorLr(s.w_opt, self.device)
        sig = _signature(s, self._lr)
        for kind in [k for k, (_, gsig) in self._graphs.items() if not _same(gsig, sig)]:
            del self._graphs[kind]
            self._warm.pop(kind, None)
        self._lr.sync()
        train, val = getattr(data, "train", None), getattr(data, "val", None)
        if train is not None and val is not None:
            self._full = (int(train.batch_size), int(val.batch_size))

    # ---- per iteration --------------------------------------------------------------------
    def step(self, batch: Batch, *, do_arch: bool, frozen: bool, weights: bool = True) -> None:
        """One iteration on ``batch`` (``Searcher.iteration``): a replay once this kind is
        captured."""
        s = self.searcher
        if self._lr is None:
            self.begin_epoch()
        kind = (bool(do_arch), bool(frozen), bool(weights))
        if self._fits(batch):
            for dst, src in zip(self.static, batch):
                dst.copy_(src, non_blocking=True)
            self._static_step(kind)
        else:
            self._run(kind, batch)                   # another shape: the same iteration, eager
        if weights:
            s._counts[0] += int(batch.y_train.shape[0])
        if do_arch or frozen:
            s._counts[1] += int(batch.y_val.shape[0])

    def _fits(self, b: Batch) -> bool:
        if self.static is None:
            if self._full is not None and (b.y_train.shape[0], b.y_val.shape[0]) != self._full:
                return False
            self.static = Batch(*(torch.empty_like(t) for t in b))
            return True
        return all(t.shape == st.shape and t.dtype == st.dtype and t.device == st.device
                   for t, st in zip(b, self.static))

    def _run(self, kind: tuple[bool, bool, bool], batch: Batch, capturing: bool = False) -> None:
        """The iteration with the tensor lr; host counts untouched (``step`` sets them)."""
        s = self.searcher
        counts = list(s._counts)
        a_groups = s.a_opt.param_groups
        capturable = [g.get("capturable", False) for g in a_groups]
        try:
            if capturing:                            # Adam's capture check; fused ignores it
                for g in a_groups:
                    g["capturable"] = True
            with self._lr.swapped():
                s.iteration(*batch, do_arch=kind[0], frozen=kind[1], weights=kind[2],
                            keep_grads=True)
        finally:
            for g, c in zip(a_groups, capturable):
                g["capturable"] = c
            s._counts[:] = counts

    def _static_step(self, kind: tuple[bool, bool, bool]) -> None:
        entry = self._graphs.get(kind)
        if entry is not None:
            entry[0].replay()
            return
        if not self.capture or self.failed is not None:
            self._run(kind, self.static)
            return
        n = self._warm.get(kind, 0)
        if n < self.warmup:                          # real iterations, on the capture stream
            self._warm[kind] = n + 1
            main = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(main)
            with torch.cuda.stream(self.stream):
                self._run(kind, self.static)
            main.wait_stream(self.stream)
            return
        try:
            graph = self._capture(kind)
        except Exception as e:                       # noqa: BLE001 - fall back, say why once
            self._give_up(f"capturing the iteration failed: {type(e).__name__}: {e}")
            self._run(kind, self.static)
            return
        self._graphs[kind] = (graph, _signature(self.searcher, self._lr))
        if not self._announced and self.log is not None:
            self._announced = True
            self.log("cuda graphs: on (one replay per search iteration)")
        graph.replay()                               # capturing did not run the iteration

    def _capture(self, kind: tuple[bool, bool, bool]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            self._run(kind, self.static, capturing=True)
        return graph

    def _give_up(self, reason: str) -> None:
        self.failed = reason
        self._graphs.clear()
        try:
            torch.cuda.synchronize(self.device)
        except Exception:                            # noqa: BLE001
            pass
        if self.log is not None:
            self.log(f"cuda graphs: off ({reason}); the search goes on eagerly")


def attach_graphs(s: "Searcher", cuda_graphs: bool | None, *, deterministic: bool = False,
                  capture: bool = True,
                  log: Callable[[str], None] | None = None) -> GraphedStep | None:
    """Set ``s.graphed`` as ``search(cuda_graphs=...)`` asks; return it (None: eager).

    ``None`` (default): on for a CUDA search of a graph-safe method without ``deterministic``;
    off quietly elsewhere, with one log line when a CUDA search cannot use them. ``True``: on
    where possible, else one log line with the reason. ``False``: off. ``capture=False``
    (tests): the graphs' eager twin, on any device."""
    s.graphed = None
    if cuda_graphs is False:
        return None
    if cuda_graphs is None and ((capture and s.device.type != "cuda") or deterministic):
        return None
    try:
        s.graphed = GraphedStep(s, capture=capture, log=log)
    except GraphUnsupported as e:
        if log is not None:
            log(f"cuda graphs: off ({e})")
    return s.graphed
