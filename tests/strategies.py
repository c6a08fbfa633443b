"""Hypothesis strategies for the .nas language: valid spaces (as ASTs plus what they must lower to),
and mutations of source text for robustness tests.

``spaces()`` draws a :class:`GenSpace`: an ``ast.Module`` built without spans, together with the
model the compiler must reproduce (per cell: edges, candidates, output, derive rule, group; for the
network: the sequence of cell calls with their widths).
"""
from __future__ import annotations

import itertools
import re

import attrs
from hypothesis import strategies as st

import dslnas.ops as op_library
from dslnas.dsl import ast

OPS = tuple(op_library.available_ops())

# Words that must not name a cell (reserved by the lowering) plus the grammar's keywords, which
# would be legal in most places but are left out so that names are never the thing under test.
_RESERVED = {"stem", "repeat", "head", "conv3x3", "resblock", "space", "extends", "ops", "bn",
             "cell", "edges", "dense", "edge", "output", "combine", "derive", "share", "network",
             "classes", "in_channels"}

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True).filter(
    lambda s: s not in _RESERVED and not re.fullmatch(r"[0-9].*", s))


def I(name: str) -> ast.Ident:  # noqa: E743
    return ast.Ident(name)


@attrs.frozen
class GenCell:
    name: str
    n_inputs: int
    n_nodes: int
    reduction: bool
    edges: tuple[tuple[int, int], ...]             # canonical order
    candidates: dict                               # (src, dst) -> tuple of op names
    output: str
    derive: tuple                                  # ("argmax", None) | ("top", k)
    combine: str
    group: str

    @property
    def output_nodes(self):
        total = self.n_inputs + self.n_nodes
        return (total - 1,) if self.output == "last" else tuple(range(self.n_inputs, total))


@attrs.frozen
class GenSpace:
    module: ast.Module
    cells: tuple[GenCell, ...]                     # in definition order
    calls: tuple[tuple[str, int], ...]             # expected (cell name, width) of every CellBlock
    params: dict


# ---- cells -------------------------------------------------------------------------------------

op_lists = st.lists(st.sampled_from(OPS), min_size=1, max_size=4, unique=True)


@st.composite
def _edge_set(draw, n_inputs: int, n_nodes: int, output: str):
    """A random edge set in which every node is reached from an input and reaches the output."""
    total = n_inputs + n_nodes
    edges = set()
    for d in range(n_inputs, total):
        srcs = draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
        edges.update((s, d) for s in srcs)
    outputs = {total - 1} if output == "last" else set(range(n_inputs, total))
    for j in range(total - 1, -1, -1):
        if j in outputs or any(s == j for s, _ in edges):
            continue
        dst = draw(st.integers(max(j + 1, n_inputs), total - 1))
        edges.add((j, dst))
    return sorted(edges, key=lambda e: (e[1], e[0]))


