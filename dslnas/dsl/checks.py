"""Semantic checks of a resolved space, and the conversion of its cells to ``CellIR``.

Cells have no parameters, so everything about them is checked here, before any network is built:
known ops, valid edges, every node reachable from an input and reaching the output.
"""
from __future__ import annotations

import difflib

import networkx as nx

from .. import ops as op_library
from ..ir.model import CellIR, DeriveRule, Edge
from . import ast
from .errors import DSLError
from .resolve import CellDef, ResolvedSpace

BN_SETTINGS = {"affine": bool, "track_stats": bool, "pool_bn": bool}
BN_DEFAULTS = {"affine": False, "track_stats": True, "pool_bn": False}
CELL_PARAMS = {"inputs": int, "nodes": int, "reduction": None}
OUTPUTS = ("last", "concat")
COMBINES = ("sum", "mean")
DERIVES = ("argmax", "top")


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_bn(space: ResolvedSpace) -> dict[str, bool]:
    policy = dict(BN_DEFAULTS)
    for key, s in space.bn.items():
        if key not in BN_SETTINGS:
            raise DSLError(f"unknown bn setting '{key}'{did_you_mean(key, BN_SETTINGS)} "
                           f"(known: {', '.join(BN_SETTINGS)})", s.key.span)
        if not (isinstance(s.value, ast.Ident) and s.value.name in ("true", "false")):
            raise DSLError(f"bn setting '{key}' takes true or false", s.value.span)
        policy[key] = s.value.name == "true"
    return policy


def check_ops(ids: tuple[ast.Ident, ...], where: str, span) -> tuple[str, ...]:
    if not ids:
        raise DSLError(f"empty candidate list for {where}: give at least one op", span)
    seen = set()
    for i in ids:
        if not op_library.is_registered(i.name):
            known = op_library.available_ops()
            raise DSLError(f"unknown op '{i.name}'{did_you_mean(i.name, known)}", i.span,
                           notes=("known ops: " + ", ".join(known),))
        if i.name in seen:
            raise DSLError(f"op '{i.name}' is listed twice for {where}", i.span)
        seen.add(i.name)
    return tuple(i.name for i in ids)


def check_cell(space: ResolvedSpace, cell: CellDef) -> CellIR:
    name = cell.name.name
    for key, p in cell.params.items():
        if key not in CELL_PARAMS:
            raise DSLError(f"unknown cell parameter '{key}'{did_you_mean(key, CELL_PARAMS)} "
                           "(known: inputs N, nodes N, reduction)", p.key.span)
        if CELL_PARAMS[key] is int and p.value is None:
            raise DSLError(f"cell parameter '{key}' needs a number, e.g. `{key} 2`", p.span)
        if CELL_PARAMS[key] is None and p.value is not None:
            raise DSLError(f"cell parameter '{key}' is a flag and takes no number", p.value.span)
    n_inputs = _count(cell, "inputs", minimum=1)
    n_nodes = _count(cell, "nodes", minimum=1)
    total = n_inputs + n_nodes
    reduction = "reduction" in cell.params

    stmts = cell.stmts
    pairs, edge_spans = _edge_pairs(stmts.get("edges"), n_inputs, total, name)
    default_ops = stmts["ops"] if "ops" in stmts else space.ops
    for key, eo in cell.edge_ops.items():
        if key not in edge_spans:
            _check_edge(eo.edge, n_inputs, total, name)
            raise DSLError(f"cell '{name}' has no edge {key[0]} -> {key[1]} to give candidates to",
                           eo.edge.span)

    edges = []
    for row, (src, dst) in enumerate(pairs):
        where = f"edge {src} -> {dst} of cell '{name}'"
        if (src, dst) in cell.edge_ops:
            eo = cell.edge_ops[(src, dst)]
            cands = check_ops(eo.ops, where, eo.span)
        elif default_ops is not None:
            cands = check_ops(default_ops.ops, where, default_ops.span)
        else:
            raise DSLError(f"no candidate ops for {where}: declare `ops [...]` for the space or "
                           "the cell, or `edge SRC -> DST [...]`",
                           edge_spans[(src, dst)] or cell.name.span)
        stride = 2 if reduction and src < n_inputs else 1
        edges.append(Edge(src, dst, cands, stride, row))

    output = _keyword(stmts.get("output"), "kind", OUTPUTS, "last", "output")
    combine = _keyword(stmts.get("combine"), "kind", COMBINES, "sum", "combine")
    derive = _derive(stmts.get("derive"))
    group = stmts["share"].group.name if "share" in stmts else name
    ir = CellIR(name, n_inputs, n_nodes, tuple(edges), output, combine, derive, reduction, group)
    _check_connectivity(ir, cell, edge_spans)
    if derive.kind == "top":
        for node in ir.intermediate:
            if all(set(e.candidates) <= {"none"} for e in ir.in_edges(node)):
                raise DSLError(f"`derive top` excludes `none`, but every edge into node {node} of "
                               f"cell '{name}' has only `none`", stmts["derive"].span)
    return ir


