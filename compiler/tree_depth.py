"""The syntax-tree depth limit, enforced while the tree is built.

Later passes recurse over the tree, so a tree deeper than ``MAX_DEPTH`` is refused. The
parser builds trees bottom up, so each node knows its height the moment it is made: a
too-tall node stops the parse there, long before the end of a hostile file (checking
the finished tree instead took the whole 128 KiB parse, ~2 s, on every such file).
"""

from __future__ import annotations

from typing import Any

from lark import Token, Tree

from tritondsl.compiler import nodes as n

MAX_DEPTH = 100  # deepest syntax tree accepted; real programs stay under 30
_STATEMENTS = ("body", "if_stmt", "elif_clause", "for_stmt", "seq_body")


class TooDeep(Exception):
    """A node taller than ``MAX_DEPTH``: its words, location and advice."""

    def __init__(self, data: str, children: list[Any]) -> None:
        super().__init__(f"nesting is too deep (more than {MAX_DEPTH} levels)")
        self.message = str(self)
        self.span = _children_span(children)
        self.help = (
            "move inner statements into a block of their own"
            if data in _STATEMENTS
            else "split the expression with 'let' bindings"
        )


class HeightTree(Tree):
    """A lark ``Tree`` that knows its height and refuses to be taller than the limit."""

    __slots__ = ("height",)

    def __init__(self, data: str, children: list[Any], meta: Any = None) -> None:
        # Tree.__init__'s three assignments, inline: this runs for every node of the parse.
        self.data, self.children, self._meta = data, children, meta
        height = 0
        for child in children:
            if type(child) is HeightTree and child.height > height:
                height = child.height
        if height >= MAX_DEPTH:
            raise TooDeep(str(data), children)
        self.height = height + 1


def _children_span(children: list[Any]) -> n.Span | None:
    """From the start of the first located child to the end of the last one."""
    spans = [s for s in map(_located, children) if s is not None]
    if not spans:
        return None
    return n.Span(spans[0].line, spans[0].column, spans[-1].end_line, spans[-1].end_column)


def _located(child: Any) -> n.Span | None:
    if isinstance(child, Token) and child.line is not None:
        return n.Span(child.line, child.column, child.end_line, child.end_column)
    meta = getattr(child, "meta", None) if isinstance(child, Tree) else None
    if meta is None or meta.empty:
        return None
    return n.Span(meta.line, meta.column, meta.end_line, meta.end_column)
