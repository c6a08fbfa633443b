"""Supernet transforms: how a method changes the supernet it searches (reference methods.md §3–§6).

``make_transforms(parts) -> list[Transform]``. A transform acts at three moments:

- ``build_kwargs() -> dict``: keyword arguments for ``build(ir, **kwargs)`` (``edge_cls``,
  ``node_norm``, ``affine``); :func:`merge_build_kwargs` combines those of several transforms and
  refuses two different edge classes.
- ``prepare(supernet)``: after ``build`` (and before loading a checkpoint), e.g. freeze weights.
- ``trainable(supernet) -> list[Parameter]``: the weights the weight optimiser (and the
  hypergradient) should see; :func:`trainable_parameters` intersects the filters of all transforms.

Transforms:

``partial_channels(K=4)``  PC-DARTS: every edge is a ``PartialMixedEdge`` with K (only C/K
    channels through the ops, the rest bypass; channel shuffle; max-pool bypass on stride 2).
``node_norm``  iDARTS (Wang): a parameter-free ``BatchNorm2d(affine=False)`` on every intermediate
    node (running statistics follow the space's ``track_stats``).
``random_features(trainable=["bn_affine"], init="default", track_stats=None)``  RF-DARTS
    (unverified details, §5): BN is built affine (``affine=True``); every weight whose kind is
    not listed in ``trainable`` is frozen (``requires_grad=False``) at its initial random value.
    Kinds: ``bn_affine`` (γ, β of every BatchNorm, the stem's and head's included), ``conv``
    (convolution weights/biases outside the stem: ops, preprocessing, NB201 residual blocks),
    ``linear`` (the classifier) and ``stem`` (everything in the stem block). A parameter is
    trainable if any of its kinds is listed. Defaults: only BN affine trainable, so the
    classifier is frozen too (as in Frankle et al.); ``init="default"`` keeps PyTorch's own
    initialisation (``"kaiming_normal"`` re-draws conv/linear weights from Kaiming normal,
    fan-out, ReLU gain); ``track_stats=None`` keeps the space's BN running statistics (true for
    the shipped spaces), ``False`` turns them off (batch statistics in eval too).
    ``pool_bn_affine=False``: the BN after each pooling op of the DARTS supernet stays
    parameter-free as DARTS builds it (pools then have nothing to train); ``True`` gives it γ and
    β too (the fused cell, which shares one pool BN among a node's edges, is then not used
    where the space has pool BNs).
``progressive(K=[...], keep=[...], epochs=[...], warmup=10, rescale=False, seed=None)``  DrNAS:
    stage s uses partial channels ``K[s]`` (no β) and keeps ``keep[s]`` ops per edge for
    ``epochs[s]`` epochs; the architecture is frozen for the first ``warmup`` epochs of each stage
    (:meth:`Progressive.arch_frozen`). Stage 0 keeps every op (``keep[0]`` smaller than an
    edge's candidate count only warns: nothing is learned yet to prune by).
    :meth:`Progressive.advance` moves to the next stage: prune
    every edge to its top ``keep`` ops by strength (= η order for DrNAS; ties keep the lower
    column), which sets the supernet's mask (the relaxations give masked ops weight exactly 0 and
    renormalise) and the edges' ``active`` flags (pruned ops are not run); then widen every op
    from C/K_s to C/K_{s+1} channels (Net2Net duplication of random existing filters and BN
    statistics, no 1/replication rescaling unless ``rescale=True``) and carry the optimiser state
    (SGD momentum buffers) into the widened tensors, in place, so the optimiser object and its
    lr scheduler continue. Resuming: build with ``build_kwargs(stage)`` for the checkpoint's stage,
    ``prepare`` (which installs a load hook that restores the masks from the edges' saved
    ``active`` buffers), then ``load_state_dict``. Fused cells (``supernet/fused.py``) take the
    same path: each cell keeps an ``active`` buffer and skips its pruned candidates' terms, and a
    stage switch prunes and widens a plain twin of the supernet (the same edges, the same random
    channel maps in the same order as a plain supernet would draw them), then rebuilds the fused
    candidates at the new width from it, the momentum buffers mapped along.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, NamedTuple, Sequence

import torch
from torch import nn

from ..supernet.fused import FusedSearchCell
from ..supernet.partial import PartialMixedEdge, drop_running_stats, partial_edge
from .spec import instantiate

__all__ = ["Transform", "PartialChannels", "NodeNorm", "RandomFeatures", "Progressive",
           "TRANSFORMS", "make_transforms", "merge_build_kwargs", "trainable_parameters",
           "search_edges", "sync_masks", "parameter_kinds", "Advanced"]


class Transform:
    name = "transform"

    def build_kwargs(self) -> dict[str, Any]:
        return {}

    def prepare(self, supernet) -> None:
        pass

    def trainable(self, supernet) -> list[nn.Parameter]:
        return [p for p in supernet.weight_parameters() if p.requires_grad]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PartialChannels(Transform):
    name = "partial_channels"

    def __init__(self, K: int = 4):
        self.K = int(K)
        if self.K < 1:
            raise ValueError(f"partial_channels: K must be >= 1, got {K}")

    def build_kwargs(self):
        return {"edge_cls": partial_edge(self.K)}

    def __repr__(self) -> str:
        return f"PartialChannels(K={self.K})"


class NodeNorm(Transform):
    name = "node_norm"

    def build_kwargs(self):
        return {"node_norm": True}


# ---- random features ----------------------------------------------------------------------

PARAM_KINDS = ("bn_affine", "conv", "linear", "stem")


def parameter_kinds(supernet) -> dict[int, set[str]]:
    """``id(param) -> kinds`` for every weight parameter (see the module docstring)."""
    kinds: dict[int, set[str]] = {}
    net = supernet.net
    stem_ids = set()
    for kind, block in zip(net.kinds, net.blocks):
        if kind == "stem":
            stem_ids |= {id(p) for p in block.parameters()}
    for m in supernet.modules():
        for p in m.parameters(recurse=False):
            k = kinds.setdefault(id(p), set())
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                k.add("bn_affine")
            elif isinstance(m, nn.modules.conv._ConvNd):
                k.add("conv")
            elif isinstance(m, nn.Linear):
                k.add("linear")
            if id(p) in stem_ids:
                k.add("stem")
                k.discard("conv")
    return kinds


class RandomFeatures(Transform):
    name = "random_features"

    def __init__(self, trainable: Sequence[str] = ("bn_affine",), init: str = "default",
                 track_stats: bool | None = None, pool_bn_affine: bool = False):
        trainable = [trainable] if isinstance(trainable, str) else list(trainable)
        bad = [t for t in trainable if t not in PARAM_KINDS]
        if bad:
            raise ValueError(f"random_features: unknown kinds {bad} (known: {', '.join(PARAM_KINDS)})")
        if init not in ("default", "kaiming_normal"):
            raise ValueError(f"random_features: init must be 'default' or 'kaiming_normal', got {init!r}")
        self.kinds = tuple(trainable)
        self.init = init
        self.track_stats = track_stats
        self.pool_bn_affine = bool(pool_bn_affine)

    def build_kwargs(self):
        return {"affine": True}   # "train only BN" needs BN affine parameters to train

    def prepare(self, supernet) -> None:
        if self.pool_bn_affine:
            from ..supernet.mixed import PoolBN
            for m in supernet.modules():
                if isinstance(m, PoolBN) and not m.affine:    # γ = 1, β = 0: same function
                    ref = m.running_mean
                    kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
                    m.affine = True
                    m.weight = nn.Parameter(torch.ones(m.num_features, **kw))
                    m.bias = nn.Parameter(torch.zeros(m.num_features, **kw))
        if self.init == "kaiming_normal":
            for m in supernet.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight is not None:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.track_stats is False:
            for m in supernet.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                    drop_running_stats(m)
        kinds = parameter_kinds(supernet)
        for p in supernet.weight_parameters():
            p.requires_grad_(bool(kinds.get(id(p), set()) & set(self.kinds)))

    def __repr__(self) -> str:
        return (f"RandomFeatures(trainable={list(self.kinds)}, init={self.init!r}, "
                f"track_stats={self.track_stats}, pool_bn_affine={self.pool_bn_affine})")


# ---- progressive (DrNAS) ------------------------------------------------------------------

def search_edges(supernet):
    """``(group, row, edge)`` for every edge of every plain search cell, in network order."""
    for i, (kind, block) in enumerate(zip(supernet.net.kinds, supernet.net.blocks)):
        if kind != "cell" or isinstance(block, FusedSearchCell):
            continue
        group = supernet.cell_groups[i]
        for row, edge in enumerate(block.edges):
            yield group, row, edge


def fused_cells(supernet):
    """``(group, cell)`` for every fused search cell, in network order."""
    for group, block in zip(supernet.cell_groups, supernet.net.blocks):
        if isinstance(block, FusedSearchCell):
            yield group, block


def sync_masks(supernet) -> None:
    """AND every group's mask with its edges' (or fused cells') ``active`` flags, then give the
    fused cells the result (after loading a checkpoint)."""
    with torch.no_grad():
        for group, row, edge in search_edges(supernet):
            act = getattr(edge, "active", None)
            if act is not None:
                m = supernet.mask(group)
                m[row, : act.numel()] &= act.to(m.device)
        pruning = [(g, c) for g, c in fused_cells(supernet) if getattr(c, "active", None) is not None]
        for group, cell in pruning:
            supernet.mask(group).logical_and_(cell.active.to(supernet.mask(group).device))
        for group, cell in pruning:
            cell.set_active(supernet.mask(group))


def _sync_after_load(module, incompatible_keys) -> None:
    sync_masks(module)


class Advanced(NamedTuple):
    supernet: nn.Module
    optimizer: torch.optim.Optimizer | None
    stage: int
    replaced: dict          # old parameter -> new parameter


class Progressive(Transform):
    name = "progressive"

    def __init__(self, K: Sequence[int], keep: Sequence[int], epochs: Sequence[int],
                 warmup: int = 10, rescale: bool = False, seed: int | None = None):
        self.K, self.keep, self.epochs = [int(k) for k in K], [int(k) for k in keep], [int(e) for e in epochs]
        if not (len(self.K) == len(self.keep) == len(self.epochs)) or not self.K:
            raise ValueError("progressive: K, keep and epochs need one entry per stage")
        if any(k < 1 for k in self.K + self.keep) or any(e < 0 for e in self.epochs):
            raise ValueError("progressive: K and keep must be >= 1, epochs >= 0")
        if any(b > a for a, b in zip(self.K, self.K[1:])):
            raise ValueError(f"progressive: K must not grow from stage to stage (got {self.K})")
        self.warmup = int(warmup)
        self.rescale = bool(rescale)
        self.seed = seed
        self.stage = 0

    # -- schedule
    @property
    def total_epochs(self) -> int:
        return sum(self.epochs)

    def stage_start(self, stage: int) -> int:
        return sum(self.epochs[:stage])

    def stage_at(self, epoch: int) -> int:
        """The stage of a global (0-based) epoch; epochs past the end stay in the last stage."""
        for s in range(len(self.epochs)):
            if epoch < self.stage_start(s + 1):
                return s
        return len(self.epochs) - 1

    def local_epoch(self, epoch: int) -> int:
        return epoch - self.stage_start(self.stage_at(epoch))

    def arch_frozen(self, epoch: int) -> bool:
        """DrNAS: η is not updated in the first ``warmup`` epochs of every stage."""
        return self.local_epoch(epoch) < self.warmup

    def is_stage_start(self, epoch: int) -> bool:
        return epoch > 0 and epoch == self.stage_start(self.stage_at(epoch))

    # -- build
    def build_kwargs(self, stage: int | None = None):
        s = self.stage if stage is None else stage
        return {"edge_cls": partial_edge(self.K[s])}

    def prepare(self, supernet, stage: int | None = None) -> None:
        if stage is not None:
            self.stage = stage
        widest = max(int(supernet.mask(g).sum(1).max()) for g in supernet.alphas)
        if self.stage == 0 and self.keep[0] < widest:
            # DrNAS' DARTS setting keeps 7 = all of its ops (no `none`); with more candidates
            # there is nothing learned yet to prune by, so stage 0 keeps every op.
            warnings.warn(f"progressive: keep[0]={self.keep[0]} < {widest} candidates; stage 0 "
                          f"keeps all ops (pruning happens in advance())", stacklevel=2)
        for _, _, e in search_edges(supernet):
            if not isinstance(e, PartialMixedEdge):
                raise TypeError("progressive needs PartialMixedEdge edges: build with build_kwargs()")
        for group, cell in fused_cells(supernet):
            if cell.K != self.K[self.stage]:
                raise TypeError(f"progressive: a fused cell has K={cell.K}, stage {self.stage} "
                                f"needs K={self.K[self.stage]}: build with build_kwargs()")
            cell.enable_pruning(supernet.mask(group))
        if not getattr(supernet, "_progressive_hook", False):
            supernet.register_load_state_dict_post_hook(_sync_after_load)
            supernet._progressive_hook = True
        sync_masks(supernet)

    # -- stage switch
    def prune(self, supernet, strengths: dict[str, torch.Tensor] | None,
              keep: int) -> dict[str, torch.Tensor]:
        """Keep the top ``keep`` ops of every edge; returns the new mask per group."""
        if strengths is None:
            from ..supernet.network import masked_softmax
            strengths = {g: masked_softmax(a.detach(), supernet.mask(g)) for g, a in supernet.alphas.items()}
        new_masks = {}
        with torch.no_grad():
            for g in supernet.alphas:
                m = supernet.mask(g)
                s = strengths[g].detach().to(m.device).masked_fill(~m, float("-inf"))
                order = torch.sort(-s, dim=-1, stable=True).indices[:, :keep]
                top = torch.zeros_like(m).scatter_(1, order, True)
                m &= top
                new_masks[g] = m.clone()
            for g, row, edge in search_edges(supernet):
                n = len(edge.candidates)
                if hasattr(edge, "set_active"):
                    edge.set_active(supernet.mask(g)[row, :n].cpu())
            for g, cell in fused_cells(supernet):
                cell.set_active(supernet.mask(g))
        return new_masks

    def advance(self, supernet, weight_optimizer: torch.optim.Optimizer | None,
                strengths: dict[str, torch.Tensor] | None = None, stage: int | None = None,
                generator: torch.Generator | None = None) -> Advanced:
        """Switch ``supernet`` (and the optimiser state) in place to ``stage`` (default: next).

        Re-read ``trainable(supernet)`` afterwards: widened ops have new Parameter objects
        (``replaced`` maps old to new; the optimiser's param groups already hold the new ones).
        """
        stage = self.stage + 1 if stage is None else int(stage)
        if not 0 < stage < len(self.K):
            raise ValueError(f"progressive: no stage {stage} (stages 0..{len(self.K) - 1})")
        if generator is None and self.seed is not None:
            generator = torch.Generator().manual_seed(int(self.seed) + stage)
        if supernet.is_fused:
            replaced = self._advance_fused(supernet, weight_optimizer, stage, strengths, generator)
            self.stage = stage
            return Advanced(supernet, weight_optimizer, stage, replaced)
        self.prune(supernet, strengths, self.keep[stage])
        replaced: dict = {}
        fns: dict = {}
        for _, _, edge in search_edges(supernet):
            for old, new, fn in edge.widen(self.K[stage], generator=generator, rescale=self.rescale):
                replaced[old] = new
                fns[old] = fn
        if weight_optimizer is not None:
            carry_optimizer_state(weight_optimizer, replaced, fns)
        self.stage = stage
        return Advanced(supernet, weight_optimizer, stage, replaced)

    @torch.no_grad()
    def _advance_fused(self, supernet, opt, stage: int, strengths, generator) -> dict:
        """``advance`` for fused cells: prune and widen a plain twin exactly as a plain supernet
        is (same edges, same draws), then rebuild each fused cell's kept candidates at the new
        width from its twin. Returns old -> new parameters (the optimiser holds the new ones, and
        no longer those of an op pruned on every edge of its source)."""
        for group, cell in fused_cells(supernet):
            cell.enable_pruning(supernet.mask(group))      # (prepare does it; advance alone too)
        twin = supernet.plain_twin()
        pairs = [(f, p) for f, p in zip(supernet.net.blocks, twin.net.blocks)
                 if isinstance(f, FusedSearchCell)]
        # the optimiser's state, per edge's tensors
        state: dict = {}
        for f, p in pairs:
            for ft, index, pt in f.tensor_map(p):
                st = opt.state.get(ft) if opt is not None else None
                if st and isinstance(pt, nn.Parameter):
                    state[pt] = {k: v[index].clone() if _param_shaped(v, ft) else v
                                 for k, v in st.items()}
        self.prune(twin, strengths, self.keep[stage])
        for _, _, edge in search_edges(twin):
            for old, new, fn in edge.widen(self.K[stage], generator=generator, rescale=self.rescale):
                if old in state:
                    state[new] = {k: fn(v) if _param_shaped(v, old) else v
                                  for k, v in state.pop(old).items()}
        for g in supernet.alphas:
            supernet.mask(g).copy_(twin.mask(g))
        replaced: dict = {}
        dropped: set = set()            # modules of ops pruned on every edge of their source
        new_state: dict = {}
        for f, p in pairs:
            old = dict(f.mods.named_parameters())
            f.active.copy_(supernet.mask(f.group).to(f.active.device))
            f.rebuild(self.K[stage])                # the kept candidates only
            f.load_from(p)
            new = dict(f.mods.named_parameters())
            replaced.update((old[name], q) for name, q in new.items())
            dropped.update(q for name, q in old.items() if name not in new)
            for ft, index, pt in f.tensor_map(p):
                for k, v in state.get(pt, {}).items():
                    st = new_state.setdefault(ft, {})
                    if _param_shaped(v, pt):
                        st.setdefault(k, torch.zeros_like(ft))[index] = v
                    else:
                        st.setdefault(k, v)
        if opt is not None:
            for group in opt.param_groups:
                group["params"] = [replaced.get(q, q) for q in group["params"] if q not in dropped]
            for q in dropped:
                opt.state.pop(q, None)
            for old, new in replaced.items():
                opt.state.pop(old, None)
                if new in new_state:
                    opt.state[new] = new_state[new]
        return replaced

    def __repr__(self) -> str:
        return (f"Progressive(K={self.K}, keep={self.keep}, epochs={self.epochs}, warmup={self.warmup}, "
                f"rescale={self.rescale})")


def _param_shaped(v, p) -> bool:
    """An optimiser state entry that is mapped like its parameter (e.g. a momentum buffer)."""
    return torch.is_tensor(v) and v.shape == p.shape


def carry_optimizer_state(opt: torch.optim.Optimizer, replaced: dict, fns: dict) -> None:
    """Swap replaced parameters in ``opt``'s groups, mapping their state tensors like the params."""
    for group in opt.param_groups:
        params = group["params"]
        for i, p in enumerate(params):
            if p not in replaced:
                continue
            new = replaced[p]
            params[i] = new
            state = opt.state.pop(p, None)
            if state:
                opt.state[new] = {k: fns[p](v) if _param_shaped(v, p) else v
                                  for k, v in state.items()}


# ---- registry -----------------------------------------------------------------------------

TRANSFORMS = {"partial_channels": PartialChannels, "node_norm": NodeNorm,
              "random_features": RandomFeatures, "progressive": Progressive}


def make_transforms(parts: Iterable[Any]) -> list[Transform]:
    return [instantiate(part, TRANSFORMS, "transform") for part in parts]


def merge_build_kwargs(transforms: Iterable[Transform]) -> dict[str, Any]:
    """The ``build`` keyword arguments of all transforms; two different edge classes is an error."""
    out: dict[str, Any] = {}
    for t in transforms:
        for k, v in t.build_kwargs().items():
            if k == "node_norm":
                out[k] = out.get(k, False) or v
            elif k in out and out[k] != v:
                raise ValueError(f"transforms disagree on build argument {k!r}: {out[k]!r} vs {v!r}")
            else:
                out[k] = v
    return out


def trainable_parameters(transforms: Iterable[Transform], supernet) -> list[nn.Parameter]:
    """The weights every transform lets train (all ``requires_grad`` weights without transforms)."""
    params = [p for p in supernet.weight_parameters() if p.requires_grad]
    for t in transforms:
        keep = {id(p) for p in t.trainable(supernet)}
        params = [p for p in params if id(p) in keep]
    return params
