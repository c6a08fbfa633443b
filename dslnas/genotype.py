"""Discrete architectures: the genotype type, derivation from α, formats, validation.

A ``Genotype`` holds one ``CellGenotype`` per architecture-parameter group, named after the group's
defining cell. A cell genotype lists its chosen edges as ``(op, src, dst)`` triples in derivation
order, plus the nodes its output concatenates.

Derivation (``derive``) follows the rule of the group's defining cell:

* ``argmax`` (NB201): per edge, argmax over the raw α row (only the edge's real candidates;
  ``none`` allowed); ties go to the lowest column. Edges stay in canonical order.
* ``top k`` (DARTS, S1–S4): softmax per edge over its real candidates; an edge's score is its
  largest weight among the non-``none`` candidates (all candidates if the edge has no ``none``);
  each node keeps its k best in-edges (stable sort: on a tie the lower source wins) and appends
  them in decreasing score order; an edge's op is the argmax over the same candidates, ties going
  to the first in the edge's own list.

Formats, each with a parser that returns an equal genotype: JSON (``to_json``/``from_json``, or
``to_dict``/``from_dict``), the NB201 architecture string (``to_nb201_string``/
``from_nb201_string``) and the DARTS ``Genotype(normal=[...], ...)`` text (``to_darts_text``/
``from_darts_text``). ``parse_genotype`` detects the format.
"""
from __future__ import annotations

import ast
import functools
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import attrs

from .ir.model import CellIR, SpaceIR

__all__ = [
    "CellGenotype", "Genotype", "GenotypeError", "derive", "derive_cell", "validate",
    "to_dict", "from_dict", "to_json", "from_json",
    "to_nb201_string", "from_nb201_string", "canonical_nb201", "is_canonical_nb201",
    "to_darts_text", "from_darts_text", "parse_genotype",
    "DARTS_V1", "DARTS_V2", "KNOWN_GENOTYPES", "known_genotype",
]

NONE_OP = "none"


class GenotypeError(ValueError):
    """A genotype that cannot be derived, parsed, written in a format, or does not fit a space."""


# ---- types -----------------------------------------------------------------------

def _edges_converter(edges: Iterable) -> tuple[tuple[str, int, int], ...]:
    out = []
    for e in edges:
        op, src, dst = e
        out.append((str(op), int(src), int(dst)))
    return tuple(out)


def _ints(xs: Iterable) -> tuple[int, ...]:
    return tuple(int(x) for x in xs)


@attrs.frozen
class CellGenotype:
    cell: str
    edges: tuple[tuple[str, int, int], ...] = attrs.field(converter=_edges_converter)
    concat: tuple[int, ...] = attrs.field(converter=_ints)

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(op for op, _, _ in self.edges)

    @property
    def nodes(self) -> tuple[int, ...]:
        """The computed nodes (every edge destination), ascending."""
        return tuple(sorted({dst for _, _, dst in self.edges}))

    def inputs(self, node: int) -> tuple[tuple[str, int], ...]:
        """``(op, src)`` of the chosen edges into ``node``, in derivation order."""
        return tuple((op, src) for op, src, dst in self.edges if dst == node)


@attrs.frozen
class Genotype:
    space: str
    cells: tuple[CellGenotype, ...] = attrs.field(converter=tuple)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.cell for c in self.cells)

    def cell(self, name: str) -> CellGenotype:
        for c in self.cells:
            if c.cell == name:
                return c
        raise KeyError(f"genotype has no cell {name!r} (it has {', '.join(self.names) or 'none'})")

    __getitem__ = cell

    def __contains__(self, name: object) -> bool:
        return any(c.cell == name for c in self.cells)

    def for_cell(self, ir: SpaceIR, name: str) -> CellGenotype:
        """The genotype of cell type ``name`` of ``ir``, found through its α group."""
        if name in self:
            return self.cell(name)
        try:
            group = ir.cell(name).group
        except KeyError:
            raise KeyError(f"space {ir.name!r} has no cell {name!r}") from None
        for g in ir.groups:
            if g.name == group:
                return self.cell(g.cell)
        raise KeyError(f"cell {name!r} has no α group in space {ir.name!r}")


# ---- derivation -------------------------------------------------------------------

