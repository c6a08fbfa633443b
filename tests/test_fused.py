"""The fused search cell computes exactly what the plain one does (outputs and gradients)."""
import warnings
from pathlib import Path

import pytest
import torch

from dslnas.ir.lower import compile_file
from dslnas.supernet.network import build, count_parameters
from dslnas.supernet.partial import partial_edge

from tiny_spaces import tiny_space

SPACES = Path(__file__).resolve().parents[1] / "spaces"


def pair(name, edge_cls=None, node_norm=False, **overrides):
    ir = compile_file(SPACES / f"{name}.nas", overrides) if isinstance(name, str) else \
        compile_file(name, overrides)
    kwargs = {"node_norm": node_norm} | ({} if edge_cls is None else {"edge_cls": edge_cls})
    torch.manual_seed(0)
    plain = build(ir, **kwargs)
    fused = build(ir, fused=True, **kwargs)
    fused.alphas.load_state_dict(plain.alphas.state_dict())
    for kind, a, b in zip(plain.net.kinds, plain.net.blocks, fused.net.blocks):
        if kind == "cell":
            b.load_from(a)
        else:
            b.load_state_dict(a.state_dict())
    return plain, fused


@pytest.mark.parametrize("name, overrides, size", [
    ("nb201", {"C": 4, "N": 2}, 16), ("darts", {"C": 4, "L": 5}, 16), ("s3", {"C": 4, "L": 4}, 16),
])
def test_fused_matches_plain_outputs_and_gradients(name, overrides, size):
    plain, fused = pair(name, **overrides)
    assert count_parameters(fused.weight_parameters()) == count_parameters(plain.weight_parameters())
    x = torch.randn(4, 3, size, size)
    outs = []
    for net in (plain, fused):
        y = net(x)
        (y.square().sum()).backward()
        outs.append(y)
    assert torch.allclose(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    for a, b in zip(plain.arch_parameters(), fused.arch_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-3)
    # weight gradients: the same multiset of values, laid out per source instead of per edge
    def flat_sorted(net):
        return torch.cat([p.grad.flatten() for p in net.weight_parameters()
                          if p.grad is not None]).sort().values
    assert torch.allclose(flat_sorted(plain), flat_sorted(fused), atol=1e-5, rtol=1e-3)
    # the running statistics moved the same way: eval-mode outputs agree too
    plain.eval(), fused.eval()
    assert torch.allclose(plain(x), fused(x), atol=1e-5, rtol=1e-4)


def test_fused_full_size_parameter_counts():
    ir = compile_file(SPACES / "nb201.nas")
    assert count_parameters(build(ir, fused=True).weight_parameters()) == 1_692_826
    ir = compile_file(SPACES / "darts.nas")
    assert count_parameters(build(ir, fused=True).weight_parameters()) == 1_930_618


@pytest.fixture
def fixed_noise(monkeypatch):
    """`noise` draws fresh N(0, 1) per call, and the fused cell calls the edges in another order
    (by source, not by destination): same distribution, other draws. For an exact comparison
    every call returns the same pseudo-noise for the same shape."""
    from dslnas.ops import NoiseOp

    def forward(self, x):
        shape = x[:, :, ::self.stride, ::self.stride].shape
        g = torch.Generator().manual_seed(shape.numel())
        return torch.randn(shape, generator=g, dtype=torch.float64).to(x.dtype)

    monkeypatch.setattr(NoiseOp, "forward", forward)


def cell_pairs(plain, fused):
    return [(a, b) for kind, a, b in zip(plain.net.kinds, plain.net.blocks, fused.net.blocks)
            if kind == "cell"]


SEP_DIL = ("sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")


@pytest.mark.parametrize("name", ["darts", "s1", "s2", "s3", "s4"])
def test_fused_sep_dil_stacks_match_plain_per_edge(name, fixed_noise):
    """Separable and dilated convs batched per source: outputs, α gradients, every edge's weight
    gradients and BN running statistics equal the plain cell's (float64, tight tolerance), in
    normal and reduction cells."""
    plain, fused = pair(name, C=4, L=5)
    plain.double(), fused.double()
    cells = cell_pairs(plain, fused)
    assert {c.stride for c in plain.ir.blocks if hasattr(c, "cell")} == {1, 2}
    for _, f in cells:
        for plan in f.plan:
            for kind, key, _ in plan:
                # every separable/dilated candidate is batched, none left per edge
                assert kind == "dw_stack" or not key.split("_", 1)[1].startswith(SEP_DIL)
    assert_same_search(plain, fused, torch.randn(4, 3, 16, 16, dtype=torch.float64))


def assert_same_search(plain, fused, x, weights=None):
    """One train-mode forward and backward of both float64 supernets from the same tensors:
    outputs, edge-weight gradients, every edge's weight gradients (through ``tensor_map``) and
    BN running statistics agree tightly, and so do the eval-mode outputs after. ``weights``:
    edge weights to feed both (default: the softmax of α)."""
    cells = cell_pairs(plain, fused)
    outs, grads = [], []
    for net in (plain, fused):
        if weights is None:
            y = net(x)
        else:
            w = {g: t.clone().requires_grad_() for g, t in weights.items()}
            y = net(x, w)
        (y.square().sum()).backward()
        outs.append(y)
        grads.append([a.grad for a in net.arch_parameters()] if weights is None else
                     [w[g].grad for g in sorted(w)])
    tol = dict(atol=1e-10, rtol=1e-8)
    assert torch.allclose(outs[0], outs[1], **tol)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, **tol)
    for p, f in cells:
        for a, b in zip(p.preprocess.parameters(), f.preprocess.parameters()):
            assert torch.allclose(a.grad, b.grad, **tol)
        covered = {id(t): torch.zeros_like(t, dtype=torch.int) for t in f.mods.parameters()}
        for ft, index, pt in f.tensor_map(p):
            if isinstance(pt, torch.nn.Parameter):
                covered[id(ft)][index] += 1
                assert torch.allclose(ft.grad[index], pt.grad, **tol)
            else:       # BN running statistics after one train-mode step
                assert torch.allclose(ft[index], pt, **tol)
        # the map is a bijection on the weights: the comparison saw every fused element once
        assert all(bool((c == 1).all()) for c in covered.values())
    for kind, a, b in zip(plain.net.kinds, plain.net.blocks, fused.net.blocks):
        if kind != "cell":
            for pa, pb in zip(a.parameters(), b.parameters()):
                assert torch.allclose(pa.grad, pb.grad, **tol)
    plain.eval(), fused.eval()
    assert torch.allclose(plain(x), fused(x), **tol)


