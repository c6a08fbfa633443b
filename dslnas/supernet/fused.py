"""A search cell that batches work across the edges leaving each node (the speed path).

The plain ``SearchCell`` runs every candidate of every edge separately: for NB201 that is ~115
small kernels per cell, for DARTS ~700 in the forward pass alone (168 of them convolutions, 12 per
edge for its separable and dilated candidates). An eager step is then bound by the CPU launching
them. Here every node's outgoing edges are computed together, which is exact because those edges
share their input (the source node) and their stride:

* ReLU-conv-BN candidates (NB201's ``nor_conv_1x1``, ``nor_conv_3x3``) are one convolution with
  the edges' filters stacked on the output channels and one BN over all of them (BN is per
  channel, so stacking changes nothing);
* DARTS' dilated and separable convolutions (``dil_conv_*``, ``sep_conv_*``: ReLU, depthwise,
  pointwise, BN, twice for ``sep_conv``) run on the ReLU'd input replicated n times, edge-major
  (B, n*C, H, W): the depthwise conv has groups=n*C (each channel its own filter anyway), each
  edge's pointwise C->C filter is one group of a groups=n 1x1 conv, and BN covers n*C channels.
  Every output channel sees exactly the values and weights of its edge, so the result is the
  per-edge result stacked (12 convolutions per source node instead of 12 per edge); one replica
  serves every such candidate of the node with the same number of edges;
* all of these share one ReLU of the source node;
* parameter-free candidates (pools, ``skip_connect`` at stride 1) give the same tensor on every
  edge leaving a node, so they run once; the DARTS supernet's BN after a pool (affine=False) also
  gives the same result for every edge (same input, same statistics), so it runs once too;
* ``none`` contributes nothing and is skipped;
* any other candidate (``skip_connect`` at stride 2, ``noise``, user ops) keeps its own module per
  edge.

Partial channels (PC-DARTS, ``K`` > 1; ``PartialMixedEdge``) fit the same scheme: every edge
leaving a node takes the same first ``C/K`` channels of it, so the candidates above run batched at
``C/K`` channels on that slice. The rest of an edge is the node's other channels (max-pooled on
stride-2 edges) times the sum of the edge's weights, then the two parts are concatenated and
channel-shuffled. Both are linear and the same for every edge into a node, so a node sums the
processed parts and the bypasses of its edges apart and concatenates and shuffles once (instead of
once per edge), and each source node's bypass is pooled once for all its edges.

DrNAS' progressive scheme prunes candidates and widens the partial channels between stages.
``rebuild`` makes the modules anew at the next width for the candidates the ``active`` buffer
keeps (a pruned one has no slot, an op pruned on every edge of its source no module), and the
caller loads their tensors from a pruned and widened plain twin (``methods.transforms
.Progressive``); a checkpoint of a later stage rebuilds the cell for its pruning as it loads.

Which path a candidate takes follows the module its op builds (``ReLUConvBN``, ``DilConv``,
``SepConv``), not its name, so the batched modules copy the plain ones' settings (kernel, stride
on the first depthwise conv only, padding, dilation, BN flags).

A node is then the weighted sum of its terms, one fused multiply-add each (the α weights of all
terms are gathered with one index op per cell). Parameters are laid out per source node instead
of per edge, with the same total and the same default initial distribution (PyTorch's default
init depends on each filter's fan-in, which stacking keeps; an init by fan-out, such as
``nn.init.kaiming_normal_(mode="fan_out")``, would see n times the per-edge fan-out).
``tensor_map`` says which slice of which tensor holds each edge's weights and statistics;
``load_from`` copies the weights of a plain ``SearchCell`` through it (the equivalence tests) and
``copy_to`` the other way (``Supernet.plain_twin``: what needs each edge's own modules).
"""
from __future__ import annotations

from collections import OrderedDict

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ..ir.model import CellBlock, CellIR
from ..ops import DilConv, ReLUConvBN, SepConv, create_op, op_kind
from .cells import EdgeDropPath, _CellBase, real_candidates
from .mixed import MixedEdge
from .partial import bypass_pool, channel_shuffle, check_partial, drop_stats_like

SHARED_POOLS = {"avg_pool_3x3", "max_pool_3x3"}
# plan kinds whose module computes n edges at once, one C-channel slice (slot) per edge
BATCHED = ("relu_conv_bn", "dw_stack")


