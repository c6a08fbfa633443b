"""Property tests of the .nas front end and lowering: round trips, DAG invariants, canonical edge
order, architecture counts against brute force, and robustness against arbitrary input."""
from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from dslnas.dsl.errors import DSLError
from dslnas.dsl.parser import parse, parse_file
from dslnas.dsl.printer import pretty
from dslnas.ir.count import cell_architectures, space_architectures
from dslnas.ir.export import space_json
from dslnas.ir.lower import compile_file
from dslnas.ir.model import CellBlock

from strategies import brute_force_architectures, mutations, spaces

SPACES = Path(__file__).resolve().parents[1] / "spaces"
SHIPPED = sorted(p.name for p in SPACES.glob("*.nas"))


def fast(n: int):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory holding copies of the shipped spaces, so `extends darts` resolves beside a file."""
    d = tmp_path_factory.mktemp("nas")
    for name in SHIPPED:
        shutil.copy(SPACES / name, d / name)
    return d


def compile_text(workdir: Path, text: str | bytes, name: str = "gen.nas", overrides=None):
    path = workdir / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return compile_file(path, overrides)


def test_shipped_count():
    assert SHIPPED == ["darts.nas", "nb201.nas", "s1.nas", "s2.nas", "s3.nas", "s4.nas"]


# ---- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_round_trip(name):
    m = parse_file(SPACES / name)
    text = pretty(m)
    assert parse(text) == m
    assert pretty(parse(text)) == text


@fast(80)
@given(spaces())
def test_generated_spaces_round_trip(gen):
    text = pretty(gen.module)
    again = parse(text, "gen.nas")
    assert again == gen.module
    assert pretty(again) == text


def test_round_trip_detects_differences():
    # The equality the round trip relies on is not vacuous: spans are ignored, content is not.
    a = parse("space x\nops [none, skip_connect]\n")
    b = parse("space   x\n\n ops [none,\n skip_connect]  # c\n")
    c = parse("space x\nops [skip_connect, none]\n")
    assert a == b and a != c
    assert parse("network(C = 1) { repeat 2 - (1 - 1) a(C) }") != \
        parse("network(C = 1) { repeat 2 - 1 - 1 a(C) }")


@pytest.mark.parametrize("src", ["2 - (1 - 1)", "(2 - 1) - 1", "8 // (4 // 2)", "2 * (C + 1)",
                                 "(C + 1) * 2", "2C // 3", "2 * C - C // 2 + (C - 1) * 3"])
def test_expression_round_trip_keeps_value(src):
    m = parse(f"network(C = 5, X = {src}) {{}}")
    text = pretty(m)
    assert parse(text) == m
    from dslnas.ir.lower import evaluate
    env = {"C": 5}
    assert evaluate(parse(text).items[0].params[1].value, env) == eval(src.replace("2C", "2*C"), {}, env)


# ---- lowering of generated spaces ---------------------------------------------------------------

def _check_dag(cell):
    g = cell.graph()
    assert nx.is_directed_acyclic_graph(g)
    inputs = list(range(cell.n_inputs))
    for n in cell.intermediate:
        assert any(nx.has_path(g, i, n) for i in inputs), (cell.name, n)
        assert nx.has_path(g, n, "out"), (cell.name, n)
    # Every candidate edge of the IR is an edge of the graph, with its row.
    assert {(e.src, e.dst) for e in cell.edges} == {(u, v) for u, v in g.edges if v != "out"}
    for e in cell.edges:
        assert g.edges[e.src, e.dst]["row"] == e.row
    assert sorted(u for u, v in g.edges if v == "out") == list(cell.output_nodes)


@fast(80)
@given(gen=spaces())
def test_generated_spaces_lower_as_written(workdir, gen):
    ir = compile_text(workdir, pretty(gen.module))
    assert [c.name for c in ir.cells] == [g.name for g in gen.cells]
    for cell, g in zip(ir.cells, gen.cells):
        # Edge rows are 0..E-1 in canonical order (by destination, then source).
        assert [e.row for e in cell.edges] == list(range(len(cell.edges)))
        pairs = [(e.src, e.dst) for e in cell.edges]
        assert pairs == sorted(pairs, key=lambda p: (p[1], p[0]))
        assert tuple(pairs) == g.edges
        for e in cell.edges:
            assert e.candidates == g.candidates[(e.src, e.dst)]
            assert e.stride == (2 if g.reduction and e.src < g.n_inputs else 1)
        assert (cell.n_inputs, cell.n_nodes, cell.reduction) == (g.n_inputs, g.n_nodes, g.reduction)
        assert cell.output == g.output and cell.output_nodes == g.output_nodes
        assert (cell.derive.kind, cell.derive.k) == g.derive
        assert cell.combine == g.combine and cell.group == g.group
        assert cell.alpha_shape == (len(g.edges), max(len(c) for c in g.candidates.values()))
        _check_dag(cell)
    # The macro network: every cell call, in order, with its width; channels chain through.
    cells = [b for b in ir.blocks if isinstance(b, CellBlock)]
    assert [(b.cell, b.C) for b in cells] == list(gen.calls)
    assert [b.index for b in cells] == list(range(len(cells)))
    for b in cells:
        assert b.C_out == ir.cell(b.cell).multiplier * b.C
    assert dict(ir.params) == gen.params
    assert ir.blocks[-1].kind == "head" and ir.blocks[-1].classes == gen.params["classes"]


@fast(60)
@given(gen=spaces(max_cells=2, max_nodes=3, max_ops=3))
def test_architectures_equal_brute_force(workdir, gen):
    ir = compile_text(workdir, pretty(gen.module))
    used = {b.cell for b in ir.blocks if isinstance(b, CellBlock)}
    per_group = {}
    for cell in ir.cells:
        if cell.name in used:
            n = brute_force_architectures(cell)
            assert cell_architectures(cell) == n, cell
            per_group.setdefault(cell.group, n)
    assert {g.name for g in ir.groups} == set(per_group)
    expected = math.prod(per_group.values())
    assert space_architectures(ir) == expected
    assert space_json(ir)["architectures"] == expected


def test_brute_force_small_known_cases(workdir):
    # Anchors for the brute force itself: a DARTS-like cell with 2 ops + none, and NB201's cell.
    ir = compile_text(workdir, "space x\nops [none, skip_connect, sep_conv_3x3]\n"
                      "cell a(inputs 2, nodes 2) { derive top 2 }\n"
                      "cell b(inputs 1, nodes 2) { derive argmax }\n"
                      "network(C = 4) {\n stem conv3x3(C)\n a(C)\n resblock(C)\n b(C)\n head gap linear\n}\n")
    # node 2: both in-edges, 2*2 ops; node 3: C(3,2)=3 pairs, 2*2 ops each.
    assert brute_force_architectures(ir.cell("a")) == 4 * 12
    assert brute_force_architectures(ir.cell("b")) == 3 ** 3
    assert space_architectures(ir) == 48 * 27


# ---- robustness -------------------------------------------------------------------------------

def _compile_or_dsl_error(workdir: Path, data, name: str = "mut.nas"):
    try:
        compile_text(workdir, data, name)
        event("compiled")
    except DSLError as e:
        event("DSLError")
        assert isinstance(e.message, str) and e.message
        rendered = e.render()
        assert e.message in rendered
        if e.span is not None:
            assert rendered.startswith(f"{e.span.file}:{e.span.line}:{e.span.col}: error: ")
            assert e.span.line >= 1 and e.span.col >= 1


def _small_numbers(text: str) -> bool:
    # Keep mutated spaces small enough to compile quickly (`nodes 4` -> `nodes 4444` would not).
    code = re.sub(r"#[^\n]*", "", text)
    return all(len(n) <= 2 for n in re.findall(r"\d+", code))


@fast(150)
@given(text=st.text())
def test_arbitrary_text_compiles_or_raises_dsl_error(workdir, text):
    _compile_or_dsl_error(workdir, text)


@fast(60)
@given(data=st.binary())
def test_arbitrary_bytes_compile_or_raise_dsl_error(workdir, data):
    _compile_or_dsl_error(workdir, data)


@fast(200)
@given(data=st.data(), name=st.sampled_from(SHIPPED))
def test_mutated_shipped_spaces_compile_or_raise_dsl_error(workdir, data, name):
    text = data.draw(mutations((SPACES / name).read_text()))
    assume(_small_numbers(text))
    _compile_or_dsl_error(workdir, text)
    # Whatever parses also round-trips through the printer.
    try:
        m = parse(text, "mut.nas")
    except DSLError:
        return
    event("parsed")
    assert parse(pretty(m)) == m
    assert pretty(parse(pretty(m))) == pretty(m)


_SOUP = st.lists(st.sampled_from(
    ["space x", "space y extends darts", "ops [none, skip_connect]", "ops []", "bn { affine true }",
     "bn { bogus 1 }", "cell a(inputs 1, nodes 2)", "cell a(inputs 2, nodes 3, reduction)",
     "cell a { edges dense }", "cell normal { edge 0 -> 2 [skip_connect] }", "cell b(nodes 1)",
     "cell a(inputs 2, nodes 2) { edges [0 -> 2, 1 -> 3, 2 -> 3]; output concat; derive top 1 }",
     "cell a(inputs 1, nodes 1) { share g }", "cell c(inputs 1, nodes 1) { share g; ops [noise] }",
     "network(C = 4) { stem conv3x3(C); a(C); head gap linear }",
     "network(C = 4, N = 2) { stem conv3x3(C); repeat N { resblock(C, stride=2); a(C) }; head bn gap linear }",
     "network(C = 3) { stem conv3x3(C); normal(C); reduce(C); normal(C); head gap linear }",
     "network { a(C) }", "network(C = 0) { stem conv3x3(C); a(C); head gap linear }"]),
    min_size=1, max_size=6)


@fast(150)
@given(lines=_SOUP)
def test_statement_soup_compiles_or_raises_dsl_error(workdir, lines):
    _compile_or_dsl_error(workdir, "\n".join(lines) + "\n")


def test_mutation_robustness_is_not_vacuous(workdir):
    # The helper really compiles: a valid space passes, an invalid one raises DSLError.
    ir = compile_text(workdir, (SPACES / "s1.nas").read_text(), "copy_s1.nas")
    assert space_architectures(ir) == 46080 ** 2
    with pytest.raises(DSLError):
        compile_text(workdir, "space x extends nowhere_at_all\n")


def test_long_expression_raises_dsl_error_not_recursion_error(workdir):
    text = ("space x\nops [skip_connect]\ncell a(inputs 1, nodes 1)\n"
            "network(C = " + "1 + " * 600 + "1) {\n stem conv3x3(C)\n a(C)\n head gap linear\n}\n")
    try:
        compile_text(workdir, text, "deep.nas")
    except DSLError:
        pass


def test_huge_integer_literal_raises_dsl_error(workdir):
    text = "space x\nops [none]\ncell a(inputs 1, nodes " + "9" * 5000 + ")\n"
    with pytest.raises(DSLError):
        compile_text(workdir, text, "huge.nas")


# ---- keywords are keywords only where the grammar expects them ------------------------------------

_KEYWORDS = ["space", "extends", "ops", "bn", "cell", "edges", "dense", "edge", "output", "combine",
             "derive", "share", "network", "top", "argmax", "last", "concat", "inputs", "nodes",
             "reduction", "gap", "linear", "stride", "true"]


@pytest.mark.parametrize("kw", _KEYWORDS)
def test_keywords_as_names_round_trip_and_compile(workdir, kw):
    text = (f"space {kw}\nops [skip_connect]\ncell {kw}(inputs 1, nodes 1) {{ share {kw}; output last }}\n"
            f"network({kw} = 4) {{\n  stem conv3x3({kw})\n  {kw}({kw})\n  repeat {kw} // 2 {kw}(2 * {kw} - {kw})\n"
            "  head gap linear\n}\n")
    m = parse(text)
    assert parse(pretty(m)) == m
    ir = compile_text(workdir, text, "kw.nas")
    assert ir.name == kw and [g.name for g in ir.groups] == [kw]
    assert [b.C for b in ir.blocks if isinstance(b, CellBlock)] == [4, 4, 4]


def test_registered_op_named_like_a_keyword(workdir):
    import dslnas.ops as ops
    from torch import nn

    ops.register_op("output")(lambda C_in, C_out, stride, affine, track: nn.Identity())
    try:
        ir = compile_text(workdir, "space k\nops [output, skip_connect]\ncell c(inputs 1, nodes 1) {\n"
                          "  edge 0 -> 1 [skip_connect, output,]\n}\n"
                          "network(C = 4) { stem conv3x3(C); c(C); head gap linear }\n", "kwop.nas")
        assert ir.cell("c").edges[0].candidates == ("skip_connect", "output")
    finally:
        ops.unregister_op("output")


def test_trailing_commas_in_lists():
    a = parse("space x\nops [none, skip_connect,]\ncell c(inputs 1, nodes 2) {\n"
              "  edges [0 -> 1, 1 -> 2,]\n  edge 0 -> 1 [none,]\n}\n")
    b = parse("space x\nops [none, skip_connect]\ncell c(inputs 1, nodes 2) {\n"
              "  edges [0 -> 1, 1 -> 2]\n  edge 0 -> 1 [none]\n}\n")
    assert a == b