@pytest.mark.parametrize("name, K, overrides", [
    ("nb201", 4, {"C": 8, "N": 2}), ("darts", 4, {"C": 8, "L": 5}), ("darts", 2, {"C": 8, "L": 5}),
    ("s3", 4, {"C": 8, "L": 4}), ("s4", 2, {"C": 4, "L": 4}),
])
def test_fused_partial_channels_match_plain_partial_edges(name, K, overrides, fixed_noise):
    """PC-DARTS' partial-channel edges batched per source node, each node's bypasses summed and
    shuffled once: the same search as the per-edge ``PartialMixedEdge`` (float64), in normal and
    reduction cells (max-pooled bypass), with edge weights that do not sum to 1 (PC-DARTS' β̂
    folded in), so the bypass's scaling by the edge's weight mass is exercised too."""
    plain, fused = pair(name, partial_edge(K), **overrides)
    plain.double(), fused.double()
    assert count_parameters(fused.weight_parameters()) == count_parameters(plain.weight_parameters())
    for _, f in cell_pairs(plain, fused):
        assert f.K == K and f.C == f.C_full // K
    g = torch.Generator().manual_seed(1)
    weights = {name: torch.rand(a.shape, generator=g, dtype=torch.float64)
               for name, a in plain.alphas.items()}
    assert_same_search(plain, fused, torch.randn(4, 3, 16, 16, dtype=torch.float64), weights)


