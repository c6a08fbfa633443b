"""Follow ``extends`` chains and merge a space with the spaces it extends.

A child overrides its parent item by item: ``ops`` and ``network`` replace the parent's, ``bn``
settings replace key by key, and a ``cell`` with a known name is merged into the parent's cell
(header parameters and statements replace those of the same kind; ``edge`` overrides add up).
"""
from __future__ import annotations

from pathlib import Path

import attrs

from . import ast
from .errors import DSLError
from .parser import parse, read_source

SHIPPED_SPACES = Path(__file__).resolve().parents[2] / "spaces"


@attrs.define
class CellDef:
    name: ast.Ident
    params: dict[str, ast.CellParam] = attrs.Factory(dict)
    stmts: dict[str, object] = attrs.Factory(dict)          # statement kind -> last statement
    edge_ops: dict[tuple[int, int], ast.EdgeOps] = attrs.Factory(dict)


@attrs.define
class ResolvedSpace:
    """A space with its ``extends`` chain folded in; spans still point into the source files."""

    name: ast.Ident
    ops: ast.OpsDecl | None = None
    bn: dict[str, ast.Setting] = attrs.Factory(dict)
    cells: dict[str, CellDef] = attrs.Factory(dict)
    network: ast.NetworkDecl | None = None
    sources: dict[str, str] = attrs.Factory(dict)           # file name -> text, for error carets
    chain: tuple[str, ...] = ()                              # the files, child first


_STMT_KIND = {ast.EdgesDense: "edges", ast.EdgesList: "edges", ast.OpsDecl: "ops",
              ast.Output: "output", ast.Combine: "combine", ast.Derive: "derive",
              ast.Share: "share"}


def load_space(path: str | Path) -> ResolvedSpace:
    return _load(Path(path), ())


def resolve_module(module: ast.Module, source: str) -> ResolvedSpace:
    """Resolve a module parsed from a string (``extends`` is looked up among the shipped spaces)."""
    return _resolve(module, source, Path.cwd() / module.filename, ())


def _load(path: Path, seen: tuple[Path, ...]) -> ResolvedSpace:
    text = read_source(path)
    return _resolve(parse(text, str(path)), text, path, seen)


def _resolve(module: ast.Module, text: str, path: Path, seen: tuple[Path, ...]) -> ResolvedSpace:
    try:
        return _merge_module(module, text, path, seen)
    except DSLError as e:
        raise e.with_source(text) if e.span and e.span.file == module.filename else e


def _merge_module(module, text, path, seen) -> ResolvedSpace:
    decls = [i for i in module.items if isinstance(i, ast.SpaceDecl)]
    if not decls:
        raise DSLError("missing `space NAME` declaration at the top of the file",
                       _first_span(module))
    if len(decls) > 1:
        raise DSLError("duplicate `space` declaration", decls[1].span,
                       notes=(f"the space is already declared at {decls[0].span}",))
    decl = decls[0]
    if module.items[0] is not decl:
        raise DSLError("`space NAME` must be the first statement of the file", decl.span)

    if decl.extends is not None:
        parent_path = _find_parent(decl, path)
        key = parent_path.resolve()
        here = path.resolve()
        if key in seen or key == here:
            cycle = " -> ".join(p.name for p in (*seen, here, key))
            raise DSLError(f"`extends` forms a cycle: {cycle}", decl.extends.span)
        try:
            space = _load(parent_path, (*seen, here))
        except DSLError as e:
            if e.span is not None:
                raise
            # a file that cannot be read at all: say so at the `extends`
            raise DSLError(f"cannot extend {e.message}", decl.extends.span) from None
        space.name = decl.name
    else:
        space = ResolvedSpace(name=decl.name)
    space.sources[module.filename] = text
    space.chain = (module.filename, *space.chain)

    seen_here: dict[str, object] = {}
    for item in module.items[1:]:
        key = _item_key(item)
        if key in seen_here:
            raise DSLError(f"duplicate {_describe(key)} in this file", item.span,
                           notes=(f"first defined at {seen_here[key].span}",))
        seen_here[key] = item
        if isinstance(item, ast.OpsDecl):
            space.ops = item
        elif isinstance(item, ast.BnDecl):
            for s in _unique(item.settings, lambda s: s.key.name, "bn setting"):
                space.bn[s.key.name] = s
        elif isinstance(item, ast.NetworkDecl):
            space.network = item
        elif isinstance(item, ast.CellDecl):
            _merge_cell(space, item)
    return space


def _merge_cell(space: ResolvedSpace, decl: ast.CellDecl) -> None:
    cell = space.cells.get(decl.name.name)
    if cell is None:
        if decl.params is None:
            raise DSLError(f"cell '{decl.name}' is not defined in a parent space, so it needs a "
                           "header such as `(inputs 2, nodes 4)`", decl.name.span)
        cell = space.cells[decl.name.name] = CellDef(decl.name)
    for p in _unique(decl.params or (), lambda p: p.key.name, "cell parameter"):
        cell.params[p.key.name] = p
    seen: dict[str, object] = {}
    for stmt in decl.body or ():
        if isinstance(stmt, ast.EdgeOps):
            key = (stmt.edge.src.value, stmt.edge.dst.value)
            if ("edge", key) in seen:
                raise DSLError(f"duplicate candidates for edge {key[0]} -> {key[1]}", stmt.span,
                               notes=(f"first given at {seen[('edge', key)].span}",))
            seen[("edge", key)] = stmt
            cell.edge_ops[key] = stmt
            continue
        kind = _STMT_KIND[type(stmt)]
        if kind in seen:
            raise DSLError(f"duplicate `{kind}` statement in cell '{decl.name}'", stmt.span,
                           notes=(f"first given at {seen[kind].span}",))
        seen[kind] = stmt
        cell.stmts[kind] = stmt


def _unique(items, key, what):
    seen = {}
    for it in items:
        k = key(it)
        if k in seen:
            raise DSLError(f"duplicate {what} '{k}'", it.span,
                           notes=(f"first given at {seen[k].span}",))
        seen[k] = it
    return items


def _item_key(item):
    if isinstance(item, ast.CellDecl):
        return ("cell", item.name.name)
    return (type(item).__name__,)


def _describe(key) -> str:
    if key[0] == "cell":
        return f"cell '{key[1]}'"
    return {"OpsDecl": "`ops` declaration", "BnDecl": "`bn` block",
            "NetworkDecl": "`network` block"}.get(key[0], key[0])


def _find_parent(decl: ast.SpaceDecl, path: Path) -> Path:
    target = decl.extends.name
    if decl.extends_is_path:
        candidates = [path.parent / target]
    else:
        candidates = [path.parent / f"{target}.nas", SHIPPED_SPACES / f"{target}.nas"]
    for c in candidates:
        if c.is_file():
            return c
        if c.is_dir():
            raise DSLError(f"cannot extend '{target}': {c} is a folder, not a .nas file",
                           decl.extends.span)
    where = " or ".join(str(c) for c in candidates)
    raise DSLError(f"cannot find the space '{target}' to extend (looked for {where})",
                   decl.extends.span)


def _first_span(module: ast.Module):
    from .errors import Span
    if module.items:
        return module.items[0].span
    return Span(module.filename, 1, 1)
