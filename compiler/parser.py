"""Text -> AST: the Lark LALR parser, friendly syntax errors, and input limits.

Lark is used only here (and in ``tree_depth``, the tree class it builds): its trees
become ``nodes`` dataclasses with ``Span``s at once. Syntax errors are reported in words
(not token names), one per top-level definition, so a file with several broken
definitions shows all of them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from tritondsl.compiler import nodes as n
from tritondsl.compiler.arith import MAX_INT_BITS
from tritondsl.compiler.diagnostics import CompileError, Diagnostic, Reporter, TooManyErrors
from tritondsl.compiler.syntax_errors import (
    DEF_KEYWORDS,
    end_position,
    expected_words,
    malformed_number,
    token_words,
    unclosed_help,
)
from tritondsl.compiler.tree_depth import HeightTree, TooDeep

# The largest input is checked in under 2 s on 2 cores (benchmarks/bench_check_limits.py;
# lark's LALR parser is the bound) and is 33x the largest zoo model.
MAX_SOURCE_BYTES = 128 * 1024
SOURCE_LIMIT = f"{MAX_SOURCE_BYTES // 1024} KiB"

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
# A definition: its keyword at the start of a line, then its name (`block = ...` is a member).
_DEF_START = re.compile(r"^(block|model|layer)[ \t]+[A-Za-z_]", re.MULTILINE)
# What may hide a brace from counting: strings and comments (same patterns as tdsl.lark).
_BRACES = re.compile(r'"([^"\\\n]|\\.)*"|\'([^\'\\\n]|\\.)*\'|#[^\n]*|/\*[\s\S]*?\*/|[{}]')


class _NewlineFilter:
    """Postlexer: drops newlines inside () and [] so argument lists may span lines."""

    always_accept = ("_NL",)

    def __init__(self) -> None:
        self.open: list[Token] = []
        self.misplaced: Token | None = None  # first '{' whose '}' is indented differently
        self.last: Token | None = None  # the last token yielded
        self.previous: Token | None = None  # the one before it

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        """Filter the token stream, tracking open brackets for error messages."""
        self.open, self.misplaced, self.last, self.previous = [], None, None, None
        indent: dict[int, int] = {}  # line -> column of its first token
        for tok in stream:
            indent.setdefault(tok.line or 0, tok.column or 0)
            if tok.type in _OPENERS:
                self.open.append(tok)
            elif tok.type in _CLOSERS and self.open and self.open[-1].type == _CLOSERS[tok.type]:
                opener = self.open.pop()
                # A '}' alone on its line that lines up with another line than its '{' hints
                # that an inner '{' was never closed (reported if the file ends unbalanced).
                own_line = indent.get(tok.line or 0) == tok.column
                lined_up = indent.get(opener.line or 0) == tok.column
                if tok.type == "RBRACE" and own_line and not lined_up and not self.misplaced:
                    self.misplaced = opener
            elif tok.type == "_NL" and self.open and self.open[-1].type != "LBRACE":
                continue
            self.previous, self.last = self.last, tok
            yield tok

    def before(self, token: Token) -> Token | None:
        """The token the parser read just before ``token``."""
        # The contextual lexer raises on a token no rule of the state accepts before it
        # reaches this filter; then the token before it is the last one yielded.
        return self.previous if token is self.last else self.last


@cache
def _lark() -> tuple[Lark, _NewlineFilter]:
    postlex = _NewlineFilter()
    lark = Lark.open(
        "tdsl.lark",
        rel_to=__file__,
        parser="lalr",
        tree_class=HeightTree,
        propagate_positions=True,
        maybe_placeholders=True,
        postlex=postlex,
    )
    return lark, postlex


def parse(source: str, path: str = "<input>") -> n.Program:
    """Parse .tdsl text into a ``Program``; raise ``CompileError`` listing every syntax error."""
    reporter = Reporter()
    if len(source.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        size = len(source.encode("utf-8", "surrogatepass")) / 1024
        reporter.error(
            f"file is too large ({size:,.0f} KiB); the limit is {SOURCE_LIMIT}",
            None,
        )
        raise CompileError(reporter.diagnostics, path, source)
    try:
        tree = _parse_tree(source, reporter)
        if reporter.has_errors or tree is None:
            raise CompileError(reporter.diagnostics, path, source)
        program = n.Program(tuple(_AstBuilder(reporter).transform(tree)), path)
    except TooManyErrors as stop:
        raise CompileError([*reporter.diagnostics, stop.diagnostic], path, source) from None
    except VisitError as error:  # the AST builder reached the error limit
        if not isinstance(error.orig_exc, TooManyErrors):
            raise
        diagnostics = [*reporter.diagnostics, error.orig_exc.diagnostic]
        raise CompileError(diagnostics, path, source) from None
    if reporter.has_errors:
        raise CompileError(reporter.diagnostics, path, source)
    return program


def decode(data: bytes, path: str = "<input>") -> str:
    """Decode file bytes as UTF-8, or raise ``CompileError`` locating the first bad byte."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # editors may write a BOM
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        # Columns count characters, as everywhere else; the bad byte shows as U+FFFD.
        column = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        span = n.Span(line, column, line, column + 1)
        diag = Diagnostic(f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})", span)
        raise CompileError([diag], path, data.decode("utf-8", "replace")) from None


