"""Tests for dslnas.render: graphviz output, DOT output, and a missing `dot` program."""
from __future__ import annotations

import re
import shutil

import graphviz
import pytest

import dslnas.render as render
from dslnas.genotype import from_nb201_string, known_genotype
from dslnas.render import RenderError, genotype_dot, render_dot, render_genotype

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="graphviz `dot` program not installed "
                                                    "(apt-get install graphviz)")
NB201 = ("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|"
         "+|skip_connect~0|nor_conv_1x1~1|skip_connect~2|")


def _svg_texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


@needs_dot
@pytest.mark.parametrize("which", ["darts_v2", "nb201"])
def test_svg_names_every_op(tmp_path, which):
    g = known_genotype(which) if which == "darts_v2" else from_nb201_string(NB201)
    out = render_genotype(g, tmp_path / "cells" / "g.svg")
    assert out == tmp_path / "cells" / "g.svg"
    svg = out.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    texts = _svg_texts(svg)
    for cg in g.cells:
        assert cg.cell in texts                         # one labelled cluster per cell
        for op in cg.ops:
            assert op in texts
    # one label per chosen edge: each op appears as often as the genotype uses it
    ops = [op for cg in g.cells for op in cg.ops]
    for op in set(ops):
        assert texts.count(op) == ops.count(op)
    assert not (tmp_path / "cells" / "g.dot").exists()


@needs_dot
@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_binary_formats(tmp_path, suffix, magic):
    out = render_genotype(known_genotype("darts_v1"), tmp_path / f"g{suffix}")
    assert out.read_bytes().startswith(magic)


@needs_dot
def test_render_dot_reports_graphviz_errors(tmp_path):
    with pytest.raises(RenderError, match="dot` failed"):
        render_dot("digraph { a -> }", tmp_path / "bad.svg")


def test_dot_source_structure():
    g = known_genotype("darts_v2")
    src = genotype_dot(g)
    assert src.startswith('digraph "darts" {')
    assert src.count("subgraph") == 2
    assert 'normal_n0 [label="c_{k-2}"' in src and 'reduce_n1 [label="c_{k-1}"' in src
    assert src.count('-> normal_out') == 4               # concat of nodes 2..5
    edge_lines = [l for l in src.splitlines() if "label=" in l and "->" in l]
    assert len(edge_lines) == 16
    assert 'normal_n2 -> normal_n5 [label="dil_conv_3x3"];' in src
    nb = genotype_dot(from_nb201_string(NB201))
    assert 'cell_n0 [label="input"' in nb
    assert 'cell_n0 -> cell_n2 [label="none", style=dashed' in nb
    assert nb.count("-> cell_out") == 1                 # output = node 3 only
    assert 'cell_n3 -> cell_out' in nb


def test_dot_output_needs_no_program(tmp_path, monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)

    def no_pipe(*args, **kwargs):                       # the program must not be called
        raise AssertionError("graphviz called for .dot output")
    monkeypatch.setattr(graphviz.Source, "pipe", no_pipe)
    g = from_nb201_string(NB201)
    out = render_genotype(g, tmp_path / "sub" / "g.dot")
    assert out.read_text() == genotype_dot(g)
    assert render_dot("digraph { a -> b }", tmp_path / "x.gv").read_text() == "digraph { a -> b }"


def test_missing_program_writes_dot_and_explains(tmp_path, monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    g = known_genotype("darts_v2")
    with pytest.raises(RenderError) as info:
        render_genotype(g, tmp_path / "g.svg")
    msg = str(info.value)
    assert "`dot` program was not found" in msg
    assert "apt-get install graphviz" in msg and "brew install graphviz" in msg and "conda" in msg
    assert str(tmp_path / "g.dot") in msg
    assert info.value.dot_path == tmp_path / "g.dot"
    assert (tmp_path / "g.dot").read_text() == genotype_dot(g)
    assert not (tmp_path / "g.svg").exists()


def test_executable_not_found_from_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(render.shutil, "which", lambda name: "/usr/bin/dot")

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot", "-Tpng"])
    monkeypatch.setattr(graphviz.Source, "pipe", missing)
    with pytest.raises(RenderError, match="apt-get install graphviz") as info:
        render_genotype(from_nb201_string(NB201), tmp_path / "g.png")
    assert info.value.dot_path.read_text().startswith('digraph "nb201"')


def test_unknown_format(tmp_path):
    with pytest.raises(RenderError, match="unknown format '.jpg'"):
        render_genotype(known_genotype("darts_v2"), tmp_path / "g.jpg")
    assert list(tmp_path.iterdir()) == []