@attrs.frozen
class _Target:
    row: int        # alpha row of the edge
    col: int        # the candidate's column in that row
    dst: int        # destination node
    slot: int       # which C-channel slice of the group's output (0 for shared outputs)
    wi: int = -1    # position of weights[row, col] in the cell's gathered weight vector


def _template(name: str, C: int, stride: int, affine: bool, track: bool) -> nn.Module | None:
    """The op as a plain edge builds it, on the meta device: its type and settings decide how to
    batch it, without drawing random numbers (the RNG stream stays as it was) or memory."""
    try:
        with torch.device("meta"):
            return create_op(name, C, C, stride, affine=affine, track=track)
    except (NotImplementedError, RuntimeError):
        return None     # an op that cannot be built on meta simply stays per edge


def _bn(n: int, bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(n * bn.num_features, eps=bn.eps, momentum=bn.momentum,
                          affine=bn.affine, track_running_stats=bn.track_running_stats)


def _dw_block_ok(block: nn.Module, C: int) -> bool:
    return (type(block) is DilConv and block.dw.groups == C == block.dw.in_channels
            and block.dw.out_channels == C and block.pw.in_channels == C
            and block.pw.out_channels == C and block.dw.bias is None and block.pw.bias is None)


class _DwPwBn(nn.Sequential):
    """``DilConv`` (less its ReLU) of n edges on the edge-major replicated input (B, n*C, H, W):
    one depthwise conv over all n*C channels, each edge's pointwise C->C filter as one group of a
    groups=n 1x1 conv, one BN. Submodule names match ``DilConv``'s (``tensor_map`` relies on it)."""

    def __init__(self, n: int, C: int, block: DilConv):
        dw = block.dw
        super().__init__(OrderedDict(
            dw=nn.Conv2d(n * C, n * C, dw.kernel_size, dw.stride, dw.padding, dw.dilation,
                         groups=n * C, bias=False),
            pw=nn.Conv2d(n * C, n * C, 1, groups=n, bias=False),
            bn=_bn(n, block.bn),
        ))


def _dw_stack(n: int, C: int, op: nn.Module) -> nn.Module | None:
    """The batched module of ``n`` copies of ``op`` (a ``DilConv`` or ``SepConv``), or None."""
    if _dw_block_ok(op, C):
        return _DwPwBn(n, C, op)
    if type(op) is SepConv and _dw_block_ok(op.block1, C) and _dw_block_ok(op.block2, C):
        # the ReLU in front of block2 acts per channel: on the stack it is the per-edge one
        return nn.Sequential(OrderedDict(block1=_DwPwBn(n, C, op.block1), relu=nn.ReLU(),
                                         block2=_DwPwBn(n, C, op.block2)))
    return None


def _replicate(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, n*C, H, W), channel e*C + c = x[:, c]: one copy forward, one sum back.

    Why replicate rather than a depthwise conv with groups=C and n*C outputs (no copy)? That conv
    writes channel-major (c, e) channels, so each candidate would need its own permutation copy
    before the groups=n pointwise conv (forward and backward: 2 kernels per candidate), while
    one replica serves every depthwise-stacked candidate of the node (2 kernels per node), and
    the stacked weights stay in plain per-edge order. ``repeat`` would drop channels_last, so a
    channels_last input is tiled along its (contiguous) last dimension instead."""
    if n == 1:
        return x
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).repeat(1, 1, 1, n).permute(0, 3, 1, 2)
    return x.repeat(1, n, 1, 1)


class FusedSearchCell(_CellBase):
    def __init__(self, cell: CellIR, block: CellBlock, affine: bool, track: bool, pool_bn: bool,
                 node_norm: bool = False, K: int = 1):
        super().__init__(cell, block, affine, track)
        self.C_full = block.C
        self.group = cell.group
        self._ir, self._build = cell, dict(affine=affine, track=track, pool_bn=pool_bn)
        self.in_degree = [len(cell.in_edges(n)) for n in range(self.n_total)]
        self.node_norm = nn.ModuleList(
            nn.BatchNorm2d(self.C_full, affine=False, track_running_stats=track) if node_norm
            else nn.Identity() for _ in cell.intermediate)
        self.stride = [next((e.stride for e in cell.edges if e.src == s), 1)
                       for s in range(self.n_total)]
        self.any_edge: dict[int, int] = {}          # a node's first source
        for e in sorted(cell.edges, key=lambda e: e.src):
            self.any_edge.setdefault(e.dst, e.src)
        # partial channels: per source node, its edges' (row, dst)
        self.out_rows = [tuple((e.row, e.dst) for e in cell.edges if e.src == s)
                         for s in range(self.n_total)]
        # not persistent: the state dict is unchanged; buffers follow .to(device)
        self.register_buffer("real", real_candidates(cell), persistent=False)
        self.edge_drop = EdgeDropPath(len(cell.edges))
        self._build_candidates(K)

    def _build_candidates(self, K: int) -> None:
        """The candidates' modules and the plan that runs them, at ``C_full / K`` channels."""
        cell, b = self._ir, self._build
        affine, track, pool_bn = b["affine"], b["track"], b["pool_bn"]
        self.K = check_partial(K, self.C_full)
        C = self.C = self.C_full // self.K          # the candidates' width: all channels, or C/K
        # Per source node: a list of (kind, module key, targets); modules live in a ModuleDict.
        # Pruned candidates (DrNAS progressive) get no slot: a stage's modules hold its ops only.
        # The modules keep the order they have unpruned, so the parameters' order (which a
        # resumed optimiser's state follows) is the live supernet's and a rebuilt one's alike.
        self.mods = nn.ModuleDict()
        self.plan: list[list[tuple[str, str, tuple[_Target, ...]]]] = []
        pruned = self._pruned()
        for s in range(self.n_total):
            stride = self.stride[s]
            by_op: dict[str, list[tuple]] = {}
            for e in cell.edges:
                if e.src == s:
                    for k, name in enumerate(e.candidates):
                        uses = by_op.setdefault(name, [])
                        if (e.row, k) not in pruned:
                            uses.append((e, k))
            plan = []
            for name, uses in by_op.items():
                kind = op_kind(name)
                key = f"s{s}_{name}"
                if kind == "zero" or not uses:
                    continue
                n = len(uses)
                slots = tuple(_Target(e.row, c, e.dst, i) for i, (e, c) in enumerate(uses))
                op = None if name in SHARED_POOLS else _template(name, C, stride, affine, track)
                stacked = _dw_stack(n, C, op)
                if type(op) is ReLUConvBN and op.conv.groups == 1 and \
                        op.conv.in_channels == op.conv.out_channels == C:
                    # NB201 convs carry a bias exactly when BN is not affine (reference 2.1):
                    # the template says which. Sequential(conv, bn): keys as before.
                    cv = op.conv
                    self.mods[key] = nn.Sequential(
                        nn.Conv2d(C, n * C, cv.kernel_size, cv.stride, cv.padding, cv.dilation,
                                  bias=cv.bias is not None),
                        _bn(n, op.bn))
                    plan.append(("relu_conv_bn", key, slots))
                elif stacked is not None:
                    self.mods[key] = stacked
                    plan.append(("dw_stack", key, slots))
                elif name in SHARED_POOLS or (kind == "identity" and stride == 1):
                    self.mods[key] = MixedEdge((name,), C, stride, affine, track, pool_bn).ops[0]
                    targets = tuple(_Target(e.row, c, e.dst, 0) for e, c in uses)
                    plan.append(("shared", key, targets))
                else:
                    for e, c in uses:
                        ekey = f"{key}_r{e.row}"
                        self.mods[ekey] = MixedEdge((name,), C, stride, affine, track,
                                                    pool_bn).ops[0]
                        plan.append(("edge", ekey, (_Target(e.row, c, e.dst, 0),)))
            self.plan.append(plan)
        # Number the targets in execution order: forward gathers all their α weights with one
        # index op (one backward scatter) instead of two selects per target.
        rows, cols = [], []
        for plan in self.plan:
            for i, (kind, key, targets) in enumerate(plan):
                numbered = []
                for t in targets:
                    numbered.append(attrs.evolve(t, wi=len(rows)))
                    rows.append(t.row)
                    cols.append(t.col)
                plan[i] = (kind, key, tuple(numbered))
        self.register_buffer("w_rows", torch.tensor(rows, dtype=torch.long), persistent=False)
        self.register_buffer("w_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        self._set_live()

    # ---- pruning and widening (DrNAS progressive) -------------------------------------------

    def _pruned(self) -> set[tuple[int, int]]:
        """``(row, column)`` of every pruned candidate (host-side, so a forward never reads the
        device to know what to skip; compiled cells re-trace when it changes)."""
        active = getattr(self, "active", None)
        return set() if active is None else {tuple(rc) for rc in (~active).nonzero().tolist()}

    def _set_live(self) -> None:
        """What forward runs: per source node ``(kind, key, n, targets)``, without the terms of
        candidates pruned since the modules were built (``set_active``; their weight is exactly
        0) and without modules none of whose edges is left. ``rebuild`` drops them entirely."""
        pruned = self._pruned()
        self.live = [[(kind, key, len(targets), kept) for kind, key, targets in plan
                      if (kept := tuple(t for t in targets if (t.row, t.col) not in pruned))]
                     for plan in self.plan]
        # an edge's bypass scales by the weights of its live candidates, as PartialMixedEdge's
        rows, cols = self.real.shape
        active = getattr(self, "active", None)
        live = self.real if active is None else self.real & active[:rows, :cols].to(self.real.device)
        self.register_buffer("live_mask", live, persistent=False)

    def enable_pruning(self, mask: torch.Tensor) -> None:
        """Give the cell a persistent ``active`` buffer (saved in checkpoints, like each
        ``PartialMixedEdge``'s), shaped like its group's α and mask, all real candidates on."""
        if getattr(self, "active", None) is None:
            self.register_buffer("active", mask.detach().clone().to(self.real.device))
            self._set_live()

    def set_active(self, mask: torch.Tensor) -> None:
        """Which candidates run (``mask``: the group's, rows x columns); the rest are skipped."""
        self.active.copy_(mask.to(self.active.device))
        self._set_live()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "active")
        active = getattr(self, "active", None)
        if saved is not None and active is not None and saved.shape == active.shape \
                and not torch.equal(saved.to(active.device), active):
            # a checkpoint of a later stage: modules shaped for its pruning, loaded next
            active.copy_(saved)
            self.rebuild(self.K)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._set_live()

    def rebuild(self, K: int) -> None:
        """New candidate modules at ``C_full / K`` channels for the candidates ``active`` keeps
        (same device, dtype, memory format, mode, ``requires_grad`` flags and BN statistics
        switched off alike; freshly initialised without moving the RNG: the caller loads their
        tensors, e.g. ``load_from`` a widened plain cell). Preprocessing and node norms stay."""
        floats = [t for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()]
        dtype = floats[0].dtype if floats else None
        channels_last = any(p.dim() == 4 and not p.is_contiguous() and
                            p.is_contiguous(memory_format=torch.channels_last)
                            for p in self.mods.parameters())
        old = self.mods
        with torch.random.fork_rng(devices=[]):
            self._build_candidates(K)
        drop_stats_like(old, self.mods)
        frozen = {name for name, q in old.named_parameters() if not q.requires_grad}
        for name, q in self.mods.named_parameters():
            q.requires_grad_(name not in frozen)
        self.mods.to(device=self.real.device, dtype=dtype)
        if channels_last:
            self.mods.to(memory_format=torch.channels_last)
        self.w_rows, self.w_cols = self.w_rows.to(self.real.device), self.w_cols.to(self.real.device)
        self.mods.train(self.training)

    def forward(self, inputs: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
        states = [p(x) for p, x in zip(self.preprocess, inputs)]
        acc: list[torch.Tensor | None] = [None] * self.n_total
        ws = weights[self.w_rows, self.w_cols]
        drop = self.edge_drop.masks(states[0])     # an edge's dropped samples: all its terms
        if drop is not None:                        # one op gives every term its edge's mask
            ws = ws.view(-1, 1, 1, 1, 1) * drop[self.w_rows]
        ws = ws.unbind(0)
        partial = self.K > 1
        if partial:
            rest: list[torch.Tensor | None] = [None] * self.n_total
            rows, cols = self.live_mask.shape
            mass = torch.where(self.live_mask, weights[:rows, :cols], 0).sum(1).unbind(0)
        for s in range(self.n_total):
            if s >= self.n_inputs:
                total = acc[s]
                if partial:
                    total = self._shuffle_in(total, rest[s])
                states.append(self._finish(s, total, states))
            x = states[s]
            if partial and self.out_rows[s]:
                bypass = x[:, self.C:]
                if self.stride[s] == 2:
                    bypass = bypass_pool(bypass)
                for row, dst in self.out_rows[s]:
                    m = mass[row] if drop is None else mass[row] * drop[row]
                    rest[dst] = m * bypass if rest[dst] is None else \
                        torch.addcmul(rest[dst], m, bypass)
                x = x[:, :self.C]
            relu = None                                 # one ReLU(x) for every batched kind
            replicas: dict[int, torch.Tensor] = {}      # ReLU(x) tiled n times, by n
            for kind, key, n, targets in self.live[s]:
                batched = kind in BATCHED
                if batched:
                    if relu is None:
                        relu = F.relu(x)
                    if kind == "dw_stack":
                        inp = replicas.get(n)
                        if inp is None:
                            inp = replicas[n] = _replicate(relu, n)
                    else:
                        inp = relu
                    y = self.mods[key](inp)
                    # unbind, not y[:, slot] per edge: its backward stacks the n gradients once
                    # instead of n zero-filled full-size tensors summed together
                    y = y.view(y.shape[0], n, self.C, *y.shape[2:]).unbind(1)
                else:
                    y = self.mods[key](x)
                for t in targets:
                    term = y[t.slot] if batched else y
                    w = ws[t.wi]
                    acc[t.dst] = w * term if acc[t.dst] is None else \
                        torch.addcmul(acc[t.dst], w, term)
        return self._output(states)

    def _shuffle_in(self, processed: torch.Tensor | None, rest: torch.Tensor) -> torch.Tensor:
        """A node of partial-channel edges: its processed channels (the sum over its edges) and
        its bypass channels, concatenated and channel-shuffled as each edge's output is."""
        if processed is None:       # every incoming candidate is `none`
            processed = rest.new_zeros(rest.shape[0], self.C, *rest.shape[2:])
        return channel_shuffle(torch.cat([processed, rest], dim=1), self.K)

    def _finish(self, n: int, total: torch.Tensor | None, states) -> torch.Tensor:
        if total is None:
            # every incoming candidate is `none`: the node is zero, at its source's stride
            s = self.any_edge[n]
            st = self.stride[s]
            total = states[s][:, :, ::st, ::st] * 0
        if self.mean:
            total = total / self.in_degree[n]
        return self.node_norm[n - self.n_inputs](total)

    def tensor_map(self, cell):
        """Where each edge's weights and statistics live: yields ``(fused, index, plain)`` for
        every parameter and buffer of the candidate ops of the plain ``SearchCell`` ``cell``
        (same cell type), ``fused[index]`` being the tensor that plays ``plain``'s part. Batched
        modules hold edge ``slot`` in channels ``slot*C:(slot+1)*C`` of every tensor (scalars such
        as ``num_batches_tracked`` are shared); a shared module (pools) stands for every edge."""
        C = self.C
        for plan in self.plan:
            for kind, key, targets in plan:
                mod = self.mods[key]
                fused = list(mod.named_parameters()) + list(mod.named_buffers())
                for t in targets:
                    src = cell.edges[t.row].ops[t.col]
                    plain = dict(src.named_parameters()) | dict(src.named_buffers())
                    for name, tensor in fused:
                        if kind == "relu_conv_bn":          # Sequential(conv, bn) vs ReLUConvBN
                            idx, rest = name.split(".", 1)
                            pname = ("conv", "bn")[int(idx)] + "." + rest
                        else:                               # same names as the plain module
                            pname = name
                        if kind in BATCHED and tensor.dim() > 0:
                            index = slice(t.slot * C, (t.slot + 1) * C)
                        else:
                            index = ...
                        yield tensor, index, plain[pname]

    @torch.no_grad()
    def load_from(self, cell) -> None:
        """Copy the weights and BN statistics of a plain ``SearchCell`` of the same cell type."""
        self.preprocess.load_state_dict(cell.preprocess.state_dict())
        self.node_norm.load_state_dict(cell.node_norm.state_dict())
        for fused, index, plain in self.tensor_map(cell):
            fused[index].copy_(plain)

    @torch.no_grad()
    def copy_to(self, cell) -> None:
        """Copy this cell's weights and BN statistics into a plain ``SearchCell`` of its type
        (a shared module's statistics into every edge it stands for: they are equal there)."""
        cell.preprocess.load_state_dict(self.preprocess.state_dict())
        cell.node_norm.load_state_dict(self.node_norm.state_dict())
        for fused, index, plain in self.tensor_map(cell):
            plain.copy_(fused[index])