def _parse_tree(source: str, reporter: Reporter) -> Tree | None:
    """Parse, and after a syntax error resume at the next top-level definition."""
    lark, postlex = _lark()
    text, tree = source, None
    starts: list[tuple[int, int]] | None = None  # (line, offset) of every definition
    done = -1  # index in starts of the last resume point: each retry starts further on
    while True:
        try:
            result = lark.parse(text)
        except TooDeep as deep:
            reporter.error(deep.message, deep.span, deep.help)
            return None
        except UnexpectedInput as exc:
            # Each retry reports one error and the reporter stops at its limit, so this
            # loop runs at most MAX_ERRORS times, each parse ending at its first error.
            reporter.error(*_describe(exc, source, postlex))
            starts = _definition_starts(source) if starts is None else starts
            line = max(getattr(exc, "line", -1), 1)
            index = max(bisect.bisect_right(starts, (line, len(source))), done + 1)
            done = index
            if index == len(starts):
                return None
            resume_line, resume = starts[index]
            text = "\n" * (resume_line - 1) + source[resume:]  # keeps line numbers
            continue
        return tree if reporter.has_errors else result


def _definition_starts(source: str) -> list[tuple[int, int]]:
    """(line, offset) of each line that starts a definition, in one pass over ``source``."""
    starts, line, counted = [], 1, 0
    for match in _DEF_START.finditer(source):
        line += source.count("\n", counted, match.start())
        counted = match.start()
        starts.append((line, match.start()))
    return starts


