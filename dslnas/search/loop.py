"""The search loop: alternate architecture and weight steps, log, derive, checkpoint.

``search(ir, method, data, run, ...)`` trains the supernet of ``ir`` with the parts of ``method``
(relaxation, hypergradient, supernet transforms, discretizer, schedule) on ``data`` and writes
everything into ``run`` (a :class:`~dslnas.search.rundir.RunDir`).

Per iteration (reference methods.md §1.1, §2a), in the order ``schedule.order``:

* architecture step, on the val batch (the train batch feeds second-order terms): the
  hypergradient strategy returns dL/dα for α and the relaxation's extra parameters (e.g. PC-DARTS'
  edge β), Adam applies it. Skipped in the warm-up epochs;
* weight step, on the train batch: SGD (momentum, Nesterov, weight decay) with the gradient norm
  of the weights clipped; the edge weights are computed without autograd, so a weight step never
  touches α, and the hypergradient restores w bit-exactly, so an architecture step never touches w.

With ``inner_steps`` T > 1 (iDARTS, Zhang et al.) an epoch is a pass over the val stream instead:
per val batch, T weight steps on train batches, then the architecture step with a fresh one.

The weight lr follows a cosine from ``w_lr`` to ``w_lr_min`` over the epochs (stepped at the end
of each epoch). Nothing in the step reads a value back to the host: loss and accuracy sums stay
in device tensors that are read once per epoch. After each epoch: derive the genotype, look it up
in the benchmark table if one is given, log a metrics line and write a checkpoint that
``resume_state`` restores completely. Checkpoints can also be taken inside an epoch, after any
iteration (``checkpoint_every``, ``should_stop``): they add the epoch's metric sums, and the data
streams' saved positions make the resumed epoch go on with the next batch.
"""
from __future__ import annotations

import gc
import math
import os
import random
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..genotype import Genotype, GenotypeError, from_dict, to_dict, to_nb201_string
from ..ir.model import SpaceIR
from ..methods import hypergrad as hg
from ..methods.spec import MethodSpec, Part, instantiate
from . import ada
from . import checkpoint as ckpt
from .graphs import Batch, attach_graphs
from .loader import SearchData
from .rundir import RunDir

__all__ = ["search", "SearchResult", "SearchError", "MethodError", "Parts", "make_parts",
           "make_hypergradient", "check_method", "seed_everything", "Searcher"]


class _Stopped(Exception):
    """Raised after an iteration when ``should_stop`` asked for a stop (the checkpoint is saved)."""


class SearchError(RuntimeError):
    """The search cannot go on (diverged, or a checkpoint that does not fit this run)."""


class MethodError(ValueError):
    """A method whose parts are unknown, badly configured, or do not fit the space."""


# ============================================================================================
# parts
# ============================================================================================

HYPERGRADIENTS = {"first_order": hg.FirstOrder, "unrolled": hg.Unrolled,
                  "neumann": hg.Neumann, "amended": hg.Amended}


def make_hypergradient(part: Part):
    try:
        return instantiate(part, HYPERGRADIENTS, "hypergradient")
    except (KeyError, TypeError, ValueError) as e:
        raise MethodError(str(e.args[0] if isinstance(e, KeyError) else e)) from None


@attrs.define
class Parts:
    relaxation: Any
    hypergradient: Any
    transforms: list
    discretizer: Any


def make_parts(method: MethodSpec) -> Parts:
    """Instantiate the parts of ``method``; raise :class:`MethodError` for anything wrong."""
    from ..methods.discretizers import make_discretizer
    from ..methods.relaxations import make_relaxation
    from ..methods.transforms import make_transforms

    def call(factory, arg, what):
        try:
            return factory(arg)
        except (KeyError, TypeError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise MethodError(f"method {method.name!r}: {what}: {msg}") from None

    relaxation = call(make_relaxation, method.relaxation, f"relaxation {method.relaxation}")
    transforms = call(make_transforms, tuple(method.transforms),
                      "transforms " + (", ".join(map(str, method.transforms)) or "-"))
    discretizer = call(make_discretizer, method.discretizer, f"discretizer {method.discretizer}")
    return Parts(relaxation, make_hypergradient(method.hypergradient), list(transforms),
                 discretizer)


# ============================================================================================
# setup helpers
# ============================================================================================

def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); with ``deterministic`` also make torch
    choose deterministic kernels (CUDA matmuls need CUBLAS_WORKSPACE_CONFIG set first)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


_DETERMINISM = {"depth": 0, "saved": None}     # searches in lockstep share the flags


