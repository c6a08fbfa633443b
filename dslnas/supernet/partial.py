"""Partial-channel mixed edges (PC-DARTS, reference methods.md §3) and their widening (DrNAS §4).

``PartialMixedEdge(candidates, C, stride, affine, track, pool_bn, K)``:

* every candidate op is built for ``C // K`` channels (by the same code as ``MixedEdge``, so pool
  ops get the supernet's BN when ``pool_bn``);
* the first ``C // K`` input channels go through the mixed op, the other ``C - C // K`` bypass it
  unchanged (``MaxPool2d(2, 2)`` on stride-2 edges, ``ceil_mode=True``: identical to PC-DARTS on
  even sizes, and it matches the ops' output size on odd ones);
* the two parts are concatenated (processed first) and channel-shuffled with ``K`` groups, so the
  processed channel ``c`` lands at output position ``c * K`` (:func:`processed_positions`);
* the bypass is multiplied by the sum of the edge's (active) weights. That sum is 1 for softmax
  and Dirichlet weights, and the PC-DARTS edge weight β̂ for ``softmax_beta`` weights (which fold
  β̂ into the row), so it reproduces PC-DARTS' scaling of the *whole* edge output by β̂ and keeps
  the edge linear in its weights, like ``MixedEdge``.

DrNAS' progressive scheme needs two more things here:

* a persistent boolean ``active`` buffer (one entry per candidate): inactive (pruned) ops are not
  run at all. It is saved in checkpoints; :meth:`PartialMixedEdge.set_active` changes it.
* :meth:`PartialMixedEdge.widen` (``K_old -> K_new <= K_old``): every op is rebuilt at
  ``C // K_new`` channels and its tensors are copied Net2Net style by :func:`widen_op`: the
  original channels keep their place and filters, each new channel copies a randomly chosen
  existing one (weights, biases, BN affine and running statistics). As in DrNAS there is no
  1/replication rescaling of a duplicated fan-in by default (``rescale=True`` adds it, which makes
  the widened op compute exactly the old one on a correspondingly duplicated input).
"""
from __future__ import annotations

import functools
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import FactorizedReduce
from .mixed import MixedEdge

__all__ = ["PartialMixedEdge", "partial_edge", "partial_K", "check_partial", "bypass_pool",
           "channel_shuffle", "shuffle_index", "processed_positions", "widen_op", "ChannelMaps",
           "drop_running_stats", "drop_stats_like"]


def check_partial(K, C: int) -> int:
    """``K`` as an int, if it is >= 1 and divides the edge width ``C``."""
    K = int(K)
    if K < 1 or C % K:
        raise ValueError(f"partial channels: K={K} must be >= 1 and divide the edge width "
                         f"C={C} (give the space a width that K divides, e.g. --set C=..., "
                         f"or the method another K)")
    return K