def test_fused_partial_node_of_none_edges_is_its_bypass(tmp_path):
    """A node whose every candidate is `none` still carries the bypassed channels."""
    path = tmp_path / "nothing.nas"
    path.write_text(ONLY_NONE)
    plain, fused = pair(path, partial_edge(2))
    x = torch.randn(2, 3, 8, 8)
    w = {g: torch.full(a.shape, 0.7) for g, a in plain.alphas.items()}
    assert torch.allclose(plain(x, w), fused(x, w), atol=1e-6)
    assert fused(x, w).abs().sum() > 0


ONLY_NONE = tiny_space("nothing", ["none"], nodes=2, repeat=1)


def test_partial_channel_progressive_and_decorrelation_methods_search_with_fused_cells():
    from dslnas.methods.spec import get_method
    from dslnas.search.loop import fused_fits, make_parts
    for method in ("pc-darts", "rf-pcdarts", "drnas-progressive"):
        for family in ("nb201", "darts"):
            assert fused_fits(make_parts(get_method(method).for_family(family)))
    # iDARTS (Wang): its decorrelation discretizer scores on a plain twin
    assert fused_fits(make_parts(get_method("idarts-nn").for_family("nb201")))


@pytest.mark.parametrize("name, edge_cls, overrides, mode", [
    ("nb201", None, {"C": 4, "N": 1}, "eval"), ("darts", None, {"C": 4, "L": 5}, "eval"),
    ("nb201", partial_edge(2), {"C": 4, "N": 1}, "eval"), ("nb201", None, {"C": 4, "N": 1}, "train"),
])
def test_decorrelation_scores_a_fused_supernet_on_its_plain_twin(name, edge_cls, overrides, mode):
    """iDARTS (Wang) searches with fused cells: its discretizer hooks every edge's op outputs,
    so it scores a plain twin holding the fused supernet's tensors, the same function."""
    from dslnas.methods.discretizers import Decorrelation
    plain, fused = pair(name, edge_cls, node_norm=True, **overrides)
    plain.double(), fused.double()
    # the twin holds exactly the tensors the fused supernet got from the plain one, and
    # building it leaves the search's random stream where it was
    rng = torch.get_rng_state()
    twin = fused.plain_twin()
    assert torch.equal(torch.get_rng_state(), rng)
    assert twin is not fused and not twin.is_fused and fused.is_fused and twin.training
    want = plain.state_dict()
    got = twin.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert plain.plain_twin() is plain
    # one train-mode step moves the BN statistics both ways alike; then score in eval mode
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    plain(x), fused(x)
    weights = {g: torch.softmax(torch.randn(a.shape, dtype=torch.float64), -1)
               for g, a in plain.alphas.items()}
    data = [torch.randn(4, 3, 16, 16, dtype=torch.float64) for _ in range(2)]
    d = Decorrelation(batches=2, mode=mode)
    before = [{k: v.clone() for k, v in net.state_dict().items()} for net in (plain, fused)]
    for g, s in d.scores(plain, weights, data).items():
        t = d.scores(fused, weights, data)[g]
        assert torch.equal(torch.isfinite(s), torch.isfinite(t)) and torch.isfinite(s).any()
        assert torch.allclose(s[torch.isfinite(s)], t[torch.isfinite(t)], atol=1e-9)
    # scoring changed neither supernet (train mode's BN statistics are put back)
    for net, state in zip((plain, fused), before):
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_plain_twin_is_prepared_like_the_search_supernet():
    """A transform that changes modules (random features without BN running statistics) is
    applied to the twin too, so a fused decorrelation search derives its genotype."""
    import attrs
    from dslnas.methods.spec import Part, get_method
    from dslnas.search.loop import Searcher
    m = get_method("idarts-nn").for_family("nb201")
    m = attrs.evolve(m, transforms=m.transforms + (
        Part("random_features", {"trainable": ["bn_affine"], "track_stats": False}),))
    ir = compile_file(SPACES / "nb201.nas", {"C": 4, "N": 1})
    s = Searcher(ir, m, seed=0)
    assert s.is_fused
    twin = s.supernet.plain_twin()
    assert not any(getattr(b, "running_mean", None) is not None for b in twin.modules()
                   if isinstance(b, torch.nn.BatchNorm2d))
    genotype = s.discretizer.derive(s.supernet, s.relaxation, s.extra,
                                    batches=[torch.randn(4, 3, 16, 16)])
    assert len(genotype.cells[0].ops) == 6


