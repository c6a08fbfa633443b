"""The supernet and child networks against the reference implementations' numbers."""
from pathlib import Path

import pytest
import torch

from dslnas.genotype import from_nb201_string, known_genotype
from dslnas.ir.lower import compile_file
from dslnas.supernet.cells import DropPath
from dslnas.supernet.network import build, build_child, count_parameters

SPACES = Path(__file__).resolve().parents[1] / "spaces"


def space(name, **overrides):
    return compile_file(SPACES / f"{name}.nas", overrides)


def block_shapes(net, x):
    """Output shape of every macro block, in order."""
    net.eval()
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for b in net.net.blocks]
    net(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("name, expected", [("darts", 1_930_618), ("nb201", 1_692_826)])
def test_supernet_weight_count_matches_reference(name, expected):
    net = build(space(name))
    assert count_parameters(net.weight_parameters()) == expected


def test_arch_parameters_are_apart_from_weights():
    net = build(space("darts"))
    weights = {id(p) for p in net.weight_parameters()}
    arch = net.arch_parameters()
    assert [tuple(a.shape) for a in arch] == [(14, 8), (14, 8)]
    assert not weights & {id(a) for a in arch}
    assert len(weights) + len(arch) == len(list(net.parameters()))
    # 1e-3 * N(0, 1): tiny and centred
    a = torch.cat([p.flatten() for p in arch])
    assert a.abs().max() < 1e-2 and a.std() > 1e-4


def test_darts_shape_trace_matches_reference_1_5():
    torch.manual_seed(0)
    shapes = block_shapes(build(space("darts")), torch.randn(1, 3, 32, 32))
    assert shapes == [(48, 32, 32), (64, 32, 32), (64, 32, 32), (128, 16, 16), (128, 16, 16),
                      (128, 16, 16), (256, 8, 8), (256, 8, 8), (256, 8, 8), (10,)]


def test_darts_preprocessing_matches_reference_1_5():
    net = build(space("darts"))
    cells = [b for k, b in zip(net.net.kinds, net.net.blocks) if k == "cell"]
    kinds = [[type(p).__name__ for p in c.preprocess] for c in cells]
    assert [k[0] for k in kinds] == ["ReLUConvBN", "ReLUConvBN", "ReLUConvBN",
                                     "FactorizedReduce", "ReLUConvBN", "ReLUConvBN",
                                     "FactorizedReduce", "ReLUConvBN"]
    assert all(k[1] == "ReLUConvBN" for k in kinds)


def test_nb201_shape_trace_matches_reference_2_3():
    shapes = block_shapes(build(space("nb201")), torch.randn(1, 3, 32, 32))
    expected = ([(16, 32, 32)] * 6 + [(32, 16, 16)] * 6 + [(64, 8, 8)] * 6 + [(10,)])
    assert shapes == expected


def test_search_bn_flags_follow_the_space_policy():
    darts = build(space("darts"))
    cell = darts.net.blocks[1]
    pools = [op for e in cell.edges for op, name in zip(e.ops, e.candidates) if "pool" in name]
    # DARTS appends a non-affine BN after every pooling op in the search supernet.
    assert pools and all(isinstance(p, torch.nn.Sequential) and
                         isinstance(p[1], torch.nn.BatchNorm2d) and not p[1].affine for p in pools)
    nb = build(space("nb201"))
    cell = nb.net.blocks[1]
    conv = cell.edges[0].ops[3]            # nor_conv_3x3
    bn = [m for m in conv.modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    assert not bn.affine and bn.track_running_stats
    assert [m for m in conv.modules() if isinstance(m, torch.nn.Conv2d)][0].bias is not None
    assert not isinstance(cell.edges[0].ops[4], torch.nn.Sequential)   # no BN after NB201 pool


def test_forward_uses_the_weights_given():
    torch.manual_seed(0)
    net = build(space("nb201", C=4, N=1)).eval()
    x = torch.randn(2, 3, 32, 32)
    only = {}
    for k, name in enumerate(net.ir.cell("cell").edges[0].candidates):
        w = torch.zeros(6, 5)
        w[:, k] = 1.0
        only[name] = net(x, {"cell": w})
    # all-`none` cells give a constant input to the head; all-skip differs from all-conv
    assert not torch.allclose(only["skip_connect"], only["nor_conv_3x3"])
    zero = torch.zeros(6, 5)
    assert torch.allclose(net(x, {"cell": zero}), only["none"], atol=1e-6)


@pytest.mark.parametrize("arch, expected", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
     1_531_546),
    ("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
     73_306),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     802_426),
])
def test_nb201_benchmark_network_parameter_counts(arch, expected):
    net = build_child(space("nb201"), from_nb201_string(arch))
    assert count_parameters(net.parameters()) == expected
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_darts_v2_evaluation_network_parameter_counts():
    ir = space("darts", C=36, L=20)
    g = known_genotype("DARTS_V2")
    assert count_parameters(build_child(ir, g).parameters()) == 3_349_342
    assert count_parameters(build_child(ir, g, auxiliary=True).parameters()) == 3_825_768


