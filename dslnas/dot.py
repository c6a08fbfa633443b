"""Tiny DOT-writing helpers shared by the IR export (supernet cells) and genotype rendering."""
from __future__ import annotations

STYLE = ('rankdir=LR;',
         'node [shape=box, style="rounded,filled", fillcolor="#dbe9f6", fontname="Helvetica"];',
         'edge [fontname="Helvetica", fontsize=10];')


def quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def document(name: str, clusters: list[tuple[str, list[str]]]) -> str:
    """A digraph with one labelled cluster per (label, statements) pair."""
    parts = ["  " + line for line in STYLE]
    for label, lines in clusters:
        parts.append(f"  subgraph {quote('cluster_' + label)} {{")
        parts.append(f"    label={quote(label)};")
        parts += ["    " + line for line in lines]
        parts.append("  }")
    body = "\n".join(parts)
    return f"digraph {quote(name)} {{\n{body}\n}}\n"