def _argmax(values: list[float], allowed: list[int]) -> int:
    """Index in ``allowed`` order with the largest value; strict ``>``, so ties keep the first."""
    best = allowed[0]
    for i in allowed[1:]:
        if values[i] > values[best]:
            best = i
    return best


def _row(alpha, edge, normalise: str) -> list[float]:
    import torch
    row = alpha[edge.row, : len(edge.candidates)]
    if normalise == "softmax":
        row = torch.softmax(row, dim=-1)
    values = row.tolist()
    if any(math.isnan(v) for v in values):
        raise GenotypeError(f"α row {edge.row} (edge {edge.src}->{edge.dst}) contains NaN"
                            + (" after softmax" if normalise == "softmax" else ""))
    return values


def derive_cell(cell: CellIR, alpha, normalise: str = "softmax") -> CellGenotype:
    """Apply ``cell.derive`` to one α tensor of shape ``cell.alpha_shape``."""
    if normalise not in ("softmax", "none"):
        raise GenotypeError(f"normalise must be 'softmax' or 'none', got {normalise!r}")
    import torch
    alpha = torch.as_tensor(alpha).detach().cpu()
    if not alpha.is_floating_point():
        alpha = alpha.float()
    n_rows = max(e.row for e in cell.edges) + 1
    if alpha.dim() != 2 or alpha.shape[0] < n_rows or alpha.shape[1] < cell.max_candidates:
        raise GenotypeError(f"cell {cell.name!r}: α has shape {tuple(alpha.shape)}, "
                            f"expected {cell.alpha_shape}")
    rule = cell.derive
    edges: list[tuple[str, int, int]] = []
    if rule.kind == "argmax":
        for e in cell.edges:
            values = _row(alpha, e, "none")
            k = _argmax(values, list(range(len(e.candidates))))
            edges.append((e.candidates[k], e.src, e.dst))
    elif rule.kind == "top":
        k = rule.k if rule.k is not None else 2
        for node in cell.intermediate:
            scored = []
            for e in cell.in_edges(node):           # source order
                allowed = [i for i, c in enumerate(e.candidates) if c != NONE_OP] \
                    or list(range(len(e.candidates)))
                if all(e.candidates[i] == NONE_OP for i in allowed):
                    continue                        # an edge that can only be `none`
                values = _row(alpha, e, normalise)
                best = _argmax(values, allowed)
                scored.append((values[best], e, best))
            # sorted() is stable: equal scores keep source order, so the lower source wins
            ranked = sorted(scored, key=lambda t: -t[0])[:k]
            edges += [(e.candidates[best], e.src, e.dst) for _, e, best in ranked]
    else:
        raise GenotypeError(f"cell {cell.name!r}: unknown derivation rule {rule.kind!r}")
    return CellGenotype(cell.name, edges, cell.output_nodes)


def derive(ir: SpaceIR, alphas: Mapping[str, Any], normalise: str = "softmax") -> Genotype:
    """One cell genotype per α group, by the rule of the group's defining cell.

    ``alphas`` maps group name -> tensor of shape ``group.shape``; columns past an edge's own
    candidate count are padding and ignored. ``normalise`` ("softmax" | "none") applies to the
    ``top`` rule's edge scores; ``argmax`` always uses the raw row.
    """
    unknown = sorted(set(alphas) - {g.name for g in ir.groups})
    if unknown:
        raise GenotypeError(f"space {ir.name!r} has no α group {', '.join(map(repr, unknown))} "
                            f"(groups: {', '.join(g.name for g in ir.groups)})")
    cells = []
    for g in ir.groups:
        if g.name not in alphas:
            raise GenotypeError(f"no α given for group {g.name!r} of space {ir.name!r}")
        alpha = alphas[g.name]
        shape = tuple(getattr(alpha, "shape", ()))
        if shape and shape != tuple(g.shape):
            raise GenotypeError(f"α of group {g.name!r} has shape {shape}, expected {tuple(g.shape)}")
        cells.append(derive_cell(ir.cell(g.cell), alpha, normalise))
    return Genotype(ir.name, cells)


# ---- validation -------------------------------------------------------------------

def _expected_inputs(cell: CellIR, node: int) -> int:
    ins = cell.in_edges(node)
    if cell.derive.kind == "argmax":
        return len(ins)
    eligible = [e for e in ins if any(c != NONE_OP for c in e.candidates)]
    return min(cell.derive.k if cell.derive.k is not None else 2, len(eligible))


