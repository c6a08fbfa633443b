"""Relaxations: how the architecture parameters become the edge weights of a forward pass.

Each relaxation is a small object made from its ``Part`` options (``make_relaxation(part)``):

- ``extra_parameters(supernet) -> dict[str, nn.Parameter]``: architecture parameters beyond the
  supernet's ``alphas`` (PC-DARTS edge β). The caller puts them in the architecture optimiser and
  the checkpoint, and passes the same dict back as ``extra``.
- ``weights(supernet, extra) -> {group: Tensor(E, K)}``: what ``supernet(x, weights)`` uses.
  Differentiable; padded and pruned columns (``supernet.mask(group)`` false) are exactly 0.
- ``strengths(supernet, extra) -> {group: Tensor(E, K)}``: deterministic, detached weights for
  the genotype (:func:`derive_from_strengths`) and for activation-based discretizers.
- ``regulariser(supernet, extra) -> Tensor | None``: a term to add to the architecture loss.
- ``arch_weight_decay(default) -> float``: the Adam weight decay the architecture optimiser should
  use (DrNAS' KL anchor replaces the L2 one, so it asks for 0).

Relaxations (reference methods.md §2–§4):

``softmax``       DARTS: ``softmax(α)`` over each edge's real candidates; strengths = weights.
``dirichlet``     DrNAS: ``p ~ Dir(ELU(η) + 1)`` by ``rsample`` (pathwise gradients). One sample
                  per group per ``weights`` call, so every cell of a type shares it and each call
                  (forward) gets a fresh one. Masked (padded / pruned) columns are set to 0 and
                  the row renormalised; for the kept columns this is exactly ``Dir(c_kept)``
                  (aggregation property of the Dirichlet). Options:
                  ``reg = "l2"`` (default: nothing here, the arch Adam weight decay 1e-3 is DrNAS'
                  L2 anchor) | ``"kl"`` (``reg_scale · Σ_edges KL(Dir(c) ‖ Dir(anchor))``, and
                  ``arch_weight_decay`` 0); ``reg_scale = 1e-3``; ``anchor = 1.0``;
                  ``strength = "softmax"`` (code parity: ``softmax(η)``) | ``"mean"``
                  (the Dirichlet mean ``c / Σc``). Both give the same per-edge argmax; they can
                  rank edges differently under a ``top k`` rule (§4c).
``softmax_beta``  PC-DARTS: extra ``beta_<group>`` of shape (E,), ``1e-3·N(0,1)``; the edge weight
                  ``β̂ = softmax(β)`` over the incoming edges of each node; the weights are
                  ``softmax(α)·β̂`` per row (folding β̂ into the row is exact for ``MixedEdge``;
                  ``PartialMixedEdge`` scales its bypass by the row sum, i.e. by β̂ too).
                  Strengths = the same product (PC-DARTS' genotype rule).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..genotype import Genotype, derive
from ..supernet.network import masked_softmax
from .spec import instantiate

__all__ = ["Relaxation", "Softmax", "Dirichlet", "SoftmaxBeta", "RELAXATIONS", "make_relaxation",
           "derive_from_strengths", "edge_normalise", "dirichlet_kl"]


class Relaxation:
    name = "relaxation"
    samples = False         # draws random numbers in every forward (then inside CUDA graphs)

    def extra_parameters(self, supernet) -> dict[str, nn.Parameter]:
        return {}

    def weights(self, supernet, extra: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def strengths(self, supernet, extra: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def regulariser(self, supernet, extra: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        return None

    def arch_weight_decay(self, default: float) -> float:
        return default

    def genotype(self, supernet, extra: Mapping[str, torch.Tensor] | None = None) -> Genotype:
        """The space's own rule applied to :meth:`strengths`."""
        return derive_from_strengths(supernet.ir, self.strengths(supernet, extra))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Softmax(Relaxation):
    name = "softmax"

    def weights(self, supernet, extra=None):
        return {g: masked_softmax(a, supernet.mask(g)) for g, a in supernet.alphas.items()}

    def strengths(self, supernet, extra=None):
        with torch.no_grad():
            return {g: w.detach() for g, w in self.weights(supernet, extra).items()}


