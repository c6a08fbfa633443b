"""Resolved space -> ``SpaceIR``: evaluate the network with its parameters, infer channels,
strides and resolutions, and collect the architecture-parameter sharing groups."""
from __future__ import annotations

from pathlib import Path

from ..dsl import ast
from ..dsl.checks import check_bn, check_cell, check_ops, did_you_mean
from ..dsl.errors import DSLError
from ..dsl.resolve import ResolvedSpace, load_space
from .model import AlphaGroup, CellBlock, CellIR, HeadBlock, ResBlock, SpaceIR, StemBlock

BUILTIN_PARAMS = {"classes": 10, "in_channels": 3}
HEAD_LAYERS = ("bn", "relu", "gap", "linear")
STEMS = ("conv3x3",)
FIXED_BLOCKS = ("resblock",)
RESERVED = ("stem", "repeat", "head", *STEMS, *FIXED_BLOCKS)
MAX_BLOCKS = 10_000          # macro blocks of one network (DARTS' largest: 20 cells)


def compile_file(path: str | Path, overrides: dict[str, int] | None = None) -> SpaceIR:
    """Parse, resolve, check and lower a .nas file. Every user mistake is a ``DSLError``."""
    space = load_space(path)
    try:
        return lower(space, overrides or {})
    except DSLError as e:
        if e.span is not None and e.source is None:
            e.source = space.sources.get(e.span.file)
        raise


def lower(space: ResolvedSpace, overrides: dict[str, int]) -> SpaceIR:
    bn = check_bn(space)
    if space.ops is not None:
        check_ops(space.ops.ops, f"space '{space.name}'", space.ops.span)
    cells = {}
    for name, cdef in space.cells.items():
        if name in RESERVED:
            raise DSLError(f"'{name}' is a reserved word and cannot name a cell", cdef.name.span)
        cells[name] = check_cell(space, cdef)
    if space.network is None:
        raise DSLError(f"space '{space.name}' has no `network {{ ... }}` block", space.name.span)
    params = _params(space.network, overrides)
    blocks = _Macro(cells, params, space.network).build()
    used = [c for c in cells.values() if any(getattr(b, "cell", None) == c.name for b in blocks)]
    groups = _groups(used, space)
    return SpaceIR(name=space.name.name, cells=tuple(cells.values()), groups=groups,
                   blocks=tuple(blocks), bn=tuple(bn.items()),
                   params=tuple(params.items()), source=space.chain[0] if space.chain else "")


def _params(net: ast.NetworkDecl, overrides: dict[str, int]) -> dict[str, int]:
    """Declared parameters in order; an override replaces a value before later ones use it."""
    env = dict(BUILTIN_PARAMS)
    declared = {}
    for p in net.params:
        if p.name.name in declared:
            raise DSLError(f"duplicate network parameter '{p.name}'", p.name.span)
        declared[p.name.name] = p
    for key, value in overrides.items():
        if key not in env and key not in declared:
            known = ", ".join([*env, *declared])
            raise DSLError(f"--set {key}={value}: the network has no parameter '{key}'"
                           f"{did_you_mean(key, [*env, *declared])} (parameters: {known})")
    env.update({k: int(v) for k, v in overrides.items() if k in env})
    for name, p in declared.items():
        env[name] = int(overrides[name]) if name in overrides else evaluate(p.value, env)
    for key, value in env.items():
        if value < 0:
            span = declared[key].value.span if key in declared and key not in overrides else None
            raise DSLError(f"network parameter '{key}' must not be negative, got {value}", span)
    for key in BUILTIN_PARAMS:
        if env[key] <= 0:
            raise DSLError(f"network parameter '{key}' must be positive, got {env[key]}",
                           declared[key].value.span if key in declared else None)
    return env


def evaluate(e: ast.Expr, env: dict[str, int]) -> int:
    if isinstance(e, ast.Int):
        return e.value
    if isinstance(e, ast.Var):
        if e.name not in env:
            raise DSLError(f"unknown name '{e.name}'{did_you_mean(e.name, env)}; "
                           f"declare it in `network(...)` (known: {', '.join(env)})", e.span)
        return env[e.name]
    a, b = evaluate(e.left, env), evaluate(e.right, env)
    if e.op == "+":
        return a + b
    if e.op == "-":
        return a - b
    if e.op == "*":
        return a * b
    if b == 0:
        raise DSLError("division by zero", e.span)
    return a // b


