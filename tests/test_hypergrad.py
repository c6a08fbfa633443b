"""Hypergradient strategies on a tiny bilevel problem where everything is closed form.

L_train(w, α) = ½ wᵀA w − wᵀB α + ½ c‖α‖² + κ Σ sin(w)·(Pα)
L_val(w, α)   = ½ ‖C w − d‖² + eᵀα + κ Σ w⁴/4

With κ = 0: H = A, M = ∂²L_train/∂α∂w = −Bᵀ, w*(α) = A⁻¹Bα and the IFT
hypergradient is g* = e + Bᵀ A⁻¹ Cᵀ(C w* − d). κ > 0 makes the problem
non-quadratic so finite differences and the unrolled step are really tested.
Weights are split into two tensors (and alphas into two) to exercise list handling.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from dslnas.methods.hypergrad import (
    Amended,
    Bilevel,
    FirstOrder,
    Neumann,
    Unrolled,
    finite_difference_mixed,
    hvp,
    mixed_vp,
)

DT = torch.float64
NW, NA = 5, 3
W_SPLIT, A_SPLIT = (3, 2), (2, 1)


class Toy:
    def __init__(self, kappa: float = 0.0, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        rnd = lambda *s: torch.randn(*s, generator=g, dtype=DT)  # noqa: E731
        q, _ = torch.linalg.qr(rnd(NW, NW))
        self.A = q @ torch.diag(torch.linspace(1.0, 3.0, NW, dtype=DT)) @ q.T  # SPD, λ ∈ [1, 3]
        self.B, self.C, self.d, self.e, self.P = rnd(NW, NA), rnd(4, NW), rnd(4), rnd(NA), rnd(NW, NA)
        self.c, self.kappa = 0.3, kappa
        self.w = [nn.Parameter(x) for x in rnd(NW).split(W_SPLIT)]
        self.a = [nn.Parameter(x) for x in rnd(NA).split(A_SPLIT)]

    # pure functions of flat w, α (for references)
    def f_train(self, w, a):
        out = 0.5 * w @ self.A @ w - w @ self.B @ a + 0.5 * self.c * a @ a
        return out + self.kappa * (torch.sin(w) * (self.P @ a)).sum()

    def f_val(self, w, a):
        r = self.C @ w - self.d
        return 0.5 * r @ r + self.e @ a + self.kappa * (w ** 4).sum() / 4

    def flat_w(self):
        return torch.cat([p.detach() for p in self.w])

    def flat_a(self):
        return torch.cat([p.detach() for p in self.a])

    def set_w(self, flat):
        with torch.no_grad():
            for p, x in zip(self.w, flat.split(W_SPLIT)):
                p.copy_(x)

    def train_closure(self):
        return self.f_train(torch.cat(self.w), torch.cat(self.a))

    def problem(self, opt=None):
        def train_loss(batch):
            assert batch == "train"  # strategies must route batches correctly
            return self.train_closure()

        def val_loss(batch):
            assert batch == "val"
            return self.f_val(torch.cat(self.w), torch.cat(self.a))

        return Bilevel(self.w, self.a, train_loss, val_loss, opt)

    def call(self, strategy, opt=None):
        g = strategy(self.problem(opt), "train", "val")
        assert [x.shape for x in g] == [a.shape for a in self.a]
        return torch.cat(g)

    def g_star(self):
        """Exact IFT hypergradient at the current w (κ = 0): ∇α L_val − M A⁻¹ ∇w L_val."""
        gw = self.C.T @ (self.C @ self.flat_w() - self.d)
        return self.e + self.B.T @ torch.linalg.solve(self.A, gw)


def randn(*shape, seed=1):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def sgd(toy, lr=0.1, momentum=0.0, wd=0.0):
    return torch.optim.SGD(toy.w, lr=lr, momentum=momentum, weight_decay=wd)


def sgd_groups_with_state(toy):
    """Two groups with different lr / weight decay; momentum buffer only for the first tensor."""
    opt = torch.optim.SGD([{"params": [toy.w[0]], "lr": 0.1, "weight_decay": 1e-2},
                           {"params": [toy.w[1]], "lr": 0.05, "weight_decay": 0.0}], momentum=0.9)
    opt.state[toy.w[0]]["momentum_buffer"] = randn(W_SPLIT[0], seed=7)
    return opt


def unrolled_reference(toy, lrs, mom, wds, bufs):
    """d/dα L_val(w − ξ(μ m + ∇w L_train(w, α) + λ w), α) by autograd through the step."""
    w0 = toy.flat_w().requires_grad_()
    a = toy.flat_a().requires_grad_()
    (gw,) = torch.autograd.grad(toy.f_train(w0, a), w0, create_graph=True)
    w1 = w0.detach() - lrs * (mom * bufs + gw + wds * w0.detach())
    (ga,) = torch.autograd.grad(toy.f_val(w1, a), a)
    return ga, w1.detach()


# ----------------------------------------------------------------------------- helpers


def test_hvp_matches_autograd_hessian():
    toy = Toy(kappa=0.5)
    a = toy.flat_a()
    H = torch.autograd.functional.hessian(lambda w: toy.f_train(w, a), toy.flat_w())
    v = randn(NW)
    hv = hvp(toy.train_closure, toy.w, list(v.split(W_SPLIT)))
    torch.testing.assert_close(torch.cat(hv), H @ v, rtol=1e-12, atol=1e-12)
    assert all(p.grad is None for p in toy.w + toy.a)


def test_mixed_vp_matches_explicit_matrix():
    v = randn(NW)
    toy = Toy(kappa=0.0)
    m = mixed_vp(toy.train_closure, toy.w, toy.a, list(v.split(W_SPLIT)))
    torch.testing.assert_close(torch.cat(m), -toy.B.T @ v, rtol=1e-12, atol=1e-12)

    toy = Toy(kappa=0.5)  # non-quadratic: α–w block of the joint Hessian
    J = torch.autograd.functional.hessian(lambda z: toy.f_train(z[:NW], z[NW:]),
                                          torch.cat([toy.flat_w(), toy.flat_a()]))
    m = mixed_vp(toy.train_closure, toy.w, toy.a, list(v.split(W_SPLIT)))
    torch.testing.assert_close(torch.cat(m), J[NW:, :NW] @ v, rtol=1e-12, atol=1e-12)


def test_finite_difference_matches_exact_and_restores():
    toy = Toy(kappa=0.5)
    w_before = [p.detach().clone() for p in toy.w]
    v = list(randn(NW).split(W_SPLIT))
    r = 1e-3 / torch.cat(v).norm().item()  # O(r²) truncation error
    fd = finite_difference_mixed(toy.train_closure, toy.w, toy.a, v, r)
    ex = mixed_vp(toy.train_closure, toy.w, toy.a, v)
    torch.testing.assert_close(torch.cat(fd), torch.cat(ex), rtol=0, atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(toy.w, w_before))


# ----------------------------------------------------------------------------- strategies


def test_first_order_is_val_alpha_gradient():
    toy = Toy(kappa=0.5)
    torch.testing.assert_close(toy.call(FirstOrder()), toy.e)  # ∇α L_val = e


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("kappa", [0.0, 0.5])
def test_unrolled_plain_sgd(exact, kappa):
    toy = Toy(kappa=kappa)
    lr = 0.1
    opt = sgd(toy, lr=lr)
    ref, w1 = unrolled_reference(toy, lr, 0.0, 0.0, torch.zeros(NW, dtype=DT))
    g = toy.call(Unrolled(exact=exact), opt)
    torch.testing.assert_close(g, ref, rtol=0, atol=1e-12 if exact else 1e-5)
    if kappa == 0.0:  # closed form: e + Bᵀ ξ Cᵀ(C w' − d)
        closed = toy.e + lr * toy.B.T @ toy.C.T @ (toy.C @ w1 - toy.d)
        torch.testing.assert_close(g, closed, rtol=0, atol=1e-10)


@pytest.mark.parametrize("exact", [True, False])
def test_unrolled_momentum_weight_decay_param_groups(exact):
    toy = Toy(kappa=0.5)
    opt = sgd_groups_with_state(toy)
    lrs = torch.tensor([0.1] * 3 + [0.05] * 2, dtype=DT)
    wds = torch.tensor([1e-2] * 3 + [0.0] * 2, dtype=DT)
    bufs = torch.cat([opt.state[toy.w[0]]["momentum_buffer"], torch.zeros(2, dtype=DT)])
    ref, _ = unrolled_reference(toy, lrs, 0.9, wds, bufs)
    g = toy.call(Unrolled(exact=exact), opt)
    torch.testing.assert_close(g, ref, rtol=0, atol=1e-12 if exact else 1e-5)
    # the momentum term matters: ignoring the buffer gives a different answer
    ref_nobuf, _ = unrolled_reference(toy, lrs, 0.0, wds, bufs)
    assert (ref - ref_nobuf).abs().max() > 1e-4


def test_unrolled_requires_optimizer():
    with pytest.raises(ValueError):
        Toy().call(Unrolled(), None)


@pytest.mark.parametrize("exact", [True, False])
def test_neumann_converges_to_ift_hypergradient(exact):
    toy = Toy(kappa=0.0)
    a = toy.flat_a()
    toy.set_w(torch.linalg.solve(toy.A, toy.B @ a))  # w = w*(α)
    g_star = toy.g_star()
    # g* really is d/dα L_val(w*(α), α)
    a_req = a.clone().requires_grad_()
    (total,) = torch.autograd.grad(toy.f_val(torch.linalg.solve(toy.A, toy.B @ a_req), a_req), a_req)
    torch.testing.assert_close(g_star, total, rtol=0, atol=1e-12)

    gamma = 0.9 / torch.linalg.eigvalsh(toy.A).max().item()
    errs = [(toy.call(Neumann(K=K, gamma=gamma, exact=exact)) - g_star).norm().item()
            for K in (0, 2, 5, 10, 20, 80)]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-6


def test_neumann_matches_explicit_series_and_reads_lr():
    toy = Toy(kappa=0.0)
    lr = 0.2
    H, M = toy.A, -toy.B.T
    gw = toy.C.T @ (toy.C @ toy.flat_w() - toy.d)
    series = sum(torch.linalg.matrix_power(torch.eye(NW, dtype=DT) - lr * H, k) for k in range(3))
    expected = toy.e - M @ (lr * series @ gw)
    assert Neumann().K == 2 and Neumann().gamma is None
    torch.testing.assert_close(toy.call(Neumann(exact=True), sgd(toy, lr=lr)), expected)
    torch.testing.assert_close(toy.call(Neumann(), sgd(toy, lr=lr)), expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError):
        toy.call(Neumann(), None)


def test_neumann_per_group_lr_still_converges():
    toy = Toy(kappa=0.0)
    toy.set_w(torch.linalg.solve(toy.A, toy.B @ toy.flat_a()))
    opt = torch.optim.SGD([{"params": [toy.w[0]], "lr": 0.25}, {"params": [toy.w[1]], "lr": 0.15}])
    g = toy.call(Neumann(K=200, exact=True), opt)
    torch.testing.assert_close(g, toy.g_star(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("eta,damping", [(0.3, 0.0), (0.3, 0.5), (None, 0.0)])
def test_amended_matches_formula(exact, eta, damping):
    toy = Toy(kappa=0.0)
    lr = 0.05
    H, M = toy.A, -toy.B.T
    u = toy.C.T @ (toy.C @ toy.flat_w() - toy.d)
    scale = lr if eta is None else eta
    expected = toy.e - scale * M @ ((H + damping * torch.eye(NW, dtype=DT)) @ u)
    g = toy.call(Amended(eta=eta, damping=damping, exact=exact), sgd(toy, lr=lr))
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12 if exact else 1e-9)


STRATEGIES = [FirstOrder(), Unrolled(), Unrolled(exact=True), Neumann(), Neumann(exact=True),
              Neumann(K=0), Amended(), Amended(exact=True, damping=0.1)]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=repr)
def test_weights_bit_identical_and_no_grad_written(strategy):
    toy = Toy(kappa=0.5)
    opt = sgd_groups_with_state(toy)
    before = [p.detach().clone() for p in toy.w + toy.a]
    storage = [p.data_ptr() for p in toy.w]
    g = strategy(toy.problem(opt), "train", "val")
    assert all(torch.equal(p, q) for p, q in zip(toy.w + toy.a, before))
    assert [p.data_ptr() for p in toy.w] == storage  # restored in place, not rebound
    assert all(p.grad is None for p in toy.w + toy.a)
    assert all(not x.requires_grad and torch.isfinite(x).all() for x in g)


# ----------------------------------------------------------------------------- nn.Module


class TinyMixed(nn.Module):
    """Three candidate ops mixed by softmax(α); α is kept outside the module (methods.md §2e)."""

    def __init__(self):
        super().__init__()
        self.ops = nn.ModuleList([nn.Linear(4, 3), nn.Linear(4, 3, bias=False)])

    def forward(self, x, alpha):
        p = torch.softmax(alpha, 0)
        outs = [op(x) for op in self.ops] + [torch.tanh(x[:, :3])]  # a parameter-free op
        return sum(pi * o for pi, o in zip(p, outs))


def test_unrolled_on_module_restores_parameters_and_matches_reference():
    with torch.random.fork_rng(devices=[]):  # deterministic without touching the global RNG
        torch.manual_seed(0)
        model = TinyMixed().double()
        alpha = nn.Parameter(torch.randn(3, dtype=DT))
        batches = {k: (torch.randn(8, 4, dtype=DT), torch.randn(8, 3, dtype=DT)) for k in ("train", "val")}
    mse = nn.functional.mse_loss
    loss = lambda b: mse(model(batches[b][0], alpha), batches[b][1])  # noqa: E731
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    loss("train").backward()  # one real step so momentum buffers exist
    opt.step()
    opt.zero_grad(set_to_none=True)
    alpha.grad = None

    weights = list(model.parameters())
    problem = Bilevel(weights, [alpha], loss, loss, opt)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g_fd = Unrolled()(problem, "train", "val")[0]
    g_ex = Unrolled(exact=True)(problem, "train", "val")[0]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in weights) and alpha.grad is None

    # reference: autograd through the virtual step with functional_call
    names = [n for n, _ in model.named_parameters()]
    w0 = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    a = alpha.detach().clone().requires_grad_()
    f = lambda params, b: mse(functional_call(model, params, (batches[b][0], a)), batches[b][1])  # noqa: E731
    gw = torch.autograd.grad(f(w0, "train"), [w0[n] for n in names], create_graph=True)
    w1 = {n: w0[n].detach() - 0.1 * (0.9 * opt.state[p]["momentum_buffer"] + g + 3e-4 * w0[n].detach())
          for n, p, g in zip(names, weights, gw)}
    (ref,) = torch.autograd.grad(f(w1, "val"), a)
    torch.testing.assert_close(g_ex, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(g_fd, ref, rtol=0, atol=1e-5)


def _recorded_forwards(strategy):
    """(weights require grad, α requires grad) at each forward of TinyMixed during ``strategy``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = TinyMixed().double()
        alpha = nn.Parameter(torch.randn(3, dtype=DT))
        batches = {k: (torch.randn(8, 4, dtype=DT), torch.randn(8, 3, dtype=DT)) for k in ("train", "val")}
    model.ops[1].weight.requires_grad_(False)  # a frozen weight (RF-DARTS), not in `weights`
    weights = [model.ops[0].weight, model.ops[0].bias]
    seen = []
    model.register_forward_pre_hook(
        lambda m, args: seen.append((tuple(p.requires_grad for p in weights), args[1].requires_grad)))
    loss = lambda b: nn.functional.mse_loss(model(batches[b][0], alpha), batches[b][1])  # noqa: E731
    opt = torch.optim.SGD(weights, lr=0.1)
    g = strategy(Bilevel(weights, [alpha], loss, loss, opt), "train", "val")
    # every flag is restored, the frozen weight stays frozen
    assert all(p.requires_grad for p in weights) and alpha.requires_grad
    assert not model.ops[1].weight.requires_grad
    return seen, g[0], (model, alpha, batches, weights)


