"""Method parts: relaxations, partial-channel edges, transforms, discretizers (all on CPU)."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from dslnas.genotype import derive
from dslnas.ir.lower import compile_file
from dslnas.methods.discretizers import Decorrelation, decorrelation_scores, make_discretizer
from dslnas.methods.relaxations import (Dirichlet, SoftmaxBeta, derive_from_strengths, dirichlet_kl,
                                        make_relaxation)
from dslnas.methods.spec import METHODS, Part
from dslnas.methods.transforms import (NodeNorm, Progressive, RandomFeatures, make_transforms,
                                       merge_build_kwargs, parameter_kinds, search_edges,
                                       trainable_parameters)
from dslnas.ops import register_op, unregister_op
from dslnas.supernet.network import build
from dslnas.supernet.partial import (PartialMixedEdge, _build_op, channel_shuffle, partial_edge,
                                     processed_positions, shuffle_index, widen_op)

torch.set_num_threads(1)   # tiny tensors: threading only adds overhead


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def nb201(C=4, N=1):
    return compile_file("spaces/nb201.nas", {"C": C, "N": N})


def space_file(tmp_path, ops, extra_edge="", C=4, N=1, name="t"):
    p = tmp_path / f"{name}.nas"
    p.write_text(f"""
space {name}
ops [{', '.join(ops)}]
bn {{ affine false; track_stats true; pool_bn false }}
cell cell(inputs 1, nodes 3) {{
  edges dense
  {extra_edge}
  output last
  derive argmax
}}
network(C = {C}, N = {N}) {{
  stem conv3x3(C)
  repeat N cell(C)
  head bn relu gap linear
}}
""")
    return compile_file(p)


def capture_edge_weights(net):
    """Hooks recording (cell index, row, w) for every edge call."""
    seen = []
    handles = []
    for i, (kind, cell) in enumerate(zip(net.net.kinds, net.net.blocks)):
        if kind == "cell":
            for row, e in enumerate(cell.edges):
                handles.append(e.register_forward_hook(
                    lambda m, inp, out, i=i, row=row: seen.append((i, row, inp[1].detach().clone()))))
    return seen, handles


# ---- relaxations ---------------------------------------------------------------------------

def test_dirichlet_pathwise_gradient_matches_mean_derivative():
    rel = Dirichlet()
    eta = nn.Parameter(torch.tensor([[-0.8, 0.3, 1.2, 0.0],
                                     [0.5, -0.2, 0.1, 0.9],
                                     [2.0, -1.5, 0.4, 0.0]]))
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 3] = False                       # a pruned/padded column
    coef = torch.randn(3, 4)
    p = rel.sample(eta, mask, (20000,))
    (p.mean(0) * coef).sum().backward()
    g_mc = eta.grad.clone()
    eta.grad = None
    c = (nn.functional.elu(eta) + 1) * mask   # E[p_k] = c_k / Σ_kept c
    ((c / c.sum(-1, keepdim=True)) * coef).sum().backward()
    g_exact = eta.grad
    assert g_exact.abs().max() > 0.1
    torch.testing.assert_close(g_mc, g_exact, atol=0.015, rtol=0)
    assert g_mc[2, 3] == 0                   # no gradient into a masked column
    torch.testing.assert_close(p.mean(0), (c / c.sum(-1, keepdim=True)).detach(), atol=0.01, rtol=0)


def test_dirichlet_samples_on_simplex_shared_per_forward_fresh_across(tmp_path):
    ir = space_file(tmp_path, ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"],
                    extra_edge="edge 0 -> 1 [skip_connect, nor_conv_3x3]", N=2)
    net = build(ir)
    rel = make_relaxation(Part("dirichlet"))
    net.mask("cell")[3, 2] = False           # as if pruned
    w = rel.weights(net, {})["cell"]
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(6))
    assert (w[0, 2:] == 0).all() and w[3, 2] == 0    # padding and pruned: exactly 0
    assert w.requires_grad
    x = torch.randn(2, 3, 8, 8)
    seen, handles = capture_edge_weights(net)
    net(x, rel.weights(net, {}))
    first = {(i, row): wr for i, row, wr in seen}
    seen.clear()
    net(x, rel.weights(net, {}))
    second = {(i, row): wr for i, row, wr in seen}
    for h in handles:
        h.remove()
    cells = sorted({i for i, _ in first})
    assert len(cells) == 2
    for row in range(6):
        # every cell of the type gets the same sample within a forward ...
        assert torch.equal(first[(cells[0], row)], first[(cells[1], row)])
        # ... and the next forward draws a new one
        assert not torch.equal(first[(cells[0], row)], second[(cells[0], row)])


def test_dirichlet_strengths_and_kl_regulariser():
    net = build(nb201())
    with torch.no_grad():
        net.alphas["cell"].normal_()
    mask = net.mask("cell")
    soft = make_relaxation(Part("dirichlet"))
    mean = make_relaxation(Part("dirichlet", {"strength": "mean"}))
    s1, s2 = soft.strengths(net, {})["cell"], mean.strengths(net, {})["cell"]
    torch.testing.assert_close(s1, torch.softmax(net.alphas["cell"].detach(), -1))
    c = nn.functional.elu(net.alphas["cell"].detach()) + 1
    torch.testing.assert_close(s2, c / c.sum(-1, keepdim=True))
    assert torch.equal(s1.argmax(-1), s2.argmax(-1))          # ELU+1 is monotone
    assert soft.regulariser(net, {}) is None and soft.arch_weight_decay(1e-3) == 1e-3
    kl = make_relaxation(Part("dirichlet", {"reg": "kl", "reg_scale": 0.5}))
    assert kl.arch_weight_decay(1e-3) == 0.0
    ref = torch.distributions.kl_divergence(torch.distributions.Dirichlet(c),
                                            torch.distributions.Dirichlet(torch.ones_like(c))).sum()
    reg = kl.regulariser(net, {})
    torch.testing.assert_close(reg, 0.5 * ref)
    reg.backward()
    assert net.alphas["cell"].grad.abs().sum() > 0
    # masked columns drop out: KL of the kept sub-Dirichlet
    m = mask.clone()
    m[0, 3:] = False
    sub = torch.distributions.kl_divergence(torch.distributions.Dirichlet(c[0, :3]),
                                            torch.distributions.Dirichlet(torch.ones(3)))
    torch.testing.assert_close(dirichlet_kl(c, m)[0], sub)


def test_softmax_beta_strengths_are_alpha_times_edge_softmax():
    ir = compile_file("spaces/darts.nas", {"C": 4, "L": 3})
    net = build(ir)
    rel = make_relaxation(Part("softmax_beta"))
    extra = rel.extra_parameters(net)
    assert set(extra) == {"beta_normal", "beta_reduce"}
    assert all(p.shape == (14,) and p.abs().max() < 0.01 for p in extra.values())
    with torch.no_grad():
        for p in itertools.chain(net.alphas.values(), extra.values()):
            p.normal_()
    st = rel.strengths(net, extra)
    for g in ("normal", "reduce"):
        cell = ir.cell(g)
        expect = torch.softmax(net.alphas[g].detach(), -1).clone()
        for node in cell.intermediate:
            rows = [e.row for e in cell.in_edges(node)]
            expect[rows] *= torch.softmax(extra[f"beta_{g}"].detach()[rows], 0).unsqueeze(-1)
        torch.testing.assert_close(st[g], expect)
        w = rel.weights(net, extra)[g]
        torch.testing.assert_close(w.detach(), expect)
        assert w.requires_grad
    # the genotype uses the product: an edge with a tiny β loses its place in the top 2
    with torch.no_grad():
        net.alphas["normal"].zero_()
        net.alphas["normal"][2, 4] = 5.0          # edge 0->3: the strongest op of the cell ...
        extra["beta_normal"].zero_()
        extra["beta_normal"][2] = -20.0            # ... on an edge that β switches off
    by_alpha = derive(ir, {g: a.detach() for g, a in net.alphas.items()})
    by_beta = derive_from_strengths(ir, rel.strengths(net, extra))
    assert ("sep_conv_3x3", 0, 3) in by_alpha.cell("normal").edges
    assert all(src != 0 for _, src, dst in by_beta.cell("normal").edges if dst == 3)


def test_rule_on_softmax_strengths_equals_genotype_derive():
    for ir in (nb201(), compile_file("spaces/darts.nas", {"C": 4, "L": 3})):
        net = build(ir)
        with torch.no_grad():
            for a in net.alphas.values():
                a.normal_()
        rel = make_relaxation("softmax")
        g1 = make_discretizer("rule").derive(net, rel, {})
        assert g1 == derive(ir, {g: a.detach() for g, a in net.alphas.items()})


# ---- partial channels ----------------------------------------------------------------------

def test_channel_shuffle_index_and_processed_positions():
    x = torch.randn(2, 12, 3, 3)
    idx = shuffle_index(12, 4)
    assert torch.equal(channel_shuffle(x, 4), x[:, idx])
    pos = processed_positions(12, 4)
    assert torch.equal(idx[pos], torch.arange(3))          # processed channels 0..2 land there


@pytest.mark.parametrize("stride", [1, 2])
def test_partial_edge_routes_only_C_over_K_channels(stride):
    C, K = 8, 4
    edge = PartialMixedEdge(("skip_connect", "sep_conv_3x3", "max_pool_3x3"), C, stride,
                            affine=False, track=True, pool_bn=True, K=K).eval()
    seen = []
    for op in edge.ops:
        op.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[1]))
    w = torch.tensor([0.5, 0.25, 0.25])                    # sums to exactly 1
    x = torch.randn(2, C, 8, 8)
    y = edge(x, w)
    assert y.shape == (2, C, 8 // stride, 8 // stride)
    assert seen == [C // K] * 3
    x2 = x.clone()
    x2[:, C // K:] = torch.randn(2, C - C // K, 8, 8)       # perturb only the bypassed channels
    y2 = edge(x2, w)
    pos = processed_positions(C, K)
    torch.testing.assert_close(y2[:, pos], y[:, pos], rtol=0, atol=0)   # op path unaffected
    mixed = sum(wk * op(x[:, : C // K]) for wk, op in zip(w, edge.ops))
    torch.testing.assert_close(y[:, pos], mixed)
    idx = shuffle_index(C, K)
    by = [j for j in range(C) if j not in set(pos.tolist())]
    expect = x2[:, idx[by]]
    if stride == 2:
        expect = nn.functional.max_pool2d(expect, 2, 2)            # max-pool bypass
    assert torch.equal(y2[:, by], expect)
    # the edge is linear in its weights: the bypass carries the edge mass (PC-DARTS' β̂)
    torch.testing.assert_close(edge(x, 0.3 * w), 0.3 * y)


def test_partial_supernet_has_fewer_parameters_and_runs():
    ir = nb201(C=8)
    n1 = sum(p.numel() for p in build(ir).weight_parameters())
    net4 = build(ir, edge_cls=partial_edge(4))
    n4 = sum(p.numel() for p in net4.weight_parameters())
    assert n4 < n1
    edges = [e for _, _, e in search_edges(net4)]
    assert edges and all(isinstance(e, PartialMixedEdge) and e.K == 4 for e in edges)
    assert net4(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError):
        build(nb201(C=6), edge_cls=partial_edge(4))     # K must divide C


# ---- random features and node normalisation -------------------------------------------------

def test_random_features_trains_only_bn_affine():
    ir = nb201()
    rf = make_transforms([Part("random_features", {"trainable": ["bn_affine"]})])
    kw = merge_build_kwargs(rf)
    assert kw == {"affine": True}
    net = build(ir, **kw)
    for t in rf:
        t.prepare(net)
    kinds = parameter_kinds(net)
    train = trainable_parameters(rf, net)
    bn_ids = {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) and m.affine
              for p in m.parameters()}
    assert {id(p) for p in train} == bn_ids and bn_ids
    assert all("bn_affine" in kinds[id(p)] for p in train)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(train, lr=0.1, momentum=0.9, weight_decay=3e-4)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(net(x), y)            # α is in the graph too
    loss.backward()
    assert net.alphas["cell"].grad is not None
    opt.step()
    changed = {n for n, p in net.named_parameters() if not torch.equal(p.detach(), before[n])}
    names = {id(p): n for n, p in net.named_parameters()}
    assert changed == {names[i] for i in bn_ids}              # every BN affine, and nothing else
    assert "alphas.cell" not in changed
    frozen = [p for p in net.weight_parameters() if id(p) not in bn_ids]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    # options: the classifier can be trained too; running statistics can be turned off
    rf2 = RandomFeatures(trainable=["bn_affine", "linear"], track_stats=False)
    net2 = build(ir, **rf2.build_kwargs())
    rf2.prepare(net2)
    lin = [m for m in net2.modules() if isinstance(m, nn.Linear)][0]
    assert lin.weight.requires_grad and lin.weight in set(rf2.trainable(net2))
    assert all(m.running_mean is None for m in net2.modules() if isinstance(m, nn.BatchNorm2d))


def test_random_features_pool_bn_affine_option():
    from dslnas.search.loop import Parts, fused_fits
    from dslnas.supernet.mixed import PoolBN
    ir = compile_file("spaces/darts.nas", {"C": 4, "L": 3})
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    nets = {}
    for flag in (False, True):
        rf = RandomFeatures(pool_bn_affine=flag)
        torch.manual_seed(0)
        net = build(ir, **rf.build_kwargs())
        rf.prepare(net)
        nets[flag] = net
        pool_bns = [m for m in net.modules() if isinstance(m, PoolBN)]
        assert len(pool_bns) == 3 * 14 * 2               # cells x edges x (max, avg)
        assert all(m.affine == flag for m in pool_bns)
        train = {id(p) for p in trainable_parameters([rf], net)}
        if flag:
            assert all(id(m.weight) in train and id(m.bias) in train for m in pool_bns)
        assert fused_fits(Parts(None, None, [rf], make_discretizer("rule"))) == (not flag)
    # γ = 1, β = 0: the same function until the weights train; 2·C more trainable numbers each
    w = {k: v for k, v in nets[True].state_dict().items() if k in nets[False].state_dict()}
    nets[False].load_state_dict(w)
    torch.testing.assert_close(nets[True](x), nets[False](x))
    n = {f: sum(p.numel() for p in trainable_parameters([RandomFeatures()], net))
         for f, net in nets.items()}
    pools = [m for m in nets[True].modules() if isinstance(m, PoolBN)]
    assert n[True] - n[False] == sum(2 * m.num_features for m in pools) == 1568   # C 4, 8, 16
    pool = pools[0]
    opt = torch.optim.SGD(trainable_parameters([RandomFeatures()], nets[True]), lr=0.1)
    nn.functional.cross_entropy(nets[True](x), y).backward()
    opt.step()
    assert not torch.equal(pool.weight.detach(), torch.ones(4))


def test_pool_bn_affine_turns_the_fused_cell_off_only_where_pools_have_a_bn(tmp_path):
    from dslnas.search.loop import Parts, _build_supernet, fused_fits
    from dslnas.supernet.fused import FusedSearchCell
    parts = Parts(None, None, [RandomFeatures(pool_bn_affine=True)], make_discretizer("rule"))
    darts = compile_file("spaces/darts.nas", {"C": 4, "L": 3})
    nb201 = compile_file("spaces/nb201.nas", {"C": 4, "N": 1})    # pools, but no BN after them
    no_pools = tmp_path / "no_pools.nas"                          # pool_bn, but no pool
    no_pools.write_text(open("spaces/darts.nas").read().replace("max_pool_3x3, avg_pool_3x3, ",
                                                                "", 1))
    for ir, fused in ((nb201, True), (compile_file(no_pools, {"C": 4, "L": 3}), True),
                      (darts, False)):
        net = _build_supernet(ir, parts)
        assert any(isinstance(m, FusedSearchCell) for m in net.modules()) == fused, ir.name
        assert fused_fits(parts, ir) == fused
    assert not fused_fits(parts)                                  # no space: assume pool BNs


def test_node_norm_normalises_every_intermediate_node():
    ir = compile_file("spaces/darts.nas", {"C": 4, "L": 3})
    net = build(ir, **NodeNorm().build_kwargs()).train()
    states = []
    for kind, cell in zip(net.net.kinds, net.net.blocks):
        if kind == "cell":
            for norm in cell.node_norm:
                norm.register_forward_hook(lambda m, i, o: states.append(o.detach()))
    net(torch.randn(16, 3, 8, 8) * 3 + 1)
    assert len(states) == 3 * 4
    for s in states:
        torch.testing.assert_close(s.mean((0, 2, 3)), torch.zeros(s.shape[1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(s.var((0, 2, 3), unbiased=False), torch.ones(s.shape[1]),
                                   atol=1e-3, rtol=0)


# ---- decorrelation discretiser ---------------------------------------------------------------

def test_decorrelation_scores_on_constructed_activations():
    g = torch.Generator().manual_seed(1)
    v = [torch.randn(4000, generator=g) for _ in range(4)]
    node = v[2] + 0.3 * torch.randn(4000, generator=g)
    s = decorrelation_scores([torch.zeros(4000), *v], node)    # `none` first: score 0
    assert s[0] == 0 and s.argmax() == 3 and s[3] > 0.9 and s[[1, 2, 4]].abs().max() < 0.1
    # correlated candidates: Gram–Schmidt order decides who keeps the shared direction
    a = v[0]
    b = v[0] + 0.2 * v[1]
    node = b.clone()
    s_ab = decorrelation_scores([a, b], node, order=[0, 1])
    s_ba = decorrelation_scores([a, b], node, order=[1, 0])
    assert s_ab[0] > 0.9 and s_ab[1] < 0.3                    # b's own part is small
    torch.testing.assert_close(s_ba[1], torch.tensor(1.0, dtype=torch.float64))
    assert abs(s_ba[0]) < 1e-9                     # a's residual is orthogonal to b = the node
    assert decorrelation_scores([a, None], node)[1] == float("-inf")


_FIXED_SEED = itertools.count(100)


class _Fixed(nn.Module):
    """An op whose output is a fixed random tensor (independent of its input)."""

    def __init__(self, C, stride):
        super().__init__()
        self.C, self.stride, self.seed = C, stride, next(_FIXED_SEED)

    def forward(self, x):
        n, _, h, w = x[:, :, :: self.stride, :: self.stride].shape
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(n, self.C, h, w, generator=g)


@pytest.fixture
def fixed_ops():
    names = ["fixed_a", "fixed_b", "fixed_c"]
    for n in names:
        register_op(n)(lambda C_in, C_out, stride, affine, track: _Fixed(C_out, stride))
    yield names
    for n in names:
        unregister_op(n)


@pytest.mark.parametrize("K", [0, 1, 2])          # 0: plain edges, which skip `none`
def test_decorrelation_picks_the_op_the_node_is_made_of(tmp_path, fixed_ops, K):
    ir = space_file(tmp_path, ["none", *fixed_ops, "noise"], C=4, N=2, name=f"fx{K}")
    net = build(ir, edge_cls=partial_edge(K)) if K else build(ir)
    with torch.no_grad():
        net.alphas["cell"].copy_(torch.tensor([0.0, 3.0, 2.0, -5.0, 1.0]))   # fixed_c smallest
    fwd = {"cell": torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.3]] * 6)}    # node = Σ fixed_c + noise
    data = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    d = Decorrelation(batches=2)
    scores = d.scores(net, fwd, data)["cell"]
    assert (scores[:, 0] == 0).all()                                   # `none`
    assert (scores.argmax(-1) == 3).all()
    rule = make_discretizer("rule").derive(net, make_relaxation("softmax"), {})
    assert set(rule.cells[0].ops) == {"fixed_a"}
    assert set(derive_from_strengths(ir, {"cell": scores}).cells[0].ops) == {"fixed_c"}
    # through derive(): the forward weights are the relaxation's strengths
    with torch.no_grad():
        net.alphas["cell"].copy_(torch.tensor([-9.0, -9.0, -9.0, 0.0, -1.0]))
    g = d.derive(net, make_relaxation("softmax"), {}, batches=data)
    assert set(g.cells[0].ops) == {"fixed_c"}
    assert net.training                                                # mode restored


# ---- progressive (DrNAS) -------------------------------------------------------------------

def _randomise_bn(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            if m.affine:
                m.weight.data.normal_()
                m.bias.data.normal_()


OPS_TO_WIDEN = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                "dil_conv_3x3", "nor_conv_3x3"]


@pytest.mark.parametrize("stride", [1, 2])
def test_widen_op_net2net(stride):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 8, 8)
    for name in OPS_TO_WIDEN:
        for rescale in (False, True):
            old = _build_op(name, 4, stride, affine=True, track=True, pool_bn=True)
            _randomise_bn(old)
            new = _build_op(name, 8, stride, affine=True, track=True, pool_bn=True)
            old.eval(), new.eval()
            pairs, in_map, out_map = widen_op(old, new, generator=gen, rescale=rescale)
            in_map = torch.cat([torch.arange(4), torch.tensor([1, 3, 0, 2])]) if in_map is None else in_map
            out_map = in_map if out_map is None else out_map
            assert torch.equal(in_map[:4], torch.arange(4))
            y_old = old(x)
            # where each old output channel sits in the new output (FactorizedReduce moves the
            # second conv's channels behind the widened first half; otherwise a prefix)
            orig = torch.tensor([int((out_map == c).nonzero()[0]) for c in range(y_old.shape[1])])
            if not rescale:   # original filters kept in place, new ones copy existing ones
                for p_old, p_new, _ in pairs:
                    if p_old.dim() == 1 and p_old.shape[0] == y_old.shape[1]:
                        assert torch.equal(p_new[orig], p_old)
                    else:
                        assert torch.equal(p_new[tuple(slice(0, s) for s in p_old.shape)], p_old)
                    if p_old.dim() == 1 and p_new.shape[0] > p_old.shape[0]:
                        assert all((p_old == e).any() for e in p_new)
            if rescale:   # exact Net2Net: duplicated input -> duplicated output
                torch.testing.assert_close(new(x[:, in_map]), y_old[:, out_map], atol=1e-5, rtol=1e-5)
            elif name != "sep_conv_3x3":
                # one channel-mixing layer: original outputs kept on zero-padded inputs
                xz = torch.cat([x, torch.zeros_like(x)], 1)
                torch.testing.assert_close(new(xz)[:, orig], y_old, atol=1e-5, rtol=1e-5)
            else:
                # two mixing layers and no 1/replication rescale (DrNAS): the function changes
                xz = torch.cat([x, torch.zeros_like(x)], 1)
                assert not torch.allclose(new(xz)[:, orig], y_old, atol=1e-3)


def test_progressive_prune_widen_and_optimizer_state():
    ir = nb201(C=8, N=1)
    prog = make_transforms([Part("progressive", {"K": [4, 2], "keep": [5, 3], "epochs": [2, 3],
                                                 "warmup": 1, "seed": 0})])[0]
    assert [prog.stage_at(e) for e in range(6)] == [0, 0, 1, 1, 1, 1]
    assert [prog.arch_frozen(e) for e in range(5)] == [True, False, True, False, False]
    net = build(ir, **prog.build_kwargs())
    prog.prepare(net)
    rel = make_relaxation("dirichlet")
    with torch.no_grad():
        net.alphas["cell"].copy_(torch.tensor([0.5, -1.0, 2.0, 1.0, 0.0]).expand(6, 5))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(net(x, rel.weights(net, {})), y).backward()
    opt.step()
    opt.zero_grad()
    edge0 = next(search_edges(net))[2]
    old_ops = [op for op in edge0.ops]
    old_conv = edge0.ops[3].conv.weight.detach().clone()            # nor_conv_3x3, 2 channels
    old_bn = edge0.ops[3].bn.running_mean.clone()
    with torch.no_grad():                                           # make buffers a known function
        for p in net.weight_parameters():
            opt.state[p]["momentum_buffer"] = 2 * p.detach() + 1
    res = prog.advance(net, opt, rel.strengths(net, {}))
    assert res.stage == 1 and prog.stage == 1
    # widened: 8/4 = 2 -> 8/2 = 4 channels, original filters and statistics kept
    assert edge0.K == 2 and edge0.ops[3].conv.weight.shape[:2] == (4, 4)
    assert edge0.ops[3] is not old_ops[3]
    assert torch.equal(edge0.ops[3].conv.weight[:2, :2].detach(), old_conv)
    assert torch.equal(edge0.ops[3].bn.running_mean[:2], old_bn)
    new_rows = edge0.ops[3].conv.weight.detach()[2:, :2]
    assert all(any(torch.equal(r, o) for o in old_conv) for r in new_rows)
    assert all(any(torch.equal(r, o) for o in old_bn) for r in edge0.ops[3].bn.running_mean[2:])
    # pruned: top 3 by η = columns 2, 3, 0; the others exactly 0 in every sample
    assert torch.equal(net.mask("cell"), torch.tensor([True, False, True, True, False]).expand(6, 5))
    for _ in range(3):
        w = rel.weights(net, {})["cell"]
        assert (w[:, [1, 4]] == 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(6))
    calls = {k: 0 for k in range(5)}
    for k, op in enumerate(edge0.ops):
        op.register_forward_hook(lambda m, i, o, k=k: calls.__setitem__(k, calls[k] + 1))
    out = net(x, rel.weights(net, {}))
    assert out.shape == (4, 10)
    assert calls == {0: 1, 1: 0, 2: 1, 3: 1, 4: 0}                  # pruned ops skipped
    # optimiser: holds exactly the new weights, each momentum buffer mapped like its parameter
    held = [p for g in opt.param_groups for p in g["params"]]
    assert {id(p) for p in held} == {id(p) for p in net.weight_parameters()}
    for p in held:
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], 2 * p.detach() + 1)
    assert all(old not in opt.state for old in res.replaced)
    nn.functional.cross_entropy(net(x, rel.weights(net, {})), y).backward()
    opt.step()                                                       # shapes all agree
    # resume: rebuild at stage 1, prepare, load -> same masks, same function
    net.eval()
    fresh = build(ir, **prog.build_kwargs(stage=1))
    prog.prepare(fresh, stage=1)
    fresh.load_state_dict(net.state_dict())
    fresh.eval()
    assert torch.equal(fresh.mask("cell"), net.mask("cell"))
    st = rel.strengths(net, {})
    torch.testing.assert_close(fresh(x, st), net(x, st))
    with pytest.raises(ValueError):
        prog.advance(net, opt)                                       # no stage 2


# ---- method specs resolve ------------------------------------------------------------------

def test_every_shipped_method_resolves_its_parts():
    for m in METHODS.values():
        for fam in ("nb201", "darts"):
            spec = m.for_family(fam)
            make_relaxation(spec.relaxation)
            merge_build_kwargs(make_transforms(spec.transforms))
            make_discretizer(spec.discretizer)
    with pytest.raises(KeyError):
        make_relaxation("gumbel")
    with pytest.raises(TypeError):
        make_transforms([Part("partial_channels", {"k": 4})])
    with pytest.raises(ValueError):
        merge_build_kwargs([*make_transforms([Part("partial_channels", {"K": 4})]),
                            *make_transforms([Part("partial_channels", {"K": 2})])])
    assert isinstance(make_relaxation("softmax_beta"), SoftmaxBeta)
    assert isinstance(make_transforms([Part("node_norm")])[0], NodeNorm)
    with pytest.raises(ValueError):
        Progressive([2, 4], [5, 3], [1, 1])                          # K may not grow
