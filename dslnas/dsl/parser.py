"""Text -> AST: a Lark LALR parser plus a Transformer that maps each rule to one AST class."""
from __future__ import annotations

import functools
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, v_args

from . import ast
from .errors import DSLError, Span

GRAMMAR_PATH = Path(__file__).resolve().parents[2] / "grammars" / "nas.lark"

# How terminals are named in "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name", "INT": "an integer", "SCALED": "a scaled name such as 2C", "STRING": "a quoted path", "_NL": "end of statement",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "COMMA": "','", "EQUAL": "'='", "PLUS": "'+'", "MINUS": "'-'", "STAR": "'*'",
    "__ANON_0": "'->'", "$END": "end of file",
}


class _Newlines:
    """Post-lexer: statement separators only where they can separate statements.

    Drops newlines inside (...) and [...], right after '{', at the start of the file and after
    another newline, so the grammar needs one ``_NL`` between statements (and allows one before
    '}' and at the end). It never looks ahead, which keeps Lark's contextual lexer exact.
    """

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        previous = None
        for tok in stream:
            if tok.type == "_NL":
                if depth or previous in (None, "LBRACE", "_NL"):
                    continue
            elif tok.type in ("LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            previous = tok.type
            yield tok


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(), parser="lalr", postlex=_Newlines(),
                propagate_positions=True, maybe_placeholders=True)


def _span(filename: str, meta_or_tok) -> Span:
    if isinstance(meta_or_tok, Token):
        return Span(filename, meta_or_tok.line, meta_or_tok.column,
                    meta_or_tok.end_line, meta_or_tok.end_column)
    return Span(filename, meta_or_tok.line, meta_or_tok.column,
                meta_or_tok.end_line, meta_or_tok.end_column)


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, filename: str):
        super().__init__()
        self.f = filename

    def _s(self, meta):
        return _span(self.f, meta) if not getattr(meta, "empty", False) else None

    def _ident(self, tok: Token) -> ast.Ident:
        return ast.Ident(str(tok), span=_span(self.f, tok))

    def _int(self, tok: Token) -> ast.Int:
        if len(tok) > 18:
            raise DSLError(f"number {tok[:12]}... is too large", _span(self.f, tok))
        return ast.Int(int(tok), span=_span(self.f, tok))

    # top level
    def start(self, meta, items):
        return tuple(i for i in items if i is not None)

    def space_decl(self, meta, c):
        name, ext = c
        if ext is None:
            return ast.SpaceDecl(self._ident(name), span=self._s(meta))
        is_path = ext.type == "STRING"
        text = str(ext)[1:-1] if is_path else str(ext)
        return ast.SpaceDecl(self._ident(name), ast.Ident(text, span=_span(self.f, ext)), is_path,
                             span=self._s(meta))

    def ops_decl(self, meta, c):
        return ast.OpsDecl(c[0], span=self._s(meta))

    def op_list(self, meta, c):
        return tuple(self._ident(t) for t in c if t is not None)

    def bn_decl(self, meta, c):
        return ast.BnDecl(tuple(s for s in c if s is not None), span=self._s(meta))

    def setting(self, meta, c):
        key, val = c
        value = self._int(val) if val.type == "INT" else self._ident(val)
        return ast.Setting(self._ident(key), value, span=self._s(meta))

    # cells
    def cell_decl(self, meta, c):
        name, params, body = c
        return ast.CellDecl(self._ident(name), params, body, span=self._s(meta))

    def cell_params(self, meta, c):
        return tuple(p for p in c if p is not None)

    def cell_param(self, meta, c):
        key, val = c
        return ast.CellParam(self._ident(key), None if val is None else self._int(val),
                             span=self._s(meta))

    def cell_body(self, meta, c):
        return tuple(s for s in c if s is not None)

    def edges_dense(self, meta, c):
        return ast.EdgesDense(span=self._s(meta))

    def edges_list(self, meta, c):
        return ast.EdgesList(tuple(e for e in c if e is not None), span=self._s(meta))

    def edge_ref(self, meta, c):
        return ast.EdgeRef(self._int(c[0]), self._int(c[1]), span=self._s(meta))

    def edge_ops(self, meta, c):
        src, dst, ops = c
        ref = ast.EdgeRef(self._int(src), self._int(dst),
                          span=Span(self.f, src.line, src.column, dst.end_line, dst.end_column))
        return ast.EdgeOps(ref, ops, span=self._s(meta))

    def output(self, meta, c):
        return ast.Output(self._ident(c[0]), span=self._s(meta))

    def combine(self, meta, c):
        return ast.Combine(self._ident(c[0]), span=self._s(meta))

    def derive(self, meta, c):
        rule, k = c
        return ast.Derive(self._ident(rule), None if k is None else self._int(k), span=self._s(meta))

    def share(self, meta, c):
        return ast.Share(self._ident(c[0]), span=self._s(meta))

    # network
    def network_decl(self, meta, c):
        params, blocks = c
        return ast.NetworkDecl(params or (), blocks, span=self._s(meta))

    def net_params(self, meta, c):
        return tuple(p for p in c if p is not None)

    def param(self, meta, c):
        return ast.Param(self._ident(c[0]), c[1], span=self._s(meta))

    def block_body(self, meta, c):
        return tuple(b for b in c if b is not None)

    def stem(self, meta, c):
        return ast.Stem(c[0], span=self._s(meta))

    def repeat(self, meta, c):
        count, body = c
        if isinstance(body, tuple):
            return ast.Repeat(count, body, braced=True, span=self._s(meta))
        return ast.Repeat(count, (body,), span=self._s(meta))

    def call(self, meta, c):
        name, *rest = c
        args = tuple(a for a in rest if a is not None and not isinstance(a, ast.Param))
        kwargs = tuple(a for a in rest if isinstance(a, ast.Param))
        return ast.Call(self._ident(name), args, kwargs, span=self._s(meta))

    def head(self, meta, c):
        return ast.Head(tuple(self._ident(t) for t in c), span=self._s(meta))

    # expressions
    def int(self, meta, c):
        return self._int(c[0])

    def var(self, meta, c):
        return ast.Var(str(c[0]), span=_span(self.f, c[0]))

    def scaled(self, meta, c):
        tok = c[0]
        digits = len(tok) - len(str(tok).lstrip("0123456789"))
        span = _span(self.f, tok)
        return ast.BinOp("*", self._int(Token("INT", tok[:digits], line=tok.line, column=tok.column,
                                              end_line=tok.line, end_column=tok.column + digits)),
                         ast.Var(str(tok[digits:]), span=span), span=span)

    def _bin(op):
        def rule(self, meta, c):
            return ast.BinOp(op, c[0], c[1], span=self._s(meta))
        return rule

    add, sub, mul, floordiv = _bin("+"), _bin("-"), _bin("*"), _bin("//")