class _Macro:
    """Walks the network blocks once, keeping the channels and scale of every state."""

    def __init__(self, cells: dict[str, CellIR], env: dict[str, int], net: ast.NetworkDecl):
        self.cells, self.env, self.net = cells, env, net
        self.states: list[tuple[int, int]] = []   # (channels, scale) of each block output
        self.blocks: list = []
        self.n_cells = 0

    def build(self) -> list:
        self._run(self.net.blocks)
        if not any(isinstance(b, CellBlock) for b in self.blocks):
            raise DSLError("the network uses no cell, so there is nothing to search",
                           self.net.span)
        if not self.blocks or not isinstance(self.blocks[-1], HeadBlock):
            raise DSLError("the network must end with a `head ... linear` block", self.net.span)
        return self.blocks

    def _run(self, blocks) -> None:
        for b in blocks:
            if self.blocks and isinstance(self.blocks[-1], HeadBlock):
                raise DSLError("nothing may follow the `head` block", b.span)
            if isinstance(b, ast.Stem):
                self._stem(b)
            elif isinstance(b, ast.Repeat):
                n = evaluate(b.count, self.env)
                if n < 0:
                    raise DSLError(f"repeat count must not be negative, got {n}", b.count.span)
                for _ in range(n):
                    before = len(self.blocks)
                    self._run(b.body)
                    if len(self.blocks) == before:
                        break   # the body adds no block, so no later iteration adds one either
                    if len(self.blocks) > MAX_BLOCKS:   # before it fills the memory
                        raise DSLError(f"repeat {n}: the network would have more than "
                                       f"{MAX_BLOCKS:,} blocks", b.count.span)
            elif isinstance(b, ast.Head):
                self._head(b)
            else:
                self._call(b)

    def _last(self) -> tuple[int, int]:
        return self.states[-1] if self.states else (self.env["in_channels"], 1)

    def _args(self, call: ast.Call, n_args: int, kwargs: dict[str, int]) -> tuple[list, dict]:
        if len(call.args) != n_args:
            raise DSLError(f"'{call.name}' takes {n_args} positional argument"
                           f"{'s' if n_args != 1 else ''} (its width), got {len(call.args)}",
                           call.span)
        values = [self._positive(a, f"the width of '{call.name}'") for a in call.args]
        given = dict(kwargs)
        for kw in call.kwargs:
            if kw.name.name not in kwargs:
                allowed = ", ".join(kwargs) or "none"
                raise DSLError(f"'{call.name}' has no argument '{kw.name}' "
                               f"(keyword arguments: {allowed})", kw.name.span)
            given[kw.name.name] = evaluate(kw.value, self.env)
        return values, given

    def _positive(self, e: ast.Expr, what: str) -> int:
        v = evaluate(e, self.env)
        if v <= 0:
            raise DSLError(f"{what} must be positive, got {v}", e.span)
        return v

    def _stem(self, b: ast.Stem) -> None:
        call = b.call
        if self.blocks:
            raise DSLError("`stem` must be the first block of the network", b.span)
        if call.name.name not in STEMS:
            raise DSLError(f"unknown stem '{call.name}'{did_you_mean(call.name.name, STEMS)} "
                           f"(known: {', '.join(STEMS)})", call.name.span)
        (c_out,), _ = self._args(call, 1, {})
        c_in, scale = self._last()
        self.blocks.append(StemBlock(call.name.name, c_in, c_out, scale))
        self.states.append((c_out, scale))

    def _head(self, b: ast.Head) -> None:
        names = [l.name for l in b.layers]
        for l in b.layers:
            if l.name not in HEAD_LAYERS:
                raise DSLError(f"unknown head layer '{l.name}'{did_you_mean(l.name, HEAD_LAYERS)}"
                               f" (known: {', '.join(HEAD_LAYERS)})", l.span)
        if names[-1] != "linear" or "gap" not in names:
            raise DSLError("the head must pool and classify: it needs `gap` and ends with "
                           "`linear`", b.span)
        if len(set(names)) != len(names):
            raise DSLError("a head layer is listed twice", b.span)
        c_in, scale = self._last()
        self.blocks.append(HeadBlock(tuple(names), c_in, self.env["classes"], scale))

    def _call(self, call: ast.Call) -> None:
        name = call.name.name
        if name == "resblock":
            (c_out,), kw = self._args(call, 1, {"stride": 1})
            stride = self._stride(kw["stride"], call)
            c_in, scale = self._last()
            self.blocks.append(ResBlock(c_in, c_out, stride, scale * stride))
            self.states.append((c_out, scale * stride))
            return
        if name not in self.cells:
            known = [*self.cells, *FIXED_BLOCKS]
            raise DSLError(f"cell '{name}' is used but never defined"
                           f"{did_you_mean(name, known)} (cells: {', '.join(self.cells) or 'none'};"
                           f" blocks: {', '.join(FIXED_BLOCKS)})", call.name.span)
        cell = self.cells[name]
        (width,), _ = self._args(call, 1, {})
        self._cell(cell, width, call)

    def _stride(self, s: int, call: ast.Call) -> int:
        if s not in (1, 2):
            raise DSLError(f"stride must be 1 or 2, got {s}", call.span)
        return s

    def _cell(self, cell: CellIR, C: int, call: ast.Call) -> None:
        history = self.states or [self._last()]
        # The first cells of a network see the stem output in every input slot (as DARTS does).
        inputs = [history[max(0, len(history) - cell.n_inputs + i)] for i in range(cell.n_inputs)]
        newest_scale = inputs[-1][1]
        if cell.n_inputs == 1:
            if inputs[0][0] != C:
                raise DSLError(f"cell '{cell.name}' has one input, so its width must equal the "
                               f"channels it receives ({inputs[0][0]}), got {C}; change the width "
                               "or put a `resblock` before it", call.span)
            pre = ("none",)
        else:
            pre = []
            for ch, scale in inputs[:-1]:
                if scale == newest_scale:
                    pre.append("relu_conv_bn")
                elif scale * 2 == newest_scale:
                    pre.append("factorized_reduce")
                else:
                    raise DSLError(f"an input of cell '{cell.name}' is {newest_scale // scale}x "
                                   "larger than its newest input; only 2x can be reduced",
                                   call.span)
            pre = (*pre, "relu_conv_bn")
        needs_even = "factorized_reduce" in pre or (cell.reduction and any(
            "skip_connect" in e.candidates for e in cell.edges if e.stride == 2))
        if needs_even and C % 2:
            raise DSLError(f"cell '{cell.name}' needs an even width here (a factorized reduce "
                           f"splits it in two), got {C}", call.span)
        stride = 2 if cell.reduction else 1
        c_out = cell.multiplier * C
        scale = newest_scale * stride
        self.blocks.append(CellBlock(self.n_cells, cell.name, C, tuple(ch for ch, _ in inputs),
                                     tuple(pre), c_out, stride, scale))
        self.n_cells += 1
        self.states.append((c_out, scale))


def _groups(cells: list[CellIR], space: ResolvedSpace) -> tuple[AlphaGroup, ...]:
    by_group: dict[str, list[CellIR]] = {}
    for c in cells:
        by_group.setdefault(c.group, []).append(c)
    groups = []
    for name, members in by_group.items():
        first = members[0]
        for other in members[1:]:
            same_edges = [(e.src, e.dst, e.candidates) for e in other.edges] == \
                         [(e.src, e.dst, e.candidates) for e in first.edges]
            if not same_edges or other.derive != first.derive:
                what = "edges or candidates" if not same_edges else "derivation rules"
                odef = space.cells[other.name]
                share = odef.stmts.get("share") or space.cells[first.name].stmts.get("share")
                raise DSLError(f"cells '{first.name}' and '{other.name}' share the architecture "
                               f"parameters '{name}' but have different {what}",
                               share.span if share else odef.name.span)
        groups.append(AlphaGroup(name, first.name, first.alpha_shape,
                                 tuple(c.name for c in members)))
    return tuple(groups)
