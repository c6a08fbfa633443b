"""The fused search cell computes exactly what the plain one does (outputs and gradients)."""
from pathlib import Path

import pytest
import torch

from dslnas.ir.lower import compile_file
from dslnas.supernet.network import build, count_parameters

SPACES = Path(__file__).resolve().parents[1] / "spaces"


def pair(name, **overrides):
    ir = compile_file(SPACES / f"{name}.nas", overrides)
    torch.manual_seed(0)
    plain = build(ir)
    fused = build(ir, fused=True)
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
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    outs = []
    for net in (plain, fused):
        y = net(x)
        (y.square().sum()).backward()
        outs.append(y)
    tol = dict(atol=1e-10, rtol=1e-8)
    assert torch.allclose(outs[0], outs[1], **tol)
    for a, b in zip(plain.arch_parameters(), fused.arch_parameters()):
        assert torch.allclose(a.grad, b.grad, **tol)
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