def _end_of(text: str, filename: str) -> Span:
    """Just after the last character of the file (ignoring a final newline)."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return Span(filename, len(lines), len(lines[-1]) + 1)


def parse(text: str, filename: str = "<string>") -> ast.Module:
    """Parse .nas source text into an :class:`ast.Module`; every failure is a :class:`DSLError`."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedCharacters as e:
        raise DSLError(f"unexpected character {text[e.pos_in_stream]!r}",
                       Span(filename, e.line, e.column), text) from None
    except lark.exceptions.UnexpectedToken as e:
        raise _unexpected_token(e, filename, text) from None
    except lark.exceptions.UnexpectedEOF as e:
        raise DSLError(f"unexpected end of file; expected {_expected(e.expected)}",
                       _end_of(text, filename), text) from None
    except RecursionError:
        raise DSLError("the file nests too deeply to parse", None, text) from None
    try:
        items = _ToAst(filename).transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, DSLError):
            raise e.orig_exc.with_source(text) from None
        raise
    except RecursionError:
        raise DSLError("an expression is too long to compile (split it with parameters)",
                       None, text) from None
    return ast.Module(items, filename=filename)


def _unexpected_token(e, filename: str, text: str) -> DSLError:
    tok = e.token
    if tok.type == "$END":
        span = _end_of(text, filename)
        what = "end of file"
    elif tok.type == "_NL":
        # Point at the end of the statement, not at the start of the next line.
        span = Span(filename, tok.line, tok.column)
        what = "end of statement"
    else:
        span = Span(filename, tok.line, tok.column, tok.end_line, tok.end_column)
        what = repr(str(tok))
    expected = set(e.expected)
    if "_NL" in expected and e.interactive_parser is not None:
        # Lark lists always-accepted terminals as expected; keep "end of statement" only if true.
        if "_NL" not in e.interactive_parser.accepts():
            expected.discard("_NL")
    return DSLError(f"unexpected {what}; expected {_expected(expected)}", span, text)


def _expected(terminals) -> str:
    words = []
    for t in sorted(terminals):
        if t in _TERMINAL_WORDS:
            w = _TERMINAL_WORDS[t]
        else:
            try:
                pattern = _parser().get_terminal(t).pattern
                w = f"'{pattern.value}'" if pattern.type == "str" else t.lower()
            except KeyError:
                w = t.lower()
        if w not in words:
            words.append(w)
    if not words:
        return "something else"
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def parse_file(path: str | Path) -> ast.Module:
    """Read and parse a file; a missing file or one that is not text is a :class:`DSLError` too."""
    p = Path(path)
    return parse(read_source(p), str(p))


def read_source(path: str | Path) -> str:
    """The text of a .nas file, exactly as stored (no newline translation)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DSLError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise DSLError(f"{p}: is a directory, not a .nas file") from None
    except OSError as e:
        raise DSLError(f"{p}: cannot read file ({e.strerror})") from None
    if b"\x00" in data:
        raise DSLError(f"{p}: is not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DSLError(f"{p}: is not UTF-8 text (bad byte at offset {e.start})") from None
    return text