@st.composite
def cell_specs(draw, name: str, space_ops, *, max_nodes: int = 4, max_inputs: int = 2,
               max_ops: int = 4, inputs: int | None = None):
    """A valid ``cell`` declaration and its expected lowering."""
    n_inputs = inputs if inputs is not None else draw(st.integers(1, max_inputs))
    n_nodes = draw(st.integers(1, max_nodes))
    total = n_inputs + n_nodes
    reduction = draw(st.booleans())
    lists = st.lists(st.sampled_from(OPS), min_size=1, max_size=max_ops, unique=True)

    stmts = []
    has_output = draw(st.booleans())
    output = draw(st.sampled_from(["last", "concat"])) if has_output else "last"
    if has_output:
        stmts.append(ast.Output(I(output)))

    edges_kind = draw(st.sampled_from(["none", "dense", "list"]))
    if edges_kind == "list":
        edges = draw(_edge_set(n_inputs, n_nodes, output))
        written = draw(st.permutations(edges))
        stmts.append(ast.EdgesList(tuple(ast.EdgeRef(ast.Int(s), ast.Int(d)) for s, d in written)))
    else:
        edges = [(s, d) for d in range(n_inputs, total) for s in range(d)]
        if edges_kind == "dense":
            stmts.append(ast.EdgesDense())

    cell_ops = draw(st.none() | lists)
    if cell_ops is not None:
        stmts.append(ast.OpsDecl(tuple(I(o) for o in cell_ops)))
    default = cell_ops if cell_ops is not None else space_ops
    if default is None:
        overridden = list(edges)
    else:
        overridden = draw(st.lists(st.sampled_from(edges), unique=True, max_size=len(edges)))
    candidates = {e: tuple(default) if default is not None else None for e in edges}
    for e in overridden:
        ops = draw(lists)
        candidates[e] = tuple(ops)
        stmts.append(ast.EdgeOps(ast.EdgeRef(ast.Int(e[0]), ast.Int(e[1])),
                                 tuple(I(o) for o in ops)))

    derive = draw(st.sampled_from([None, ("argmax", None), ("top", 1), ("top", 2), ("top", 3)]))
    only_none = any(all(set(candidates[e]) <= {"none"} for e in edges if e[1] == d)
                    for d in range(n_inputs, total))
    if derive is not None and derive[0] == "top" and only_none:
        derive = ("argmax", None)   # `derive top` needs a non-`none` candidate into every node
    if derive is not None:
        k = None if derive[1] is None else ast.Int(derive[1])
        stmts.append(ast.Derive(I(derive[0]), k))
    combine = draw(st.sampled_from([None, "sum", "mean"]))
    if combine is not None:
        stmts.append(ast.Combine(I(combine)))

    params = [ast.CellParam(I("inputs"), ast.Int(n_inputs)), ast.CellParam(I("nodes"), ast.Int(n_nodes))]
    if reduction:
        params.append(ast.CellParam(I("reduction"), None))
    params = draw(st.permutations(params))
    stmts = draw(st.permutations(stmts))
    body = tuple(stmts) if stmts or draw(st.booleans()) else None
    decl = ast.CellDecl(I(name), tuple(params), body)
    gen = GenCell(name, n_inputs, n_nodes, reduction, tuple(edges), candidates, output,
                  derive or ("argmax", None), combine or "sum", name)
    return decl, gen


def _with_share(decl: ast.CellDecl, gen: GenCell, group: str, name: str | None = None,
                reduction: bool | None = None):
    """The same cell (optionally renamed / with another reduction flag) in sharing group ``group``."""
    body = tuple(s for s in (decl.body or ()) if not isinstance(s, ast.Share)) + (ast.Share(I(group)),)
    params = decl.params
    if reduction is not None:
        params = tuple(p for p in params if p.key.name != "reduction")
        if reduction:
            params += (ast.CellParam(I("reduction"), None),)
    new_name = name or gen.name
    return (ast.CellDecl(I(new_name), params, body),
            attrs.evolve(gen, name=new_name, group=group,
                         reduction=gen.reduction if reduction is None else reduction))


# ---- expressions -------------------------------------------------------------------------------

def _mult_of(var: str):
    """Expressions whose value is a positive multiple of ``var``."""
    base = st.just(ast.Var(var))
    return st.recursive(base, lambda inner: st.one_of(
        st.builds(lambda k, e: ast.BinOp("*", ast.Int(k), e), st.integers(1, 3), inner),
        st.builds(lambda e, k: ast.BinOp("*", e, ast.Int(k)), inner, st.integers(1, 3)),
        st.builds(lambda a, b: ast.BinOp("+", a, b), inner, inner),
        st.builds(lambda e: ast.BinOp("//", ast.BinOp("*", ast.Int(2), e), ast.Int(2)), inner),
        st.builds(lambda a, b: ast.BinOp("-", ast.BinOp("+", a, b), b), inner, inner),
    ), max_leaves=4)


