"""Built-in compile-time functions and precisions."""

from __future__ import annotations

import pytest

from tritondsl.compiler.functions import COMPILE_TIME, make_divisible
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import EvalError, Precision, Symbol

SPAN = Span(1, 1, 1, 2)


@pytest.mark.parametrize(("v", "divisor", "expected"), [
    (32 * 1.0, 8, 32), (32 * 0.5, 8, 16), (24 * 0.75, 8, 24), (1280 * 1.4, 8, 1792),
    (16 * 0.35, 8, 8), (3, 8, 8), (96 * 1.3, 8, 128), (100, 3, 99),
])
def test_make_divisible_follows_torchvision(v: float, divisor: int, expected: int) -> None:
    assert make_divisible(v, divisor) == expected
    assert COMPILE_TIME["make_divisible"]([v, divisor], {}, SPAN) == expected


def test_round_and_int_follow_python() -> None:
    call = COMPILE_TIME
    assert call["round"]([2.5], {}, SPAN) == 2  # banker's rounding, as torchvision relies on
    assert call["round"]([3.14159, 2], {}, SPAN) == 3.14
    assert call["int"]([-2.7], {}, SPAN) == -2
    assert call["min"]([3, 1, 2], {}, SPAN) == 1
    assert call["max"]([[3, 7, 2]], {}, SPAN) == 7
    assert call["range"]([1, 7, 2], {}, SPAN) == [1, 3, 5]
    assert call["len"]([(1, 2, 3)], {}, SPAN) == 3


@pytest.mark.parametrize(("name", "args", "message"), [
    ("range", [10**9], "too large for compile time"),
    ("range", [0, 5, 0], "step must not be zero"),
    ("min", [], "needs at least one value"),
    ("int", ["3"], "expects a number"),
    ("make_divisible", [16, 0], "divisor must be a positive int"),
    ("round", [float("inf")], "cannot round"),
])
def test_bad_calls_are_located_errors(name: str, args: list, message: str) -> None:
    with pytest.raises(EvalError, match=message) as info:
        COMPILE_TIME[name](args, {}, SPAN)
    assert info.value.span == SPAN


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, Precision("ternary", "twn", None, "per_channel")),
    ({"threshold": 0.7, "scale": Symbol("per_tensor")},
     Precision("ternary", "twn", 0.7, "per_tensor")),
    ({"method": Symbol("absmean")}, Precision("ternary", "absmean", scale="per_tensor")),
    ({"method": Symbol("absmean"), "scale": Symbol("per_channel")},
     Precision("ternary", "absmean", scale="per_channel")),
    ({"learned": True}, Precision("ternary", "learned", scale="per_tensor")),
    ({"sparsity": 0.5}, Precision("ternary", "sparsity", sparsity=0.5)),
])
def test_ternary_precision_options(kwargs: dict, expected: Precision) -> None:
    assert COMPILE_TIME["ternary"]([], kwargs, SPAN) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": Symbol("per_channel")}, "method must be one of twn, absmean, learned"),
    ({"threshold": -1}, "threshold must be a positive number"),
    ({"sparsity": 1.5}, r"sparsity must be a fraction in \[0, 1\)"),
    ({"sparsity": 0.5, "threshold": 0.7}, "sparsity sets the threshold itself"),
    ({"method": Symbol("absmean"), "threshold": 0.5}, "absmean has no threshold"),
    ({"learned": True, "scale": Symbol("per_channel")}, "learned scales are per layer"),
    ({"colour": 1}, "unexpected keyword argument 'colour'"),
])
def test_ternary_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(EvalError, match=message):
        COMPILE_TIME["ternary"]([], kwargs, SPAN)