def test_first_order_holds_the_weights_constant():
    """Only ∇_α is read, so the val forward records no path to w: no backward (eager or
    compiled) computes the weights' gradients, 1/3 of a conv net's backward FLOPs."""
    seen, g, (model, alpha, batches, weights) = _recorded_forwards(FirstOrder())
    assert seen == [((False, False), True)]
    ref = torch.autograd.grad(nn.functional.mse_loss(model(batches["val"][0], alpha),
                                                     batches["val"][1]), [alpha, *weights])[0]
    assert torch.equal(g, ref)


def test_unrolled_holds_constant_what_each_pass_does_not_read():
    # ∇_w L_train (α constant), ∇_α and ∇_w' L_val at w', then ∇_α L_train at w ± r·v
    seen, _, _ = _recorded_forwards(Unrolled())
    assert seen == [((True, True), False), ((True, True), True),
                    ((False, False), True), ((False, False), True)]
    # the exact mixed product differentiates ∇_w L_train by α: both sides are needed there
    seen, _, _ = _recorded_forwards(Unrolled(exact=True))
    assert seen == [((True, True), False), ((True, True), True), ((True, True), True)]


def test_a_tensor_cannot_be_both_weight_and_alpha():
    toy = Toy()
    problem = Bilevel(toy.w + toy.a[:1], toy.a, toy.problem().train_loss, toy.problem().val_loss)
    with pytest.raises(ValueError, match="both a weight and an alpha"):
        FirstOrder()(problem, "train", "val")
    assert all(p.requires_grad for p in toy.w + toy.a)
