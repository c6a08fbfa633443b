"""The curvature of the validation loss in the architecture, and DARTS-ES (RobustDARTS,
Zela et al. 2020): as DARTS heads for a degenerate cell, the dominant eigenvalue of
∇²_α L_val grows; DARTS-ES stops the search when it has grown by a factor and returns the
genotype from before the growth.

What R-DARTS' code computes (``src/search/analyze.py``, ``train_search.py`` and
``utils.EVLocalAvg``), and so what this module computes:

- H: the dense Hessian of the cross-entropy on one validation batch with respect to every
  architecture tensor (each cell group's α and the relaxation's extras, e.g. PC-DARTS' β), in
  train mode (batch statistics), plus the architecture weight decay on its diagonal (Adam's
  L2 term); the reported value is H's largest eigenvalue.
- DARTS-ES (:func:`darts_es`): local averages of the eigenvalues over a centred window; stop
  when the newest average exceeds the one ``delta`` values before it by ``factor``, and return
  the genotype of the epoch that earlier average is centred on.

Choices (docs/methods.md): the batch is the first validation batch without augmentation, the
same every time, so the eigenvalue's trajectory is not the noise of which batch was drawn
(R-DARTS took the epoch's last, random one); α entries a mask removes (padding, pruning) are
left out, having no gradient; BatchNorm's running statistics and the random stream are left
as they were, so measuring does not change the search.
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

from ..methods import hypergrad as hg

T = TypeVar("T")

__all__ = ["arch_eigenvalue", "arch_hessian", "dominant_eigenvalue", "darts_es", "es_ratio",
           "first_decision", "lanczos_max", "measured_at"]


def measured_at(epoch: int, every: int, epochs: int) -> bool:
    """Whether the curvature is measured after (1-based) ``epoch``: R-DARTS measures after its
    0-based epochs 0, every, 2·every, ... and the last, i.e. our epochs 1, 1+every, ..."""
    return every > 0 and ((epoch - 1) % every == 0 or epoch == epochs)


def _arch_operator(searcher, batch, use: Callable[[int, Callable], T]) -> T:
    """``use(n, v ↦ H·v)`` for the Hessian of ``searcher``'s validation loss on ``batch``
    w.r.t. its live architecture entries (weight decay not included), in train mode with the
    cells' eager code and no drop-path; BN statistics and the mode are restored after."""
    s, (x, y) = searcher, batch
    net = s.supernet
    by_id = {id(a): net.mask(g) for g, a in net.alphas.items()}
    masks = [by_id.get(id(p)) for p in s.arch]          # extras (β): every entry
    saved = {k: b.clone() for k, b in net.named_buffers()}    # BN statistics, masks, ...
    was_training = net.training
    net.train()
    try:
        # compiled graphs support one backward only; R-DARTS' Hessian also dropped paths at
        # random, ours is of the loss itself
        with net.eager_cells(), net.no_drop_path():
            return use(*hg.hessian_operator(lambda: F.cross_entropy(s._logits(x), y), s.arch,
                                            masks, hold=s.weights))
    finally:
        net.train(was_training)
        with torch.no_grad():
            for k, b in net.named_buffers():
                b.copy_(saved[k])


def _arch_weight_decay(searcher) -> float:
    return searcher.relaxation.arch_weight_decay(searcher.schedule.a_weight_decay)


def arch_hessian(searcher, batch) -> torch.Tensor:
    """H (float64, symmetric) of ``searcher``'s validation loss on ``batch`` w.r.t. its live
    architecture entries, architecture weight decay included; nothing of the search changes."""
    h = _arch_operator(searcher, batch, hg.dense).double()
    eye = torch.eye(len(h), dtype=h.dtype, device=h.device)
    return (h + h.T) / 2 + _arch_weight_decay(searcher) * eye


def arch_eigenvalue(searcher, batch, lanczos_steps: int = 0) -> float:
    """The largest eigenvalue of :func:`arch_hessian`: from the dense matrix (``lanczos_steps``
    0, as R-DARTS), or from that many Lanczos steps (one product each instead of one per
    entry; the dense value up to rounding once they reach the number of entries; too few
    steps underestimate it)."""
    if not lanczos_steps:
        return dominant_eigenvalue(arch_hessian(searcher, batch))
    wd = _arch_weight_decay(searcher)               # no entry: 0, as the dense path
    return _arch_operator(searcher, batch, lambda n, matvec: lanczos_max(
        matvec, n, lanczos_steps) + wd if n else 0.0)


