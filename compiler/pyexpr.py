"""Print .tdsl expressions as Python source with the fewest parentheses that keep the meaning.

Names are translated by a callback (``self.conv1``, ``rt.FP32()``...); literals are
printed with ``repr``, so no text from a .tdsl file becomes code other than as the
construct it was parsed as.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from tritondsl.compiler import nodes as n

# Python precedence, loosest first.
COND, OR, AND, NOT, CMP, ADD, MUL, UNARY, POW, POSTFIX, ATOM = range(11)
_BINARY = {"+": ADD, "-": ADD, "*": MUL, "/": MUL, "//": MUL, "%": MUL, "@": MUL, "**": POW}


class CodegenError(Exception):
    """A construct the checker accepts but that has no Python form; carries a span."""

    def __init__(self, message: str, span: n.Span) -> None:
        super().__init__(message)
        self.message, self.span = message, span


class PyPrinter:
    """Turns expressions into Python text; subclasses decide names and calls."""

    def name(self, node: n.Name) -> str:
        """Python text for a name reference."""
        return node.id

    def call(self, node: n.Call) -> str:
        """Python text for a call (layers, blocks, built-ins)."""
        return self.plain_call(self.text(node.func, POSTFIX), node)

    def seq(self, node: n.SeqExpr) -> str:
        """Python text for a Sequential expression."""
        raise CodegenError("a Sequential is not allowed here", node.span)

    def annotated(self, node: n.Binary) -> str | None:
        """Python text for ``layer @ precision``, or None when ``@`` is a matmul."""
        return None

    # ------------------------------------------------------------
    def text(self, node: n.Expr, context: int = COND) -> str:
        """``node`` as Python, parenthesized if it binds looser than ``context``."""
        code, precedence = self.emit(node)
        return f"({code})" if precedence < context else code

    def emit(self, node: n.Expr) -> tuple[str, int]:
        """``node`` as Python with its precedence."""
        match node:
            case n.Num():
                return repr(node.value), ATOM
            case n.Str():
                return py_str(node.value), ATOM
            case n.Bool():
                return ("True" if node.value else "False"), ATOM
            case n.Name():
                return self.name(node), ATOM
            case n.TupleLit():
                items = ", ".join(self.text(i) for i in node.items)
                return f"({items}{',' if len(node.items) == 1 else ''})", ATOM
            case n.ListLit():
                return "[" + ", ".join(self.text(i) for i in node.items) + "]", ATOM
            case n.Unary():
                return node.op + self.text(node.operand, UNARY), UNARY
            case n.Binary():
                annotated = self.annotated(node) if node.op == "@" else None
                if annotated is not None:
                    return annotated, POSTFIX
                level = _BINARY[node.op]
                if node.op == "**":  # right-associative
                    return f"{self.text(node.left, POSTFIX)} ** {self.text(node.right, UNARY)}", POW
                return (
                    f"{self.text(node.left, level)} {node.op} {self.text(node.right, level + 1)}",
                    level,
                )
            case n.Compare():
                return f"{self.text(node.left, ADD)} {node.op} {self.text(node.right, ADD)}", CMP
            case n.BoolOp():
                level = OR if node.op == "or" else AND
                return (
                    f"{self.text(node.left, level)} {node.op} {self.text(node.right, level + 1)}",
                    level,
                )
            case n.Not():
                return f"not {self.text(node.operand, NOT)}", NOT
            case n.Cond():
                then = self.text(node.then, OR)
                return (
                    f"{then} if {self.text(node.cond, OR)} else {self.text(node.otherwise)}",
                    COND,
                )
            case n.Call():
                return self.call(node), POSTFIX
            case n.Index():
                index = ", ".join(self.subscript(i) for i in node.indices)
                return f"{self.text(node.value, POSTFIX)}[{index}]", POSTFIX
            case n.Attribute():
                return f"{self.text(node.value, POSTFIX)}.{node.name}", POSTFIX
            case n.SeqExpr():
                return self.seq(node), POSTFIX
        raise CodegenError(f"cannot generate code for {type(node).__name__}", node.span)

    def subscript(self, node: n.Expr | n.Slice) -> str:
        """One index item; a slice keeps its missing parts missing (``:c``, ``::2``)."""
        if not isinstance(node, n.Slice):
            return self.text(node)
        start, stop, step = ("" if p is None else self.text(p) for p in
                             (node.start, node.stop, node.step))
        return f"{start}:{stop}" + (f":{step}" if node.step is not None else "")

    def plain_call(
        self,
        func: str,
        node: n.Call,
        extra: tuple[str, ...] = (),
        rename: Callable[[str], str] = lambda k: k,
    ) -> str:
        """``func(args, k=v, *extra)``."""
        args = [self.text(a) for a in node.args]
        args += [f"{rename(kw.name)}={self.text(kw.value)}" for kw in node.kwargs]
        return f"{func}({', '.join([*args, *extra])})"


def py_str(value: str) -> str:
    """A double-quoted Python literal for ``value``; every quote and control character is
    escaped, so the text can only ever be data."""
    return json.dumps(value, ensure_ascii=False)


def wrap(line: str, width: int = 99, indent: str = "    ") -> list[str]:
    """Split an over-long line inside its last bracket pair: one continuation line if the
    arguments fit there, else one argument per line."""
    if len(line) <= width:
        return [line]
    tail = re.search(r"[)\]](\s*->\s*[\w.\[\], ]+)?[:,]?$", line)
    if tail is None:
        return [line]
    closer = tail.start()
    opener = _matching_open(line, closer)
    if opener is None or opener == closer - 1:
        return [line]
    parts = _split_top_level(line[opener + 1 : closer])
    lead = line[: len(line) - len(line.lstrip())]
    inner = ", ".join(part.strip() for part in parts)
    if len(lead) + len(indent) + len(inner) <= width:
        return [line[: opener + 1], f"{lead}{indent}{inner}", lead + line[closer:]]
    out = [line[: opener + 1]]
    if len(parts) == 1:
        return [*out, *wrap(f"{lead}{indent}{inner}", width, indent), lead + line[closer:]]
    for part in parts:
        out.extend(wrap(f"{lead}{indent}{part.strip()},", width, indent))
    out.append(lead + line[closer:])
    return out


def _matching_open(line: str, closer: int) -> int | None:
    depth, quote = 0, ""
    for i in range(closer, -1, -1):
        ch = line[i]
        if quote:
            if ch == quote and (i == 0 or line[i - 1] != "\\"):
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in ")]}":
            depth += 1
        elif ch in "([{":
            depth -= 1
            if depth == 0:
                return i
    return None


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:])
    return parts