def test_fused_sep_dil_stacks_keep_channels_last():
    """The replicated input keeps a channels_last layout and the result does not change."""
    plain, fused = pair("darts", C=4, L=5)
    x = torch.randn(2, 3, 16, 16)
    ref = plain(x)
    fused.to(memory_format=torch.channels_last)
    assert torch.allclose(fused(x.contiguous(memory_format=torch.channels_last)), ref,
                          atol=1e-5, rtol=1e-4)
    from dslnas.supernet.fused import _replicate
    xc = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    r = _replicate(xc, 3)
    assert r.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(r, xc.repeat(1, 3, 1, 1))


def test_fused_cell_is_not_used_with_a_fan_out_initialisation():
    # stacking n edges' convs multiplies a conv's fan-out by n: Kaiming by fan-out would draw
    # the fused weights sqrt(n) smaller than the plain cell's, so such a method keeps plain cells
    import attrs
    from dslnas.methods.spec import Part, get_method
    from dslnas.search.loop import fused_fits, make_parts
    m = get_method("rf-darts").for_family("nb201")
    assert fused_fits(make_parts(m))
    kaiming = attrs.evolve(m, transforms=(
        Part("random_features", {"trainable": ["bn_affine"], "init": "kaiming_normal"}),))
    assert not fused_fits(make_parts(kaiming))


# ---- DrNAS' progressive scheme on fused cells ------------------------------------------------

def _sgd_step(net, opt, x, y, relax):
    torch.nn.functional.cross_entropy(net(x, relax.weights(net, {})), y).backward()
    opt.step()
    opt.zero_grad()


def shared_stats(cell) -> set[int]:
    """The BN statistics of a fused cell's shared modules (DARTS' pool BN): after a stage switch
    they hold one edge's widened copy, while plain edges each draw their own channel map. Only
    eval-mode passes read them (docs/methods.md)."""
    return {id(t) for plan in cell.plan for kind, key, _ in plan if kind == "shared"
            for t in cell.mods[key].buffers()}


