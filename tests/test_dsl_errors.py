"""Every user mistake is a DSLError pointing at file:line:col, with the source line and a caret."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dslnas.dsl.errors import DSLError
from dslnas.dsl.parser import parse, parse_file
from dslnas.ir.lower import compile_file

SPACES = Path(__file__).resolve().parents[1] / "spaces"

OPS = "ops [skip_connect, sep_conv_3x3]\n"
NET = "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n  head gap linear\n}\n"


def net(*blocks: str, params: str = "C = 4") -> str:
    body = "".join(f"  {b}\n" for b in blocks)
    return f"network({params}) {{\n  stem conv3x3(C)\n{body}  head gap linear\n}}\n"


def space(*items: str) -> str:
    return "space x\n" + "".join(items)


@pytest.fixture
def nas(tmp_path):
    """Write ``text`` to ``tmp_path/name`` and return the DSLError that compiling it raises."""
    def run(text: str | bytes, name: str = "bad.nas", overrides=None) -> DSLError:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        with pytest.raises(DSLError) as info:
            compile_file(path, overrides)
        return info.value
    return run


def check(err: DSLError, line: int, col: int, *parts: str, file: str | None = None) -> None:
    """The error points at line:col, says ``parts``, and renders prefix, source line and caret."""
    assert err.span is not None, err.message
    assert (err.span.line, err.span.col) == (line, col), err.render()
    for p in parts:
        assert p in err.message, (p, err.message)
    if file is not None:
        assert Path(err.span.file).name == file
    source_line = Path(err.span.file).read_bytes().decode("utf-8").split("\n")[line - 1].rstrip("\r")
    rendered = err.render().split("\n")
    assert rendered[0] == f"{err.span.file}:{line}:{col}: error: {err.message}"
    assert rendered[1] == "    " + source_line
    assert rendered[2].startswith("    " + " " * (col - 1) + "^")
    assert rendered[2].strip(" ~") == "^"
    assert str(err) == err.render()


# ---- syntax ------------------------------------------------------------------------------------

def test_syntax_error_says_what_was_expected(nas):
    err = nas("space x\ncell a(inputs 2 nodes 4)\n")
    check(err, 2, 17, "unexpected 'nodes'", "expected ',' or ')'")
    assert err.render().split("\n")[2] == "    " + " " * 16 + "^~~~~"


def test_syntax_error_missing_arrow(nas):
    err = nas("space x\ncell a(inputs 2, nodes 4) {\n  edges [0 2]\n}\n")
    check(err, 3, 12, "unexpected '2'", "expected '->'")


def test_syntax_error_two_statements_on_one_line(nas):
    err = nas("space x\ncell a(inputs 2, nodes 4) {\n  edges dense derive top 2\n}\n")
    check(err, 3, 15, "unexpected 'derive'", "end of statement")


def test_syntax_error_unexpected_character(nas):
    err = nas("space x\nops [none, @]\n")
    check(err, 2, 12, "unexpected character '@'")


def test_syntax_error_unexpected_end_of_file(nas):
    err = nas("space x\ncell a(inputs 2, nodes 4) {\n  edges dense\n")
    check(err, 3, 14, "unexpected end of file", "'}'")


def test_parse_from_string_reports_its_filename():
    with pytest.raises(DSLError) as info:
        parse("space x\nnetwork(C=) {}\n", "mem.nas")
    assert str(info.value.span) == "mem.nas:2:11"
    assert "expected" in info.value.message and "an integer" in info.value.message
    assert info.value.render().startswith("mem.nas:2:11: error: unexpected ')'")


# ---- unknown ops -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, col, bad, good", [
    (space(OPS, "cell a(inputs 1, nodes 1) {\n  ops [none, sep_conv_3x4]\n}\n", NET),
     4, 14, "sep_conv_3x4", "sep_conv_3x3"),
    (space(OPS, "cell a(inputs 1, nodes 1) {\n  edge 0 -> 1 [skip_conect]\n}\n", NET),
     4, 16, "skip_conect", "skip_connect"),
    (space("ops [none, dil_conv_3x3, nor_conv_33]\n", "cell a(inputs 1, nodes 1)\n", NET),
     2, 26, "nor_conv_33", "nor_conv_3x3"),
], ids=["cell-ops", "edge-override", "space-ops"])
def test_unknown_op_with_did_you_mean(nas, text, line, col, bad, good):
    err = nas(text)
    check(err, line, col, f"unknown op '{bad}'", f"did you mean '{good}'?")
    assert any("known ops:" in n and "sep_conv_3x3" in n for n in err.notes)


def test_unknown_op_without_close_match_has_no_suggestion(nas):
    err = nas(space("ops [transformer_block]\n", "cell a(inputs 1, nodes 1)\n", NET))
    check(err, 2, 6, "unknown op 'transformer_block'")
    assert "did you mean" not in err.message


# ---- unknown names -----------------------------------------------------------------------------

def test_unknown_variable_in_expression(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n  repeat M a(C)\n  head gap linear\n}\n"))
    check(err, 7, 10, "unknown name 'M'", "network(...)")


def test_unknown_variable_in_scaled_width(nas):
    err = nas(space(OPS, "cell a(inputs 2, nodes 1)\n", net("a(2K)")))
    check(err, 6, 5, "unknown name 'K'")


def test_unknown_variable_in_parameter_suggests_declared_one(nas):
    err = nas(space(OPS, "cell a(inputs 2, nodes 1)\n", net("a(C)", params="Cin = 4, C = Cni")))
    check(err, 4, 22, "unknown name 'Cni'", "did you mean 'Cin'?")


def test_unknown_cell_parameter(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodez 1)\n", NET))
    check(err, 3, 18, "unknown cell parameter 'nodez'", "did you mean 'nodes'?")


def test_unknown_bn_setting(nas):
    err = nas(space(OPS, "bn { affin false }\n", "cell a(inputs 1, nodes 1)\n", NET))
    check(err, 3, 6, "unknown bn setting 'affin'", "did you mean 'affine'?")


def test_bn_setting_needs_a_boolean(nas):
    err = nas(space(OPS, "bn {\n  affine false\n  pool_bn yes\n}\n", "cell a(inputs 1, nodes 1)\n", NET))
    check(err, 5, 11, "'pool_bn' takes true or false")


def test_unknown_head_layer(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n  head gap softmax linear\n}\n"))
    check(err, 7, 12, "unknown head layer 'softmax'", "known: bn, relu, gap, linear")


def test_unknown_block(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "resblok(2C, stride=2)")))
    check(err, 7, 3, "'resblok' is used but never defined", "did you mean 'resblock'?")


def test_unknown_stem(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv5x5(C)\n  a(C)\n  head gap linear\n}\n"))
    check(err, 5, 8, "unknown stem 'conv5x5'", "did you mean 'conv3x3'?")


@pytest.mark.parametrize("stmt, col, what, good", [
    ("output lst", 10, "unknown output 'lst'", "last"),
    ("combine summ", 11, "unknown combine 'summ'", "sum"),
    ("derive argmx", 10, "unknown derivation rule 'argmx'", "argmax"),
])
def test_unknown_cell_keyword(nas, stmt, col, what, good):
    err = nas(space(OPS, f"cell a(inputs 1, nodes 1) {{\n  {stmt}\n}}\n", NET))
    check(err, 4, col, what, f"did you mean '{good}'?")


def test_reserved_word_as_cell_name(nas):
    err = nas(space(OPS, "cell stem(inputs 1, nodes 1)\n", NET))
    check(err, 3, 6, "'stem' is a reserved word")


# ---- duplicates --------------------------------------------------------------------------------

def test_cell_defined_twice(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\ncell a(inputs 1, nodes 2)\n", NET))
    check(err, 4, 1, "duplicate cell 'a'")
    assert any(":3:1" in n for n in err.notes)


def test_op_listed_twice(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  ops [skip_connect, sep_conv_3x3, skip_connect]\n}\n", NET))
    check(err, 4, 36, "op 'skip_connect' is listed twice")


def test_op_listed_twice_in_edge_override(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  edge 0 -> 1 [none, none]\n}\n", NET))
    check(err, 4, 22, "op 'none' is listed twice", "edge 0 -> 1")


def test_duplicate_edge(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 2) {\n  edges [0 -> 1, 1 -> 2, 0 -> 1]\n}\n", NET))
    check(err, 4, 26, "duplicate edge 0 -> 1")


def test_duplicate_edge_override(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 2) {\n  edge 0 -> 1 [skip_connect]\n"
                    "  edge 0 -> 1 [sep_conv_3x3]\n}\n", NET))
    check(err, 5, 3, "duplicate candidates for edge 0 -> 1")


def test_duplicate_network_parameter(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", params="C = 4, L = 2, C = 8")))
    check(err, 4, 23, "duplicate network parameter 'C'")


def test_duplicate_statement_in_cell(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  output last\n  derive argmax\n  output concat\n}\n", NET))
    check(err, 6, 3, "duplicate `output` statement in cell 'a'")


def test_duplicate_edges_statement_dense_and_list(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  edges dense\n  edges [0 -> 1]\n}\n", NET))
    check(err, 5, 3, "duplicate `edges` statement")


def test_duplicate_cell_parameter(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1, inputs 2)\n", NET))
    check(err, 3, 27, "duplicate cell parameter 'inputs'")


def test_duplicate_bn_setting(nas):
    err = nas(space(OPS, "bn { affine false; affine true }\n", "cell a(inputs 1, nodes 1)\n", NET))
    check(err, 3, 20, "duplicate bn setting 'affine'")


def test_duplicate_top_level_ops(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", OPS, NET))
    check(err, 4, 1, "duplicate `ops` declaration")


def test_duplicate_space_declaration(nas):
    err = nas(space(OPS, "space y\n", "cell a(inputs 1, nodes 1)\n", NET))
    check(err, 3, 1, "duplicate `space` declaration")


# ---- edges and connectivity ----------------------------------------------------------------------

def _edges(edges: str, inputs: int = 1, nodes: int = 2, extra: str = "") -> str:
    return space(OPS, f"cell a(inputs {inputs}, nodes {nodes}) {{\n  edges [{edges}]\n{extra}}}\n",
                 net("a(C)"))


def test_edge_from_a_later_node(nas):
    err = nas(_edges("0 -> 1, 2 -> 1, 1 -> 2"))
    check(err, 4, 18, "edge 2 -> 1 comes from a later node")


def test_edge_to_itself(nas):
    err = nas(_edges("0 -> 1, 1 -> 1, 1 -> 2"))
    check(err, 4, 18, "edge 1 -> 1 goes from a node to itself")


def test_edge_into_an_input(nas):
    err = nas(_edges("0 -> 1, 0 -> 2, 1 -> 3, 2 -> 3", inputs=2))
    check(err, 4, 15, "ends at node 1, which is an input")


def test_edge_to_a_node_that_does_not_exist(nas):
    err = nas(_edges("0 -> 1, 1 -> 2, 2 -> 7"))
    check(err, 4, 31, "has no node 7", "0..2")


def test_node_no_input_reaches(nas):
    err = nas(_edges("0 -> 1, 2 -> 3, 1 -> 3", nodes=3))
    check(err, 4, 3, "node 2 of cell 'a' is not reached from any input")


def test_node_that_reaches_no_output(nas):
    err = nas(_edges("0 -> 1, 0 -> 2, 1 -> 3", nodes=3))
    check(err, 4, 3, "node 2 of cell 'a' does not reach the cell output")


def test_input_that_reaches_no_output(nas):
    err = nas(_edges("0 -> 2", inputs=2, nodes=1))
    check(err, 4, 3, "input 1 of cell 'a' does not reach the cell output")


def test_concat_output_makes_every_node_an_output(tmp_path):
    # The same edges that fail with `output last` are fine when every node is part of the output.
    p = tmp_path / "ok.nas"
    p.write_text(_edges("0 -> 1, 0 -> 2, 1 -> 3", nodes=3, extra="  output concat\n"))
    ir = compile_file(p)
    assert ir.cell("a").output_nodes == (1, 2, 3)


def test_edge_override_for_a_missing_edge(nas):
    err = nas(_edges("0 -> 1, 1 -> 2", extra="  edge 0 -> 2 [skip_connect]\n"))
    check(err, 5, 8, "has no edge 0 -> 2")


def test_edge_override_from_a_later_node(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 2) {\n  edge 2 -> 1 [skip_connect]\n}\n", NET))
    check(err, 4, 8, "comes from a later node")


# ---- arity -------------------------------------------------------------------------------------

def test_cell_call_with_two_arguments(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C, C)")))
    check(err, 6, 3, "'a' takes 1 positional argument", "got 2")


def test_resblock_without_arguments(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "resblock()")))
    check(err, 7, 3, "'resblock' takes 1 positional argument", "got 0")


def test_resblock_unknown_keyword(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "resblock(C, strides=2)")))
    check(err, 7, 15, "'resblock' has no argument 'strides'", "stride")


def test_derive_top_without_k(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  derive top\n}\n", NET))
    check(err, 4, 3, "`derive top` needs the number")


def test_derive_argmax_with_k(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  derive argmax 2\n}\n", NET))
    check(err, 4, 17, "`derive argmax` takes no number")


def test_flag_with_a_number(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1, reduction 2)\n", NET))
    check(err, 3, 37, "'reduction' is a flag and takes no number")


def test_count_parameter_without_a_number(nas):
    err = nas(space(OPS, "cell a(inputs, nodes 1)\n", NET))
    check(err, 3, 8, "'inputs' needs a number")


# ---- bad or missing numbers ----------------------------------------------------------------------

def test_inputs_zero(nas):
    err = nas(space(OPS, "cell a(inputs 0, nodes 1)\n", NET))
    check(err, 3, 15, "'inputs' must be at least 1, got 0")


def test_nodes_zero(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 0)\n", NET))
    check(err, 3, 24, "'nodes' must be at least 1, got 0")


def test_missing_nodes(nas):
    err = nas(space(OPS, "cell a(inputs 1)\n", NET))
    check(err, 3, 6, "cell 'a' is missing `nodes N`")


def test_negative_repeat_count(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "repeat 1 - 2 a(C)")))
    check(err, 7, 10, "repeat count must not be negative, got -1")


def test_a_huge_repeat_count_is_refused_before_it_fills_the_memory(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "repeat 100000000 a(C)")))
    check(err, 7, 10, "repeat 100000000: the network would have more than 10,000 blocks")


def test_a_huge_repeat_of_nothing_compiles_at_once(tmp_path):
    # An iteration that adds no block adds none the next time either: one is enough.
    path = tmp_path / "empty.nas"
    path.write_text(space(OPS, "cell a(inputs 1, nodes 1)\n",
                          net("a(C)", "repeat 1000000000 { }",
                              "repeat 1000000000 {\n    repeat 1000000000 { }\n    repeat 0 a(C)\n  }")))
    ir = compile_file(path)
    assert [type(b).__name__ for b in ir.blocks] == ["StemBlock", "CellBlock", "HeadBlock"]


def test_width_zero(nas):
    err = nas(space(OPS, "cell a(inputs 2, nodes 1)\n", net("a(C - 4)")))
    check(err, 6, 5, "the width of 'a' must be positive, got 0")


def test_resblock_width_zero(nas):
    err = nas(space(OPS, "cell a(inputs 2, nodes 1)\n", net("a(C)", "resblock(0)")))
    check(err, 7, 12, "the width of 'resblock' must be positive, got 0")


def test_stride_three(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "resblock(2C, stride=3)")))
    check(err, 7, 3, "stride must be 1 or 2, got 3")


def test_division_by_zero(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", "repeat 8 // (C - C) a(C)")))
    check(err, 7, 10, "division by zero")


def test_nonpositive_network_parameter(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(C)", params="C = 4, L = C - 5")))
    check(err, 4, 20, "network parameter 'L' must not be negative, got -1")


def test_derive_top_with_only_none_into_a_node(nas):
    err = nas(space("ops [none]\n", "cell a(inputs 1, nodes 1) {\n  derive top 1\n}\n", NET))
    check(err, 4, 3, "every edge into node 1 of cell 'a' has only `none`")


def test_shared_group_with_different_derive_rules(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  derive top 1\n}\n"
                         "cell b(inputs 1, nodes 1) {\n  share a\n}\n",
                    net("a(C)", "b(C)")))
    check(err, 7, 3, "share the architecture parameters 'a' but have different derivation rules")


def test_derive_top_zero(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  derive top 0\n}\n", NET))
    check(err, 4, 14, "keeps at least 1 input per node, got 0")


def test_odd_width_where_a_factorized_reduce_splits_it(nas):
    # After the reduction, the next cell's older input is at twice its resolution: a factorized
    # reduce, which needs an even width.
    err = nas(space(OPS, "cell a(inputs 2, nodes 1)\ncell r(inputs 2, nodes 1, reduction)\n",
                    net("a(2C)", "r(2C)", "a(C)", params="C = 3")))
    check(err, 9, 3, "cell 'a' needs an even width", "got 3")


def test_odd_width_in_reduction_with_strided_skip(nas):
    err = nas(space(OPS, "cell r(inputs 2, nodes 1, reduction)\n", net("r(C)", params="C = 3")))
    check(err, 6, 3, "cell 'r' needs an even width", "got 3")


def test_one_input_cell_width_must_match(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("a(2C)")))
    check(err, 6, 3, "its width must equal the channels it receives (4), got 8", "resblock")


def test_input_four_times_larger_cannot_be_reduced(nas):
    err = nas(space(OPS, "cell r(inputs 1, nodes 1, reduction)\ncell t(inputs 3, nodes 1)\n",
                    net("r(C)", "r(C)", "t(C)")))
    check(err, 9, 3, "4x larger than its newest input")


# ---- network structure ------------------------------------------------------------------------

def test_cell_used_but_never_defined(nas):
    err = nas(space(OPS, "cell normal(inputs 1, nodes 1)\n", net("normall(C)")))
    check(err, 6, 3, "cell 'normall' is used but never defined", "did you mean 'normal'?")


def test_network_without_a_cell(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("resblock(C)")))
    check(err, 4, 1, "uses no cell")


def test_network_without_a_head(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n}\n"))
    check(err, 4, 1, "must end with a `head")


def test_block_after_head(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv3x3(C)\n  head gap linear\n  a(C)\n}\n"))
    check(err, 7, 3, "nothing may follow the `head` block")


def test_stem_not_first(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n  stem conv3x3(C)\n  head gap linear\n}\n"))
    check(err, 7, 3, "`stem` must be the first block")


def test_head_without_gap(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n  head bn linear\n}\n"))
    check(err, 7, 3, "needs `gap` and ends with `linear`")


def test_head_layer_twice(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n",
                    "network(C = 4) {\n  stem conv3x3(C)\n  a(C)\n  head relu relu gap linear\n}\n"))
    check(err, 7, 3, "a head layer is listed twice")


def test_shared_cells_must_have_the_same_edges(nas):
    err = nas(space(OPS, "cell a(inputs 2, nodes 1) { share g }\ncell b(inputs 2, nodes 2) { share g }\n",
                    net("a(C)", "b(C)")))
    check(err, 4, 29, "share the architecture parameters 'g'", "different edges")


def test_space_missing_its_network(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n"))
    check(err, 1, 7, "space 'x' has no `network")


def test_file_missing_its_space_declaration(nas):
    err = nas(OPS + "cell a(inputs 1, nodes 1)\n" + NET)
    check(err, 1, 1, "missing `space NAME`")


def test_space_declaration_not_first(nas):
    err = nas(OPS + "space x\ncell a(inputs 1, nodes 1)\n" + NET)
    check(err, 2, 1, "must be the first statement")


def test_cell_needs_a_header_unless_it_overrides(nas):
    err = nas(space(OPS, "cell a {\n  edges dense\n}\n", NET))
    check(err, 3, 6, "cell 'a' is not defined in a parent space", "header")


# ---- empty candidate lists ----------------------------------------------------------------------

def test_empty_cell_ops(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1) {\n  ops []\n}\n", NET))
    check(err, 4, 3, "empty candidate list", "edge 0 -> 1 of cell 'a'")


def test_empty_edge_candidates(nas):
    err = nas(space(OPS, "cell a(inputs 2, nodes 1) {\n  edge 0 -> 2 []\n}\n", net("a(C)")))
    check(err, 4, 3, "empty candidate list", "edge 0 -> 2")


def test_empty_space_ops(nas):
    err = nas(space("ops []\n", "cell a(inputs 1, nodes 1)\n", NET))
    check(err, 2, 1, "empty candidate list")


def test_no_candidates_at_all(nas):
    err = nas(space("cell a(inputs 1, nodes 1) {\n  edges [0 -> 1]\n}\n", NET))
    check(err, 3, 10, "no candidate ops for edge 0 -> 1")


# ---- extends -----------------------------------------------------------------------------------

def test_extends_cycle_between_two_files(nas, tmp_path):
    (tmp_path / "cyc_b.nas").write_text("space cyc_b extends cyc_a\n")
    err = nas("space cyc_a extends cyc_b\n", "cyc_a.nas")
    check(err, 1, 21, "`extends` forms a cycle", "cyc_a.nas -> cyc_b.nas -> cyc_a.nas", file="cyc_b.nas")


def test_extends_itself(nas):
    err = nas("space me extends me\n", "me.nas")
    check(err, 1, 18, "`extends` forms a cycle", "me.nas -> me.nas", file="me.nas")


def test_extends_itself_by_path(nas):
    err = nas('space me extends "me.nas"\n', "me.nas")
    check(err, 1, 18, "`extends` forms a cycle")


def test_extends_a_binary_file_or_a_folder_points_at_the_extends(nas, tmp_path):
    (tmp_path / "bin.dat").write_bytes(bytes(range(128, 256)))
    err = nas('space a extends "bin.dat"\n')
    check(err, 1, 17, f"cannot extend {tmp_path / 'bin.dat'}: is not UTF-8 text")
    (tmp_path / "adir.nas").mkdir()
    err = nas('space a extends "adir.nas"\n')
    check(err, 1, 17, f"cannot extend 'adir.nas': {tmp_path / 'adir.nas'} is a folder")


def test_extends_a_missing_space(nas):
    err = nas("space x extends nowhere\n")
    check(err, 1, 17, "cannot find the space 'nowhere'")


def test_error_in_a_parent_points_into_the_parent(nas, tmp_path):
    (tmp_path / "parent.nas").write_text(space(OPS, "cell a(inputs 1, nodes 1) {\n  derive top 0\n}\n", NET))
    err = nas("space child extends parent\n", "child.nas")
    check(err, 4, 14, "got 0", file="parent.nas")


def test_child_override_error_points_into_the_parent_definition(nas, tmp_path):
    for f in ("darts.nas", "s1.nas"):
        shutil.copy(SPACES / f, tmp_path / f)
    # Shrinking s1's normal cell leaves s1's per-edge overrides pointing at a node that is gone.
    err = nas("space c extends s1\ncell normal(nodes 3)\n", "c.nas")
    check(err, 15, 13, "cell 'normal' has no node 5", file="s1.nas")


def test_child_edge_override_for_a_missing_edge(nas):
    err = nas("space c extends darts\ncell normal {\n  edge 0 -> 6 [skip_connect]\n}\n")
    check(err, 3, 13, "has no node 6")


# ---- files -------------------------------------------------------------------------------------

def test_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope.nas"
    with pytest.raises(DSLError) as info:
        compile_file(missing)
    assert str(missing) in info.value.message and "no such file" in info.value.message
    assert info.value.render() == f"error: {info.value.message}"


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(DSLError) as info:
        parse_file(tmp_path)
    assert "is a directory" in info.value.message


@pytest.mark.parametrize("data, what", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file"),
    (b"space x\n# caf\xe9\n", "is not UTF-8 text (bad byte at offset 13)"),
], ids=["binary", "latin1"])
def test_file_that_is_not_text(nas, tmp_path, data, what):
    err = nas(data, "bin.nas")
    assert what in err.message and str(tmp_path / "bin.nas") in err.message
    assert err.render().startswith("error: ")


def test_unknown_set_override():
    with pytest.raises(DSLError) as info:
        compile_file(SPACES / "darts.nas", {"X": 3})
    msg = info.value.message
    assert "--set X=3" in msg and "no parameter 'X'" in msg and "C, L" in msg
    assert info.value.render().startswith("error: --set X=3")
    with pytest.raises(DSLError) as info:
        compile_file(SPACES / "darts.nas", {"CC": 36})
    assert "did you mean 'C'?" in info.value.message


def test_nonpositive_set_override():
    with pytest.raises(DSLError) as info:
        compile_file(SPACES / "darts.nas", {"L": 0})
    # L=0 is a legal parameter value, but then a repeat count of the DARTS macro goes negative.
    assert "repeat count must not be negative, got -1" in info.value.message


# ---- rendering details ---------------------------------------------------------------------------

def test_caret_keeps_tabs(nas):
    err = nas(space(OPS, "cell a(inputs 1,\tnodez 1)\n", NET))
    assert (err.span.line, err.span.col) == (3, 18)
    lines = err.render().split("\n")
    assert lines[1] == "    cell a(inputs 1,\tnodez 1)"
    assert lines[2] == "    " + " " * 16 + "\t" + "^~~~~"


def test_crlf_line_endings(nas):
    err = nas(space(OPS, "cell a(inputs 1, nodes 1)\n", net("b(C)")).replace("\n", "\r\n"))
    check(err, 6, 3, "cell 'b' is used but never defined")


@pytest.mark.parametrize("junk", ["\f\n", "# a\x0b comment\n", "# a \u2028 comment\n",
                                  "# old mac\r comment\n"], ids=["formfeed", "vt", "u2028", "cr"])
def test_render_shows_the_right_line_after_unusual_line_breaks(nas, junk):
    err = nas("space x\n" + junk + OPS + "cell a(inputs 1, nodes 1)\n" + net("b(C)"))
    check(err, 7, 3, "cell 'b' is used but never defined")


def test_end_of_file_line_after_form_feed(nas):
    err = nas("space x\n\f\ncell a(inputs 1,")
    assert (err.span.line, err.span.col) == (3, 17)


def test_no_candidates_without_edges_statement_has_a_location(nas):
    err = nas(space("cell a(inputs 1, nodes 1)\n", NET))
    assert "no candidate ops for edge 0 -> 1" in err.message
    check(err, 2, 6, "no candidate ops")


def test_share_conflict_with_an_implicit_group_has_a_location(nas):
    err = nas(space(OPS, "cell b(inputs 1, nodes 2) { share a }\ncell a(inputs 1, nodes 1)\n",
                    net("b(C)", "resblock(C)", "a(C)")))
    assert "share the architecture parameters 'a'" in err.message
    assert err.span is not None and err.span.file.endswith("bad.nas")
    assert err.span.line in (3, 4)