class Dirichlet(Relaxation):
    name = "dirichlet"
    samples = True

    def __init__(self, reg: str = "l2", reg_scale: float = 1e-3, anchor: float = 1.0,
                 strength: str = "softmax"):
        if reg not in ("l2", "kl"):
            raise ValueError(f"dirichlet: reg must be 'l2' or 'kl', got {reg!r}")
        if strength not in ("softmax", "mean"):
            raise ValueError(f"dirichlet: strength must be 'softmax' or 'mean', got {strength!r}")
        if anchor <= 0:
            raise ValueError(f"dirichlet: anchor must be > 0, got {anchor}")
        self.reg, self.reg_scale, self.anchor, self.strength = reg, float(reg_scale), float(anchor), strength

    @staticmethod
    def concentration(eta: torch.Tensor) -> torch.Tensor:
        """``ELU(η) + 1 > 0`` (DrNAS)."""
        return nn.functional.elu(eta) + 1.0

    def sample(self, eta: torch.Tensor, mask: torch.Tensor, sample_shape=torch.Size()) -> torch.Tensor:
        """``rsample`` of ``Dir(ELU(η)+1)`` per row, masked columns 0 and the row renormalised."""
        c = torch.where(mask, self.concentration(eta), torch.ones_like(eta))
        # validate_args=False: the argument check would sync with the device on every call
        p = torch.distributions.Dirichlet(c, validate_args=False).rsample(torch.Size(sample_shape))
        p = p * mask
        return p / p.sum(-1, keepdim=True)

    def weights(self, supernet, extra=None):
        # one draw per group: every cell of the group sees the same sample in this forward
        return {g: self.sample(a, supernet.mask(g)) for g, a in supernet.alphas.items()}

    def strengths(self, supernet, extra=None):
        with torch.no_grad():
            out = {}
            for g, a in supernet.alphas.items():
                m = supernet.mask(g)
                if self.strength == "softmax":
                    out[g] = masked_softmax(a, m).detach()
                else:
                    c = self.concentration(a) * m
                    out[g] = (c / c.sum(-1, keepdim=True)).detach()
            return out

    def regulariser(self, supernet, extra=None):
        if self.reg != "kl":
            return None
        total = None
        for g, a in supernet.alphas.items():
            kl = dirichlet_kl(self.concentration(a), supernet.mask(g), self.anchor).sum()
            total = kl if total is None else total + kl
        return self.reg_scale * total

    def arch_weight_decay(self, default: float) -> float:
        return 0.0 if self.reg == "kl" else default

    def __repr__(self) -> str:
        return (f"Dirichlet(reg={self.reg!r}, reg_scale={self.reg_scale}, anchor={self.anchor}, "
                f"strength={self.strength!r})")


def dirichlet_kl(c: torch.Tensor, mask: torch.Tensor, anchor: float = 1.0) -> torch.Tensor:
    """Per row ``KL(Dir(c_real) ‖ Dir(anchor·1))`` over the columns where ``mask`` is true.

    KL(Dir(a) ‖ Dir(b)) = lnΓ(Σa) − Σ lnΓ(a_k) − lnΓ(Σb) + Σ lnΓ(b_k) + Σ (a_k − b_k)(ψ(a_k) − ψ(Σa)).
    """
    m = mask.to(c.dtype)
    c = torch.where(mask, c, torch.ones_like(c))
    b = torch.full_like(c, anchor)
    a0 = (c * m).sum(-1)
    b0 = (b * m).sum(-1)
    return (torch.lgamma(a0) - (torch.lgamma(c) * m).sum(-1) - torch.lgamma(b0)
            + (torch.lgamma(b) * m).sum(-1)
            + ((c - b) * (torch.digamma(c) - torch.digamma(a0).unsqueeze(-1)) * m).sum(-1))