def lanczos_max(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, steps: int) -> float:
    """The largest eigenvalue of the symmetric n×n operator ``matvec`` after ``steps`` Lanczos
    steps with full reorthogonalisation (float64; the start vector comes from a fixed seed of
    its own, so the search's random stream is untouched)."""
    if n == 0:
        return 0.0
    q = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    basis = [q / q.norm()]
    diag: list[float] = []
    off: list[float] = []
    for _ in range(min(steps, n)):
        w = matvec(basis[-1]).double().cpu()
        diag.append(float(w @ basis[-1]))
        q = torch.stack(basis, 1)
        for _ in range(2):          # twice is enough (Kahan-Parlett)
            w = w - q @ (q.T @ w)
        beta = float(w.norm())
        if beta <= 1e-12 * max(1.0, max(abs(d) for d in diag)) or len(diag) == n:
            break                   # an invariant subspace: T's eigenvalues are exact
        off.append(beta)
        basis.append(w / beta)
    t = torch.diag(torch.tensor(diag, dtype=torch.float64))
    if off:
        o = torch.tensor(off[:len(diag) - 1], dtype=torch.float64)
        t = t + torch.diag(o, 1) + torch.diag(o, -1)
    return float(torch.linalg.eigvalsh(t).max())


def dominant_eigenvalue(h: torch.Tensor) -> float:
    """The largest eigenvalue of a symmetric matrix."""
    return float(torch.linalg.eigvalsh(h).max()) if len(h) else 0.0


def darts_es(values: list[tuple[int, float]], *, window: int = 5, delta: int = 4,
             factor: float = 1.3, start: int = 11) -> tuple[int, float] | None:
    """DARTS-ES on the eigenvalues measured so far, ``(epoch, value)`` in order: whether the
    search stops now, as ``(epoch whose genotype it returns, growth ratio)``, or None: it
    stops when :func:`es_ratio` exceeds ``factor``. R-DARTS' defaults: window 5, delta 4,
    factor 1.3, es_start_epoch 10 (0-based), which is our epoch 11."""
    r = es_ratio(values, window=window, delta=delta, start=start)
    return r if r is not None and r[1] > factor else None


def es_ratio(values: list[tuple[int, float]], *, window: int = 5, delta: int = 4,
             start: int = 11) -> tuple[int, float] | None:
    """What DARTS-ES compares after the newest value: ``(epoch, ratio)``, or None while
    there is nothing to compare.

    The local average centred on value i is the mean of values i-h..i+h (h = window // 2;
    near the start only those that exist, as R-DARTS' tracker averages), available once
    value i+h exists. The ratio is the newest average, centred on value j = n-1-h, over the
    one centred on j-delta, measured at ``epoch``; nothing is compared while that epoch is
    before ``start`` or that average is not positive."""
    h = window // 2
    j = len(values) - 1 - h
    i = j - delta
    if i < 0 or values[i][0] < start:
        return None

    def local_average(k: int) -> float:
        part = [v for _, v in values[max(0, k - h):k + h + 1]]
        return sum(part) / len(part)

    before, now = local_average(i), local_average(j)
    if before <= 0:                 # a ratio of non-positive curvatures says nothing
        return None
    return values[i][0], now / before


def first_decision(epochs: int, every: int, *, window: int, delta: int,
                   start: int) -> int | None:
    """The first epoch after which DARTS-ES can stop a search of ``epochs`` epochs measured
    every ``every``, or None if it never can (no decision is taken after the last epoch)."""
    # whether a comparison exists depends on the epochs only: any positive values will do
    values = [(e, 1.0) for e in range(1, epochs) if measured_at(e, every, epochs)]
    return next((values[n - 1][0] for n in range(1, len(values) + 1)
                 if es_ratio(values[:n], window=window, delta=delta, start=start) is not None),
                None)