def bypass_pool(x: torch.Tensor) -> torch.Tensor:
    """The bypass of a stride-2 edge. ceil_mode: the same as PC-DARTS' ``MaxPool2d(2, 2)`` on
    even sizes, and the ops' ceil(H/2) on odd ones."""
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel blocks: out[:, c * groups + g] = x[:, g * (C/groups) + c]."""
    if groups == 1:
        return x
    n, C, h, w = x.shape
    return x.view(n, groups, C // groups, h, w).transpose(1, 2).reshape(n, C, h, w)


def shuffle_index(C: int, groups: int) -> torch.Tensor:
    """``idx`` with ``channel_shuffle(x, groups) == x[:, idx]``."""
    return torch.arange(C).view(groups, C // groups).t().reshape(-1)


def processed_positions(C: int, K: int) -> torch.Tensor:
    """Output positions of the processed channels 0..C/K-1 of a partial edge, in that order."""
    return torch.arange(C // K) * K


def _build_op(name: str, C: int, stride: int, affine: bool, track: bool, pool_bn: bool) -> nn.Module:
    # exactly MixedEdge's construction (pool + BN when pool_bn), for one candidate
    return MixedEdge((name,), C, stride, affine, track, pool_bn).ops[0]


class PartialMixedEdge(nn.Module):
    def __init__(self, candidates: tuple[str, ...], C: int, stride: int, affine: bool,
                 track: bool, pool_bn: bool, K: int = 4):
        super().__init__()
        K = check_partial(K, C)
        self.candidates = tuple(candidates)
        self.C, self.stride, self.K = C, stride, K
        self._build = dict(affine=affine, track=track, pool_bn=pool_bn)
        self.ops = nn.ModuleList(_build_op(n, C // K, stride, **self._build) for n in candidates)
        self.register_buffer("active", torch.ones(len(candidates), dtype=torch.bool))
        self.register_buffer("_active_index", torch.arange(len(candidates)), persistent=False)
        self._refresh()

    @property
    def C_part(self) -> int:
        """Channels that go through the ops."""
        return self.C // self.K

    # ---- pruning -----------------------------------------------------------------

    def _refresh(self) -> None:
        # A host-side copy, so the forward never syncs with the device to read the buffer.
        act = [bool(a) for a in self.active.tolist()]
        self._active = tuple(k for k, a in enumerate(act) if a)
        self._all_active = all(act)
        self._active_index = torch.tensor(self._active, dtype=torch.long, device=self.active.device)

    def set_active(self, active: Iterable[bool] | torch.Tensor) -> None:
        """Which candidates run; inactive ones are skipped (their weight must be 0)."""
        a = torch.as_tensor(list(active) if not isinstance(active, torch.Tensor) else active,
                            dtype=torch.bool).flatten()[: len(self.candidates)]
        if a.numel() != len(self.candidates) or not bool(a.any()):
            raise ValueError(f"an edge needs one flag per candidate ({len(self.candidates)}) and at "
                             f"least one active op, got {a.tolist()}")
        self.active.copy_(a.to(self.active.device))
        self._refresh()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh()

    # ---- forward -----------------------------------------------------------------

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``w``: this edge's weights, one per candidate (padding columns beyond are ignored)."""
        if self.K == 1:
            xa = x
        else:
            xa = x[:, : self.C_part]
        out = None
        for k in self._active:
            t = w[k] * self.ops[k](xa)
            out = t if out is None else out + t
        if self.K == 1:
            return out
        if self._all_active:
            mass = w[: len(self.ops)].sum()
        else:
            mass = w.index_select(0, self._active_index).sum()
        rest = x[:, self.C_part:]
        rest = (bypass_pool(rest) if self.stride == 2 else rest) * mass
        return channel_shuffle(torch.cat([out, rest], dim=1), self.K)

    def extra_repr(self) -> str:
        return f"C={self.C}, K={self.K}, stride={self.stride}"

    # ---- widening (DrNAS progressive) --------------------------------------------

    def widen(self, K_new: int, generator: torch.Generator | None = None, rescale: bool = False
              ) -> list[tuple[nn.Parameter, nn.Parameter, Callable[[torch.Tensor], torch.Tensor]]]:
        """Rebuild every op at ``C // K_new`` channels, Net2Net-copying the old tensors.

        Returns ``(old_param, new_param, fn)`` for every parameter, ``fn`` mapping a tensor shaped
        like the old parameter (e.g. its momentum buffer) the same way the parameter was mapped.
        Pruned ops are widened too, so a supernet rebuilt at ``K_new`` has the same shapes.
        """
        K_new = int(K_new)
        if K_new < 1 or self.C % K_new:
            raise ValueError(f"partial channels: K={K_new} must be >= 1 and divide C={self.C}")
        if K_new > self.K:
            raise ValueError(f"widen needs K_new <= K (got {self.K} -> {K_new})")
        pairs: list = []
        if K_new == self.K:
            return pairs
        floats = [t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()]
        dtype = floats[0].dtype if floats else None
        for k, name in enumerate(self.candidates):
            old = self.ops[k]
            new = _build_op(name, self.C // K_new, self.stride, **self._build)
            new.train(old.training)
            new.to(device=self.active.device, dtype=dtype)
            drop_stats_like(old, new)
            got, _, _ = widen_op(old, new, generator=generator, rescale=rescale)
            pairs += got
            self.ops[k] = new
        self.K = K_new
        return pairs


def drop_running_stats(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Batch statistics in eval mode too: no running statistics kept."""
    bn.track_running_stats = False
    bn.running_mean = bn.running_var = bn.num_batches_tracked = None


def drop_stats_like(old: nn.Module, new: nn.Module) -> None:
    """Turn off the running statistics of ``new``'s BNs where ``old`` (the same op, built
    before a transform changed it, e.g. random features with ``track_stats=false``) has none."""
    olds = dict(old.named_modules())
    for name, b in new.named_modules():
        a = olds.get(name)
        if isinstance(a, nn.modules.batchnorm._BatchNorm) and not a.track_running_stats \
                and isinstance(b, nn.modules.batchnorm._BatchNorm) and b.track_running_stats:
            drop_running_stats(b)


def partial_edge(K: int) -> Callable[..., PartialMixedEdge]:
    """An ``edge_cls`` for ``build(ir, edge_cls=partial_edge(4))``."""
    K = int(K)
    if K < 1:
        raise ValueError(f"partial channels: K must be >= 1, got {K}")
    return functools.partial(PartialMixedEdge, K=K)


def partial_K(edge_cls) -> int | None:
    """The K of a ``partial_edge(K)`` edge class; None for any other."""
    if isinstance(edge_cls, functools.partial) and edge_cls.func is PartialMixedEdge:
        return int(edge_cls.keywords["K"])
    return None


# ---- Net2Net widening of one op -----------------------------------------------------------

class ChannelMaps:
    """One index map per (old size, new size): new channel j copies old channel ``map[j]``.

    The first ``old`` entries are the identity (original channels keep their place), the rest are
    drawn uniformly from the old channels. Sharing one map per size inside an op keeps the
    channel correspondence consistent from layer to layer.
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator
        self.maps: dict[tuple[int, int], torch.Tensor] = {}
        self.out_map: torch.Tensor | None = None   # set when an op's output is not one size map

    def get(self, n_old: int, n_new: int) -> torch.Tensor:
        if n_new < n_old:
            raise ValueError(f"cannot widen {n_old} channels to {n_new}")
        key = (n_old, n_new)
        if key not in self.maps:
            extra = torch.randint(0, n_old, (n_new - n_old,), generator=self.generator)
            self.maps[key] = torch.cat([torch.arange(n_old), extra])
        return self.maps[key]


def _tensor_fn(old_shape, new_shape, module: nn.Module, name: str, maps: ChannelMaps,
               rescale: bool, fixed: dict[int, torch.Tensor] | None = None):
    if len(old_shape) != len(new_shape):
        raise ValueError(f"cannot widen {type(module).__name__}.{name}: shapes {tuple(old_shape)} "
                         f"and {tuple(new_shape)}")
    index = {}
    for d, (a, b) in enumerate(zip(old_shape, new_shape)):
        if a != b:
            index[d] = fixed[d] if fixed and d in fixed else maps.get(a, b)
    scale = None
    if (rescale and name == "weight" and 1 in index and isinstance(module, (nn.Conv2d, nn.Linear))
            and getattr(module, "groups", 1) == 1):
        idx = index[1]
        counts = torch.bincount(idx, minlength=old_shape[1]).to(torch.float64)
        scale = (1.0 / counts[idx]).view(1, -1, *([1] * (len(old_shape) - 2)))

    def fn(t: torch.Tensor) -> torch.Tensor:
        for d, idx in index.items():
            t = t.index_select(d, idx.to(t.device))
        if scale is not None:
            t = t * scale.to(device=t.device, dtype=t.dtype)
        return t
    return fn


def _copy_tensors(old: nn.Module, new: nn.Module, maps: ChannelMaps, rescale: bool, pairs: list,
                  fixed: dict[str, dict[int, torch.Tensor]] | None = None) -> None:
    """Copy ``old``'s own parameters and buffers (not its children's) into ``new``."""
    fixed = fixed or {}
    with torch.no_grad():
        for name, p in old._parameters.items():
            if p is None:
                continue
            q = new._parameters[name]
            fn = _tensor_fn(p.shape, q.shape, old, name, maps, rescale, fixed.get(name))
            q.copy_(fn(p))
            q.requires_grad_(p.requires_grad)
            pairs.append((p, q, fn))
        for name, b in old._buffers.items():
            if b is None:
                continue
            nb = new._buffers[name]
            fn = _tensor_fn(b.shape, nb.shape, old, name, maps, False, fixed.get(name))
            nb.copy_(fn(b))


def _widen_module(old: nn.Module, new: nn.Module, maps: ChannelMaps, rescale: bool,
                  pairs: list) -> None:
    if type(old) is not type(new):
        raise TypeError(f"cannot widen {type(old).__name__} into {type(new).__name__}")
    if isinstance(old, FactorizedReduce) and old.stride == 2:
        # Output = cat(conv0, conv1) -> BN: the BN channel map is the concatenation of the two
        # convs' output maps, not a map of the concatenated size.
        h_old = [c.out_channels for c in old.convs]
        h_new = [c.out_channels for c in new.convs]
        m = [maps.get(a, b) for a, b in zip(h_old, h_new)]
        for co, cn in zip(old.convs, new.convs):
            _copy_tensors(co, cn, maps, rescale, pairs)
        cat = torch.cat([m[0], h_old[0] + m[1]])
        bn_fixed = {n: {0: cat} for n in ("weight", "bias", "running_mean", "running_var")}
        _copy_tensors(old.bn, new.bn, maps, rescale, pairs, bn_fixed)
        maps.out_map = cat
        return
    _copy_tensors(old, new, maps, rescale, pairs)
    for (name, co), (name2, cn) in zip(old.named_children(), new.named_children()):
        if name != name2:
            raise TypeError(f"cannot widen: child {name!r} vs {name2!r}")
        _widen_module(co, cn, maps, rescale, pairs)


def widen_op(old: nn.Module, new: nn.Module, generator: torch.Generator | None = None,
             rescale: bool = False):
    """Copy ``old`` (built at C_old channels) into ``new`` (the same op at C_new >= C_old).

    Every tensor dimension whose size grows is indexed by the map of its (old, new) size
    (:class:`ChannelMaps`); convolution and linear fan-ins are divided by the replication count
    only when ``rescale``. Returns ``(pairs, in_map, out_map)``: ``pairs`` as in
    :meth:`PartialMixedEdge.widen`; ``in_map``/``out_map`` give, for each new input/output channel,
    the old channel it copies (``None`` when no tensor of the op has a channel dimension, e.g.
    pooling or identity: then the op is channel-wise and the caller's map applies unchanged).
    With ``rescale=True``, ``new(x[:, in_map]) == old(x)[:, out_map]`` for ops built from convs,
    linears, BN, pooling and element-wise layers (BN in eval mode, or any mode for the
    batch statistics, since duplicated channels have the same statistics).
    """
    maps = ChannelMaps(generator)
    C_old = _channels_of(old)
    C_new = _channels_of(new)
    pairs: list = []
    _widen_module(old, new, maps, rescale, pairs)
    in_map = maps.maps.get((C_old, C_new)) if C_old else None
    out_map = maps.out_map if maps.out_map is not None else in_map
    return pairs, in_map, out_map


def _channels_of(op: nn.Module) -> int | None:
    """The op's channel count, read from its first conv / BN (None for parameter-free ops)."""
    for m in op.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.BatchNorm2d):
            return m.num_features
    return None