def test_auxiliary_head_runs_in_training_only():
    with_aux = build_child(space("darts", C=8), known_genotype("DARTS_V2"), auxiliary=True)
    with_aux.train()
    logits, aux = with_aux(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    with_aux.eval()
    assert with_aux(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_drop_path_spares_identity_and_drops_whole_samples():
    ir = space("darts", C=8, L=3)
    net = build_child(ir, known_genotype("DARTS_V2"))
    cell = net.net.blocks[1]
    kinds = {type(o).__name__: type(d).__name__ for o, d in zip(cell.ops, cell.drop)}
    assert kinds["Identity"] == "Identity" and kinds["SepConv"] == "DropPath"
    drop = DropPath()
    drop.set(0.5)
    drop.train()
    torch.manual_seed(0)
    y = drop(torch.ones(64, 2, 3, 3))
    per_sample = y.flatten(1)
    assert set(per_sample.min(1).values.tolist()) <= {0.0, 2.0}
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    drop.eval()
    assert torch.equal(drop(torch.ones(4, 2, 3, 3)), torch.ones(4, 2, 3, 3))


def test_skipping_none_is_exact():
    """`none` adds w*0: the supernet skips it; outputs and alpha gradients must not change."""
    torch.manual_seed(0)
    net = build(space("nb201", C=4, N=1))
    x = torch.randn(4, 3, 16, 16)
    y = net(x)
    y.square().sum().backward()
    grads = [a.grad.clone() for a in net.arch_parameters()]
    for cell in (b for k, b in zip(net.net.kinds, net.net.blocks) if k == "cell"):
        for e in cell.edges:
            assert 0 not in e.run                     # column 0 is `none`
            e.run = list(range(len(e.ops)))           # the unskipped reference
    net.zero_grad()
    y_ref = net(x)
    y_ref.square().sum().backward()
    assert torch.allclose(y, y_ref, atol=1e-6)
    for g, a in zip(grads, net.arch_parameters()):
        assert torch.allclose(g, a.grad, atol=1e-7)
        assert g[:, 0].abs().sum() > 0                # `none` still gets its softmax gradient


def test_a_three_input_cell_reads_the_states_the_plan_names(tmp_path):
    """Cells read their last n_inputs block outputs, oldest first, however many that is."""
    path = tmp_path / "three.nas"
    path.write_text(
        "space three\nops [none, skip_connect, sep_conv_3x3]\n"
        "cell c(inputs 3, nodes 1) { derive top 1 }\n"
        "cell r(inputs 3, nodes 1, reduction) { derive top 1 }\n"
        "network(C = 4) { stem conv3x3(C)\n r(C)\n c(C)\n c(C)\n head gap linear }\n")
    net = build(compile_file(path))
    outs, seen = {}, {}

    def cell_call(i, cell, ins):
        seen[i] = [id(t) for t in ins]
        return cell(ins, net.softmax_weights()[net.cell_groups[i]])

    net.net.run(torch.randn(2, 3, 8, 8), cell_call,
                after_block=lambda i, out: outs.update({i: out}))
    assert seen[1] == [id(outs[0])] * 3                       # stem in every slot
    assert seen[2] == [id(outs[0]), id(outs[0]), id(outs[1])]
    assert seen[3] == [id(outs[0]), id(outs[1]), id(outs[2])]  # stem, r, c: not r twice


@pytest.mark.parametrize("first, want", [
    ("", {0: [-1, -1], 1: [0, 0], 2: [0, 1]}),                # the input (-1) twice, then cells
    ("resblock(4)\n", {1: [0, 0], 2: [0, 1], 3: [1, 2]})])    # the resblock twice, then on
def test_a_network_without_a_stem_feeds_its_cells_what_the_plan_names(tmp_path, first, want):
    """The network input is a state only until the first block, as the IR plans it: after it,
    cells read block outputs (without a stem as with one)."""
    path = tmp_path / "nostem.nas"
    path.write_text(
        "space nostem\nops [none, skip_connect, sep_conv_3x3]\n"
        "cell c(inputs 2, nodes 1) { derive top 1 }\n"
        f"network(C = 4) {{ {first} c(C)\n c(C)\n c(C)\n head gap linear }}\n")
    ir = compile_file(path)
    net = build(ir)
    x = torch.randn(2, 3, 8, 8)
    outs, seen = {-1: x}, {}

    def cell_call(i, cell, ins):
        seen[i] = ins
        return cell(ins, net.softmax_weights()[net.cell_groups[i]])

    net.net.run(x, cell_call, after_block=lambda i, out: outs.update({i: out}))
    cells = [i for i, b in enumerate(ir.blocks) if b.kind == "cell"]
    for i in cells:                                       # the channels the plan built for
        assert [t.shape[1] for t in seen[i]] == list(ir.blocks[i].C_inputs), i
    assert sorted(want) == cells
    for i, sources in want.items():
        assert [id(t) for t in seen[i]] == [id(outs[j]) for j in sources], i