def _count(cell: CellDef, key: str, minimum: int) -> int:
    p = cell.params.get(key)
    if p is None:
        raise DSLError(f"cell '{cell.name}' is missing `{key} N` in its header", cell.name.span)
    if p.value.value < minimum:
        raise DSLError(f"cell parameter '{key}' must be at least {minimum}, got {p.value.value}",
                       p.value.span)
    return p.value.value


def _check_edge(ref: ast.EdgeRef, n_inputs: int, total: int, cell: str) -> None:
    src, dst = ref.src.value, ref.dst.value
    if src == dst:
        raise DSLError(f"edge {src} -> {dst} goes from a node to itself", ref.span)
    for n, tok in ((src, ref.src), (dst, ref.dst)):
        if n >= total:
            raise DSLError(f"cell '{cell}' has no node {n} (nodes are 0..{total - 1}: inputs "
                           f"0..{n_inputs - 1}, then the intermediate nodes)", tok.span)
    if dst < n_inputs:
        raise DSLError(f"edge {src} -> {dst} ends at node {dst}, which is an input of the cell",
                       ref.dst.span)
    if src > dst:
        raise DSLError(f"edge {src} -> {dst} comes from a later node: edges must go from a "
                       "lower-numbered node to a higher one", ref.span)


def _edge_pairs(stmt, n_inputs: int, total: int, cell: str):
    """Edges in canonical order (destination-major, then source) and where each was written."""
    if stmt is None or isinstance(stmt, ast.EdgesDense):
        pairs = [(s, d) for d in range(n_inputs, total) for s in range(d)]
        span = None if stmt is None else stmt.span
        return pairs, {p: span for p in pairs}
    spans = {}
    for ref in stmt.edges:
        _check_edge(ref, n_inputs, total, cell)
        key = (ref.src.value, ref.dst.value)
        if key in spans:
            raise DSLError(f"duplicate edge {key[0]} -> {key[1]}", ref.span)
        spans[key] = ref.span
    return sorted(spans, key=lambda p: (p[1], p[0])), spans


def _keyword(stmt, attr, allowed, default, what):
    if stmt is None:
        return default
    ident = getattr(stmt, attr)
    if ident.name not in allowed:
        raise DSLError(f"unknown {what} '{ident.name}'{did_you_mean(ident.name, allowed)} "
                       f"(expected {' or '.join(allowed)})", ident.span)
    return ident.name


def _derive(stmt) -> DeriveRule:
    if stmt is None:
        return DeriveRule("argmax")
    rule = _keyword(stmt, "rule", DERIVES, "argmax", "derivation rule")
    if rule == "argmax":
        if stmt.k is not None:
            raise DSLError("`derive argmax` takes no number (did you mean `derive top K`?)",
                           stmt.k.span)
        return DeriveRule("argmax")
    if stmt.k is None:
        raise DSLError("`derive top` needs the number of inputs to keep per node, "
                       "e.g. `derive top 2`", stmt.span)
    if stmt.k.value < 1:
        raise DSLError(f"`derive top` keeps at least 1 input per node, got {stmt.k.value}",
                       stmt.k.span)
    return DeriveRule("top", stmt.k.value)


def _check_connectivity(ir: CellIR, cell: CellDef, edge_spans) -> None:
    g = nx.DiGraph()
    g.add_nodes_from(ir.nodes)
    g.add_edges_from((e.src, e.dst) for e in ir.edges)
    g.add_edges_from((n, "out") for n in ir.output_nodes)
    inputs = set(range(ir.n_inputs))
    reached = set().union(*(nx.descendants(g, i) for i in inputs)) | inputs
    reaching = nx.ancestors(g, "out") | {"out"}
    span = _cell_span(cell)
    for n in ir.intermediate:
        if n not in reached:
            raise DSLError(f"node {n} of cell '{ir.name}' is not reached from any input "
                           "(it has no path from a cell input)", span)
    for n in ir.nodes:
        if n not in reaching:
            what = "input" if n < ir.n_inputs else "node"
            raise DSLError(f"{what} {n} of cell '{ir.name}' does not reach the cell output "
                           f"(output {ir.output})", span)


def _cell_span(cell: CellDef):
    edges = cell.stmts.get("edges")
    return edges.span if edges is not None else cell.name.span