@pytest.mark.parametrize("name, overrides, keep", [
    ("nb201", {"C": 8, "N": 1}, [5, 3]), ("darts", {"C": 8, "L": 5}, [7, 4]),
])
def test_fused_progressive_stage_switch_is_the_plain_one(name, overrides, keep):
    """DrNAS' stage switch on fused cells (prune to the top ops, widen C/4 -> C/2 channels by
    Net2Net, carry SGD momentum) gives exactly what it gives on plain partial-channel edges
    (float64): masks, every edge's tensors and momentum, the RNG stream, and the next step's
    outputs and gradients; pruned candidates' terms are not run; a rebuilt fused supernet at
    the new stage loads the checkpoint with its pruning."""
    from dslnas.methods.relaxations import make_relaxation
    from dslnas.methods.spec import Part
    from dslnas.methods.transforms import make_transforms
    progs = [make_transforms([Part("progressive", {"K": [4, 2], "keep": keep, "epochs": [1, 1],
                                                   "seed": 3})])[0] for _ in range(2)]
    plain, fused = pair(name, progs[0].build_kwargs()["edge_cls"], **overrides)
    plain.double(), fused.double()
    relax = make_relaxation("softmax")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=g)
    y = torch.randint(0, 10, (4,), generator=g)
    opts = []
    for prog, net in zip(progs, (plain, fused)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # DARTS: keep[0] = 7 < 8 candidates
            prog.prepare(net)
        with torch.no_grad():
            for a in net.alphas.values():
                a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(1)))
        opts.append(torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9))
        _sgd_step(net, opts[-1], x, y, relax)
    drawn = []
    for prog, net, opt in zip(progs, (plain, fused), opts):
        torch.manual_seed(11)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = prog.advance(net, opt, relax.strengths(net, {}))
        assert not caught                     # (DARTS' keep[0] < 8 warned at the build only)
        assert res.stage == prog.stage == 1
        drawn.append(torch.rand(4))           # the search's random stream moved alike
    assert torch.equal(*drawn)
    for group in plain.alphas:
        m = fused.mask(group)
        assert torch.equal(m, plain.mask(group)) and bool((m.sum(1) == keep[1]).all())
    # the fused cells hold the kept candidates only
    pruned_params = sum(count_parameters(p.edges[r].ops[c].parameters())
                        for p, f in cell_pairs(plain, fused)
                        for r, c in (~fused.mask(f.group)).nonzero().tolist())
    assert count_parameters(fused.weight_parameters()) == \
        count_parameters(plain.weight_parameters()) - pruned_params
    # the optimiser holds exactly the fused supernet's weights, its momentum mapped with them
    # (the first step's gradients agree to rounding)
    tol = dict(atol=1e-10, rtol=1e-8)
    held = [p for grp in opts[1].param_groups for p in grp["params"]]
    assert {id(p) for p in held} == {id(p) for p in fused.weight_parameters()}
    for p, f in cell_pairs(plain, fused):
        assert f.K == p.edges[0].K == 2 and f.C == f.C_full // 2
        for ft, index, pt in f.tensor_map(p):
            if id(ft) not in shared_stats(f):
                assert torch.allclose(ft[index], pt, **tol)
            if isinstance(pt, torch.nn.Parameter):
                assert torch.allclose(opts[1].state[ft]["momentum_buffer"][index],
                                      opts[0].state[pt]["momentum_buffer"], **tol)
        # what forward runs: every kept candidate but `none`, nothing pruned
        ran = {(t.row, t.col) for plan in f.live for *_, targets in plan for t in targets}
        kept = {(r, c) for r, c in fused.mask(f.group).nonzero().tolist()
                if p.edges[r].candidates[c] != "none"}
        assert ran == kept
    # the next step: the same outputs, α and live weight gradients, and BN statistics
    outs = []
    for net in (plain, fused):
        out = net(x, relax.weights(net, {}))
        torch.nn.functional.cross_entropy(out, y).backward()
        outs.append(out)
    assert torch.allclose(*outs, **tol)
    for a, b in zip(plain.arch_parameters(), fused.arch_parameters()):
        assert torch.allclose(a.grad, b.grad, **tol)
    for p, f in cell_pairs(plain, fused):
        for ft, index, pt in f.tensor_map(p):       # the kept candidates' tensors
            if isinstance(pt, torch.nn.Parameter):
                assert torch.allclose(ft.grad[index], pt.grad, **tol)
            elif id(ft) not in shared_stats(f):
                assert torch.allclose(ft[index], pt, **tol)
    for opt in opts:
        opt.step()
    # the decorrelation discretizer scores a fused supernet on a plain twin: pruned ops stay off
    from dslnas.methods.discretizers import Decorrelation
    d = Decorrelation(batches=1, mode="train")
    weights = relax.weights(plain, {})
    for group, score in d.scores(plain, weights, [x]).items():
        other = d.scores(fused, weights, [x])[group]
        assert torch.equal(torch.isfinite(score), torch.isfinite(other))
        assert torch.allclose(score[torch.isfinite(score)], other[torch.isfinite(other)], atol=1e-9)
    # resume: a fused supernet built at stage 1 loads the checkpoint, pruning included
    fresh = build(fused.ir, fused=True, **progs[1].build_kwargs(stage=1)).double()
    progs[1].prepare(fresh, stage=1)
    fresh.load_state_dict(fused.state_dict())
    for group in fused.alphas:
        assert torch.equal(fresh.mask(group), fused.mask(group))
    fresh.eval(), fused.eval()
    st = relax.strengths(fused, {})
    assert torch.allclose(fresh(x, st), fused(x, st), **tol)


