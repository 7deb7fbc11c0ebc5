"""Compile-time arithmetic: numbers, run-time sizes (``H * W``) and repeated tables."""

from __future__ import annotations

import math
import operator
from typing import Any

from tritondsl.compiler import nodes as n
from tritondsl.compiler import symbolic
from tritondsl.compiler.values import EvalError, SymSize, is_int, is_number, size_value, type_name

MAX_INT_BITS = 256  # integers wider than this are errors, literals and results alike
_TOO_LARGE = f"number is too large (integers are limited to {MAX_INT_BITS} bits)"
ARITH = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
COMPARE = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
VERBS = {
    "+": "add",
    "-": "subtract",
    "*": "multiply",
    "/": "divide",
    "//": "divide",
    "%": "take the remainder of",
    "**": "raise",
}
MAX_TABLE = 100_000  # items a repeated list may have ([1] * n), as for range()


def is_scalar(value: Any) -> bool:
    """A number (or a run-time size) in a tensor expression such as ``x * 2`` or ``x / H``."""
    return is_number(value) or isinstance(value, SymSize)


def size_arith(node: n.Binary, left: Any, right: Any) -> int | SymSize:
    """Arithmetic on sizes known only at run time: ``H * W``, ``x.shape[1] // 2``."""
    operands = [v.dim if isinstance(v, SymSize) else v for v in (left, right)]
    sizes_only = all(is_int(v) or isinstance(v, str) for v in operands)
    if node.op not in ("+", "-", "*", "//", "%") or not sizes_only:
        raise EvalError(
            f"cannot {VERBS.get(node.op, 'apply ' + repr(node.op) + ' to')} "
            f"{type_name(left)} and {type_name(right)}",
            node.span,
            "sizes divide with '//'" if node.op == "/" else None,
        )
    if node.op in ("//", "%") and operands[1] == 0:
        raise EvalError("division by zero", node.span)
    return size_value(symbolic.combine(operands[0], node.op, operands[1]))


def repeat(node: n.Binary, table: tuple | list, count: int) -> tuple | list:
    """``[1] * n``: a table repeated, within the compile-time size limit."""
    if len(table) * max(count, 0) > MAX_TABLE:
        raise EvalError(
            f"a list of {len(table) * count} items is too large for compile time "
            f"(the limit is {MAX_TABLE})",
            node.span,
        )
    return table * count


def arith(node: n.Binary, left: int | float, right: int | float) -> int | float:
    if node.op in ("/", "//", "%") and right == 0:
        raise EvalError("division by zero", node.span)
    if node.op == "**":
        if is_int(right) and right < 0 and left == 0:
            raise EvalError("zero cannot be raised to a negative power", node.span)
        # Refuse before computing: |left| ** right has at least (bits(left) - 1) * right bits.
        exact = is_int(left) and is_int(right) and right > 0
        if exact and (abs(left).bit_length() - 1) * right > MAX_INT_BITS:
            raise EvalError(_TOO_LARGE, node.span)
    try:
        result = ARITH[node.op](left, right)
    except OverflowError:
        raise EvalError("number is too large", node.span) from None
    if isinstance(result, complex):
        raise EvalError("result is not a real number", node.span)
    if is_int(result) and result.bit_length() > MAX_INT_BITS:
        raise EvalError(_TOO_LARGE, node.span)
    if isinstance(result, float) and not math.isfinite(result):
        raise EvalError("result is not a finite number", node.span)
    return result
