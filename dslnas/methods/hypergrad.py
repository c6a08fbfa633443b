"""Hypergradient strategies for the architecture step of a bilevel search.

Bilevel problem (reference methods.md §1.1)::

    min_α L_val(w*(α), α)   s.t.   w*(α) = argmin_w L_train(w, α)

With ``H = ∇²_w L_train`` and ``M = ∇²_{α,w} L_train`` (the α-row, w-column mixed
block) the implicit-function-theorem hypergradient is
``g* = ∇_α L_val − M · H⁻¹ · ∇_w L_val``. Every strategy here returns
``∇_α L_val − M · (P · ∇_w L_val)`` for some approximation ``P`` of ``H⁻¹``:

- :class:`FirstOrder`  P = 0                                   (DARTS-V1)
- :class:`Unrolled`    P = ξ·I, at the one-step unrolled w'    (DARTS-V2, §2)
- :class:`Neumann`     P = γ Σ_{k=0..K} (I − γH)^k             (iDARTS-Zhang, §7)
- :class:`Amended`     P = η·(H + δI)                          (Amended-DARTS, §8)

All second-order products go through three helpers: :func:`hvp` (H·v),
:func:`mixed_vp` (M·v) by double backprop, and :func:`finite_difference_mixed`
(M·v by a central difference of ∇_α L at w ± r·v).

Contract shared by every strategy ``s(problem, train_batch, val_batch)``:

- returns one detached tensor per alpha (dL/dα); it never writes ``.grad``,
  neither of α nor of w, so the caller decides how to apply it;
- perturbs the weights *in place* (so an ``nn.Module`` owning them sees the
  perturbation) and restores them by copying saved clones back, so they are
  bit-identical on return. Any autograd graph the caller built from the weights
  before the call is invalidated by those in-place writes (version counter).
- buffers are not saved: extra forward passes in train mode still update e.g.
  BatchNorm running statistics, exactly as in the official DARTS code.
- a forward whose gradient is wanted for α only (or for w only) holds the other side
  constant (:func:`_constant`): no backward, eager or compiled, computes gradients that
  nobody reads.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

import attrs
import torch
from torch import Tensor

__all__ = [
    "Bilevel",
    "Hypergradient",
    "FirstOrder",
    "Unrolled",
    "Neumann",
    "Amended",
    "hvp",
    "hessian",
    "mixed_vp",
    "finite_difference_mixed",
]


@attrs.define
class Bilevel:
    """The bilevel problem as the search loop sees it.

    ``train_loss(batch)`` / ``val_loss(batch)`` must evaluate the loss at the
    *current* values of ``weights`` and ``alphas`` (typically a forward pass of
    the supernet that owns them). ``weight_optimizer`` is the SGD optimizer of
    ``weights``; strategies read lr, momentum buffers and weight decay from it
    but never step it. ``weights`` and ``alphas`` are disjoint: a pass that reads
    only one side's gradient holds the other constant.
    """

    weights: list[torch.nn.Parameter]
    alphas: list[torch.nn.Parameter]
    train_loss: Callable[[Any], Tensor]
    val_loss: Callable[[Any], Tensor]
    weight_optimizer: torch.optim.Optimizer | None = None


class Hypergradient(Protocol):
    def __call__(self, problem: Bilevel, train_batch: Any, val_batch: Any) -> list[Tensor]: ...


# ----------------------------------------------------------------------------- primitives


def _grad(out: Tensor, inputs: Sequence[Tensor], create_graph: bool = False,
          retain_graph: bool | None = None) -> list[Tensor]:
    """autograd.grad that returns zeros (not None) for inputs ``out`` does not depend on."""
    if not out.requires_grad:  # e.g. a loss that ignores every input
        return [torch.zeros_like(x) for x in inputs]
    gs = torch.autograd.grad(out, list(inputs), create_graph=create_graph,
                             retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(gs, inputs)]


@contextmanager
def _constant(params: Sequence[Tensor]) -> Iterator[None]:
    """Hold ``params`` constant in the forwards run inside the block: autograd records no
    path to them, so the backward computes none of their gradients. ``autograd.grad``'s
    ``inputs`` prune eager kernels too, but a compiled cell's backward is one fused function
    that returns a gradient for every input that required grad when it was traced; compiled
    cells are specialised on ``requires_grad``, so this selects the graph without them.
    (First-order DARTS' architecture step: the weights' gradients are 1/3 of its
    convolution FLOPs.)"""
    flipped = []
    try:
        for p in params:
            if p.requires_grad:
                p.requires_grad_(False)
                flipped.append(p)
        yield
    finally:
        for p in flipped:
            p.requires_grad_(True)


def _alpha_grads(loss_fn: Callable[[], Tensor], weights: Sequence[Tensor],
                 alphas: Sequence[Tensor]) -> list[Tensor]:
    """∇_α of ``loss_fn()``, the weights held constant (so none may be an alpha)."""
    if {id(w) for w in weights} & {id(a) for a in alphas}:
        raise ValueError("a tensor is both a weight and an alpha")
    with _constant(weights):
        return [g.detach() for g in _grad(loss_fn(), alphas)]


def _dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(xs, ys))


def _norm(xs: Sequence[Tensor]) -> Tensor:
    return torch.sqrt(sum((x.detach() ** 2).sum() for x in xs))


def _save(params: Sequence[Tensor]) -> list[Tensor]:
    return [p.detach().clone() for p in params]


@torch.no_grad()
def _restore(params: Sequence[Tensor], saved: Sequence[Tensor]) -> None:
    # copy_ rather than sub_: w + r·v − r·v is not bit-identical to w in floating point
    for p, s in zip(params, saved):
        p.copy_(s)


def hvp(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], vec: Sequence[Tensor]) -> list[Tensor]:
    """H·vec with H = ∇²_params loss_fn(), by double backprop (Pearlmutter)."""
    return _HessianOperator(loss_fn, params)(vec)


class _HessianOperator:
    """v ↦ H·v reusing one first-order graph, so K products cost one forward (Neumann).

    The retained graph is freed when the operator is garbage collected.
    """

    def __init__(self, loss_fn: Callable[[], Tensor], params: Sequence[Tensor]):
        self.params = list(params)
        # create_graph: the gradient itself must be differentiable once more
        self.grads = _grad(loss_fn(), self.params, create_graph=True)

    def __call__(self, vec: Sequence[Tensor]) -> list[Tensor]:
        # vec is detached: we want H·v, not a graph through v
        inner = _dot(self.grads, [v.detach() for v in vec])
        return [h.detach() for h in _grad(inner, self.params, retain_graph=True)]


def hessian_operator(loss_fn: Callable[[], Tensor], params: Sequence[Tensor],
                     entries: Sequence[Tensor] | None = None,
                     hold: Sequence[Tensor] = ()) -> tuple[int, Callable[[Tensor], Tensor]]:
    """``(n, v ↦ H·v)`` for the Hessian of ``loss_fn()`` w.r.t. the selected entries of
    ``params``, flattened in order into vectors of length n; every product reuses one retained
    graph. ``entries``: a boolean mask per parameter (default: every entry); ``hold``: tensors
    held constant in the forward (the weights, when only the architecture's curvature is
    wanted)."""
    params = list(params)
    entries = [None] * len(params) if entries is None else list(entries)
    if len(entries) != len(params):
        raise ValueError(f"{len(entries)} entry masks for {len(params)} parameters")
    masks = [torch.ones_like(p, dtype=torch.bool) if m is None else m.to(p.device).bool()
             for p, m in zip(params, entries)]
    with _constant(hold):
        op = _HessianOperator(loss_fn, params)
    sizes = [int(m.sum()) for m in masks]

    def matvec(v: Tensor) -> Tensor:
        vec = [torch.zeros_like(p) for p in params]
        for x, m, part in zip(vec, masks, v.split(sizes)):
            x[m] = part.to(x)
        return torch.cat([h[m] for h, m in zip(op(vec), masks)])

    return sum(sizes), matvec


def dense(n: int, matvec: Callable[[Tensor], Tensor]) -> Tensor:
    """The n×n matrix of a :func:`hessian_operator`: one H·e_i per entry."""
    if n == 0:
        return torch.zeros(0, 0)
    return torch.stack([matvec(e) for e in torch.eye(n, dtype=torch.float64)], dim=1)


def hessian(loss_fn: Callable[[], Tensor], params: Sequence[Tensor],
            entries: Sequence[Tensor] | None = None, hold: Sequence[Tensor] = ()) -> Tensor:
    """The dense Hessian of ``loss_fn()`` w.r.t. the selected entries of ``params``."""
    return dense(*hessian_operator(loss_fn, params, entries, hold))


def mixed_vp(loss_fn: Callable[[], Tensor], weights: Sequence[Tensor], alphas: Sequence[Tensor],
             vec: Sequence[Tensor]) -> list[Tensor]:
    """M·vec = ∂/∂α ⟨∇_w L, vec⟩, one tensor per alpha, by double backprop."""
    gw = _grad(loss_fn(), weights, create_graph=True)
    inner = _dot(gw, [v.detach() for v in vec])
    return [g.detach() for g in _grad(inner, alphas)]


def finite_difference_mixed(loss_fn: Callable[[], Tensor], weights: Sequence[Tensor],
                            alphas: Sequence[Tensor], vec: Sequence[Tensor],
                            r: float | Tensor) -> list[Tensor]:
    """M·vec ≈ [∇_α L(w + r·vec) − ∇_α L(w − r·vec)] / (2r)   (DARTS' official form).

    Weights are perturbed in place and restored from a saved clone. No
    create_graph: each side needs only a plain first-order backward. ``r`` may be a
    0-dim tensor on the weights' device (nothing is read back to the host).
    """
    saved = _save(weights)
    try:
        with torch.no_grad():
            for p, v in zip(weights, vec):
                p.add_(v * r)
        g_plus = _alpha_grads(loss_fn, weights, alphas)
        with torch.no_grad():
            for p, s, v in zip(weights, saved, vec):
                p.copy_(s).sub_(v * r)  # from the clean copy, not by −2r·v
        g_minus = _alpha_grads(loss_fn, weights, alphas)
    finally:
        _restore(weights, saved)
    return [(gp - gm) / (2 * r) for gp, gm in zip(g_plus, g_minus)]


def _mixed_term(problem: Bilevel, train_batch: Any, vec: Sequence[Tensor], exact: bool,
                eps: float) -> list[Tensor]:
    """M·vec on the training loss at the current weights; FD radius eps/‖vec‖ (DARTS)."""
    loss_fn = lambda: problem.train_loss(train_batch)  # noqa: E731
    if exact:
        return mixed_vp(loss_fn, problem.weights, problem.alphas, vec)
    # r stays on the device (no host sync: the step can be a CUDA graph). ‖vec‖ = 0 would give
    # r = inf; clamped, r is finite, w ± r·0 = w and the difference is exactly 0 (the two
    # forwards still run and update BN running statistics, as for any other vec).
    norm = _norm(vec)
    r = eps / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    return finite_difference_mixed(loss_fn, problem.weights, problem.alphas, vec, r)


def _val_grads(problem: Bilevel, val_batch: Any) -> tuple[list[Tensor], list[Tensor]]:
    """(∇_α L_val, ∇_w L_val) from one backward pass."""
    n = len(problem.alphas)
    gs = _grad(problem.val_loss(val_batch), [*problem.alphas, *problem.weights])
    return [g.detach() for g in gs[:n]], [g.detach() for g in gs[n:]]


def _sgd_settings(problem: Bilevel) -> list[tuple[float | Tensor, float, float, Tensor | None]]:
    """(lr, momentum, weight_decay, momentum_buffer or None) for each weight, per its param group.
    A tensor lr (CUDA graphs lend one to the groups) stays a tensor: reading it is a host sync."""
    opt = problem.weight_optimizer
    if opt is None:
        raise ValueError("this strategy reads lr/momentum/weight decay from Bilevel.weight_optimizer, "
                         "which is None")
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    out = []
    for p in problem.weights:
        g = group_of.get(id(p))
        if g is None:
            raise ValueError("a weight tensor is not managed by Bilevel.weight_optimizer")
        buf = opt.state.get(p, {}).get("momentum_buffer")
        lr = g["lr"] if torch.is_tensor(g["lr"]) else float(g["lr"])
        out.append((lr, float(g.get("momentum", 0.0)), float(g.get("weight_decay", 0.0)), buf))
    return out


def _lrs(problem: Bilevel, override: float | None) -> list[float | Tensor]:
    if override is not None:
        return [float(override)] * len(problem.weights)
    return [lr for lr, _, _, _ in _sgd_settings(problem)]


def _subtract(d: Sequence[Tensor], h: Sequence[Tensor]) -> list[Tensor]:
    return [a - b for a, b in zip(d, h)]


# ----------------------------------------------------------------------------- strategies

def _number(lo_ok):
    def check(inst, attribute, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or not lo_ok(value):
            raise ValueError(f"{attribute.name} must be a finite number "
                             f"{'> 0' if lo_ok(0) is False else '>= 0'}, got {value!r}")
    return check


_positive = _number(lambda v: v > 0)
_nonnegative = _number(lambda v: v >= 0)
_optional_positive = attrs.validators.optional(_positive)


def _count(inst, attribute, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be an integer >= 0, got {value!r}")


def _flag(inst, attribute, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{attribute.name} must be true or false, got {value!r}")



def single_backward(strategy) -> bool:
    """Whether ``strategy`` needs only first-order backward passes, which compiled autograd
    graphs support (the search runs the others' architecture step in the cells' eager code).
    No strategy reads a value back to the host: a tensor lr stays a tensor throughout."""
    return type(strategy) is FirstOrder or (type(strategy) is Unrolled and not strategy.exact)


@attrs.frozen
class FirstOrder:
    """DARTS first order (§2a, ξ = 0): g = ∇_α L_val(w, α). The train batch is unused."""

    def __call__(self, problem: Bilevel, train_batch: Any, val_batch: Any) -> list[Tensor]:
        return _alpha_grads(lambda: problem.val_loss(val_batch), problem.weights, problem.alphas)


@attrs.frozen
class Unrolled:
    """DARTS second order (§2a): differentiate L_val through one virtual SGD step.

    1. ``w' = w − ξ·(μ·m + ∇_w L_train(w, α) + λ·w)`` with ξ, μ, λ and the
       momentum buffer m (0 if absent) read from ``weight_optimizer``, per param
       group. Nesterov and dampening are ignored, as in the official code.
    2. ``d = ∇_α L_val(w', α)``, ``v = ∇_{w'} L_val(w', α)``.
    3. back at the original w: ``g = d − M·(ξ·v)``, M of L_train at w.

    ``exact=False`` (official): M·(ξv) by central difference at ``w ± R·v``,
    ``R = eps/‖v‖``. ξ is folded into the vector (``w ± R'·ξv`` with
    ``R' = eps/‖ξv‖``): the same points and value as DARTS' ``ξ·h`` when all
    groups share one lr, and still correct when they do not.
    ``exact=True``: M·(ξv) by double backprop.

    Only ∇_w L_train depends on α in step 1, so this is the exact α-derivative
    of ``L_val(w'(α), α)`` (up to the finite difference when ``exact=False``).
    """

    eps: float = attrs.field(default=0.01, validator=_positive)
    exact: bool = attrs.field(default=False, validator=_flag)

    def __call__(self, problem: Bilevel, train_batch: Any, val_batch: Any) -> list[Tensor]:
        w = problem.weights
        settings = _sgd_settings(problem)
        with _constant(problem.alphas):  # no create_graph: w' is a plain tensor
            gw = _grad(problem.train_loss(train_batch), w)
        saved = _save(w)
        try:
            with torch.no_grad():
                for p, g, (lr, mom, wd, buf) in zip(w, gw, settings):
                    step = g + wd * p
                    if mom != 0.0 and buf is not None:
                        step = step + mom * buf
                    p.sub_(lr * step)
            d, v = _val_grads(problem, val_batch)
        finally:
            _restore(w, saved)  # the mixed term is evaluated at w, not w' (darts issue #21)
        vec = [lr * vi for vi, (lr, _, _, _) in zip(v, settings)]
        return _subtract(d, _mixed_term(problem, train_batch, vec, self.exact, self.eps))


@attrs.frozen
class Neumann:
    """iDARTS, Zhang et al. ICML 2021 (§7a): IFT hypergradient with a truncated Neumann series.

    ``g = ∇_α L_val(w, α) − M · γ Σ_{k=0..K} (I − γH)^k · ∇_w L_val(w, α)``

    with H, M of L_train on ``train_batch`` at the current w. The series
    approximates H⁻¹ when ‖I − γH‖ < 1 (γ < 2/λ_max for positive definite H).
    "Stochastic" means the search loop passes a *fresh* random training batch;
    the T SGD steps on w before each α step are the search loop's job too
    (``schedule.inner_steps``).

    Defaults (§7b, NB201 notebook): K = 2, γ = current weight lr (``gamma=None``).

    We follow the paper's equation, not the official code. Differences:

    - official code restores w after the finite difference with +R·v0 instead of
      undoing ±R·u, leaving a drift down the *validation* gradient every α step;
      we restore w bit-exactly;
    - the NB201 notebook's inner loop steps a deep-copied optimizer, so w is
      never trained there (search-loop concern; T here means real SGD steps);
    - official finite-difference radius is 0.01/‖v0‖ while perturbing along u;
      we use ``eps/‖γu‖`` (a step of length exactly eps, as in DARTS), or the
      exact double-backprop product with ``exact=True``.

    Cost: one val backward, one train forward + K double-backprop HVPs (the first
    gradient graph is reused), plus the mixed term.
    """

    K: int = attrs.field(default=2, validator=_count)
    gamma: float | None = attrs.field(default=None, validator=_optional_positive)
    eps: float = attrs.field(default=0.01, validator=_positive)
    exact: bool = attrs.field(default=False, validator=_flag)

    def __call__(self, problem: Bilevel, train_batch: Any, val_batch: Any) -> list[Tensor]:
        gammas = _lrs(problem, self.gamma)
        d, v0 = _val_grads(problem, val_batch)
        # Σ_k (I − γH)^k γ·v0: γ applied first, so per-group lrs still sum to H⁻¹·v0
        v = [g * x for x, g in zip(v0, gammas)]
        u = [x.clone() for x in v]  # k = 0 term
        if self.K > 0:
            H = _HessianOperator(lambda: problem.train_loss(train_batch), problem.weights)
            for _ in range(self.K):  # v_k = (I − γH) v_{k−1}
                hv = H(v)
                v = [vi - g * h for vi, h, g in zip(v, hv, gammas)]
                u = [ui + vi for ui, vi in zip(u, v)]
            del H  # free the retained first-order graph before the mixed term
        return _subtract(d, _mixed_term(problem, train_batch, u, self.exact, self.eps))


@attrs.frozen
class Amended:
    """Amended-DARTS, Bi et al. 2019 (§8a): H⁻¹ in the IFT replaced by η·H.

    ``g = ∇_α L_val(w, α) − M · η (H + δI) · ∇_w L_val(w, α)``

    evaluated at the current w (assumed near-optimal), **not** at an unrolled w'.
    H·u by double backprop on ``train_batch``; M·(ηz) by double backprop
    (``exact=True``) or central difference with radius ``eps/‖ηz‖``.

    Choices where the reference is unverified (no official code, constants [mem]):

    - ``eta=None`` means the current weight lr, i.e. the same scale as DARTS' ξ,
      so the amended term is DARTS-V2's term with H inserted; the paper's η is
      unknown.
    - ``damping`` δ (default 0, i.e. the plain formula) is the reference's
      suggested option for indefinite H mid-training, where the within-90°
      guarantee of H vs H⁻¹ fails.
    - the mixed term defaults to the finite difference, like DARTS.
    """

    eta: float | None = attrs.field(default=None, validator=_optional_positive)
    damping: float = attrs.field(default=0.0, validator=_nonnegative)
    eps: float = attrs.field(default=0.01, validator=_positive)
    exact: bool = attrs.field(default=False, validator=_flag)

    def __call__(self, problem: Bilevel, train_batch: Any, val_batch: Any) -> list[Tensor]:
        etas = _lrs(problem, self.eta)
        d, u = _val_grads(problem, val_batch)
        z = hvp(lambda: problem.train_loss(train_batch), problem.weights, u)
        vec = [e * (zi + self.damping * ui) for zi, ui, e in zip(z, u, etas)]
        return _subtract(d, _mixed_term(problem, train_batch, vec, self.exact, self.eps))