def validate(genotype: Genotype, ir: SpaceIR) -> Genotype:
    """Check that ``genotype`` is an architecture of ``ir``; return it, or raise GenotypeError."""
    where = f"space {ir.name!r}"
    seen: set[str] = set()
    groups_done: set[str] = set()
    for cg in genotype.cells:
        try:
            cell = ir.cell(cg.cell)
        except KeyError:
            raise GenotypeError(f"genotype cell {cg.cell!r} is not a cell of {where} "
                                f"(cells: {', '.join(c.name for c in ir.cells)})") from None
        if cg.cell in seen:
            raise GenotypeError(f"genotype lists cell {cg.cell!r} twice")
        seen.add(cg.cell)
        if cell.group in groups_done:
            raise GenotypeError(f"genotype gives α group {cell.group!r} two cells")
        groups_done.add(cell.group)
        by_pair = {(e.src, e.dst): e for e in cell.edges}
        used: set[tuple[int, int]] = set()
        count = {n: 0 for n in cell.intermediate}
        for op, src, dst in cg.edges:
            e = by_pair.get((src, dst))
            if e is None:
                raise GenotypeError(f"cell {cg.cell!r}: edge {src}->{dst} is not an edge of the "
                                    f"cell (nodes {cell.n_inputs}..{cell.n_inputs + cell.n_nodes - 1} "
                                    f"are computed from earlier nodes)")
            if (src, dst) in used:
                raise GenotypeError(f"cell {cg.cell!r}: edge {src}->{dst} appears twice")
            used.add((src, dst))
            if op not in e.candidates:
                raise GenotypeError(f"cell {cg.cell!r}: op {op!r} is not a candidate of edge "
                                    f"{src}->{dst} (candidates: {', '.join(e.candidates)})")
            if op == NONE_OP and cell.derive.kind == "top":
                raise GenotypeError(f"cell {cg.cell!r}: edge {src}->{dst} is `none`, which the "
                                    f"top-{cell.derive.k} rule never selects")
            count[dst] += 1
        for node in cell.intermediate:
            want = _expected_inputs(cell, node)
            if count[node] != want:
                raise GenotypeError(f"cell {cg.cell!r}: node {node} has {count[node]} input(s), "
                                    f"expected {want} (rule: derive {cell.derive})")
        if tuple(cg.concat) != cell.output_nodes:
            raise GenotypeError(f"cell {cg.cell!r}: output concat {list(cg.concat)} does not match "
                                f"the cell's output nodes {list(cell.output_nodes)}")
    for g in ir.groups:
        if g.name not in groups_done:
            raise GenotypeError(f"genotype has no cell for α group {g.name!r} of {where} "
                                f"(expected a cell named {g.cell!r})")
    return genotype


# ---- JSON -------------------------------------------------------------------------

def to_dict(genotype: Genotype) -> dict:
    return {"space": genotype.space,
            "cells": [{"cell": c.cell, "edges": [[op, s, d] for op, s, d in c.edges],
                       "concat": list(c.concat)} for c in genotype.cells]}


def _wired(cg: CellGenotype, where: str) -> CellGenotype:
    """``cg`` if every edge comes from an earlier node and every output node exists."""
    for op, src, dst in cg.edges:
        if not 0 <= src < dst:
            raise GenotypeError(f"{where}: cell {cg.cell!r}: {op} into node {dst} from node {src}: "
                                f"an input must be an earlier node (0..{dst - 1})")
    last = max((dst for _, _, dst in cg.edges), default=-1)
    missing = [n for n in cg.concat if not 0 <= n <= last]
    if missing:
        raise GenotypeError(f"{where}: cell {cg.cell!r}: output node(s) {missing} do not exist "
                            f"(nodes 0..{last})")
    return cg


_SEQ = (list, tuple)   # JSON gives lists; a dict built in Python may hold tuples


