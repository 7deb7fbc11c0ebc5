"""Arithmetic on symbolic sizes: ``N * 4`` times 8 is ``N * 32``, and divided by 32 is ``N``.

A symbolic dimension is a string such as ``"N"``, ``"N * 4"`` or ``"(H - 1) // 2 + 1"``.
Products are kept as a coefficient times factors, so reshapes can cancel them exactly;
anything else is an opaque factor. Strings are only ever shown to users and compared with
each other: nothing here is evaluated.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence

Dim = int | str
_INT_OPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
    "%": operator.mod,
}
_LOOSE = (" + ", " - ", " // ", " / ", " % ", " if ")  # operators binding looser than '*'


def _top_level(text: str, ops: Sequence[str]) -> list[int]:
    """Positions of any of ``ops`` outside parentheses."""
    found, depth = [], 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and any(text.startswith(op, i) for op in ops):
            found.append(i)
    return found


def factors(dim: Dim) -> tuple[int, list[str]]:
    """``"N * 4 * H"`` -> ``(4, ["N", "H"])``; an int is all coefficient."""
    if isinstance(dim, int):
        return dim, []
    if _top_level(dim, _LOOSE):
        return 1, [dim]
    coeff, atoms, start = 1, [], 0
    for end in [*_top_level(dim, (" * ",)), len(dim)]:
        part = dim[start:end].strip()
        start = end + 3
        if part.isdigit():
            coeff *= int(part)
        else:
            atoms.append(part[1:-1] if _wrapped(part) else part)
    return coeff, atoms


def _wrapped(text: str) -> bool:
    """Whether one pair of parentheses encloses all of ``text``: ``(a + b)``, not ``(a) + (b)``."""
    if not text.startswith("("):
        return False
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return i == len(text) - 1
    return False


def paren(dim: Dim) -> str:
    """``dim`` as an operand of ``*``, ``//`` or ``%``: parenthesized unless it binds tighter."""
    text = str(dim)
    return f"({text})" if isinstance(dim, str) and _top_level(text, _LOOSE) else text


def _build(coeff: int, atoms: list[str]) -> Dim:
    if not atoms or coeff == 0:
        return coeff
    parts = [paren(a) for a in atoms] + ([str(coeff)] if coeff != 1 else [])
    return " * ".join(parts)


def multiply(dims: Sequence[Dim]) -> Dim:
    """The product of ``dims``; an int when all of them are."""
    coeff, atoms = 1, []
    for dim in dims:
        c, a = factors(dim)
        coeff *= c
        atoms += a
    return _build(coeff, atoms)


def divide(total: Dim, by: Dim) -> Dim | None:
    """``total / by`` when it divides exactly (factor by factor), else None."""
    (c1, a1), (c2, a2) = factors(total), factors(by)
    left, right = Counter(a1), Counter(a2)
    if c2 == 0 or c1 % c2 or right - left:
        return None
    remaining = list((left - right).elements())
    ordered = [a for a in dict.fromkeys(a1) for _ in range(remaining.count(a))]
    return _build(c1 // c2, ordered)


def combine(left: Dim, op: str, right: Dim) -> Dim:
    """``left op right`` for ``+ - * // %``; ints stay ints, exact divisions cancel."""
    if isinstance(left, int) and isinstance(right, int):
        return _INT_OPS[op](left, right)
    if op == "*":
        return multiply([left, right])
    if op == "//" and (exact := divide(left, right)) is not None:
        return exact
    if op in ("+", "-"):
        if right == 0:
            return left
        shown = paren(right) if op == "-" else str(right)
        return f"{left} {op} {shown}"
    return f"{paren(left)} {op} {paren(right)}"
