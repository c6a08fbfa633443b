"""The abstract syntax tree of a .nas file: frozen attrs classes, one per grammar rule.

Every node carries the source ``span`` it came from so later stages can point errors at it.
Spans are excluded from equality: two trees are equal when they say the same thing.
"""
from __future__ import annotations

from typing import Union

import attrs

from .errors import Span


def _span():
    return attrs.field(default=None, eq=False, repr=False, kw_only=True)


@attrs.frozen
class Ident:
    """A name as written, with where it was written."""

    name: str
    span: Span | None = _span()

    def __str__(self) -> str:
        return self.name


# ---- integer expressions -----------------------------------------------------

@attrs.frozen
class Int:
    value: int
    span: Span | None = _span()


@attrs.frozen
class Var:
    name: str
    span: Span | None = _span()


@attrs.frozen
class BinOp:
    op: str  # one of + - * //
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


Expr = Union[Int, Var, BinOp]


# ---- top-level items ---------------------------------------------------------

@attrs.frozen
class SpaceDecl:
    name: Ident
    extends: Ident | None = None  # a space name (resolved as NAME.nas beside the file) or a path
    extends_is_path: bool = False
    span: Span | None = _span()


@attrs.frozen
class OpsDecl:
    ops: tuple[Ident, ...]
    span: Span | None = _span()


@attrs.frozen
class Setting:
    key: Ident
    value: Ident | Int
    span: Span | None = _span()


@attrs.frozen
class BnDecl:
    settings: tuple[Setting, ...]
    span: Span | None = _span()


# ---- cells -------------------------------------------------------------------

@attrs.frozen
class CellParam:
    key: Ident          # inputs | nodes | reduction
    value: Int | None   # None for flags such as `reduction`
    span: Span | None = _span()


@attrs.frozen
class EdgeRef:
    src: Int
    dst: Int
    span: Span | None = _span()


@attrs.frozen
class EdgesDense:
    span: Span | None = _span()


@attrs.frozen
class EdgesList:
    edges: tuple[EdgeRef, ...]
    span: Span | None = _span()


@attrs.frozen
class EdgeOps:
    """Per-edge candidate override: ``edge 0 -> 2 [skip_connect, dil_conv_3x3]``."""

    edge: EdgeRef
    ops: tuple[Ident, ...]
    span: Span | None = _span()


@attrs.frozen
class Output:
    kind: Ident  # last | concat
    span: Span | None = _span()


@attrs.frozen
class Combine:
    kind: Ident  # sum | mean
    span: Span | None = _span()


@attrs.frozen
class Derive:
    rule: Ident        # argmax | top
    k: Int | None = None
    span: Span | None = _span()


@attrs.frozen
class Share:
    group: Ident
    span: Span | None = _span()


CellStmt = Union[EdgesDense, EdgesList, EdgeOps, OpsDecl, Output, Combine, Derive, Share]


@attrs.frozen
class CellDecl:
    name: Ident
    params: tuple[CellParam, ...] | None = None  # None: no header (an override in an extending space)
    body: tuple[CellStmt, ...] | None = None
    span: Span | None = _span()


# ---- macro network -----------------------------------------------------------

@attrs.frozen
class Param:
    name: Ident
    value: Expr
    span: Span | None = _span()


@attrs.frozen
class Call:
    name: Ident
    args: tuple[Expr, ...] = ()
    kwargs: tuple[Param, ...] = ()
    span: Span | None = _span()


@attrs.frozen
class Stem:
    call: Call
    span: Span | None = _span()


@attrs.frozen
class Repeat:
    count: Expr
    body: tuple["Block", ...]
    braced: bool = False  # `repeat N { ... }` rather than `repeat N cell(C)`
    span: Span | None = _span()


@attrs.frozen
class Head:
    layers: tuple[Ident, ...]
    span: Span | None = _span()


Block = Union[Stem, Repeat, Call, Head]


@attrs.frozen
class NetworkDecl:
    params: tuple[Param, ...]
    blocks: tuple[Block, ...]
    span: Span | None = _span()


Item = Union[SpaceDecl, OpsDecl, BnDecl, CellDecl, NetworkDecl]


@attrs.frozen
class Module:
    """One parsed .nas file."""

    items: tuple[Item, ...]
    filename: str = attrs.field(default="<string>", eq=False)
