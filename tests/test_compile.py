"""Compiled cells (``Supernet.compile_cells``, ``search --compile``), on the CPU.

torch.compile must not change what the search computes: a compiled search of a few iterations
ends at the same weights, α and metrics as the eager one, within float tolerance (the generated
kernels sum in another order). A hypergradient that differentiates twice runs the architecture
step in the cells' eager code. NB201 at C=4, N=1, so the compiling tests stay short.
"""
from __future__ import annotations

import pytest
import torch

from dslnas.search.loop import Searcher

from tiny_spaces import tiny_space

from test_graphs import data_for, digits, ir, run_epochs, spec, tensors  # noqa: F401 (fixtures)


# darts-2nd: the w' pass (∇ to w and α) and the w ± r·v passes (α only); idarts-ift: the
# inner loop, and a double-backward hypergradient, whose architecture step runs the cells'
# eager code
@pytest.mark.parametrize("method, graphs", [("darts", 6), ("darts-2nd", 9), ("idarts-ift", 3)])
def test_compiled_cells_search_like_eager_cells(digits, ir, method, graphs):  # noqa: F811
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
        if not te[k].is_floating_point():
            assert torch.equal(tc[k], te[k]), k
        # idarts-ift's float32 trajectory amplifies rounding: eagerly, summing the pool's
        # window in another order moves its Adam state by 35 % within these two epochs (darts:
        # 0.03 %), so its tensors are compared in float64 only (the test below)
        elif method != "idarts-ift":
            # conv biases before a non-affine BN get gradients that are rounding noise (the BN
            # removes them exactly), so they are compared with an absolute bound
            torch.testing.assert_close(tc[k], te[k], rtol=1e-3, atol=2e-4, msg=k)
    assert compiled.genotype() == eager.genotype()
    # compiling is the slow part: per cell shape (three widths at N=1) one graph for the weight
    # step (gradients to w) and one for the first-order architecture step (to α only; none
    # where it differentiates twice); darts-2nd adds its w' pass (to both); the partial batch
    # (4 of 36 images) ran eagerly
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("method", ["darts", "darts-2nd", "idarts-ift"])
def test_compiled_cells_compute_what_eager_cells_compute_in_float64(digits, ir, method):  # noqa: F811
    import torch._dynamo
    from torch._dynamo.utils import counters
    m = spec(method, batch_size=16)
    data = data_for(digits, m)
    batches = [(data.train.next(), data.val.next()) for _ in range(10)]
    states = []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        s = Searcher(ir, m, seed=4, compile_cells=compiled)
        s.supernet.to(torch.float64)
        s.supernet.train()
        for i, ((xt, yt), (xv, yv)) in enumerate(batches):     # weight and α steps in turn
            s.iteration(xt.double(), yt, xv.double(), yv, do_arch=i % 2 == 1, frozen=False)
        states.append(s.supernet.state_dict())
    assert counters["stats"]["unique_graphs"] > 0           # the compiled run did compile
    eager, compiled = states
    for k, v in eager.items():
        if v.is_floating_point():
            torch.testing.assert_close(compiled[k], v, rtol=1e-10, atol=1e-12, msg=k)


TWO_CELLS = tiny_space("two", ["none", "skip_connect", "nor_conv_1x1"])


@pytest.mark.parametrize("method", ["darts", "rf-darts"])
def test_cells_of_one_shape_share_graphs_whatever_their_inputs_need(tmp_path, method):
    """The architecture step holds the stem constant (and rf-darts freezes it), so the first
    cell's input needs no gradient while the second's does; still one graph per step kind."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from dslnas.ir.lower import compile_file
    path = tmp_path / "two.nas"
    path.write_text(TWO_CELLS)
    torch._dynamo.reset()
    counters.clear()
    s = Searcher(compile_file(path, {"in_channels": 3, "classes": 10}),
                 spec(method, batch_size=8), seed=0, compile_cells=True)
    g = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))  # noqa: E731
    for _ in range(2):
        s.iteration(*batch(), *batch(), do_arch=True, frozen=False)
    assert counters["stats"]["unique_graphs"] == 2     # the weight step's and the arch step's
    assert all(torch.isfinite(a).all() for a in s.supernet.alphas.values())


PARTIAL_CELLS = tiny_space("partial", ["none", "skip_connect", "nor_conv_1x1", "avg_pool_3x3"],
                           nodes=2, C=8)


def _eager_and_compiled(tmp_path, method, drive) -> int:
    """Run ``drive(searcher, batches)`` on an eager and on a compiled float64 fused search of
    PARTIAL_CELLS from the same seed; assert they end in the same state; return how many
    graphs the compiled one built."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    from dslnas.ir.lower import compile_file
    path = tmp_path / "partial.nas"
    path.write_text(PARTIAL_CELLS)
    ir = compile_file(path, {"in_channels": 3, "classes": 10})
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, 8, 8, generator=g, dtype=torch.float64),
                torch.randint(0, 10, (8,), generator=g)) for _ in range(12)]
    states = []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        s = Searcher(ir, method, seed=4, compile_cells=compiled)
        assert s.is_fused
        s.supernet.to(torch.float64)
        s.supernet.train()
        drive(s, batches)
        states.append(s.supernet.state_dict())
    eager, compiled = states
    assert eager.keys() == compiled.keys()
    for k, v in eager.items():
        if v.is_floating_point():
            torch.testing.assert_close(compiled[k], v, rtol=1e-10, atol=1e-12, msg=k)
        else:
            assert torch.equal(compiled[k], v), k
    return counters["stats"]["unique_graphs"]


def test_compiled_partial_channel_cells_compute_what_eager_ones_compute(tmp_path):
    """PC-DARTS in the fused cell (partial channels, K=4: 2 of 8 channels through the ops,
    bypass, one shuffle per node) compiles to the same search, float64; one cell shape, so
    one graph per step kind (the full NB201 shapes are the float64 test above, for darts)."""
    def drive(s, batches):
        alphas = [a.detach().clone() for a in s.supernet.arch_parameters()]
        for i in range(0, 12, 2):
            s.iteration(*batches[i], *batches[i + 1], do_arch=True, frozen=False)
        # the architecture steps ran: α moved
        assert all(not torch.equal(a, b) for a, b in zip(alphas, s.supernet.arch_parameters()))
    assert _eager_and_compiled(tmp_path, spec("pc-darts", batch_size=8, warmup_epochs=0),
                               drive) == 2


def test_compiled_progressive_cells_follow_the_stage_switch(tmp_path):
    """DrNAS' progressive scheme on compiled fused cells: the stage switch (prune to 2 of 4 ops,
    widen C/4 -> C/2) rebuilds the cells' candidates, the compiled cells re-trace them, and the
    search stays the eager one (float64); one cell shape: two graphs per stage."""
    import attrs
    from dslnas.methods.spec import Part
    m = spec("drnas-progressive", batch_size=8)
    m = attrs.evolve(m, transforms=(Part("progressive", {"K": [4, 2], "keep": [4, 2],
                                                         "epochs": [1, 1], "warmup": 0}),))

    def drive(s, batches):
        for epoch in (0, 1):
            s.epoch = epoch
            s.begin_epoch()
            for i in range(0, 8, 2):
                s.iteration(*batches[i], *batches[i + 1], do_arch=True, frozen=False)
        assert s.transforms[0].stage == 1
        assert all(bool((s.supernet.mask(gr).sum(1) == 2).all()) for gr in s.supernet.alphas)
    assert _eager_and_compiled(tmp_path, m, drive) == 4