def evaluate(e, env) -> int:
    if isinstance(e, ast.Int):
        return e.value
    if isinstance(e, ast.Var):
        return env[e.name]
    a, b = evaluate(e.left, env), evaluate(e.right, env)
    return {"+": a + b, "-": a - b, "*": a * b, "//": a // b if b else 0}[e.op]


def _count_exprs(env_names):
    ints = st.integers(0, 2).map(ast.Int)
    vars_ = st.sampled_from(env_names).map(ast.Var) if env_names else ints
    return st.one_of(ints, vars_,
                     st.builds(lambda v, k: ast.BinOp("//", v, ast.Int(k)), vars_, st.integers(1, 3)),
                     st.just(ast.BinOp("//", ast.Var("C"), ast.Int(8))),
                     st.builds(lambda v, k: ast.BinOp("+", v, ast.Int(k)), vars_, st.integers(0, 1)))


# ---- spaces ------------------------------------------------------------------------------------

@st.composite
def spaces(draw, *, max_cells: int = 3, max_nodes: int = 4, max_ops: int = 4,
           max_inputs: int = 2, allow_share: bool = True):
    space_ops = draw(st.none() | st.lists(st.sampled_from(OPS), min_size=1, max_size=max_ops,
                                          unique=True))
    n_cells = draw(st.integers(1, max_cells))
    cell_names = draw(st.lists(names, min_size=n_cells, max_size=n_cells, unique=True))
    decls, gens = [], []
    for nm in cell_names:
        d, g = draw(cell_specs(nm, space_ops, max_nodes=max_nodes, max_inputs=max_inputs,
                               max_ops=max_ops))
        decls.append(d)
        gens.append(g)
    if allow_share and draw(st.booleans()):
        # A twin of the first cell sharing its architecture parameters (like DARTS' normal cells
        # sharing one alpha, but across two cell types), possibly with the other reduction flag.
        twin = draw(names.filter(lambda s: s not in cell_names))
        group = draw(names.filter(lambda s: s not in cell_names[1:] and s != twin))
        d0, g0 = _with_share(decls[0], gens[0], group)
        d1, g1 = _with_share(decls[0], gens[0], group, name=twin, reduction=draw(st.booleans()))
        decls[0], gens[0] = d0, g0
        decls.append(d1)
        gens.append(g1)

    # Network parameters: C (even, so factorized reduces always fit), N (a count), maybe more.
    C = draw(st.integers(1, 8)) * 2
    N = draw(st.integers(1, 3))
    params = [ast.Param(I("C"), ast.Int(C)), ast.Param(I("N"), ast.Int(N))]
    env = {"classes": 10, "in_channels": 3, "C": C, "N": N}
    if draw(st.booleans()):
        params.append(ast.Param(I("D"), ast.BinOp("*", ast.Int(2), ast.Var("C"))))
        env["D"] = 2 * C
    if draw(st.booleans()):
        classes = draw(st.integers(2, 100))
        params.append(ast.Param(I("classes"), ast.Int(classes)))
        env["classes"] = classes
    widths = st.one_of(_mult_of("C"), _mult_of("D")) if "D" in env else _mult_of("C")
    counts = _count_exprs(["N"])

    by_name = {g.name: g for g in gens}
    two_in = [g.name for g in gens if g.n_inputs == 2]
    one_in = [g.name for g in gens if g.n_inputs == 1]

    def segment(depth: int):
        """Blocks that are valid from any state after the stem, and the cell calls they make."""
        kinds = (["two"] if two_in else []) + (["one"] if one_in else []) + (["braced"] if depth < 2 else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "two":
            nm = draw(st.sampled_from(two_in))
            w = draw(widths)
            call = ast.Call(I(nm), (w,))
            if draw(st.booleans()):
                cnt = draw(counts)
                return [ast.Repeat(cnt, (call,))], [(nm, evaluate(w, env))] * evaluate(cnt, env)
            return [call], [(nm, evaluate(w, env))]
        if kind == "one":
            nm = draw(st.sampled_from(one_in))
            w = draw(widths)
            kwargs = ()
            s = draw(st.sampled_from([None, 1, 2]))
            if s is not None:
                kwargs = (ast.Param(I("stride"), ast.Int(s)),)
            blocks = [ast.Call(I("resblock"), (w,), kwargs), ast.Call(I(nm), (w,))]
            calls = [(nm, evaluate(w, env))]
            if len(by_name[nm].output_nodes) == 1 and draw(st.booleans()):
                cnt = draw(counts)
                blocks.append(ast.Repeat(cnt, (ast.Call(I(nm), (w,)),)))
                calls += [(nm, evaluate(w, env))] * evaluate(cnt, env)
            return blocks, calls
        cnt = draw(counts)
        body, calls = [], []
        for _ in range(draw(st.integers(0, 2))):
            b, c = segment(depth + 1)
            body += b
            calls += c
        return [ast.Repeat(cnt, tuple(body), braced=True)], calls * evaluate(cnt, env)

    blocks = [ast.Stem(ast.Call(I("conv3x3"), (draw(widths),)))]
    calls: list = []
    # One unconditional cell call, so the network always searches something.
    while not calls:
        b, c = segment(2)
        blocks += b
        calls += c
    for _ in range(draw(st.integers(0, 3))):
        b, c = segment(0)
        blocks += b
        calls += c
    layers = draw(st.permutations(draw(st.lists(st.sampled_from(["bn", "relu"]), unique=True)) + ["gap"]))
    blocks.append(ast.Head(tuple(I(l) for l in (*layers, "linear"))))
    network = ast.NetworkDecl(tuple(params), tuple(blocks))

    middle = list(decls) + [network]
    if space_ops is not None:
        middle.append(ast.OpsDecl(tuple(I(o) for o in space_ops)))
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(["affine", "track_stats", "pool_bn"]), unique=True))
        middle.append(ast.BnDecl(tuple(ast.Setting(I(k), I(draw(st.sampled_from(["true", "false"]))))
                                       for k in keys)))
    # Items may come in any order after `space`; cells keep their relative order (it is the
    # definition order of the IR).
    order = draw(st.permutations(range(len(middle))))
    cell_pos = sorted(order.index(i) for i in range(len(decls)))
    arranged = [middle[i] for i in order]
    for pos, d in zip(cell_pos, decls):
        arranged[pos] = d
    space_name = draw(names)
    module = ast.Module((ast.SpaceDecl(I(space_name)), *arranged))
    return GenSpace(module, tuple(gens), tuple(calls), env)