@contextmanager
def _determinism(deterministic: bool, device: torch.device):
    """Set the global determinism flags for the duration of a search, then restore them. Nested
    (searches in lockstep, which share one setting), the outermost saves and the last to leave
    restores: a search that ends first must not reset the flags under the others."""
    if _DETERMINISM["depth"] == 0:
        _DETERMINISM["saved"] = (torch.are_deterministic_algorithms_enabled(),
                                 torch.is_deterministic_algorithms_warn_only_enabled(),
                                 torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    _DETERMINISM["depth"] += 1
    try:
        if not deterministic and device.type == "cuda":
            torch.backends.cudnn.benchmark = True       # static shapes: let cuDNN pick kernels
        yield
    finally:
        _DETERMINISM["depth"] -= 1
        if _DETERMINISM["depth"] == 0:
            saved = _DETERMINISM["saved"]
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


class _GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: same values, and a backward that is deterministic
    on CUDA (adaptive pooling's is not, so --deterministic would refuse it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _deterministic_pooling(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
            setattr(module, name, _GlobalAvgPool())
        else:
            _deterministic_pooling(child)


def _optimizer(cls, params, device: torch.device, kwargs: dict):
    """``cls`` with fused kernels on CUDA where torch has them, else the foreach ones."""
    if device.type == "cuda":
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            return cls(params, foreach=True, **kwargs)
    return cls(params, **kwargs)


def _as_dict(extra) -> dict[str, torch.Tensor]:
    if extra is None:
        return {}
    if isinstance(extra, Mapping):
        return dict(extra.items())
    if isinstance(extra, nn.Module):
        return dict(extra.named_parameters())
    return {str(i): p for i, p in enumerate(extra)}


def fused_fits(parts: Parts, ir: SpaceIR | None = None) -> bool:
    """The fused cell (supernet/fused.py) computes the same function with fewer kernels; it fits
    methods that need no per-edge modules in the search (plain or partial-channel edges, DrNAS'
    progressive pruning and widening included; the decorrelation discretizer scores on a plain
    twin, ``Supernet.plain_twin``) and whose initialisation does not depend on a conv's output
    width. ``ir``: the space (None: assume it has pool BNs)."""
    from ..methods.transforms import RandomFeatures, merge_build_kwargs
    from ..supernet.partial import partial_K
    # Kaiming by fan-out would see the stacked convs' n-times larger fan-out; the fused cell
    # runs a node's pools (and their BN) once for all its edges, so per-edge γ, β need them apart
    pool_bns = ir is None or _has_pool_bns(ir)
    per_edge = any(isinstance(t, RandomFeatures) and (t.init == "kaiming_normal"
                                                       or (t.pool_bn_affine and pool_bns))
                   for t in parts.transforms)
    edge_cls = merge_build_kwargs(parts.transforms).get("edge_cls")
    return (edge_cls is None or partial_K(edge_cls) is not None) and not per_edge


def _has_pool_bns(ir: SpaceIR) -> bool:
    """Whether the supernet puts a BN after a pooling op (supernet/mixed.py: ``pool_bn`` and a
    candidate of kind "pool" in a cell the network uses)."""
    from ..ops import op_kind
    return bool(ir.bn_policy["pool_bn"]) and any(
        op_kind(op) == "pool" for c in ir.used_cells for e in c.edges for op in e.candidates)


def compile_by_default(device: torch.device, deterministic: bool) -> bool:
    """Compiled cells unless asked otherwise: on a GPU, and not for deterministic runs."""
    return device.type == "cuda" and not deterministic


def _build_supernet(ir: SpaceIR, parts: Parts, stages: list | None = None,
                    fused: bool | None = None):
    """Build with the transforms' keyword arguments and let them prepare the supernet.
    ``stages``: per transform, the stage to build at (a resumed DrNAS progressive run).
    ``fused``: use the fused cell (None: wherever it fits)."""
    from ..methods.transforms import merge_build_kwargs
    from ..supernet.network import build
    for t, stage in zip(parts.transforms, stages or []):
        if stage is not None and hasattr(t, "stage"):
            t.stage = int(stage)
    fits = fused_fits(parts, ir)
    if fused and not fits:
        raise MethodError("the fused cell does not fit this method (it needs per-edge modules)")
    try:
        net = build(ir, **merge_build_kwargs(parts.transforms),
                    fused=fits if fused is None else fused)
        for t in parts.transforms:
            t.prepare(net)
            net.prepared_by.append(t.prepare)     # plain_twin repeats it on its copy
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise MethodError(f"the method does not fit space {ir.name!r}: {msg}") from None
    return net


def _stages(transforms) -> list:
    return [getattr(t, "stage", None) for t in transforms]


def check_method(ir: SpaceIR, method: MethodSpec) -> None:
    """Raise :class:`MethodError` unless ``method`` builds a supernet of ``ir`` (CPU, discarded).

    Checks the parts exist and their options are valid, the transforms fit the space (e.g. K
    divides the widths), and the relaxation's strengths give a genotype of this space."""
    import warnings
    parts = make_parts(method)
    if method.schedule.hessian_every and parts.relaxation.samples:
        raise MethodError(f"method {method.name!r}: its relaxation {method.relaxation} samples "
                          f"the edge weights, so the validation loss has no Hessian in α to "
                          f"track (hessian_every, early_stop need a deterministic relaxation)")
    rng = torch.get_rng_state()
    try:
        with warnings.catch_warnings():     # the real build warns once more, in the run
            warnings.simplefilter("ignore")
            net = _build_supernet(ir, parts)
        extra = _as_dict(parts.relaxation.extra_parameters(net))
        parts.relaxation.genotype(net, extra)
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, MethodError):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise MethodError(f"method {method.name!r} does not fit space {ir.name!r}: {msg}") from None
    finally:
        torch.set_rng_state(rng)


# ============================================================================================
# result
# ============================================================================================

@attrs.frozen
class SearchResult:
    genotype: Genotype
    alphas: dict[str, torch.Tensor]          # final α per group (CPU)
    strengths: dict[str, torch.Tensor]       # what the discretizer ranked (CPU)
    history: list[dict]                      # the metrics.jsonl records, one per epoch
    benchmark: dict[str, float] | None       # benchmark accuracies of the final genotype
    seconds: float                           # search time, summed over resumed sessions
    epochs: int                              # epochs completed
    finished: bool                           # False when stopped early (stop_after)
    run_dir: Path
    interrupted: str | None = None           # why should_stop stopped it (e.g. "SIGTERM")
    early_stop: dict | None = None           # DARTS-ES' first decision (it stopped the search
                                             # in the "stop" mode)
    rollbacks: list[dict] = attrs.Factory(list)  # DARTS-ADA's rollbacks


# ============================================================================================
# the searcher
# ============================================================================================

class Searcher:
    """The state of one search: supernet, parameters, optimisers, scheduler, counters.

    ``search()`` is the entry point; this class is public so tests and tools can take single
    steps (``weight_step``, ``arch_step``) and inspect the state.
    """

    def __init__(self, ir: SpaceIR, method: MethodSpec, *, device: str | torch.device = "cpu",
                 seed: int = 0, deterministic: bool = False, channels_last: bool = False,
                 stages: list | None = None, fused: bool | None = None,
                 compile_cells: bool | None = False):
        self.ir = ir
        self.method = method
        self.schedule = method.schedule
        self.device = torch.device(device)
        self.seed = seed
        self.deterministic = deterministic
        self.channels_last = channels_last
        seed_everything(seed, deterministic)
        self.parts = make_parts(method)
        self.relaxation = self.parts.relaxation
        self.hypergradient = self.parts.hypergradient
        # compiled graphs support one backward: a hypergradient with a second one runs the
        # cells' eager code (arch_step)
        self._double_backward = not hg.single_backward(self.hypergradient)
        self.transforms = self.parts.transforms
        self.discretizer = self.parts.discretizer
        self.supernet = _build_supernet(ir, self.parts, stages, fused)
        if deterministic and self.device.type == "cuda":
            _deterministic_pooling(self.supernet)
        self.supernet.to(self.device)
        if channels_last:
            self.supernet.to(memory_format=torch.channels_last)
        if compile_cells is None:
            compile_cells = compile_by_default(self.device, deterministic)
        if compile_cells:
            self.compile_cells()
        self.extra = _as_dict(self.relaxation.extra_parameters(self.supernet))
        for p in self.extra.values():
            if p.device != self.device:
                p.data = p.data.to(self.device)
        self.epoch = 0            # epochs completed
        self.in_epoch: dict | None = None   # a resumed save's place inside the next epoch
        self.global_step = 0      # weight steps completed (iterations unless inner_steps > 1)
        self.elapsed = 0.0        # seconds of search, over all sessions
        self.curvature: list[dict] = []   # measured: {"epoch", "eig", "genotype"} (DARTS-ES)
        self.early_stopped: dict | None = None    # DARTS-ES' first decision (curvature.darts_es)
        # DARTS-ADA (.ada): w's weight decay now, the rollbacks so far, a decision to carry out
        self.w_weight_decay = self.schedule.w_weight_decay
        self.rollbacks: list[dict] = []
        self.ada_pending: dict | None = None
        self._build_optimisers()
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_opt, T_max=max(1, self.schedule.epochs), eta_min=self.schedule.w_lr_min)
        self.problem = hg.Bilevel(self.weights, self.arch, self._train_loss, self._val_loss,
                                  self.w_opt)
        self._sums = torch.zeros(4, device=self.device)   # train loss, train correct, val ...
        self._counts = [0, 0]                              # train / val samples (host ints)
        self._record_val = False
        self.graphed = None     # a graphs.GraphedStep: train_epoch runs its iterations through it

    # ---- parameters and optimisers --------------------------------------------------------
    def _trainable_weights(self) -> list[nn.Parameter]:
        from ..methods.transforms import trainable_parameters
        arch_ids = {id(p) for p in self.supernet.arch_parameters()}
        arch_ids |= {id(p) for p in self.extra.values()}
        return [p for p in trainable_parameters(self.transforms, self.supernet)
                if id(p) not in arch_ids]

    def _build_optimisers(self) -> None:
        s = self.schedule
        self.weights = self._trainable_weights()
        self.arch = list(self.supernet.arch_parameters()) + [
            p for p in self.extra.values() if id(p) not in {id(a) for a in
                                                            self.supernet.arch_parameters()}]
        if not self.weights:
            raise MethodError("the method leaves no supernet weight to train")
        w_kw = dict(lr=s.w_lr, momentum=s.w_momentum, nesterov=s.w_nesterov and s.w_momentum > 0,
                    weight_decay=self.w_weight_decay)
        a_kw = dict(lr=s.a_lr, betas=tuple(s.a_betas),
                    weight_decay=self.relaxation.arch_weight_decay(s.a_weight_decay))
        self.w_opt = _optimizer(torch.optim.SGD, self.weights, self.device, w_kw)
        self.a_opt = _optimizer(torch.optim.Adam, self.arch, self.device, a_kw)

    def compile_cells(self) -> None:
        """``torch.compile`` the supernet's cells for this search's batch size. A hypergradient
        that differentiates twice (Neumann, amended, unrolled with ``exact``) runs its
        architecture step in the cells' eager code (``arch_step``), the weight steps compiled."""
        self.supernet.compile_cells(self.schedule.batch_size)

    @property
    def is_fused(self) -> bool:
        return self.supernet.is_fused

    @property
    def es_stopped(self) -> bool:
        """Whether DARTS-ES has stopped this search (in its "stop" mode)."""
        return self.schedule.early_stop == "stop" and self.early_stopped is not None

    def es_acts(self) -> bool:
        """Whether a DARTS-ES decision now would act: "stop" always; "simulate" only the first;
        "ada" while the weight decay has a raise left (R-DARTS' last round runs to the end)."""
        mode = self.schedule.early_stop
        return (mode == "stop" or (mode == "simulate" and self.early_stopped is None)
                or (mode == "ada" and not ada.at_max(self.w_weight_decay, self.schedule)))

    @property
    def lr(self) -> float:
        return float(self.w_opt.param_groups[0]["lr"])

    # ---- losses ---------------------------------------------------------------------------
    def edge_weights(self) -> dict[str, torch.Tensor]:
        return self.relaxation.weights(self.supernet, self.extra)

    def _logits(self, x: torch.Tensor, weights=None) -> torch.Tensor:
        return self.supernet(x, self.edge_weights() if weights is None else weights)

    def _train_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self._logits(x), y)

    def _val_loss(self, batch) -> torch.Tensor:
        x, y = batch
        logits = self._logits(x)
        loss = F.cross_entropy(logits, y)
        if self._record_val:                 # the first val forward of an arch step
            self._record_val = False
            self._accumulate(2, loss, logits, y)
        reg = self.relaxation.regulariser(self.supernet, self.extra)
        return loss if reg is None else loss + reg

    def _accumulate(self, slot: int, loss: torch.Tensor, logits: torch.Tensor,
                    y: torch.Tensor) -> None:
        n = y.shape[0]
        self._sums[slot].add_(loss.detach(), alpha=n)
        self._sums[slot + 1].add_((logits.detach().argmax(1) == y).sum())
        self._counts[slot // 2] += n

    # ---- steps ----------------------------------------------------------------------------
    def weight_step(self, x: torch.Tensor, y: torch.Tensor, *, keep_grads: bool = False) -> None:
        """One SGD step on the weights; α (and the relaxation's extras) stay untouched.
        ``keep_grads``: zero the grads in place instead of freeing them (CUDA graphs allocate
        nothing inside a capture)."""
        with torch.no_grad():
            ew = self.edge_weights()
        logits = self.supernet(x, ew)
        loss = F.cross_entropy(logits, y)
        self.w_opt.zero_grad(set_to_none=not keep_grads)
        loss.backward()
        if self.schedule.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.weights, self.schedule.grad_clip,
                                     foreach=self.device.type == "cuda" or None)
        self.w_opt.step()
        self._accumulate(0, loss, logits, y)

    def arch_step(self, train_batch, val_batch, *, keep_grads: bool = False) -> None:
        """One Adam step on α and extras with the method's hypergradient; w is restored.
        ``keep_grads``: copy the hypergradient into persistent ``.grad`` tensors (for graphs)."""
        self._record_val = True
        try:
            with self.supernet.eager_cells() if self._double_backward else nullcontext():
                grads = self.hypergradient(self.problem, train_batch, val_batch)
        finally:
            self._record_val = False
        for p, g in zip(self.arch, grads):
            if not keep_grads:
                p.grad = g
            elif p.grad is None:                        # the first (eager) iteration
                p.grad = g.detach().clone()
            else:
                p.grad.copy_(g)
        self.a_opt.step()
        if not keep_grads:
            self.a_opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _monitor_val(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Val metrics while α is frozen (warm-up): a forward pass like the arch step's."""
        logits = self._logits(x)
        self._accumulate(2, F.cross_entropy(logits, y), logits, y)

    def iteration(self, xt, yt, xv, yv, *, do_arch: bool, frozen: bool, weights: bool = True,
                  keep_grads: bool = False) -> None:
        """One search iteration on a train and a val batch: the architecture step (if
        ``do_arch``, before or after the weight step as ``schedule.order`` says), the weight
        step (unless not ``weights``), and while α is ``frozen`` the val metrics. The eager loop
        and the CUDA graphs (``GraphedStep``, with ``keep_grads``) both run this."""
        arch_first = self.schedule.order == "arch_first"
        if do_arch and arch_first:
            self.arch_step((xt, yt), (xv, yv), keep_grads=keep_grads)
        if weights:
            self.weight_step(xt, yt, keep_grads=keep_grads)
        if do_arch and not arch_first:
            self.arch_step((xt, yt), (xv, yv), keep_grads=keep_grads)
        if frozen:
            self._monitor_val(xv, yv)

    def arch_frozen(self, epoch: int) -> bool:
        """Whether α is frozen in (0-based) ``epoch``: the schedule's warm-up, or a transform's
        (DrNAS' per-stage warm-up)."""
        if epoch < self.schedule.warmup_epochs:
            return True
        return any(t.arch_frozen(epoch) for t in self.transforms if hasattr(t, "arch_frozen"))

    def iterations(self, data: SearchData) -> int:
        """Iterations in one epoch of ``train_epoch`` (the progress bar's unit)."""
        return len(data.val) if self.schedule.inner_steps > 1 else len(data)

    def train_epoch(self, data: SearchData, on_step: Callable[[], None] | None = None) -> None:
        """One epoch. Normally one pass over the train stream, each train batch paired with a
        val batch (with CUDA graphs each iteration is a ``GraphedStep.step``); with
        ``inner_steps`` T > 1 the inner-loop epoch of iDARTS (Zhang et al.) instead."""
        self.supernet.train()
        frozen = self.arch_frozen(self.epoch)
        graphed = self.graphed
        if graphed is not None:
            graphed.begin_epoch(data)

        def step(xt, yt, xv, yv, **kind) -> None:
            if graphed is not None:
                graphed.step(Batch(xt, yt, xv, yv), **kind)
            else:
                self.iteration(xt, yt, xv, yv, **kind)

        if self.schedule.inner_steps > 1:
            self._inner_loop_epoch(data, int(self.schedule.inner_steps), frozen, step, on_step)
        else:
            for xt, yt, xv, yv in data:
                step(xt, yt, xv, yv, do_arch=not frozen, frozen=frozen)
                self.global_step += 1
                if on_step is not None:
                    on_step()
        if graphed is not None and graphed.failed is not None:
            self.graphed = None                         # the next epochs run eagerly

    def _inner_loop_epoch(self, data: SearchData, T: int, frozen: bool, step: Callable,
                          on_step: Callable[[], None] | None) -> None:
        """iDARTS (Zhang et al., reference §7a): one pass over the val stream, one α step per
        val batch; before it, T weight steps on the next T train batches (the train stream
        cycles, reshuffled each time round), and the α step's H and M on one more, fresh train
        batch that no weight step has used. ``schedule.order`` plays no part here. ``step``
        runs one ``iteration`` (through the CUDA graphs when they are on)."""
        for xv, yv in data.val:
            for _ in range(T):
                xt, yt = data.train.next()
                step(xt, yt, xv, yv, do_arch=False, frozen=False)
                self.global_step += 1
            if frozen:                                  # the val metrics only
                step(xt, yt, xv, yv, do_arch=False, frozen=True, weights=False)
            else:
                step(*data.train.next(), xv, yv, do_arch=True, frozen=False, weights=False)
            if on_step is not None:
                on_step()

    def epoch_metrics(self) -> dict[str, float | None]:
        """Mean loss / accuracy (%) of the epoch just trained; the one host sync of the epoch."""
        sums = self._sums.tolist()
        (nt, nv), out = self._counts, {}
        out["train_loss"] = sums[0] / nt if nt else None
        out["train_acc"] = 100.0 * sums[1] / nt if nt else None
        out["val_loss"] = sums[2] / nv if nv else None
        out["val_acc"] = 100.0 * sums[3] / nv if nv else None
        self._sums.zero_()
        self._counts = [0, 0]
        return out

    # ---- transforms with stages (DrNAS progressive) ---------------------------------------
    def ramp(self, final: float) -> float:
        """R-DARTS' linear ramp: ``final · epoch / (epochs - 1)`` in (0-based) ``self.epoch``,
        0 in the first epoch and ``final`` in the last (and after it: ``bench --epoch``)."""
        last = max(1, self.schedule.epochs - 1)
        return final * min(self.epoch, last) / last

    def begin_epoch(self) -> None:
        """Set this epoch's search drop-path (R-DARTS) and move stage transforms to its stage
        (DrNAS: prune, widen, carry the momentum buffers in place), then re-read the trainable
        weights."""
        dp = self.schedule.drop_path
        self.supernet.set_drop_path(self.ramp(dp), active=dp > 0)
        changed = False
        for t in self.transforms:
            if not (hasattr(t, "advance") and hasattr(t, "stage_at")):
                continue
            while t.stage < t.stage_at(self.epoch):
                t.advance(self.supernet, self.w_opt,
                          strengths=self.relaxation.strengths(self.supernet, self.extra))
                changed = True
        if changed:
            if self.channels_last:
                self.supernet.to(memory_format=torch.channels_last)
            self.weights = self._trainable_weights()
            in_opt = {id(p) for g in self.w_opt.param_groups for p in g["params"]}
            if in_opt != {id(p) for p in self.weights}:
                raise SearchError("a stage change left the weight optimiser out of step with "
                                  "the supernet's trainable weights")
            self.problem = hg.Bilevel(self.weights, self.arch, self._train_loss, self._val_loss,
                                      self.w_opt)

    def rebuild_optimisers(self, w_state: dict | None = None, a_state: dict | None = None,
                           sched_state: dict | None = None) -> None:
        """New optimisers over the current parameters; the lr curve continues where it was.
        With states given (resume), they are loaded into the new optimisers and scheduler."""
        if sched_state is None:
            sched_state = self.scheduler.state_dict()
        lr = self.lr
        self._build_optimisers()
        # the scheduler's constructor resets the lr to w_lr: load the states after it
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.w_opt, T_max=max(1, self.schedule.epochs), eta_min=self.schedule.w_lr_min)
        self.scheduler.load_state_dict(sched_state)
        if w_state is not None:
            self.w_opt.load_state_dict(w_state)
        else:
            for g in self.w_opt.param_groups:
                g["lr"] = lr
        if a_state is not None:
            self.a_opt.load_state_dict(a_state)
        self.problem = hg.Bilevel(self.weights, self.arch, self._train_loss, self._val_loss,
                                  self.w_opt)

    # ---- deriving -------------------------------------------------------------------------
    def _discretizer_batches(self) -> int:
        return int(getattr(self.discretizer, "batches", 4))

    def strengths(self) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: v.detach().float().cpu()
                    for k, v in self.relaxation.strengths(self.supernet, self.extra).items()}

    def dominant_eigenvalue(self, data: SearchData) -> float:
        """The largest eigenvalue of ∇²_α L_val on the first held-out val batch, as RobustDARTS
        tracks it (:mod:`.curvature`); the search's state and random stream are untouched."""
        from .curvature import arch_eigenvalue
        return arch_eigenvalue(self, next(_heldout_batches(data, 1)), self.schedule.lanczos_steps)

    def alphas(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.supernet.alphas.items()}

    def genotype(self, data: SearchData | None = None) -> Genotype:
        batches = None
        if getattr(self.discretizer, "needs_data", False):
            if data is None:
                raise SearchError(f"discretizer {self.method.discretizer} needs data")
            batches = _heldout_batches(data, self._discretizer_batches())
        was_training = self.supernet.training
        try:
            with torch.no_grad(), self.supernet.no_drop_path():
                g = self.discretizer.derive(self.supernet, self.relaxation, self.extra, batches)
        except GenotypeError as e:
            raise SearchError(f"cannot derive a genotype after epoch {self.epoch}: {e}; the "
                              f"search diverged (try a lower w_lr or a_lr)") from None
        finally:
            self.supernet.train(was_training)
        return g

    # ---- checkpoint -----------------------------------------------------------------------
    def state_dict(self, data: SearchData | None = None, in_epoch: dict | None = None) -> dict:
        """Everything a resume needs. ``in_epoch`` (``{"iterations", "seconds"}``): the save is
        taken inside an epoch, after that many of its iterations; the epoch's metric sums are
        saved too, and the data streams' positions say where the epoch goes on."""
        extra = {}
        if in_epoch is not None:
            extra["in_epoch"] = {"iterations": int(in_epoch["iterations"]),
                                 "seconds": float(in_epoch["seconds"]),
                                 "sums": self._sums.detach().cpu(),
                                 "counts": list(self._counts)}
        return extra | {
            "format": "dslnas-search",
            "space": self.ir.name,
            "method": self.method.name,
            "seed": self.seed,
            "epoch": self.epoch,
            "epochs": self.schedule.epochs,
            "global_step": self.global_step,
            "elapsed": self.elapsed,
            "supernet": self.supernet.state_dict(),
            "extra": {k: v.detach() for k, v in self.extra.items()},
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "stages": _stages(self.transforms),
            "fused": self.is_fused,
            "data": data.state_dict() if data is not None else None,
            "curvature": self.curvature,
            "early_stopped": self.early_stopped,
            "w_weight_decay": self.w_weight_decay,
            "rollbacks": self.rollbacks,
            "ada_pending": self.ada_pending,
            "rng": ckpt.rng_state(),
        }

    def load_state_dict(self, state: dict, data: SearchData | None = None,
                        where: str = "checkpoint") -> None:
        ckpt.require(state, ("format", "epoch", "supernet", "w_opt", "a_opt", "scheduler", "rng"),
                     where)
        if state["format"] != "dslnas-search":
            raise ckpt.CheckpointError(f"{where} is not a search checkpoint")
        for key, mine in (("space", self.ir.name), ("method", self.method.name)):
            if state.get(key) != mine:
                raise ckpt.CheckpointError(f"{where} belongs to {key} {state.get(key)!r}, "
                                           f"not {mine!r}")
        if list(state.get("stages") or []) != _stages(self.transforms):
            raise ckpt.CheckpointError(f"{where} is at transform stages {state.get('stages')}, "
                                       f"but the supernet was built at {_stages(self.transforms)}")
        try:
            self.supernet.load_state_dict(state["supernet"])
            with torch.no_grad():
                for k, v in (state.get("extra") or {}).items():
                    self.extra[k].copy_(v)
            self.rebuild_optimisers(state["w_opt"], state["a_opt"], state["scheduler"])
            self.w_weight_decay = float(state.get("w_weight_decay", self.schedule.w_weight_decay))
            if not 0 <= self.w_weight_decay < math.inf:
                raise ValueError(f"w_weight_decay {self.w_weight_decay} is not a weight decay")
            for g in self.w_opt.param_groups:       # a DARTS-ADA rollback raised it
                g["weight_decay"] = self.w_weight_decay
            if data is not None and state.get("data") is not None:
                data.load_state_dict(state["data"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            raise ckpt.CheckpointError(f"{where} does not match this run: {e}") from None
        self.epoch = int(state["epoch"])
        self.global_step = int(state.get("global_step", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        curvature = state.get("curvature") or []
        if not isinstance(curvature, list):
            raise ckpt.CheckpointError(f"{where}: its curvature entry is not a list")
        self.curvature = [_curvature_entry(e, where) for e in curvature]
        self.early_stopped = _early_stopped(state.get("early_stopped"), where)
        rollbacks = state.get("rollbacks") or []
        if not isinstance(rollbacks, list):
            raise ckpt.CheckpointError(f"{where}: its rollbacks entry is not a list")
        self.rollbacks = [_decision(e, where, "rollbacks", w_weight_decay=float)
                          for e in rollbacks]
        pending = state.get("ada_pending")
        self.ada_pending = None if pending is None else _decision(pending, where, "ada_pending")
        self.in_epoch = _in_epoch(state.get("in_epoch"), where)
        if self.in_epoch is not None:           # a save taken inside epoch self.epoch + 1
            with torch.no_grad():
                self._sums.copy_(self.in_epoch["sums"])
            self._counts = self.in_epoch["counts"]
        ckpt.set_rng_state(state["rng"])


def _checked_entry(entry, keys: dict, where: str, what: str) -> dict:
    """A checkpoint's record of DARTS-ES (a hand-edited or foreign file may hold anything):
    ``keys`` maps each key to its type; a ``genotype`` must read as one."""
    try:
        out = {k: entry[k] if t is dict else t(entry[k]) for k, t in keys.items()}
        if "genotype" in out:
            from_dict(out["genotype"])
        return out
    except (KeyError, TypeError, ValueError, GenotypeError) as e:
        raise ckpt.CheckpointError(f"{where}: its {what} entry is malformed "
                                   f"({type(e).__name__}: {e})") from None


def _curvature_entry(entry, where: str) -> dict:
    return _checked_entry(entry, {"epoch": int, "eig": float, "genotype": dict}, where,
                          "curvature")


def _early_stopped(entry, where: str) -> dict | None:
    return None if entry is None else _decision(entry, where, "early_stopped", genotype=dict)


def _decision(entry, where: str, what: str, **more) -> dict:
    """A DARTS-ES decision: the epoch it was taken after, the epoch it returns to, the ratio."""
    return _checked_entry(entry, {"epoch": int, "genotype_epoch": int, "ratio": float, **more},
                          where, what)


def _in_epoch(entry, where: str) -> dict | None:
    """A checkpoint's ``in_epoch`` entry, checked (a hand-edited or foreign file may hold
    anything there): ``{"iterations", "seconds", "sums", "counts"}``, or None."""
    if entry is None:
        return None
    try:
        sums, counts = entry["sums"], [int(c) for c in entry["counts"]]
        if not isinstance(sums, torch.Tensor) or sums.shape != (4,) or len(counts) != 2:
            raise ValueError("sums must be 4 numbers and counts 2")
        return {"iterations": int(entry["iterations"]), "seconds": float(entry["seconds"]),
                "sums": sums, "counts": counts}
    except KeyError as e:
        raise ckpt.CheckpointError(f"{where}: its in_epoch entry lacks {e}") from None
    except (TypeError, ValueError) as e:
        raise ckpt.CheckpointError(f"{where}: its in_epoch entry is malformed "
                                   f"({type(entry).__name__}: {e})") from None


def _heldout_batches(data: SearchData, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` batches of the val split, in order and without augmentation (no RNG is
    used, so deriving a genotype does not change the search's random stream)."""
    val = data.val
    bs = val.batch_size
    for i in range(0, min(len(val.images), n * bs), bs):
        yield val.normalize(val.images[i:i + bs]), val.labels[i:i + bs]


# ============================================================================================
# search()
# ============================================================================================

def _genotype_record(genotype: Genotype) -> tuple[dict, str | None]:
    try:
        nb201 = to_nb201_string(genotype)
    except GenotypeError:
        nb201 = None
    return to_dict(genotype), nb201


def _lookup(benchmark, genotype: Genotype) -> tuple[dict | None, str | None]:
    if benchmark is None:
        return None, None
    from ..bench.nb201 import BenchmarkError
    try:
        return benchmark.lookup(genotype), None
    except BenchmarkError as e:
        return None, str(e)


def _es_start(s: "Searcher") -> int:
    """The first epoch whose genotype DARTS-ES may return: ``es_start``, and never one from
    before α's first step (the initial α's genotype)."""
    sch = s.schedule
    trained = next((e for e in range(1, sch.epochs + 1) if not s.arch_frozen(e - 1)), sch.epochs)
    return max(sch.es_start, trained)


def _es_note(s: "Searcher") -> str:
    """When DARTS-ES can first stop this search, or that it cannot."""
    from .curvature import first_decision
    sch, start = s.schedule, _es_start(s)
    first = first_decision(sch.epochs, sch.hessian_every, window=sch.es_window,
                           delta=sch.es_delta, start=start)
    how = (f"measured every {sch.hessian_every} epochs, window {sch.es_window}, delta "
           f"{sch.es_delta}, returning no genotype from before epoch {start}")
    what = {"stop": "stop", "simulate": "decision", "ada": "rollback"}[sch.early_stop]
    if first is None:
        return (f"note: DARTS-ES cannot {'stop' if what == 'stop' else 'decide in'} this "
                f"{sch.epochs}-epoch search ({how}): it runs to the end")
    return f"DARTS-ES ({how}): the first possible {what} is after epoch {first}"


def _curvature(s: "Searcher", data: SearchData, genotype: dict) -> dict:
    """After epoch ``s.epoch``, when the schedule measures the curvature then: its record's
    ``hessian_eig`` (and the seconds it took), DARTS-ES' ``es_ratio`` once there is one to
    compare, and ``early_stop`` when DARTS-ES decides there and the decision acts
    (``Searcher.es_acts``). The first decision is kept in ``s.early_stopped`` with the genotype
    it returns, a DARTS-ADA one in ``s.ada_pending``; the measurements in ``s.curvature``, so a
    resume decides as the uninterrupted search does."""
    from .curvature import es_ratio, measured_at
    sch = s.schedule
    if not measured_at(s.epoch, sch.hessian_every, sch.epochs):
        return {}
    t0 = time.perf_counter()
    eig = s.dominant_eigenvalue(data)
    out = {"hessian_eig": eig if math.isfinite(eig) else None,   # None: the loss is not finite
           "hessian_seconds": time.perf_counter() - t0}
    if out["hessian_eig"] is None:
        return out
    s.curvature.append({"epoch": s.epoch, "eig": eig, "genotype": genotype})
    if not sch.early_stop or s.epoch >= sch.epochs:
        return out
    r = es_ratio([(c["epoch"], c["eig"]) for c in s.curvature], window=sch.es_window,
                 delta=sch.es_delta, start=_es_start(s))
    if r is None:
        return out
    epoch, out["es_ratio"] = r
    if out["es_ratio"] <= sch.es_factor or not s.es_acts():
        return out
    decision = {"epoch": s.epoch, "genotype_epoch": epoch, "ratio": out["es_ratio"]}
    if s.early_stopped is None:
        returned = next(c["genotype"] for c in s.curvature if c["epoch"] == epoch)
        s.early_stopped = {**decision, "genotype": returned}
    out["early_stop"] = {**decision, "action": sch.early_stop}
    if sch.early_stop == "ada":
        s.ada_pending = decision
        out["early_stop"]["w_weight_decay"] = ada.raised(s.w_weight_decay, sch)
    return out


def _without_genotype(decision: dict | None) -> dict | None:
    return None if decision is None else {k: v for k, v in decision.items() if k != "genotype"}


def _fmt(v, spec: str = ".3f", missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def epoch_line(rec: dict) -> str:
    """One plain log line for an epoch record."""
    parts = [f"epoch {rec['epoch']}/{rec['epochs']}",
             f"train {_fmt(rec['train_loss'])} / {_fmt(rec['train_acc'], '.1f')}%",
             f"val {_fmt(rec['val_loss'])} / {_fmt(rec['val_acc'], '.1f')}%",
             f"lr {rec['lr']:.4g}"]
    if rec.get("arch_frozen"):
        parts.append("α frozen")
    if rec.get("hessian_eig") is not None:
        parts.append(f"λmax {rec['hessian_eig']:.4g}")
    es = rec.get("early_stop")
    if es:
        parts.append({"simulate": f"DARTS-ES (simulated): would stop, genotype of epoch "
                                  f"{es['genotype_epoch']}",
                      "ada": f"DARTS-ADA: roll back to epoch {es['genotype_epoch']}"}.get(
            es.get("action"), f"DARTS-ES: stop, genotype of epoch {es['genotype_epoch']}"))
    if rec.get("nb201"):
        parts.append(rec["nb201"])
    if rec.get("benchmark"):
        parts.append(" ".join(f"{k} {v:.2f}" for k, v in rec["benchmark"].items()))
    parts.append(f"{rec['seconds']:.1f}s")
    return " | ".join(parts)


def search(ir: SpaceIR, method: MethodSpec, data: SearchData, run: RunDir, *,
           resume_state: dict | None = None, **options) -> SearchResult:
    """Search ``ir`` with ``method`` on ``data``, writing into ``run``; see the module doc.
    Options: those of :func:`_search_round`, which runs the search until it ends or, with
    DARTS-ADA, until a rollback (:mod:`.ada`), after which the search resumes from the
    rolled-back state as a killed search resumes from its checkpoint."""
    rolled_back = False
    while True:
        out = _search_round(ir, method, data, run, resume_state=resume_state,
                            rolled_back=rolled_back, **options)
        if isinstance(out, SearchResult):
            return out
        resume_state, rolled_back = out, True
        gc.collect()            # the last round's searcher (held in cycles) and its GPU memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _search_round(ir: SpaceIR, method: MethodSpec, data: SearchData, run: RunDir, *,
                  device: str | torch.device = "cpu", seed: int = 0, deterministic: bool = False,
                  resume_state: dict | None = None, benchmark=None, progress: bool = True,
                  stop_after: int | None = None, channels_last: bool = False,
                  log: Callable[[str], None] | None = None,
                  cuda_graphs: bool | None = None, fused: bool | None = None,
                  compile_cells: bool | None = None, checkpoint_every: float | None = None,
                  should_stop: Callable[[], str | None] | None = None,
                  after_iteration: Callable[[], None] | None = None,
                  rolled_back: bool = False) -> SearchResult | dict:
    """:func:`search` up to its end (a SearchResult) or a DARTS-ADA rollback (the state to
    resume from; ``rolled_back``: this round resumes from one).

    ``resume_state``: a checkpoint dict (``checkpoint.load``) to continue from. ``benchmark``: a
    :class:`~dslnas.bench.nb201.BenchmarkTable` to look the genotype up in every epoch.
    ``progress``: a tqdm bar with ETA when stderr is a terminal (plain epoch lines otherwise).
    ``stop_after``: stop once this many epochs are done, as if interrupted (resume later).
    ``log``: where epoch lines go (default: stderr).
    ``fused``: the fused search cell (same function, fewer kernels; None: wherever it fits).
    ``cuda_graphs``: replay each iteration as a CUDA graph (:mod:`.graphs`); default on for a
    CUDA search of a graph-safe method without ``deterministic``; a reason is logged once when
    asked for but impossible.
    ``compile_cells``: ``torch.compile`` each cell (``Supernet.compile_cells``; same function
    within float tolerance; compiled lazily by the first training iterations, one graph per
    cell shape for the weight step and one for the architecture step, other forwards eager);
    default on for a CUDA search without ``deterministic``; the architecture step of a
    hypergradient that differentiates twice runs the cells' eager code.
    ``checkpoint_every``: seconds between checkpoints taken inside an epoch (None: only at the
    ends of epochs); a resume goes on from the iteration after the save, exactly.
    ``should_stop``: asked after every iteration; a reason (e.g. ``"SIGTERM"``) makes the search
    save a checkpoint there and return unfinished, with ``interrupted`` set to it.
    ``after_iteration``: called after every iteration, before anything else (``Lockstep``
    hands the turn to the next search there).
    """
    device = torch.device(device)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    with _determinism(deterministic, device):
        stages = resume_state.get("stages") if resume_state is not None else None
        if resume_state is not None:          # rebuild the cells the checkpoint was made with
            fused = resume_state.get("fused", False)
        s = Searcher(ir, method, device=device, seed=seed, deterministic=deterministic,
                     channels_last=channels_last, stages=stages, fused=fused,
                     compile_cells=compile_cells)
        for t in s.transforms:
            total = getattr(t, "total_epochs", None)
            if total is not None and total != method.schedule.epochs and resume_state is None:
                log(f"note: {t!r} has stages over {total} epochs, the schedule "
                    f"{method.schedule.epochs}; stages past the last epoch never start")
        if method.schedule.early_stop and resume_state is None:
            log(_es_note(s))
        history: list[dict] = []
        if resume_state is not None:
            s.load_state_dict(resume_state, data, where=str(run.checkpoint_path))
            history = run.truncate_metrics(s.epoch)
            if ada.needs_snapshot(s):           # killed between the checkpoint and its link
                ada.keep_snapshot(run, s.epoch, only_if_missing=True)
        epochs = method.schedule.epochs
        last = epochs if stop_after is None else min(epochs, max(stop_after, s.epoch))
        # inside a resumed epoch: how far it went and how long it took before the save
        clock = {"done": 0, "seconds": 0.0, "saved": time.monotonic()}
        if s.in_epoch is not None:
            clock["done"], clock["seconds"] = s.in_epoch["iterations"], s.in_epoch["seconds"]
        bar = None
        if progress and sys.stderr.isatty() and s.epoch < last:
            from tqdm.auto import tqdm
            bar = tqdm(total=(last - s.epoch) * s.iterations(data) - clock["done"], unit="step",
                       dynamic_ncols=True, file=sys.stderr, leave=False)
            write = bar.write
        else:
            write = log

        def on_step() -> None:
            """After each iteration: the bar, a checkpoint when due, a stop when asked."""
            if after_iteration is not None:
                after_iteration()
            if bar is not None:
                bar.update(1)
            clock["done"] += 1
            if clock["done"] >= s.iterations(data):
                return          # the epoch's end saves (and stops) with the streams rolled over
            why = should_stop() if should_stop is not None else None
            now = time.monotonic()
            if why is None and not (checkpoint_every and now - clock["saved"] >= checkpoint_every):
                return
            seconds = clock["seconds"] + time.perf_counter() - t0
            ckpt.save(s.state_dict(data, in_epoch={"iterations": clock["done"],
                                                   "seconds": seconds}), run.checkpoint_path)
            clock["saved"] = now
            if why is not None:
                raise _Stopped(why)

        attach_graphs(s, cuda_graphs, deterministic=deterministic, log=write)
        genotype = None
        interrupted = None
        if rolled_back and should_stop is not None:     # asked during the rollback
            interrupted = should_stop()
            if interrupted is not None:
                write(f"stopped ({interrupted}) after the rollback; checkpoint saved")
        try:
            while (interrupted is None and s.epoch < last and not s.es_stopped
                   and s.ada_pending is None):
                t0 = time.perf_counter()
                s.begin_epoch()
                data.train.cutout_prob = data.val.cutout_prob = s.ramp(s.schedule.cutout_prob)
                reg = {}                    # R-DARTS' regularisation of this epoch, if any
                if s.schedule.drop_path:
                    reg["drop_path"] = s.supernet.drop_path_prob
                if s.schedule.cutout:
                    reg["cutout_prob"] = data.train.cutout_prob
                frozen = s.arch_frozen(s.epoch)
                lr = s.lr
                if bar is not None:
                    bar.set_description(f"epoch {s.epoch + 1}/{epochs}")
                try:
                    s.train_epoch(data, on_step)
                except _Stopped as stop:
                    interrupted = str(stop)
                    write(f"stopped ({interrupted}) in epoch {s.epoch + 1} after iteration "
                          f"{clock['done']} of {s.iterations(data)}; checkpoint saved")
                    break
                s.scheduler.step()
                s.epoch += 1
                m = s.epoch_metrics()
                if m["train_loss"] is not None and not math.isfinite(m["train_loss"]):
                    raise SearchError(f"the training loss is {m['train_loss']} in epoch "
                                      f"{s.epoch}: the search diverged (try a lower w_lr or "
                                      f"a_lr)")
                genotype = s.genotype(data)
                geno_json, nb201 = _genotype_record(genotype)
                bench, bench_err = _lookup(benchmark, genotype)
                curvature = _curvature(s, data, geno_json)
                seconds = clock["seconds"] + time.perf_counter() - t0
                s.elapsed += seconds
                rec = {"epoch": s.epoch, "epochs": epochs, **m, "lr": lr, **reg,
                       "arch_frozen": frozen, "step": s.global_step,
                       "alphas": {k: v.tolist() for k, v in s.alphas().items()}}
                if s.extra:
                    rec["extra"] = {k: v.detach().cpu().tolist() for k, v in s.extra.items()}
                rec["genotype"] = geno_json
                if nb201 is not None:
                    rec["nb201"] = nb201
                if benchmark is not None:
                    rec["benchmark"] = bench
                    if bench_err:
                        rec["benchmark_error"] = bench_err
                rec.update(curvature)
                if s.schedule.early_stop == "ada":
                    rec["w_weight_decay"] = s.w_weight_decay
                rec["seconds"] = seconds
                rec["elapsed"] = s.elapsed
                run.append_metrics(rec)
                history.append(rec)
                scalars = {"loss/train": m["train_loss"], "loss/val": m["val_loss"],
                           "acc/train": m["train_acc"], "acc/val": m["val_acc"], "lr": lr,
                           "time/epoch_s": seconds}
                for k, v in (bench or {}).items():
                    scalars[f"benchmark/{k}"] = v
                for k in ("hessian_eig", "es_ratio"):
                    if curvature.get(k) is not None:
                        scalars[f"curvature/{k}"] = curvature[k]
                run.scalars(s.epoch, scalars)
                ckpt.save(s.state_dict(data), run.checkpoint_path)
                if ada.needs_snapshot(s):               # a state DARTS-ADA may return to
                    ada.keep_snapshot(run, s.epoch)
                clock.update(done=0, seconds=0.0, saved=time.monotonic())
                if bar is not None:
                    bar.set_postfix(loss=_fmt(m["train_loss"]), val=_fmt(m["val_acc"], ".1f"))
                write(epoch_line(rec))
                if s.ada_pending is not None:
                    break
                interrupted = should_stop() if should_stop is not None else None
                if interrupted is not None and s.epoch < last:
                    write(f"stopped ({interrupted}) after epoch {s.epoch}; checkpoint saved")
                    break
        finally:
            if bar is not None:
                bar.close()
        if s.ada_pending is not None and interrupted is None:
            state = ada.roll_back(s, run)
            write(f"DARTS-ADA: rolled back to epoch {state['epoch']}; w weight decay now "
                  f"{state['w_weight_decay']:g}")
            return state
        es_genotype = None if s.early_stopped is None else from_dict(s.early_stopped["genotype"])
        if s.es_stopped:                            # DARTS-ES returns an earlier genotype
            genotype = es_genotype
        elif genotype is None:                      # resumed a finished run, or zero epochs
            genotype = s.genotype(data)
        finished = s.epoch >= epochs or s.es_stopped
        bench, _ = _lookup(benchmark, genotype)
        if finished:
            run.write_genotype(genotype, ir)
            if es_genotype is not None and not s.es_stopped:    # simulated, or DARTS-ADA's
                run.write_genotype(es_genotype, ir, stem="genotype_es")
            ada.finish(run)
        return SearchResult(genotype=genotype, alphas=s.alphas(), strengths=s.strengths(),
                            history=history, benchmark=bench, seconds=s.elapsed,
                            epochs=s.epoch, finished=finished, run_dir=run.path,
                            interrupted=None if finished else interrupted,
                            early_stop=_without_genotype(s.early_stopped),
                            rollbacks=list(s.rollbacks))
