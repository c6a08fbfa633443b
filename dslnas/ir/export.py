"""The IR as JSON (for tools and tests) and as DOT (for eyes)."""
from __future__ import annotations

import attrs

from ..dot import STYLE, document, quote
from .count import cell_architectures, space_architectures
from .model import CellIR, SpaceIR


def cell_json(cell: CellIR) -> dict:
    return {
        "name": cell.name,
        "inputs": cell.n_inputs,
        "nodes": cell.n_nodes,
        "reduction": cell.reduction,
        "output": cell.output,
        "output_nodes": list(cell.output_nodes),
        "combine": cell.combine,
        "derive": str(cell.derive),
        "group": cell.group,
        "edges": [[e.src, e.dst, list(e.candidates)] for e in cell.edges],
        "strides": [e.stride for e in cell.edges],
        "architectures": cell_architectures(cell),
    }


def space_json(space: SpaceIR) -> dict:
    return {
        "space": space.name,
        "source": space.source,
        "params": dict(space.params),
        "bn": space.bn_policy,
        "cells": [cell_json(c) for c in space.used_cells],
        "groups": [{"name": g.name, "cell": g.cell, "cells": list(g.cells),
                    "shape": list(g.shape)} for g in space.groups],
        "alpha_shapes": {g.name: list(g.shape) for g in space.groups},
        "network": [attrs.asdict(b) for b in space.blocks],
        "architectures": space_architectures(space),
    }


def _cell_lines(cell: CellIR, p: str) -> list[str]:
    """DOT statements of a supernet cell with every candidate edge; ``p`` prefixes node ids."""
    lines = [f'{p}n{n} [label="in {n}", fillcolor="#f6e3c4"];' for n in range(cell.n_inputs)]
    lines += [f'{p}n{n} [label="{n}"];' for n in cell.intermediate]
    lines.append(f'{p}out [label="out", fillcolor="#d5ecd0"];')
    for e in cell.edges:
        label = "\\n".join(e.candidates) + ("\\n(stride 2)" if e.stride == 2 else "")
        lines.append(f'{p}n{e.src} -> {p}n{e.dst} [label="{label}"];')
    lines += [f"{p}n{n} -> {p}out [style=dashed];" for n in cell.output_nodes]
    return lines


def cell_dot(cell: CellIR) -> str:
    body = "\n".join("  " + l for l in (*STYLE, *_cell_lines(cell, "")))
    return f"digraph {quote(cell.name)} {{\n{body}\n}}\n"


def space_dot(space: SpaceIR) -> str:
    """All used cell types of a space, one cluster each."""
    return document(space.name, [(c.name, _cell_lines(c, f"{c.name}_")) for c in space.used_cells])