def test_fused_progressive_stage_of_the_same_width_drops_the_pruned_candidates():
    """A stage that keeps K (K [2, 2]) only prunes: the fused cells keep exactly the kept
    candidates' tensors (the plain edges' less their pruned ops), the optimiser exactly the
    supernet's weights, and an edge's bypass is scaled by its kept candidates' weights only,
    as PartialMixedEdge's is (pruned columns with weights that are not 0 are ignored)."""
    from dslnas.methods.relaxations import make_relaxation
    from dslnas.methods.spec import Part
    from dslnas.methods.transforms import make_transforms
    progs = [make_transforms([Part("progressive", {"K": [2, 2], "keep": [5, 3], "epochs": [1, 1]})])[0]
             for _ in range(2)]
    plain, fused = pair("nb201", progs[0].build_kwargs()["edge_cls"], C=8, N=1)
    plain.double(), fused.double()
    relax = make_relaxation("softmax")
    for prog, net in zip(progs, (plain, fused)):
        prog.prepare(net)
    opt = torch.optim.SGD(fused.weight_parameters(), lr=0.1, momentum=0.9)
    progs[1].advance(fused, opt, relax.strengths(fused, {}))
    progs[0].advance(plain, None, relax.strengths(plain, {}))
    assert {id(p) for g in opt.param_groups for p in g["params"]} == \
        {id(p) for p in fused.weight_parameters()}
    pruned_params = 0
    for group in fused.alphas:
        assert torch.equal(fused.mask(group), plain.mask(group))
        assert bool((fused.mask(group).sum(1) == 3).all())
    for p, f in cell_pairs(plain, fused):
        for r, c in (~fused.mask(f.group)).nonzero().tolist():
            pruned_params += count_parameters(p.edges[r].ops[c].parameters())
    assert pruned_params > 0 and count_parameters(fused.weight_parameters()) == \
        count_parameters(plain.weight_parameters()) - pruned_params
    w = {g: torch.rand(a.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
         for g, a in fused.alphas.items()}
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(fused(x, w), plain(x, w), atol=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_progressive_stage_switch_keeps_what_random_features_turned_off(fused):
    """Random features without BN running statistics, with DrNAS' progressive scheme: the
    widened (plain) or rebuilt (fused) ops have none either, so a checkpoint after the switch
    loads into a supernet built and prepared at that stage."""
    from dslnas.methods.relaxations import make_relaxation
    from dslnas.methods.spec import Part
    from dslnas.methods.transforms import make_transforms, merge_build_kwargs
    ir = compile_file(SPACES / "nb201.nas", {"C": 8, "N": 1})
    parts = [Part("progressive", {"K": [4, 2], "keep": [5, 3], "epochs": [1, 1]}),
             Part("random_features", {"trainable": ["bn_affine"], "track_stats": False})]

    def built(stage):
        ts = make_transforms(parts)
        ts[0].stage = stage
        net = build(ir, fused=fused, **merge_build_kwargs(ts))
        for t in ts:
            t.prepare(net)
            net.prepared_by.append(t.prepare)
        return ts, net

    ts, net = built(0)
    tracking = lambda n: [m for m in n.modules() if isinstance(m, torch.nn.BatchNorm2d)  # noqa: E731
                          and m.track_running_stats]
    assert net.is_fused == fused and not tracking(net)
    ts[0].advance(net, None, make_relaxation("softmax").strengths(net, {}))
    assert not tracking(net)
    _, fresh = built(1)
    fresh.load_state_dict(net.state_dict())          # strict: the same keys
