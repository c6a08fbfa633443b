"""AST -> canonical .nas text. ``parse(pretty(m)) == m`` for every module (a property test checks)."""
from __future__ import annotations

from . import ast

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "//": 2}


def pretty(module: ast.Module) -> str:
    return "\n".join(_item(i) for i in module.items) + "\n"


def expr(e: ast.Expr, parent: int = 0, right: bool = False) -> str:
    if isinstance(e, ast.Int):
        return str(e.value)
    if isinstance(e, ast.Var):
        return e.name
    p = _PRECEDENCE[e.op]
    text = f"{expr(e.left, p)} {e.op} {expr(e.right, p, right=True)}"
    # Left-associative: a right operand of equal precedence needs parentheses.
    return f"({text})" if p < parent or (p == parent and right) else text


def _names(ids) -> str:
    return "[" + ", ".join(i.name for i in ids) + "]"


def _item(i) -> str:
    if isinstance(i, ast.SpaceDecl):
        if i.extends is None:
            return f"space {i.name}"
        target = f'"{i.extends.name}"' if i.extends_is_path else i.extends.name
        return f"space {i.name} extends {target}"
    if isinstance(i, ast.OpsDecl):
        return f"ops {_names(i.ops)}"
    if isinstance(i, ast.BnDecl):
        inner = "".join(f"\n  {s.key} {_value(s.value)}" for s in i.settings)
        return "bn {" + inner + ("\n}" if inner else "}")
    if isinstance(i, ast.CellDecl):
        return _cell(i)
    if isinstance(i, ast.NetworkDecl):
        params = "(" + ", ".join(f"{p.name} = {expr(p.value)}" for p in i.params) + ")"
        return f"network{params} " + _blocks(i.blocks, "")
    raise TypeError(f"not an item: {i!r}")


def _value(v) -> str:
    return str(v.value) if isinstance(v, ast.Int) else v.name


def _cell(c: ast.CellDecl) -> str:
    text = f"cell {c.name}"
    if c.params is not None:
        text += "(" + ", ".join(
            f"{p.key}" + ("" if p.value is None else f" {p.value.value}") for p in c.params) + ")"
    if c.body is not None:
        inner = "".join(f"\n  {_cell_stmt(s)}" for s in c.body)
        text += " {" + inner + ("\n}" if inner else "}")
    return text


def _edge(e: ast.EdgeRef) -> str:
    return f"{e.src.value} -> {e.dst.value}"


def _cell_stmt(s) -> str:
    if isinstance(s, ast.EdgesDense):
        return "edges dense"
    if isinstance(s, ast.EdgesList):
        return "edges [" + ", ".join(_edge(e) for e in s.edges) + "]"
    if isinstance(s, ast.EdgeOps):
        return f"edge {_edge(s.edge)} {_names(s.ops)}"
    if isinstance(s, ast.OpsDecl):
        return f"ops {_names(s.ops)}"
    if isinstance(s, ast.Output):
        return f"output {s.kind}"
    if isinstance(s, ast.Combine):
        return f"combine {s.kind}"
    if isinstance(s, ast.Derive):
        return f"derive {s.rule}" + ("" if s.k is None else f" {s.k.value}")
    if isinstance(s, ast.Share):
        return f"share {s.group}"
    raise TypeError(f"not a cell statement: {s!r}")


def _blocks(blocks, indent: str) -> str:
    inner = "".join(f"\n{indent}  {_block(b, indent + '  ')}" for b in blocks)
    return "{" + inner + (f"\n{indent}}}" if inner else "}")


def _call(c: ast.Call) -> str:
    args = [expr(a) for a in c.args] + [f"{p.name}={expr(p.value)}" for p in c.kwargs]
    return f"{c.name}(" + ", ".join(args) + ")"


def _block(b, indent: str) -> str:
    if isinstance(b, ast.Stem):
        return f"stem {_call(b.call)}"
    if isinstance(b, ast.Call):
        return _call(b)
    if isinstance(b, ast.Head):
        return "head " + " ".join(l.name for l in b.layers)
    if isinstance(b, ast.Repeat):
        if b.braced:
            return f"repeat {expr(b.count)} " + _blocks(b.body, indent)
        return f"repeat {expr(b.count)} {_block(b.body[0], indent)}"
    raise TypeError(f"not a block: {b!r}")