def _describe(exc: UnexpectedInput, source: str, tokens: _NewlineFilter) -> tuple:
    """Turn a lark error into (message, span, help) in words."""
    open_brackets, misplaced = tokens.open, tokens.misplaced
    if isinstance(exc, UnexpectedCharacters):
        span = n.Span(exc.line, exc.column, exc.line, exc.column + 1)
        rest = source[exc.pos_in_stream : exc.pos_in_stream + 2]
        if rest == "/*":
            return "unterminated block comment", span, "close it with '*/'"
        if rest[:1] in "\"'":
            return "unterminated string", span, f"close it with {rest[:1]} on the same line"
        char = rest[:1]
        shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
        return f"unexpected character {shown}", span, None
    token: Token | None = getattr(exc, "token", None)
    expected = set(getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ())
    if open_brackets and open_brackets[-1].type != "LBRACE":
        expected.discard("_NL")  # newlines are dropped inside () and []
    unclosed = unclosed_help(open_brackets, misplaced)
    if isinstance(exc, UnexpectedEOF) or token is None or token.type == "$END":
        line, column = end_position(source)
        span = n.Span(line, column, line, column + 1)
        if open_brackets:
            closer = {"(": ")", "[": "]", "{": "}"}[open_brackets[-1].value]
            return f"unexpected end of file; expected '{closer}'", span, unclosed
        return f"unexpected end of file; expected {_expected(expected)}", span, None
    assert isinstance(exc, UnexpectedToken)
    span = n.Span(
        token.line or 1,
        token.column or 1,
        token.end_line or token.line or 1,
        token.end_column or (token.column or 1) + 1,
    )
    if token.value == "/" and source[token.start_pos : token.start_pos + 2] == "/*":
        return "unterminated block comment", span, "close it with '*/'"
    number = malformed_number(source, token)
    if number is not None:
        return f"malformed number '{number[0]}'", number[1], None
    inner = open_brackets[-1] if open_brackets else None
    if token.type in _CLOSERS and (inner is None or inner.type != _CLOSERS[token.type]):
        # A '}' while a '(' or '[' is open falls through: the help below names that bracket.
        if inner is not None and inner.type != "LBRACE" and token.type != "RBRACE":
            where = f"line {inner.line}, column {inner.column}"
            return (
                f"'{token.value}' does not match the '{inner.value}' opened at {where}",
                span,
                None,
            )
        if inner is None or inner.type == "LBRACE":
            return f"unmatched '{token.value}'", span, "remove it, or add the bracket it closes"
    previous = tokens.before(token)
    if token.type == "NAME" and previous is not None and previous.type in DEF_KEYWORDS:
        # `model Net(` at the start of a statement: a definition, where a member named
        # `model` could also have been assigned. Report the keyword, as for `let` below.
        token, span = previous, _tok_span(previous)
    if token.type in DEF_KEYWORDS and inner is not None:
        message = f"unexpected keyword '{token.value}' inside a definition; expected '}}'"
        if _braces_balance(source):
            return message, span, "definitions cannot be nested; move it to the top level"
        return message, span, unclosed
    if expected >= DEF_KEYWORDS and inner is None:
        message = f"unexpected {token_words(token)}; expected 'block', 'model' or 'layer'"
        return message, span, "only definitions may appear at the top level of a file"
    help_text = None
    if (
        inner is not None
        and inner.type != "LBRACE"
        and ((token.line or 0) > (inner.line or 0) or token.type == "RBRACE")
    ):
        help_text = (
            f"the '{inner.value}' opened at line {inner.line}, column {inner.column} is not closed"
        )
    elif token.type == "EQUAL" and expected & {"RPAR", "COMP_OP"}:
        help_text = "comparisons use '=='"
        if inner is not None and inner.type == "LPAR":
            help_text = "keyword arguments are written name=value; comparisons use '=='"
    elif token.type != "_NL" and "_NL" in expected:
        help_text = "put each statement on its own line (or separate them with ';')"
    elif token.type == "_NL" and expected == {"LBRACE"}:
        help_text = "put the '{' on the same line"
    message = f"unexpected {token_words(token)}; expected {_expected(expected)}"
    return message, span, help_text


def _braces_balance(source: str) -> bool:
    """Whether every '{' of the file is closed somewhere (strings and comments skipped)."""
    depth = 0
    for match in _BRACES.finditer(source):
        depth += {"{": 1, "}": -1}.get(match.group(), 0)
    return depth == 0


def _expected(expected: set[str]) -> str:
    return expected_words(expected, _terminal_pattern)


def _terminal_pattern(name: str) -> str | None:
    try:
        return str(_lark()[0].get_terminal(name).pattern.value)
    except KeyError:
        return None


def _span(meta: Any) -> n.Span:
    if getattr(meta, "empty", True):
        return n.Span(1, 1, 1, 1)
    return n.Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(tok: Token) -> n.Span:
    return n.Span(tok.line or 1, tok.column or 1, tok.end_line or 1, tok.end_column or 1)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


