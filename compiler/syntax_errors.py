"""Syntax errors in words: what the parser met, what it expected, and hints.

Kept apart from ``parser.py`` (and free of lark imports) so that file stays small; the
parser passes its tokens in, which only need ``type``, ``value``, ``line``, ``column``
and ``start_pos``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tritondsl.compiler import nodes as n

Token = Any  # a lark Token; typed loosely so this module need not import lark

_EXPR_START = {
    "NAME",
    "INT",
    "FLOAT",
    "STRING",
    "LPAR",
    "LSQB",
    "TRUE",
    "FALSE",
    "ADD_OP",
    "NOT",
    "SEQUENTIAL",
}
_OPERATORS = {"COMP_OP", "ADD_OP", "MUL_OP", "POW", "LPAR", "LSQB", "DOT", "IF", "AND", "OR"}
_WORDS = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "_NL": "a new line",
    "$END": "the end of the file",
    "COMP_OP": "a comparison operator",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "an operator such as '*'",
}
DEF_KEYWORDS = {"BLOCK", "MODEL", "LAYER"}
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?")


def unclosed_help(open_brackets: list[Token], misplaced: Token | None) -> str | None:
    """Help naming the bracket that is never closed, using indentation to pick the '{'."""
    if not open_brackets:
        return None
    tok = open_brackets[-1]
    if tok.type == "LBRACE" and misplaced is not None:
        where = f"line {misplaced.line}, column {misplaced.column}"
        return f"the '{{' opened at {where} seems never closed (judging by indentation)"
    return f"the '{tok.value}' opened at line {tok.line}, column {tok.column} is never closed"


def malformed_number(source: str, token: Token) -> tuple[str, n.Span] | None:
    """The text and span of a bad number such as ``0.1.5`` or ``3x`` at/before ``token``."""
    pos = token.start_pos or 0
    start, end = pos, pos
    while start > 0 and source[start - 1] in _WORD_CHARS:
        start -= 1
    while end < len(source) and source[end] in _WORD_CHARS:
        end += 1
    text = source[start:end]
    if start == pos or not re.match(r"\.?[0-9]", text) or _NUMBER.fullmatch(text):
        return None
    column = (token.column or 1) - (pos - start)
    line = token.line or 1
    return text, n.Span(line, column, line, column + len(text))


def end_position(source: str) -> tuple[int, int]:
    """Line and column just past the last character."""
    lines = source.split("\n")
    return len(lines), len(lines[-1]) + 1


def token_words(token: Token) -> str:
    """``name 'x'``, ``number 3``, ``keyword 'if'``, ``'('``..."""
    if token.type == "_NL":
        return "end of line"
    if token.type == "NAME":
        return f"name '{token.value}'"
    if token.type in ("INT", "FLOAT"):
        return f"number {token.value}"
    if token.type == "STRING":
        return "string"
    if token.value.isalpha():
        return f"keyword '{token.value}'"
    return f"'{token.value}'"


def expected_words(expected: set[str], pattern_of: Callable[[str], str | None]) -> str:
    """``an expression, ')' or ','`` for a set of terminal names."""
    words: list[str] = []
    if "NAME" in expected and "INT" in expected:
        words.append("an expression")
        expected = expected - _EXPR_START
    elif len(expected & _OPERATORS) >= 3:
        words.append("an operator")
        expected = expected - _OPERATORS
    for name in sorted(expected):
        if name in _WORDS:
            words.append(_WORDS[name])
            continue
        words.append(f"'{pattern_of(name) or name.lower()}'")
    words = sorted(set(words), key=lambda w: (w.startswith("'"), w))
    if not words:
        return "something else"
    if len(words) > 6:
        words = [*words[:6], "..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
