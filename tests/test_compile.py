"""Compiled cells (``Supernet.compile_cells``, ``search --compile``), on the CPU.

torch.compile must not change what the search computes: a compiled search of a few iterations
ends at the same weights, α and metrics as the eager one, within float tolerance (the generated
kernels sum in another order). Methods whose hypergradient differentiates twice are refused
with a reason. NB201 at C=4, N=1, so the one compiling test stays short.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dslnas import cli
from dslnas.search.loop import MethodError, Searcher, compile_safety, make_parts

from test_graphs import data_for, digits, ir, run_epochs, spec, tensors  # noqa: F401 (fixtures)

NB201 = Path(__file__).resolve().parents[1] / "spaces" / "nb201.nas"


@pytest.mark.parametrize("method", ["darts", "darts-2nd"])   # darts-2nd: w' and w ± r·v passes
def test_compiled_cells_search_like_eager_cells(digits, ir, method):  # noqa: F811
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    m = spec(method, epochs=2, batch_size=16)
    eager = Searcher(ir, m, seed=4)
    compiled = Searcher(ir, m, seed=4, compile_cells=True)
    cells = [b for k, b in zip(compiled.supernet.net.kinds, compiled.supernet.net.blocks)
             if k == "cell"]
    assert cells and all(c._compiled_call_impl is not None for c in cells)
    # compiling wraps the call only: same parameter names, so checkpoints are interchangeable
    assert compiled.supernet.state_dict().keys() == eager.supernet.state_dict().keys()

    m_eager = run_epochs(eager, data_for(digits, m), 2)
    m_comp = run_epochs(compiled, data_for(digits, m), 2)
    for a, b in zip(m_eager, m_comp):
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-4), k
    te, tc = tensors(eager), tensors(compiled)
    assert te.keys() == tc.keys()
    for k in te:
        if te[k].is_floating_point():
            # conv biases before a non-affine BN get gradients that are rounding noise (the BN
            # removes them exactly), so they are compared with an absolute bound
            torch.testing.assert_close(tc[k], te[k], rtol=1e-3, atol=2e-4, msg=k)
        else:
            assert torch.equal(tc[k], te[k]), k
    assert compiled.genotype() == eager.genotype()
    # compiling is the slow part: per cell shape (three widths at N=1) one graph for the weight
    # step and one for the architecture step; the partial batch (4 of 36 images) ran eagerly
    assert counters["stats"]["unique_graphs"] == 6


@pytest.mark.parametrize("method, ok", [("darts", True), ("darts-2nd", True), ("drnas", True),
                                        ("pc-darts", True), ("idarts-ift", False),
                                        ("amended-darts", False)])
def test_compile_safety_refuses_double_backward(method, ok):
    reason = compile_safety(make_parts(spec(method)))
    assert (reason is None) == ok
    if not ok:
        assert "double backward" in reason


def test_compile_safety_refuses_the_exact_unrolled_hypergradient():
    import attrs
    from dslnas.methods.spec import Part
    exact = attrs.evolve(spec("darts-2nd"), hypergradient=Part("unrolled", {"exact": True}))
    assert "Unrolled(exact) needs double backward" in compile_safety(make_parts(exact))


def test_asking_to_compile_a_double_backward_method_fails_cleanly(ir):  # noqa: F811
    with pytest.raises(MethodError, match="--compile: hypergradient .* double backward"):
        Searcher(ir, spec("idarts-ift"), compile_cells=True)


def test_cli_compile_flag_exits_2_for_a_method_that_cannot_compile(tmp_path, capsys):
    code = cli.main(["search", str(NB201), "--method", "amended-darts", "--dataset", "digits",
                     "--epochs", "1", "--set", "C=4", "--set", "N=1", "--compile",
                     "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    assert code == 2
    assert "double backward" in capsys.readouterr().err