@v_args(meta=True)
class _AstBuilder(Transformer):
    """Lark tree -> ``nodes``; rule names match the grammar's aliases."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(visit_tokens=False)
        self.reporter = reporter

    def __default__(self, data: str, children: list, meta: Any) -> Any:
        raise AssertionError(f"grammar rule {data!r} has no AST builder")

    # --- definitions
    def start(self, meta: Any, children: list) -> list[n.Definition]:
        return children

    def _definition(self, kind: str, meta: Any, children: list) -> n.Definition:
        name, params, rest = children[0], children[1], children[2]
        if isinstance(rest, list):
            body, alias = tuple(rest), None
        else:
            body, alias = (), rest
        return n.Definition(kind, str(name), params, body, alias, _span(meta), _tok_span(name))

    def block_def(self, meta: Any, children: list) -> n.Definition:
        return self._definition("block", meta, children)

    def model_def(self, meta: Any, children: list) -> n.Definition:
        return self._definition("model", meta, children)

    def layer_def(self, meta: Any, children: list) -> n.Definition:
        return self._definition("layer", meta, children)

    def params(self, meta: Any, children: list) -> tuple[n.Param, ...]:
        return tuple(c for c in children if c is not None)

    def param(self, meta: Any, children: list) -> n.Param:
        name, type_, default = children
        return n.Param(str(name), type_, default, _span(meta))

    def type_expr(self, meta: Any, children: list) -> n.TypeExpr:
        name, *args = children
        items = tuple(a for a in args if a is not None)
        return n.TypeExpr(str(name), items if args and args[0] is not None else None, _span(meta))

    def body(self, meta: Any, children: list) -> list:
        return [c for c in children if c is not None]

    # --- statements
    def let_stmt(self, meta: Any, children: list) -> n.Let:
        name, type_, value = children
        return n.Let(str(name), type_, value, _span(meta))

    def assign(self, meta: Any, children: list) -> n.Assign:
        return n.Assign(str(children[0]), children[1], _span(meta))

    def expr_stmt(self, meta: Any, children: list) -> n.ExprStmt:
        return n.ExprStmt(children[0], _span(meta))

    def if_stmt(self, meta: Any, children: list) -> n.If:
        cond, body, *rest = children
        orelse = rest.pop() if rest else None
        branches = [(cond, tuple(body)), *rest]
        return n.If(tuple(branches), tuple(orelse) if orelse is not None else None, _span(meta))

    def elif_clause(self, meta: Any, children: list) -> tuple:
        return (children[0], tuple(children[1]))

    def for_stmt(self, meta: Any, children: list) -> n.For:
        *targets, iterable, body = children
        return n.For(tuple(str(t) for t in targets), iterable, tuple(body), _span(meta))

    def input_decl(self, meta: Any, children: list) -> n.InputDecl:
        return n.InputDecl(str(children[0]), children[1], _span(meta))

    def weights_decl(self, meta: Any, children: list) -> n.WeightsDecl:
        return n.WeightsDecl(children[0], _span(meta))

    def activations_decl(self, meta: Any, children: list) -> n.ActivationsDecl:
        return n.ActivationsDecl(children[0], _span(meta))

    def param_decl(self, meta: Any, children: list) -> n.ParamDecl:
        return n.ParamDecl(str(children[0]), children[1], children[2], _span(meta))

    def forward_def(self, meta: Any, children: list) -> n.Forward:
        *params, returns, body = children
        fparams = tuple(p for p in params if p is not None)
        return n.Forward(fparams, returns, tuple(body), _span(meta))

    def fparam(self, meta: Any, children: list) -> n.FwdParam:
        return n.FwdParam(str(children[0]), children[1], _span(meta))

    def return_stmt(self, meta: Any, children: list) -> n.Return:
        return n.Return(children[0], _span(meta))

    # --- expressions
    def cond_expr(self, meta: Any, children: list) -> n.Cond:
        then, cond, otherwise = children
        return n.Cond(cond, then, otherwise, _span(meta))

    def or_op(self, meta: Any, children: list) -> n.BoolOp:
        return n.BoolOp("or", children[0], children[1], _span(meta))

    def and_op(self, meta: Any, children: list) -> n.BoolOp:
        return n.BoolOp("and", children[0], children[1], _span(meta))

    def not_op(self, meta: Any, children: list) -> n.Not:
        return n.Not(children[0], _span(meta))

    def compare(self, meta: Any, children: list) -> n.Compare:
        return n.Compare(str(children[1]), children[0], children[2], _span(meta))

    def binary(self, meta: Any, children: list) -> n.Binary:
        return n.Binary(str(children[1]), children[0], children[2], _span(meta))

    def power_op(self, meta: Any, children: list) -> n.Binary:
        return n.Binary("**", children[0], children[2], _span(meta))

    def unary(self, meta: Any, children: list) -> n.Unary:
        return n.Unary(str(children[0]), children[1], _span(meta))

    def call(self, meta: Any, children: list) -> n.Call:
        func, *args = children
        positional: list[n.Expr] = []
        keywords: list[n.Keyword] = []
        for arg in args:
            if arg is None:
                continue
            if isinstance(arg, n.Keyword):
                keywords.append(arg)
            elif keywords:
                self.reporter.error("positional argument after a keyword argument", arg.span)
            else:
                positional.append(arg)
        return n.Call(func, tuple(positional), tuple(keywords), _span(meta))

    def arg(self, meta: Any, children: list) -> n.Expr:
        return children[0]

    def kwarg(self, meta: Any, children: list) -> n.Keyword:
        return n.Keyword(str(children[0]), children[1], _span(meta))

    def index(self, meta: Any, children: list) -> n.Index:
        value, *items = children
        return n.Index(value, tuple(i for i in items if i is not None), _span(meta))

    def slice(self, meta: Any, children: list) -> n.Slice:
        start, stop, step = children
        return n.Slice(start, stop, step, _span(meta))

    def attribute(self, meta: Any, children: list) -> n.Attribute:
        return n.Attribute(children[0], str(children[1]), _span(meta))

    def int_lit(self, meta: Any, children: list) -> n.Num:
        digits = str(children[0]).lstrip("0") or "0"
        # 78 digits hold every 256-bit number; longer ones are refused before converting
        # (Python refuses to convert 4,300 digits or more).
        value = int(digits) if len(digits) <= 78 else 0
        if len(digits) > 78 or value.bit_length() > MAX_INT_BITS:
            self.reporter.error(
                f"number is too large (integers are limited to {MAX_INT_BITS} bits)", _span(meta)
            )
            value = 0
        return n.Num(value, _span(meta))

    def float_lit(self, meta: Any, children: list) -> n.Num:
        value = float(children[0])
        if value == float("inf"):
            self.reporter.error("number is too large", _span(meta))
        return n.Num(value, _span(meta))

    def string_lit(self, meta: Any, children: list) -> n.Str:
        raw = str(children[0])[1:-1]
        out, i = [], 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\":
                nxt = raw[i + 1]
                if nxt not in _ESCAPES:
                    self.reporter.error(
                        f"unknown escape sequence '\\{nxt}' in string",
                        _span(meta),
                        "known escapes: \\n \\t \\r \\\\ \\\" \\' \\0",
                    )
                out.append(_ESCAPES.get(nxt, nxt))
                i += 2
            else:
                out.append(ch)
                i += 1
        return n.Str("".join(out), _span(meta))

    def true_lit(self, meta: Any, children: list) -> n.Bool:
        return n.Bool(True, _span(meta))

    def false_lit(self, meta: Any, children: list) -> n.Bool:
        return n.Bool(False, _span(meta))

    def name(self, meta: Any, children: list) -> n.Name:
        return n.Name(str(children[0]), _span(meta))

    def tuple_lit(self, meta: Any, children: list) -> n.TupleLit:
        return n.TupleLit(tuple(c for c in children if c is not None), _span(meta))

    def list_lit(self, meta: Any, children: list) -> n.ListLit:
        return n.ListLit(tuple(c for c in children if c is not None), _span(meta))

    def seq_call(self, meta: Any, children: list) -> n.SeqExpr:
        items = [c for c in children if c is not None]
        return n.SeqExpr(tuple(n.ExprStmt(c, c.span) for c in items), _span(meta))

    def seq_body(self, meta: Any, children: list) -> n.SeqExpr:
        return n.SeqExpr(tuple(children[0]), _span(meta))
