"""The intermediate representation: plain data between the language and the supernet.

A cell type is a DAG (``CellIR.graph()`` gives it as a ``networkx.DiGraph``); the macro network is
a list of blocks whose channels, strides and resolutions are already inferred. Everything here
serialises to JSON (``dslnas.ir.export``).
"""
from __future__ import annotations

import functools

import attrs
import networkx as nx


@attrs.frozen
class Edge:
    src: int
    dst: int
    candidates: tuple[str, ...]   # ordered: the alpha column order of this edge
    stride: int                   # 2 on edges leaving the inputs of a reduction cell
    row: int                      # the alpha row of this edge (canonical edge order)


@attrs.frozen
class DeriveRule:
    kind: str                     # "argmax" (per edge, `none` allowed) | "top" (k inputs per node)
    k: int | None = None

    def __str__(self) -> str:
        return self.kind if self.k is None else f"{self.kind} {self.k}"


@attrs.frozen
class CellIR:
    name: str
    n_inputs: int
    n_nodes: int                  # intermediate nodes, numbered n_inputs .. n_inputs+n_nodes-1
    edges: tuple[Edge, ...]       # canonical order: by destination node, then by source
    output: str                   # "last" | "concat" (of the intermediate nodes)
    combine: str                  # "sum" | "mean"
    derive: DeriveRule
    reduction: bool
    group: str                    # the architecture-parameter sharing group

    @property
    def nodes(self) -> range:
        return range(self.n_inputs + self.n_nodes)

    @property
    def intermediate(self) -> range:
        return range(self.n_inputs, self.n_inputs + self.n_nodes)

    @property
    def output_nodes(self) -> tuple[int, ...]:
        """The nodes the cell output is made of."""
        if self.output == "last":
            return (self.n_inputs + self.n_nodes - 1,)
        return tuple(self.intermediate)

    @property
    def multiplier(self) -> int:
        """Output channels per op channel: concat of k nodes gives k*C."""
        return len(self.output_nodes)

    def in_edges(self, node: int) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.dst == node)

    @property
    def max_candidates(self) -> int:
        return max(len(e.candidates) for e in self.edges)

    @property
    def alpha_shape(self) -> tuple[int, int]:
        return (len(self.edges), self.max_candidates)

    def graph(self) -> nx.DiGraph:
        return _cell_graph(self)


@functools.lru_cache(maxsize=256)
def _cell_graph(cell: CellIR) -> nx.DiGraph:
    g = nx.DiGraph(name=cell.name, output=cell.output, reduction=cell.reduction)
    for n in range(cell.n_inputs):
        g.add_node(n, kind="input")
    for n in cell.intermediate:
        g.add_node(n, kind="intermediate", combine=cell.combine)
    g.add_node("out", kind="output", combine="concat" if cell.output == "concat" else "identity")
    for e in cell.edges:
        g.add_edge(e.src, e.dst, candidates=e.candidates, stride=e.stride, row=e.row,
                   group=cell.group)
    for n in cell.output_nodes:
        g.add_edge(n, "out", candidates=(), stride=1, row=None, group=None)
    return g


@attrs.frozen
class AlphaGroup:
    """One architecture-parameter tensor, shared by every cell whose ``group`` is ``name``."""

    name: str
    cell: str                     # the cell type that defines its rows and columns
    shape: tuple[int, int]        # (edges, max candidates); shorter rows are masked
    cells: tuple[str, ...]        # every cell type in the group


# ---- macro blocks --------------------------------------------------------------

@attrs.frozen
class StemBlock:
    op: str                       # "conv3x3": conv 3x3 (bias off) + BN (affine)
    C_in: int
    C_out: int
    scale: int = 1                # downsampling factor of the output w.r.t. the network input
    kind: str = "stem"


@attrs.frozen
class CellBlock:
    index: int                    # position among the cells, 0-based
    cell: str
    C: int                        # op width inside the cell
    C_inputs: tuple[int, ...]     # channels of the states fed to the cell, oldest first
    preprocess: tuple[str, ...]   # per input: "none" | "relu_conv_bn" | "factorized_reduce"
    C_out: int
    stride: int
    scale: int
    kind: str = "cell"


@attrs.frozen
class ResBlock:
    C_in: int
    C_out: int
    stride: int
    scale: int
    kind: str = "resblock"


@attrs.frozen
class HeadBlock:
    layers: tuple[str, ...]       # subset of bn, relu, gap, linear in order
    C_in: int
    classes: int
    scale: int
    kind: str = "head"


Block = StemBlock | CellBlock | ResBlock | HeadBlock


@attrs.frozen
class SpaceIR:
    name: str
    cells: tuple[CellIR, ...]                 # cell types, in definition order
    groups: tuple[AlphaGroup, ...]
    blocks: tuple[Block, ...]
    bn: tuple[tuple[str, object], ...]        # search-time BN policy, e.g. (("affine", False), ...)
    params: tuple[tuple[str, int], ...]       # network parameters after overrides
    source: str = ""

    def cell(self, name: str) -> CellIR:
        for c in self.cells:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def bn_policy(self) -> dict:
        return dict(self.bn)

    @property
    def used_cells(self) -> tuple[CellIR, ...]:
        used = {b.cell for b in self.blocks if isinstance(b, CellBlock)}
        return tuple(c for c in self.cells if c.name in used)
