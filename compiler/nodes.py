"""The .tdsl abstract syntax tree: frozen dataclasses, each carrying its source ``Span``.

Nothing here (or in any later pass) imports lark; ``parser.py`` converts lark's
trees into these nodes at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A source range; lines and columns are 1-based, the end column is exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    def to(self, other: Span) -> Span:
        """The span from the start of ``self`` to the end of ``other``."""
        return Span(self.line, self.column, other.end_line, other.end_column)


# ---------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Num:
    """An int or float literal."""

    value: int | float
    span: Span


@dataclass(frozen=True, slots=True)
class Str:
    """A string literal (escapes already decoded)."""

    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Bool:
    """``true`` or ``false``."""

    value: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    """A reference to a parameter, binding, submodule, definition or built-in."""

    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class TupleLit:
    """``(a, b, ...)``."""

    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ListLit:
    """``[a, b, ...]``."""

    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Unary:
    """``-x`` or ``+x``."""

    op: str
    operand: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Binary:
    """Arithmetic ``+ - * / // % ** @`` (``@`` is matmul, or a precision annotation)."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Compare:
    """``a == b`` and the other comparisons (not chained)."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class BoolOp:
    """``a and b`` / ``a or b`` (short-circuit)."""

    op: str
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Not:
    """``not x``."""

    operand: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Cond:
    """``then if cond else otherwise``."""

    cond: Expr
    then: Expr
    otherwise: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Keyword:
    """``name=value`` inside a call."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """``func(args, name=value)``."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Slice:
    """``start:stop:step`` inside an index; each part may be missing."""

    start: Expr | None
    stop: Expr | None
    step: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Index:
    """``value[i, j]``; items are expressions or ``Slice``s."""

    value: Expr
    indices: tuple[Expr | Slice, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Attribute:
    """``value.name``."""

    value: Expr
    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class SeqExpr:
    """``Sequential(a, b)`` or ``Sequential { stmts }``: children in order.

    In the braced form, expression statements are children named by position,
    ``name = expr`` children are named, and ``let``/``if``/``for`` run at compile time.
    """

    body: tuple[Stmt, ...]
    span: Span


Expr = (
    Num
    | Str
    | Bool
    | Name
    | TupleLit
    | ListLit
    | Unary
    | Binary
    | Compare
    | BoolOp
    | Not
    | Cond
    | Call
    | Index
    | Attribute
    | SeqExpr
)


@dataclass(frozen=True, slots=True)
class TypeExpr:
    """A type annotation: ``int``, ``tuple[int, int]``, ``Tensor[N, 3, 32, 32]``."""

    name: str
    args: tuple[Expr, ...] | None
    span: Span


# ---------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Let:
    """``let name[: type] = value``: a compile-time (or forward-local) binding."""

    name: str
    type: TypeExpr | None
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Assign:
    """``name = value``: a block's submodule, a named Sequential child, or a forward local."""

    name: str
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class ExprStmt:
    """A bare expression: a positional child inside ``Sequential { }``."""

    expr: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class If:
    """``if c { } elif c { } else { }``; conditions are compile-time values."""

    branches: tuple[tuple[Expr, tuple[Stmt, ...]], ...]
    orelse: tuple[Stmt, ...] | None
    span: Span


@dataclass(frozen=True, slots=True)
class For:
    """``for a, b in iterable { }``, unrolled at compile time."""

    targets: tuple[str, ...]
    iterable: Expr
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class InputDecl:
    """``input x: Tensor[N, 3, 224, 224]``: the model's declared input."""

    name: str
    type: TypeExpr
    span: Span


@dataclass(frozen=True, slots=True)
class WeightsDecl:
    """``weights ternary(...)``: the default weight precision inside this definition."""

    precision: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class ActivationsDecl:
    """``activations a8(...)``: the default activation precision inside this definition."""

    precision: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class ParamDecl:
    """``param W: TernaryTensor[n, k]`` or ``param pos: Tensor[1, T, D] = normal(0, 0.02)``."""

    name: str
    type: TypeExpr
    init: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class FwdParam:
    """A parameter of ``forward``, optionally typed."""

    name: str
    type: TypeExpr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Forward:
    """``forward(x) { ... }`` (``fn forward(x: T) -> T`` in the low-level form)."""

    params: tuple[FwdParam, ...]
    returns: TypeExpr | None
    body: tuple[Stmt, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Return:
    """``return value``."""

    value: Expr
    span: Span


Stmt = (
    Let | Assign | ExprStmt | If | For | InputDecl | WeightsDecl | ActivationsDecl | ParamDecl
    | Forward | Return
)  # fmt: skip


# ---------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class Param:
    """A compile-time parameter ``name: type [= default]``."""

    name: str
    type: TypeExpr
    default: Expr | None
    span: Span


@dataclass(frozen=True, slots=True)
class Definition:
    """A ``block``, ``layer`` or ``model``; ``alias`` holds the ``block B(..) = expr`` form."""

    kind: str
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    alias: Expr | None
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Program:
    """A parsed .tdsl file."""

    definitions: tuple[Definition, ...]
    path: str


def children(node: object) -> list[object]:
    """The direct child nodes of an AST node (for generic walks)."""
    out: list[object] = []
    pending = [getattr(node, field) for field in getattr(node, "__slots__", ())]
    while pending:
        value = pending.pop(0)
        if isinstance(value, tuple):
            pending[:0] = list(value)
        elif hasattr(value, "span"):
            out.append(value)
    return out


def walk(node: object) -> list[object]:
    """All nodes below (and including) ``node``, iteratively, in pre-order."""
    out: list[object] = []
    stack = [node]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(reversed(children(current)))
    return out


def walk_statements(body: tuple[Stmt, ...] | list[Stmt] | object) -> list[object]:
    """Statements of a block body, descending into if/for but not into forward or Sequential."""
    out: list[object] = []
    stack = list(reversed(list(body)))  # type: ignore[call-overload]
    while stack:
        stmt = stack.pop()
        out.append(stmt)
        if isinstance(stmt, If):
            nested = [s for _, branch in stmt.branches for s in branch] + list(stmt.orelse or ())
            stack.extend(reversed(nested))
        elif isinstance(stmt, For):
            stack.extend(reversed(stmt.body))
    return out