# ---- brute-force architecture counts ----------------------------------------------------------

def brute_force_architectures(cell) -> int:
    """Distinct alpha-free genotypes of a lowered cell (``CellIR``), by enumeration."""
    if cell.derive.kind == "argmax":
        return len(set(itertools.product(*(e.candidates for e in cell.edges))))
    per_node = []
    for node in cell.intermediate:
        in_edges = [e for e in cell.edges if e.dst == node]
        k = min(cell.derive.k, len(in_edges))
        options = set()
        for subset in itertools.combinations(in_edges, k):
            op_choices = [[(e.src, op) for op in e.candidates if op != "none"] for e in subset]
            for picked in itertools.product(*op_choices):
                options.add(frozenset(picked))
        per_node.append(options)
    return len(set(itertools.product(*per_node)))


# ---- text mutations ---------------------------------------------------------------------------

_TOKENS = ["space", "extends", "ops", "bn", "cell", "edges", "dense", "edge", "output", "combine",
           "derive", "share", "network", "stem", "repeat", "head", "resblock", "conv3x3", "->",
           "(", ")", "[", "]", "{", "}", ",", ";", "=", "+", "-", "*", "//", "\n", "#", '"',
           "0", "1", "2", "3", "C", "L", "2C", "none", "skip_connect", "top", "argmax", "last",
           "concat", "reduction", "inputs", "nodes", "stride=2", "gap", "linear", "darts",
           "normal", "reduce", "true", "false", "affine", "\t", " ", "\r\n"]
_CHARS = st.sampled_from(list("abcxyzCLN_0123456789 \n\t;,()[]{}=+-*/#\"->.@\\'")) | st.characters()


@st.composite
def mutations(draw, text: str, max_steps: int = 4):
    """Delete, insert or replace characters or tokens, or swap lines, a few times."""
    for _ in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["del_char", "ins_char", "rep_char", "del_tok", "ins_tok",
                                     "rep_tok", "dup_tok", "swap_lines", "del_line"]))
        if kind in ("del_char", "ins_char", "rep_char"):
            i = draw(st.integers(0, max(0, len(text) - 1)))
            c = draw(_CHARS)
            if kind == "del_char":
                text = text[:i] + text[i + 1:]
            elif kind == "ins_char":
                text = text[:i] + c + text[i:]
            else:
                text = text[:i] + c + text[i + 1:]
        elif kind in ("del_tok", "ins_tok", "rep_tok", "dup_tok"):
            toks = re.findall(r"\s+|->|//|[A-Za-z_0-9]+|.", text, flags=re.S)
            if not toks:
                continue
            i = draw(st.integers(0, len(toks) - 1))
            new = draw(st.sampled_from(_TOKENS))
            if kind == "del_tok":
                del toks[i]
            elif kind == "ins_tok":
                toks.insert(i, new)
            elif kind == "rep_tok":
                toks[i] = new
            else:
                toks.insert(i, toks[i])
            text = "".join(toks)
        else:
            lines = text.split("\n")
            if len(lines) < 2:
                continue
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "del_line":
                del lines[i]
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text
