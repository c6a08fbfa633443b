"""Graphviz drawings of genotypes (and of any DOT source, e.g. the IR's supernet cells).

The suffix of the target path picks the format: ``.svg``, ``.png``, ``.pdf``, or ``.dot``/``.gv``
(the DOT text itself, which never needs graphviz's ``dot`` program). When ``dot`` is missing, an
image request still writes the ``.dot`` beside the target and raises ``RenderError`` saying how to
install graphviz.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .dot import document, quote
from .genotype import NONE_OP, CellGenotype, Genotype

__all__ = ["RenderError", "genotype_dot", "render_genotype", "render_dot", "IMAGE_FORMATS"]

IMAGE_FORMATS = ("svg", "png", "pdf")
DOT_SUFFIXES = (".dot", ".gv")

INSTALL_HINT = ("install graphviz so that the `dot` program is on PATH: "
                "`apt-get install graphviz` (Debian/Ubuntu), `brew install graphviz` (macOS) "
                "or `conda install -c conda-forge graphviz`")


class RenderError(RuntimeError):
    """Rendering failed. ``dot_path`` is the DOT file written instead, if any."""

    def __init__(self, message: str, dot_path: Path | None = None):
        super().__init__(message)
        self.dot_path = dot_path


# ---- DOT source ---------------------------------------------------------------------



def _input_label(i: int, n_inputs: int) -> str:
    if n_inputs == 1:
        return "input"
    if n_inputs == 2:
        return ("c_{k-2}", "c_{k-1}")[i]
    return f"input {i}"


def _cell_lines(cg: CellGenotype, prefix: str) -> list[str]:
    nodes = cg.nodes
    n_inputs = min(nodes) if nodes else 0       # nodes below the first computed one are inputs
    sources = {s for _, s, _ in cg.edges}
    lines = [f'{prefix}n{i} [label={quote(_input_label(i, n_inputs))}, fillcolor="#f6e3c4"];'
             for i in range(n_inputs)]
    # sources that are neither inputs nor computed (malformed genotypes) still get drawn
    extra = sorted(sources - set(range(n_inputs)) - set(nodes))
    lines += [f'{prefix}n{n} [label="{n}"];' for n in list(nodes) + extra]
    out_label = "output" if len(cg.concat) <= 1 else "output (concat)"
    lines.append(f'{prefix}out [label={quote(out_label)}, fillcolor="#d5ecd0"];')
    for op, src, dst in cg.edges:
        style = ', style=dashed, color="#999999", fontcolor="#777777"' if op == NONE_OP else ""
        lines.append(f"{prefix}n{src} -> {prefix}n{dst} [label={quote(op)}{style}];")
    lines += [f"{prefix}n{n} -> {prefix}out [style=dotted];" for n in cg.concat]
    return lines


def genotype_dot(genotype: Genotype) -> str:
    """DOT source with one cluster per cell: inputs, computed nodes, output; edges labelled by op."""
    return document(genotype.space,
                    [(cg.cell, _cell_lines(cg, f"{_safe(cg.cell)}_")) for cg in genotype.cells])


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "cell"


# ---- writing ----------------------------------------------------------------------

def render_genotype(genotype: Genotype, path: str | Path) -> Path:
    """Draw every cell of ``genotype`` to ``path`` (.svg, .png, .pdf or .dot)."""
    return render_dot(genotype_dot(genotype), path)


def render_dot(dot_source: str, path: str | Path) -> Path:
    """Write ``dot_source`` to ``path`` in the format its suffix names; return ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in DOT_SUFFIXES:
        write_file(path, dot_source)
        return path
    fmt = suffix.lstrip(".")
    if fmt not in IMAGE_FORMATS:
        raise RenderError(f"cannot render to {path.name!r}: unknown format {suffix or '(none)'!r} "
                          f"(use .svg, .png, .pdf or .dot)")
    import graphviz

    if shutil.which("dot") is None:
        raise _missing_dot(dot_source, path)
    try:
        data = graphviz.Source(dot_source).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise _missing_dot(dot_source, path) from None
    except graphviz.CalledProcessError as e:
        stderr = e.stderr.decode(errors="replace").strip() if isinstance(e.stderr, bytes) \
            else str(e.stderr or "").strip()
        raise RenderError(f"graphviz `dot` failed on {path.name}: {stderr or e}") from None
    write_file(path, data)
    return path


def _missing_dot(dot_source: str, path: Path) -> RenderError:
    dot_path = path.with_suffix(".dot")
    write_file(dot_path, dot_source)
    return RenderError(f"cannot render {path}: the graphviz `dot` program was not found; "
                       f"wrote the DOT source to {dot_path} instead. To get images, "
                       f"{INSTALL_HINT}, then run `dot -T{path.suffix.lstrip('.').lower()} "
                       f"{dot_path} -o {path}`.", dot_path=dot_path)


def write_file(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path``, making its folders; RenderError says what is in the way."""
    try:    # even looking for the blocker may fail: a parent folder we may not enter
        blocker = next((p for p in path.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise RenderError(f"cannot write {path}: {blocker} is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
    except OSError as e:
        raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