class SoftmaxBeta(Relaxation):
    name = "softmax_beta"

    def __init__(self, init_scale: float = 1e-3):
        self.init_scale = float(init_scale)
        self._dst: dict[tuple, tuple[torch.Tensor, int]] = {}

    @staticmethod
    def key(group: str) -> str:
        return f"beta_{group}"

    def extra_parameters(self, supernet):
        device = next(iter(supernet.alphas.values())).device
        return {self.key(g.name):
                nn.Parameter(self.init_scale * torch.randn(g.shape[0], device=device))
                for g in supernet.ir.groups}

    def _destinations(self, supernet, group: str, device) -> tuple[torch.Tensor, int]:
        # Cached per device: no host-to-device copy per step (and none inside a CUDA graph).
        k = (id(supernet.ir), group, torch.device(device))
        if k not in self._dst:
            g = next(x for x in supernet.ir.groups if x.name == group)
            cell = supernet.ir.cell(g.cell)
            dst = torch.zeros(g.shape[0], dtype=torch.long)
            for e in cell.edges:
                dst[e.row] = e.dst
            self._dst[k] = (dst.to(device), cell.n_inputs + cell.n_nodes)
        return self._dst[k]

    def edge_weights(self, supernet, extra: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """β̂ per group: softmax of β over the incoming edges of each node, shape (E,)."""
        out = {}
        for g in supernet.alphas:
            beta = _extra(extra, self.key(g))
            dst, n = self._destinations(supernet, g, beta.device)
            out[g] = edge_normalise(beta, dst, n)
        return out

    def weights(self, supernet, extra=None):
        bh = self.edge_weights(supernet, extra)
        return {g: masked_softmax(a, supernet.mask(g)) * bh[g].unsqueeze(-1)
                for g, a in supernet.alphas.items()}

    def strengths(self, supernet, extra=None):
        with torch.no_grad():
            return {g: w.detach() for g, w in self.weights(supernet, extra).items()}

    def __repr__(self) -> str:
        return f"SoftmaxBeta(init_scale={self.init_scale})"


def _extra(extra: Mapping[str, torch.Tensor] | None, key: str) -> torch.Tensor:
    if not extra or key not in extra:
        raise KeyError(f"relaxation needs the extra architecture parameter {key!r}; pass the dict "
                       f"returned by extra_parameters(supernet)")
    return extra[key]


def edge_normalise(beta: torch.Tensor, dst: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Softmax of ``beta`` within each group of rows sharing a destination node ``dst``."""
    m = torch.full((n_nodes,), float("-inf"), dtype=beta.dtype, device=beta.device)
    m = m.scatter_reduce(0, dst, beta.detach(), reduce="amax")
    e = torch.exp(beta - m[dst])
    s = torch.zeros(n_nodes, dtype=beta.dtype, device=beta.device).index_add(0, dst, e)
    return e / s[dst]


RELAXATIONS = {"softmax": Softmax, "dirichlet": Dirichlet, "softmax_beta": SoftmaxBeta}


def make_relaxation(part: Any) -> Relaxation:
    """A relaxation from a ``Part`` (or a bare name)."""
    return instantiate(part, RELAXATIONS, "relaxation")


def derive_from_strengths(ir, strengths: Mapping[str, torch.Tensor]) -> Genotype:
    """The space's rules (``argmax`` per edge / ``top k`` per node) on already-normalised weights.

    ``genotype.derive`` with ``normalise="none"``: ``argmax`` always reads the raw row, and
    ``top k`` ranks edges by their largest non-``none`` strength without a second softmax. Masked
    (pruned) columns carry strength 0 and so lose to every kept op with a positive strength.
    """
    return derive(ir, {g: s.detach().float().cpu() for g, s in strengths.items()}, normalise="none")
