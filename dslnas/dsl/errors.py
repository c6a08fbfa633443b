"""Errors a user can make in a .nas file, reported as ``file:line:col: message`` plus a caret."""
from __future__ import annotations

import attrs


@attrs.frozen
class Span:
    """A position in a source file (1-based line and column)."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class DSLError(Exception):
    """The one error type of the language front end: always carries a message, usually a span."""

    def __init__(self, message: str, span: Span | None = None, source: str | None = None,
                 notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.notes = notes

    def with_source(self, source: str) -> "DSLError":
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        """``file:line:col: error: message``, then the offending line and a caret under the column."""
        if self.span is None:
            lines = [f"error: {self.message}"]
        else:
            lines = [f"{self.span}: error: {self.message}"]
            text = _source_line(self.source, self.span.line)
            if text is not None:
                width = 1
                if self.span.end_line == self.span.line and self.span.end_col:
                    width = max(1, self.span.end_col - self.span.col)
                lines.append(f"    {text}")
                lines.append("    " + _caret_indent(text, self.span.col) + "^" + "~" * (width - 1))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def _source_line(source: str | None, line: int) -> str | None:
    if source is None:
        return None
    lines = source.split("\n")   # Lark counts lines by "\n" only
    if 1 <= line <= len(lines):
        return lines[line - 1].rstrip("\r")
    return None


def _caret_indent(text: str, col: int) -> str:
    # Keep tabs so the caret lines up with the source however the terminal renders them.
    prefix = text[: max(0, col - 1)]
    return "".join("\t" if ch == "\t" else " " for ch in prefix)
