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
