"""The six shipped spaces against the reference definitions (shared/reference/spaces.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dslnas.ir.count import cell_architectures, space_architectures
from dslnas.ir.export import space_json
from dslnas.ir.lower import compile_file
from dslnas.ir.model import CellBlock, HeadBlock, ResBlock, StemBlock

SPACES = Path(__file__).resolve().parents[1] / "spaces"
DARTS_FAMILY = ("darts", "s1", "s2", "s3", "s4")

# Reference §1.1: PRIMITIVES, in alpha column order.
PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
              "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
# Reference §1.3: edge k, src -> dst.
DARTS_EDGES = [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4),
               (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)]
# Reference §2.2: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
NB201_EDGES = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# Reference §3.2, typed in row by row: k, edge, normal cell candidates, reduction cell candidates.
S1_TABLE = [
    (0, (0, 2), ("skip_connect", "dil_conv_3x3"), ("max_pool_3x3", "avg_pool_3x3")),
    (1, (1, 2), ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "dil_conv_3x3")),
    (2, (0, 3), ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3")),
    (3, (1, 3), ("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "avg_pool_3x3")),
    (4, (2, 3), ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5")),
    (5, (0, 4), ("max_pool_3x3", "skip_connect"), ("max_pool_3x3", "avg_pool_3x3")),
    (6, (1, 4), ("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "sep_conv_3x3")),
    (7, (2, 4), ("skip_connect", "sep_conv_3x3"), ("skip_connect", "dil_conv_3x3")),
    (8, (3, 4), ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5")),
    (9, (0, 5), ("skip_connect", "sep_conv_3x3"), ("max_pool_3x3", "avg_pool_3x3")),
    (10, (1, 5), ("max_pool_3x3", "skip_connect"), ("max_pool_3x3", "avg_pool_3x3")),
    (11, (2, 5), ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5")),
    (12, (3, 5), ("dil_conv_3x3", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5")),
    (13, (4, 5), ("dil_conv_3x3", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5")),
]
# Reference §3.3.
S234_OPS = {"s2": ("skip_connect", "sep_conv_3x3"),
            "s3": ("none", "skip_connect", "sep_conv_3x3"),
            "s4": ("noise", "sep_conv_3x3")}

DARTS_BN = {"affine": False, "track_stats": True, "pool_bn": True}


_CACHE: dict = {}


def space(name: str, **overrides):
    key = (name, tuple(sorted(overrides.items())))
    if key not in _CACHE:
        _CACHE[key] = compile_file(SPACES / f"{name}.nas", overrides or None)
    return _CACHE[key]


def cells_of(ir):
    return [b for b in ir.blocks if isinstance(b, CellBlock)]


# ---- edge order and candidates ----------------------------------------------------------------

@pytest.mark.parametrize("name", DARTS_FAMILY)
@pytest.mark.parametrize("cell", ["normal", "reduce"])
def test_darts_family_edge_order(name, cell):
    c = space(name).cell(cell)
    assert [(e.src, e.dst) for e in c.edges] == DARTS_EDGES
    assert [e.row for e in c.edges] == list(range(14))
    assert (c.n_inputs, c.n_nodes, c.output, c.combine) == (2, 4, "concat", "sum")
    assert c.output_nodes == (2, 3, 4, 5) and c.multiplier == 4
    assert (c.derive.kind, c.derive.k) == ("top", 2)


@pytest.mark.parametrize("cell", ["normal", "reduce"])
def test_darts_candidate_order(cell):
    for e in space("darts").cell(cell).edges:
        assert e.candidates == PRIMITIVES


def test_nb201_edge_order_and_candidates():
    c = space("nb201").cell("cell")
    assert [(e.src, e.dst) for e in c.edges] == NB201_EDGES
    assert [f"{e.dst}<-{e.src}" for e in c.edges] == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    assert [e.row for e in c.edges] == list(range(6))
    assert all(e.candidates == NB201_OPS for e in c.edges)
    assert all(e.stride == 1 for e in c.edges)
    assert (c.n_inputs, c.n_nodes, c.output, c.output_nodes) == (1, 3, "last", (3,))
    assert (c.derive.kind, c.derive.k, c.reduction) == ("argmax", None, False)


@pytest.mark.parametrize("k, edge, normal, reduce", S1_TABLE, ids=[f"k{r[0]}" for r in S1_TABLE])
def test_s1_edge_against_reference(k, edge, normal, reduce):
    ir = space("s1")
    for cell, expected in (("normal", normal), ("reduce", reduce)):
        e = ir.cell(cell).edges[k]
        assert (e.src, e.dst) == edge and e.row == k
        assert e.candidates == expected, (cell, k)


def test_s1_has_no_none_and_no_strided_skip():
    ir = space("s1")
    for cell in ("normal", "reduce"):
        assert all("none" not in e.candidates for e in ir.cell(cell).edges)
    assert all("skip_connect" not in e.candidates
               for e in ir.cell("reduce").edges if e.stride == 2)


@pytest.mark.parametrize("name", ["s2", "s3", "s4"])
def test_s234_candidate_lists(name):
    ir = space(name)
    for cell in ("normal", "reduce"):
        assert [e.candidates for e in ir.cell(cell).edges] == [S234_OPS[name]] * 14


@pytest.mark.parametrize("name", DARTS_FAMILY)
def test_stride_two_exactly_on_input_edges_of_reduce_cells(name):
    ir = space(name)
    assert [e.stride for e in ir.cell("normal").edges] == [1] * 14
    assert [e.stride for e in ir.cell("reduce").edges] == [2 if s < 2 else 1 for s, _ in DARTS_EDGES]
    assert sum(e.stride == 2 for e in ir.cell("reduce").edges) == 8
    assert ir.cell("reduce").reduction and not ir.cell("normal").reduction


# ---- architecture counts ------------------------------------------------------------------------

def test_nb201_architectures():
    assert space_architectures(space("nb201")) == 15625 == 5 ** 6


def test_darts_cell_architectures():
    ir = space("darts")
    assert cell_architectures(ir.cell("normal")) == 1_037_664_180
    assert cell_architectures(ir.cell("reduce")) == 1_037_664_180
    assert space_architectures(ir) == 1_037_664_180 ** 2


@pytest.mark.parametrize("name", ["s1", "s2", "s3", "s4"])
def test_robust_darts_architectures(name):
    ir = space(name)
    assert cell_architectures(ir.cell("normal")) == 46080
    assert space_architectures(ir) == 46080 ** 2 == 2_123_366_400
    assert space_json(ir)["architectures"] == 2_123_366_400


# ---- macro networks -----------------------------------------------------------------------------

# Reference §1.5: (type, op width C, C_prev_prev, preprocess0, C_prev, output channels, H).
DARTS_TRACE = [
    ("normal", 16, 48, "relu_conv_bn", 48, 64, 32),
    ("normal", 16, 48, "relu_conv_bn", 64, 64, 32),
    ("reduce", 32, 64, "relu_conv_bn", 64, 128, 16),
    ("normal", 32, 64, "factorized_reduce", 128, 128, 16),
    ("normal", 32, 128, "relu_conv_bn", 128, 128, 16),
    ("reduce", 64, 128, "relu_conv_bn", 128, 256, 8),
    ("normal", 64, 128, "factorized_reduce", 256, 256, 8),
    ("normal", 64, 256, "relu_conv_bn", 256, 256, 8),
]


def test_darts_macro_trace():
    ir = space("darts")
    stem, *rest, head = ir.blocks
    assert isinstance(stem, StemBlock) and (stem.op, stem.C_in, stem.C_out, stem.scale) == ("conv3x3", 3, 48, 1)
    assert len(rest) == 8
    for i, (b, (kind, C, c0, pre0, c1, c_out, hw)) in enumerate(zip(rest, DARTS_TRACE)):
        assert isinstance(b, CellBlock) and b.index == i
        assert (b.cell, b.C, b.C_inputs, b.preprocess, b.C_out) == (kind, C, (c0, c1), (pre0, "relu_conv_bn"), c_out), i
        assert 32 // b.scale == hw
        assert b.stride == (2 if kind == "reduce" else 1)
    assert isinstance(head, HeadBlock)
    assert (head.layers, head.C_in, head.classes, head.scale) == (("gap", "linear"), 256, 10, 4)
    assert dict(ir.params) == {"classes": 10, "in_channels": 3, "C": 16, "L": 8}


def test_nb201_macro_trace():
    ir = space("nb201")
    blocks = ir.blocks
    assert len(blocks) == 1 + 15 + 2 + 1
    stem = blocks[0]
    assert isinstance(stem, StemBlock) and (stem.C_in, stem.C_out, stem.scale) == (3, 16, 1)
    expected = ([("cell", 16, 1)] * 5 + [("res", 16, 32, 2)] + [("cell", 32, 2)] * 5
                + [("res", 32, 64, 4)] + [("cell", 64, 4)] * 5)
    for b, exp in zip(blocks[1:-1], expected):
        if exp[0] == "cell":
            assert isinstance(b, CellBlock) and b.cell == "cell"
            assert (b.C, b.C_inputs, b.preprocess, b.C_out, b.stride, b.scale) == \
                (exp[1], (exp[1],), ("none",), exp[1], 1, exp[2])
        else:
            assert isinstance(b, ResBlock)
            assert (b.C_in, b.C_out, b.stride, b.scale) == (exp[1], exp[2], 2, exp[3])
    assert [b.index for b in cells_of(ir)] == list(range(15))
    head = blocks[-1]
    assert (head.layers, head.C_in, head.classes, head.scale) == (("bn", "relu", "gap", "linear"), 64, 10, 4)


def test_darts_overrides_put_reductions_at_6_and_13():
    ir = space("darts", C=36, L=20)
    cells = cells_of(ir)
    assert len(cells) == 20
    assert [b.index for b in cells if b.cell == "reduce"] == [6, 13]
    assert [b.index for b in cells if b.stride == 2] == [6, 13]
    assert [b.C for b in cells] == [36] * 6 + [72] * 7 + [144] * 7
    assert ir.blocks[0].C_out == 108 and ir.blocks[-1].C_in == 4 * 144
    assert [b.preprocess[0] for b in cells if b.index in (7, 14)] == ["factorized_reduce"] * 2
    assert dict(ir.params)["C"] == 36 and dict(ir.params)["L"] == 20


def test_set_classes_override_reaches_the_head():
    ir = space("darts", classes=100)
    assert ir.blocks[-1].classes == 100 and dict(ir.params)["classes"] == 100
    assert ir.blocks[1:-1] == space("darts").blocks[1:-1]


def test_set_override_propagates_to_dependent_parameters(tmp_path):
    p = tmp_path / "dep.nas"
    p.write_text("space dep\nops [skip_connect]\ncell a(inputs 2, nodes 1)\n"
                 "network(C = 16, W = 2C) {\n  stem conv3x3(C)\n  a(W)\n  head gap linear\n}\n")
    ir = compile_file(p, {"C": 36})
    assert dict(ir.params)["W"] == 72
    assert [b.C for b in cells_of(ir)] == [72]


@pytest.mark.parametrize("name", ["s1", "s2", "s3", "s4"])
def test_robust_darts_spaces_share_the_darts_macro(name):
    darts, ir = space("darts"), space(name)
    assert ir.blocks == darts.blocks
    assert ir.name == name


# ---- architecture parameters and BN policy -------------------------------------------------------

@pytest.mark.parametrize("name, shapes", [
    ("darts", {"normal": (14, 8), "reduce": (14, 8)}),
    ("nb201", {"cell": (6, 5)}),
    ("s1", {"normal": (14, 2), "reduce": (14, 2)}),
    ("s2", {"normal": (14, 2), "reduce": (14, 2)}),
    ("s3", {"normal": (14, 3), "reduce": (14, 3)}),
    ("s4", {"normal": (14, 2), "reduce": (14, 2)}),
])
def test_alpha_shapes(name, shapes):
    ir = space(name)
    assert {g.name: g.shape for g in ir.groups} == shapes
    assert space_json(ir)["alpha_shapes"] == {k: list(v) for k, v in shapes.items()}


def test_nb201_all_cells_share_one_alpha():
    ir = space("nb201")
    (g,) = ir.groups
    assert g.cells == ("cell",) and len({b.cell for b in cells_of(ir)}) == 1
    assert all(ir.cell(b.cell).group == "cell" for b in cells_of(ir))


def test_darts_normal_and_reduce_have_separate_alphas():
    ir = space("darts")
    assert [(g.name, g.cell, g.cells) for g in ir.groups] == \
        [("normal", "normal", ("normal",)), ("reduce", "reduce", ("reduce",))]


@pytest.mark.parametrize("name", DARTS_FAMILY)
def test_darts_family_bn_policy(name):
    assert space(name).bn_policy == DARTS_BN


def test_nb201_bn_policy():
    assert space("nb201").bn_policy == {"affine": False, "track_stats": True, "pool_bn": False}


def test_space_json_is_consistent():
    j = space_json(space("s3"))
    assert j["space"] == "s3" and j["bn"] == DARTS_BN
    assert [c["name"] for c in j["cells"]] == ["normal", "reduce"]
    assert j["cells"][1]["strides"] == [2 if s < 2 else 1 for s, _ in DARTS_EDGES]
    assert j["cells"][0]["edges"][5] == [0, 4, list(S234_OPS["s3"])]
    assert j["cells"][0]["derive"] == "top 2"
    assert len(j["network"]) == 10