def from_dict(data: Mapping) -> Genotype:
    try:
        if not isinstance(data, Mapping):
            raise TypeError("expected a JSON object")
        cells = []
        if not isinstance(data["cells"], _SEQ):
            raise TypeError(f"cells {data['cells']!r} is not a list")
        for c in data["cells"]:
            if not isinstance(c, Mapping):
                raise TypeError(f"cell {c!r} is not an object with cell, edges and concat")
            if not isinstance(c["edges"], _SEQ):
                raise TypeError(f"edges {c['edges']!r} is not a list")
            edges = []
            for e in c["edges"]:
                if not isinstance(e, _SEQ) or len(e) != 3 or not isinstance(e[0], str) or \
                        not all(_is_int(x) for x in e[1:]):
                    raise TypeError(f"edge {e!r} is not [op, src, dst]")
                edges.append((e[0], e[1], e[2]))
            if not isinstance(c["concat"], _SEQ) or not all(_is_int(x) for x in c["concat"]):
                raise TypeError(f"concat {c['concat']!r} is not a list of node numbers")
            if not isinstance(c["cell"], str):
                raise TypeError(f"cell name {c['cell']!r} is not a string")
            cells.append(_wired(CellGenotype(c["cell"], edges, c["concat"]), "genotype JSON"))
        space = data["space"]
        if not isinstance(space, str):
            raise TypeError(f"space {space!r} is not a string")
        return Genotype(space, cells)
    except KeyError as e:
        raise GenotypeError(f"genotype JSON: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise GenotypeError(f"genotype JSON: {e}") from None


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def to_json(genotype: Genotype, indent: int | None = None) -> str:
    return json.dumps(to_dict(genotype), indent=indent)


def from_json(text: str | Mapping) -> Genotype:
    if isinstance(text, Mapping):
        return from_dict(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenotypeError(f"genotype JSON: {e}") from None
    return from_dict(data)


# ---- NB201 architecture string ---------------------------------------------------------

def to_nb201_string(genotype: Genotype | CellGenotype) -> str:
    """``|op~0|+|op~0|op~1|+...``: the canonical string (sources ascending within each node)."""
    cg = _single_cell(genotype)
    by_pair = {(s, d): op for op, s, d in cg.edges}
    n = max((d for _, _, d in cg.edges), default=0)
    want = {(j, i) for i in range(1, n + 1) for j in range(i)}
    if n < 1 or set(by_pair) != want or len(cg.edges) != len(want) or tuple(cg.concat) != (n,):
        raise GenotypeError(f"cell {cg.cell!r} is not an NB201-style cell (one input, an edge "
                            f"j->i for every j < i, output = last node)")
    for op in by_pair.values():
        if not op or any(ch in op for ch in "|~+") or op != op.strip():
            raise GenotypeError(f"op name {op!r} cannot be written in an NB201 string")
    groups = ["|" + "|".join(f"{by_pair[(j, i)]}~{j}" for j in range(i)) + "|"
              for i in range(1, n + 1)]
    return "+".join(groups)


def _single_cell(genotype: Genotype | CellGenotype) -> CellGenotype:
    if isinstance(genotype, CellGenotype):
        return genotype
    if len(genotype.cells) != 1:
        raise GenotypeError(f"an NB201 string holds one cell; genotype has {len(genotype.cells)}")
    return genotype.cells[0]


def from_nb201_string(text: str, space: str = "nb201", cell: str = "cell") -> Genotype:
    s = "".join(text.split())
    if not s:
        raise GenotypeError("empty NB201 architecture string")
    edges = []
    groups = s.split("+")
    for i, group in enumerate(groups, start=1):
        if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
            raise GenotypeError(f"NB201 string {text!r}: node {i} group {group!r} must look "
                                f"like |op~0|op~1|")
        srcs = {}
        for item in group[1:-1].split("|"):
            op, sep, src = item.rpartition("~")
            if not sep or not op or not src.isdigit():
                raise GenotypeError(f"NB201 string {text!r}: {item!r} is not op~source")
            j = int(src)
            if j >= i or j in srcs:
                raise GenotypeError(f"NB201 string {text!r}: node {i} has a bad or repeated "
                                    f"source {j} (expected each of 0..{i - 1} once)")
            srcs[j] = op
        if len(srcs) != i:
            raise GenotypeError(f"NB201 string {text!r}: node {i} lists sources {sorted(srcs)}, "
                                f"expected 0..{i - 1}")
        edges += [(srcs[j], j, i) for j in range(i)]
    return Genotype(space, [CellGenotype(cell, edges, (len(groups),))])


@functools.lru_cache(maxsize=32)
def _nb201_pattern(n: int) -> re.Pattern:
    op = r"[^|~+\s]+"
    groups = ["\\|" + "\\|".join(f"{op}~{j}" for j in range(i)) + "\\|" for i in range(1, n + 1)]
    return re.compile("\\+".join(groups))


def is_canonical_nb201(text: str) -> bool:
    """Whether ``text`` is already a canonical NB201 string (one regex match, no objects)."""
    n = text.count("+") + 1
    return bool(text) and n <= 32 and _nb201_pattern(n).fullmatch(text) is not None


def canonical_nb201(text: str) -> str:
    """The canonical form of an NB201 string (whitespace removed, sources ascending)."""
    if is_canonical_nb201(text):
        return text
    return to_nb201_string(from_nb201_string(text))


# ---- DARTS Genotype(...) text ---------------------------------------------------------

def to_darts_text(genotype: Genotype) -> str:
    """``Genotype(normal=[('op', src), ...], normal_concat=[...], ...)``, field names = cells."""
    parts = []
    for cg in genotype.cells:
        if not cg.cell.isidentifier() or cg.cell.endswith("_concat"):
            raise GenotypeError(f"cell name {cg.cell!r} cannot be a DARTS genotype field")
        _darts_k(cg)
        pairs = ", ".join(f"({op!r}, {src})" for op, src, _ in cg.edges)
        parts.append(f"{cg.cell}=[{pairs}]")
        parts.append(f"{cg.cell}_concat={list(cg.concat)}")
    return f"Genotype({', '.join(parts)})"


def _darts_k(cg: CellGenotype) -> int:
    """Inputs per node; raise unless edges are grouped by node, k per node, nodes consecutive."""
    dsts = [d for _, _, d in cg.edges]
    if not dsts:
        raise GenotypeError(f"cell {cg.cell!r} has no edges")
    nodes = sorted(set(dsts))
    k = dsts.count(nodes[0])
    expected = [n for n in range(nodes[0], nodes[0] + len(nodes)) for _ in range(k)]
    if dsts != expected:
        raise GenotypeError(f"cell {cg.cell!r} cannot be written as a DARTS genotype: it needs "
                            f"the same number of inputs for every node, grouped in node order "
                            f"(destinations: {dsts})")
    return k


def _literal(node: ast.AST, what: str):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 3):
        try:
            return list(range(*[ast.literal_eval(a) for a in node.args]))
        except (ValueError, TypeError) as e:
            raise GenotypeError(f"DARTS genotype: bad {what}: {e}") from None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as e:
        raise GenotypeError(f"DARTS genotype: {what} is not a literal ({e})") from None


def from_darts_text(text: str, *, ir: SpaceIR | None = None, k: int = 2, n_inputs: int = 2,
                    space: str | None = None) -> Genotype:
    """Parse DARTS ``Genotype(...)`` text (never evaluated). Destinations follow from position:
    ``k`` pairs per node, nodes numbered from ``n_inputs``; with ``ir`` both come from the cell
    of the same name, and the space name from ``ir``."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise GenotypeError(f"DARTS genotype: cannot parse ({e.msg})") from None
    call = tree.body
    if not isinstance(call, ast.Call) or call.args:
        raise GenotypeError("DARTS genotype: expected Genotype(name=[...], name_concat=[...], ...) "
                            "with keyword fields")
    fields = {}
    for kw in call.keywords:
        if kw.arg is None or kw.arg in fields:
            raise GenotypeError("DARTS genotype: fields must be named, each once")
        fields[kw.arg] = _literal(kw.value, kw.arg)
    names = [f for f in fields if not f.endswith("_concat")]
    for f in fields:
        if f.endswith("_concat") and f[: -len("_concat")] not in fields:
            raise GenotypeError(f"DARTS genotype: {f} has no matching {f[:-7]} field")
    if not names:
        raise GenotypeError("DARTS genotype: no cell fields")
    cells = []
    for name in names:
        kk, first = k, n_inputs
        if ir is not None:
            try:
                c = ir.cell(name)
            except KeyError:
                raise GenotypeError(f"DARTS genotype field {name!r} is not a cell of space "
                                    f"{ir.name!r}") from None
            kk, first = (c.derive.k or k), c.n_inputs
        pairs = fields[name]
        if not isinstance(pairs, (list, tuple)) or not all(
                isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
                and _is_int(p[1]) for p in pairs):
            raise GenotypeError(f"DARTS genotype: {name} must be a list of (op, input) pairs")
        if not pairs or len(pairs) % kk:
            raise GenotypeError(f"DARTS genotype: {name} has {len(pairs)} pairs, not a positive "
                                f"multiple of {kk} inputs per node")
        if f"{name}_concat" not in fields:
            raise GenotypeError(f"DARTS genotype: missing {name}_concat")
        concat = fields[f"{name}_concat"]
        if not isinstance(concat, (list, tuple)) or not all(_is_int(x) for x in concat):
            raise GenotypeError(f"DARTS genotype: {name}_concat must be a list of node numbers")
        edges = [(op, src, first + i // kk) for i, (op, src) in enumerate(pairs)]
        cells.append(_wired(CellGenotype(name, edges, concat), "DARTS genotype"))
    return Genotype(space or (ir.name if ir is not None else "darts"), cells)


# ---- known genotypes ------------------------------------------------------------------

DARTS_V1 = ("Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('skip_connect', 2)], normal_concat=[2, 3, 4, 5], "
            "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])")

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
            "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
            "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")

KNOWN_GENOTYPES = {"darts_v1": DARTS_V1, "darts_v2": DARTS_V2}


def known_genotype(name: str) -> Genotype:
    """A published genotype by name (``darts_v1``, ``darts_v2``; case-insensitive)."""
    key = name.strip().lower().replace("-", "_")
    if key not in KNOWN_GENOTYPES:
        raise GenotypeError(f"unknown genotype name {name!r} (known: {', '.join(KNOWN_GENOTYPES)})")
    return from_darts_text(KNOWN_GENOTYPES[key], space="darts")


# ---- auto-detection -------------------------------------------------------------------

_DARTS_RE = re.compile(r"^[A-Za-z_][\w.]*\s*\(", re.S)


def parse_genotype(text_or_path: str | Path, ir: SpaceIR | None = None, k: int = 2) -> Genotype:
    """Read a genotype from a JSON file or text, an NB201 string, DARTS ``Genotype(...)`` text,
    or a known name (``DARTS_V2``). A string naming an existing file is read first. With ``ir``
    the result takes the space's names and is validated against it."""
    text = _read_if_file(text_or_path)
    s = text.strip()
    if not s:
        raise GenotypeError("empty genotype")
    if s.lower().replace("-", "_") in KNOWN_GENOTYPES:
        g = known_genotype(s)
        if ir is not None:
            g = attrs.evolve(g, space=ir.name)
    elif s.startswith("{"):
        g = from_json(s)
    elif s.startswith("|"):
        if ir is not None:
            if len(ir.groups) != 1:
                raise GenotypeError(f"an NB201 string gives one cell; space {ir.name!r} has "
                                    f"{len(ir.groups)} α groups")
            g = from_nb201_string(s, space=ir.name, cell=ir.groups[0].cell)
        else:
            g = from_nb201_string(s)
    elif _DARTS_RE.match(s):
        g = from_darts_text(s, ir=ir, k=k)
    else:
        what = f"{s[:60]!r}"
        if text is not text_or_path:                    # read from a file
            what = f"the file {text_or_path}"
        elif "\n" not in s and len(s) < 300:
            try:
                what += " (a folder)" if Path(s).is_dir() else " (no such file)"
            except (OSError, ValueError):
                pass
        raise GenotypeError(f"cannot tell the genotype format of {what}: expected a JSON "
                            f"object, an NB201 string |op~0|+..., or Genotype(...) text")
    if ir is not None:
        validate(g, ir)
    return g


def _read_if_file(text_or_path: str | Path) -> str:
    """The text of the genotype file ``text_or_path`` names (a Path, or a one-line string that
    names an existing file), else the string itself."""
    path = text_or_path if isinstance(text_or_path, Path) else None
    s = text_or_path
    one_line = path is None and "\n" not in s and len(s) < 4096
    if one_line and not s.lstrip().startswith(("{", "|")):
        try:
            path = Path(s) if Path(s).is_file() else None
        except (OSError, ValueError):           # e.g. a name too long to be a path
            pass
    if path is None:
        return s
    try:
        return path.read_text()
    except OSError as e:
        raise GenotypeError(f"cannot read genotype file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise GenotypeError(f"genotype file {path}: not a UTF-8 text file") from None
