"""How many distinct architectures a derivation rule can produce (exact integers)."""
from __future__ import annotations

import itertools
import math

from .model import CellIR, SpaceIR

NONE_OP = "none"


def choices(candidates: tuple[str, ...], exclude_none: bool) -> int:
    return sum(1 for c in candidates if not (exclude_none and c == NONE_OP))


def cell_architectures(cell: CellIR) -> int:
    """Genotypes one cell type can take under its own derivation rule."""
    if cell.derive.kind == "argmax":
        return math.prod(len(e.candidates) for e in cell.edges)
    total = 1
    for node in cell.intermediate:
        edges = cell.in_edges(node)
        k = min(cell.derive.k, len(edges))
        total *= sum(math.prod(choices(e.candidates, exclude_none=True) for e in subset)
                     for subset in itertools.combinations(edges, k))
    return total


def space_architectures(space: SpaceIR) -> int:
    """One genotype per sharing group: the space size is the product over the groups."""
    return math.prod(cell_architectures(space.cell(g.cell)) for g in space.groups)
