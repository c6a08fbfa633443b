"""Discretizers: from a searched supernet to a genotype (reference methods.md §2c, §3c, §4c, §6).

``make_discretizer(part)``; every discretizer has
``derive(supernet, relaxation, extra=None, batches=None) -> Genotype`` and ``needs_data``.

``rule``  The space's own rule (``argmax`` per edge, or ``top k`` inputs per node with ``none``
    excluded) applied to the relaxation's strengths: softmax(α) for DARTS, softmax(η) (or the
    Dirichlet mean) for DrNAS, softmax(α)·β̂ for PC-DARTS. See
    :func:`dslnas.methods.relaxations.derive_from_strengths`.

``decorrelation``  iDARTS (Wang et al.). The paper's details are not public (no code), so every
    choice is an option; defaults in brackets:

    - ``batches`` [4]: how many batches of ``batches`` (the iterable given to ``derive``, items
      ``x`` or ``(x, y)``) are run; scores are averaged over batches and over all cells of an α
      group (every cell of a type contributes one score per edge and op per batch).
    - forward weights: the relaxation's deterministic strengths (never a random sample).
    - ``mode`` ["eval"]: the supernet runs in eval mode (BN running statistics, no side effects;
      "train" uses batch statistics and updates the running ones).
    - ``node`` ["sum"]: the node output compared with the ops is the sum of its incoming edges
      before node normalisation; "state" takes it after (identical without node_norm).
    - decorrelation: the candidate outputs of an edge (each op's own output, before weighting),
      flattened over the batch, are orthogonalised by (modified) Gram–Schmidt in ``order``
      ["candidate": the α column order; "reverse"; "strength": decreasing forward weight, so the
      strongest op keeps its raw output]. An output that is zero or (numerically) in the span of
      the earlier ones has no decorrelated part and scores 0 (``none`` always scores 0).
    - ``similarity`` ["cosine"]: cosine between the node output and the op's decorrelated
      output; "inner": their inner product divided by the number of elements. ``absolute``
      [False] scores by the magnitude (an anti-correlated op then counts as similar).
    - partial-channel edges: only the C/K processed channels reach the ops, so the op outputs are
      compared with the node output at the positions the channel shuffle puts those channels.
    - ops that did not run (pruned by DrNAS' progressive scheme) or masked columns score -inf.
    - selection: the space's rule with the scores in place of the strengths.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

import torch

from ..genotype import Genotype
from ..ops import op_kind
from ..supernet.partial import processed_positions
from .relaxations import derive_from_strengths
from .spec import instantiate

__all__ = ["Discretizer", "Rule", "Decorrelation", "DISCRETIZERS", "make_discretizer",
           "decorrelation_scores"]


class Discretizer:
    name = "discretizer"
    needs_data = False

    def derive(self, supernet, relaxation, extra=None, batches: Iterable | None = None) -> Genotype:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Rule(Discretizer):
    name = "rule"

    def derive(self, supernet, relaxation, extra=None, batches=None) -> Genotype:
        return derive_from_strengths(supernet.ir, relaxation.strengths(supernet, extra))


def decorrelation_scores(outputs: Sequence[torch.Tensor | None], target: torch.Tensor,
                         order: Sequence[int] | None = None, similarity: str = "cosine",
                         absolute: bool = False, rel_eps: float = 1e-6) -> torch.Tensor:
    """Score each candidate output against ``target`` after Gram–Schmidt in ``order``.

    ``outputs[k]`` is op k's output (any shape with ``target.numel()`` elements) or None (op not
    run: score -inf). Returns a float64 tensor of one score per candidate.
    """
    K = len(outputs)
    order = list(range(K)) if order is None else list(order)
    t = target.detach().reshape(-1).to(torch.float64)
    t_norm = t.norm()
    scores = torch.full((K,), float("-inf"), dtype=torch.float64)
    basis: list[torch.Tensor] = []
    for k in order:
        if outputs[k] is None:
            continue
        v = outputs[k].detach().reshape(-1).to(device=t.device, dtype=torch.float64)
        if v.numel() != t.numel():
            raise ValueError(f"op output {k} has {v.numel()} elements, the node {t.numel()}")
        v0 = v.norm()
        for u in basis:                       # modified Gram–Schmidt
            v = v - (v @ u) * u
        r = v.norm()
        if r <= rel_eps * max(float(v0), 1e-30) or r == 0:
            scores[k] = 0.0
            continue
        basis.append(v / r)
        if similarity == "cosine":
            s = (t @ v) / (t_norm * r) if t_norm > 0 else torch.zeros((), dtype=torch.float64)
        else:
            s = (t @ v) / t.numel()
        scores[k] = s.abs().item() if absolute else s.item()
    return scores


class Decorrelation(Discretizer):
    name = "decorrelation"
    needs_data = True

    def __init__(self, batches: int = 4, order: str = "candidate", similarity: str = "cosine",
                 node: str = "sum", mode: str = "eval", absolute: bool = False):
        for opt, val, allowed in (("order", order, ("candidate", "reverse", "strength")),
                                  ("similarity", similarity, ("cosine", "inner")),
                                  ("node", node, ("sum", "state")),
                                  ("mode", mode, ("eval", "train"))):
            if val not in allowed:
                raise ValueError(f"decorrelation: {opt} must be one of {allowed}, got {val!r}")
        if int(batches) < 1:
            raise ValueError(f"decorrelation: batches must be >= 1, got {batches}")
        self.batches, self.order, self.similarity = int(batches), order, similarity
        self.node, self.mode, self.absolute = node, mode, bool(absolute)

    def _order(self, w_row: torch.Tensor, n: int) -> list[int]:
        if self.order == "candidate":
            return list(range(n))
        if self.order == "reverse":
            return list(range(n - 1, -1, -1))
        return torch.sort(-w_row[:n].detach().cpu().double(), stable=True).indices.tolist()

    @torch.no_grad()
    def scores(self, supernet, weights: dict[str, torch.Tensor],
               batches: Iterable) -> dict[str, torch.Tensor]:
        """Per group, the (E, K) scores averaged over batches and cells (-inf: never scored)."""
        supernet = supernet.plain_twin()    # the hooks need each edge's own op modules
        ir = supernet.ir
        sums = {g.name: torch.zeros(g.shape, dtype=torch.float64) for g in ir.groups}
        counts = {g.name: torch.zeros(g.shape, dtype=torch.float64) for g in ir.groups}
        stash: dict[tuple[int, int], dict[int, torch.Tensor]] = {}
        handles = []

        def op_hook(i, row, k):
            def hook(module, inputs, output):
                stash.setdefault((i, row), {})[k] = output.detach()
            return hook

        def node_hook(i, cell, group, node):
            def hook(module, inputs, output):
                target = inputs[0] if self.node == "sum" else output
                for row, _src in cell.incoming[node]:
                    outs = stash.pop((i, row), {})
                    edge = cell.edges[row]
                    n = len(edge.candidates)
                    t = target
                    K = getattr(edge, "K", 1)
                    if K > 1:
                        t = target.index_select(1, processed_positions(edge.C, K).to(target.device))
                    active = getattr(edge, "active", None)
                    outputs = [outs.get(k) for k in range(n)]
                    for k, name in enumerate(edge.candidates):
                        # plain edges skip `none` in the forward pass: its output is zero
                        if outputs[k] is None and op_kind(name) == "zero" and \
                                (active is None or bool(active[k])):
                            outputs[k] = torch.zeros_like(t)
                    s = decorrelation_scores(outputs, t,
                                             self._order(weights[group][row], n),
                                             self.similarity, self.absolute)
                    ok = torch.isfinite(s)
                    sums[group][row, :n] += torch.where(ok, s, torch.zeros_like(s))
                    counts[group][row, :n] += ok.double()
            return hook

        for i, (kind, cell) in enumerate(zip(supernet.net.kinds, supernet.net.blocks)):
            if kind != "cell":
                continue
            group = supernet.cell_groups[i]
            for row, edge in enumerate(cell.edges):
                for k, op in enumerate(edge.ops):
                    handles.append(op.register_forward_hook(op_hook(i, row, k)))
            for j, norm in enumerate(cell.node_norm):
                handles.append(norm.register_forward_hook(node_hook(i, cell, group, cell.n_inputs + j)))

        was_training = supernet.training
        supernet.train(self.mode == "train")
        # train mode updates BN running statistics: put them back, so that deriving (every
        # epoch) never changes the search, on plain cells or on a fused supernet's twin alike
        saved = [(b, b.clone()) for b in supernet.buffers()] if self.mode == "train" else []
        device = next(supernet.parameters()).device
        n_batches = 0
        try:
            for item in itertools.islice(batches, self.batches):
                x = item[0] if isinstance(item, (tuple, list)) else item
                supernet(x.to(device), weights)
                stash.clear()
                n_batches += 1
        finally:
            for h in handles:
                h.remove()
            for b, value in saved:
                b.copy_(value)
            supernet.train(was_training)
        if n_batches == 0:
            raise ValueError("decorrelation: no batches to score on")
        out = {}
        for g in sums:
            s = torch.where(counts[g] > 0, sums[g] / counts[g].clamp_min(1), float("-inf"))
            out[g] = s.masked_fill(~supernet.mask(g).cpu(), float("-inf"))
        return out

    def derive(self, supernet, relaxation, extra=None, batches=None) -> Genotype:
        if batches is None:
            raise ValueError("the decorrelation discretizer needs data: pass batches=")
        weights = relaxation.strengths(supernet, extra)
        return derive_from_strengths(supernet.ir, self.scores(supernet, weights, batches))

    def __repr__(self) -> str:
        return (f"Decorrelation(batches={self.batches}, order={self.order!r}, "
                f"similarity={self.similarity!r}, node={self.node!r}, mode={self.mode!r}, "
                f"absolute={self.absolute})")


DISCRETIZERS = {"rule": Rule, "decorrelation": Decorrelation}


def make_discretizer(part: Any) -> Discretizer:
    return instantiate(part, DISCRETIZERS, "discretizer")
