"""Built-in compile-time functions and precisions."""

from __future__ import annotations

import pytest

from tritondsl.backend.precision import TWN, AbsMean, Learned, SparsityTarget, WeightPrecision
from tritondsl.compiler.functions import COMPILE_TIME, make_divisible
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import EvalError, Symbol

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
    ("min", [32], "needs two or more values"),  # Python's min(32) fails: so does check
    ("max", [2.5], "needs two or more values"),
    ("int", ["3"], "expects a number"),
    ("make_divisible", [16, 0], "divisor must be a positive int"),
    ("round", [float("inf")], "cannot round"),
])
def test_bad_calls_are_located_errors(name: str, args: list, message: str) -> None:
    with pytest.raises(EvalError, match=message) as info:
        COMPILE_TIME[name](args, {}, SPAN)
    assert info.value.span == SPAN


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, TWN(0.7, per_channel=True)),
    ({"threshold": 0.5, "scale": Symbol("per_tensor")}, TWN(0.5, per_channel=False)),
    ({"method": Symbol("absmean")}, AbsMean(per_channel=False)),
    ({"method": Symbol("absmean"), "scale": Symbol("per_channel")}, AbsMean(per_channel=True)),
    ({"learned": True}, Learned(0.05)),
    ({"method": Symbol("learned"), "threshold": 0.1}, Learned(0.1)),
    ({"sparsity": 0.5}, SparsityTarget(0.5, per_channel=True)),
    ({"sparsity": 0.25, "scale": Symbol("per_tensor")}, SparsityTarget(0.25, per_channel=False)),
])
def test_ternary_precision_options(kwargs: dict, expected: WeightPrecision) -> None:
    assert COMPILE_TIME["ternary"]([], kwargs, SPAN) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": Symbol("per_channel")}, "method must be one of twn, absmean, learned"),
    ({"threshold": -1}, r"threshold must be a number in \(0, 10\) for method=twn"),
    ({"learned": True, "threshold": 1.5}, r"threshold must be a number in \(0, 1\) for learned"),
    ({"threshold": True}, "threshold must be a number"),
    ({"sparsity": 1.5}, r"sparsity must be a fraction in \[0, 1\)"),
    ({"sparsity": 0.5, "threshold": 0.7}, "sparsity sets the threshold itself"),
    ({"method": Symbol("absmean"), "threshold": 0.5}, "method=absmean has no threshold"),
    ({"learned": True, "scale": Symbol("per_channel")}, "learned scales are per layer"),
    ({"colour": 1}, "unexpected keyword argument 'colour'"),
])
def test_ternary_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(EvalError, match="ternary\\(\\): " + message) as info:
        COMPILE_TIME["ternary"]([], kwargs, SPAN)
    assert info.value.span == SPAN


NAMED = """
model M(depth: int = 3) {
    input x: Tensor[N, 8]
    layers = Sequential {
        for i in range(depth) {
            named("encoder_layer_" + str(i), Linear(8, 8))
        }
    }
    forward(x) {
        return layers(x)
    }
}
"""


def test_named_sequential_children_check_and_build_alike() -> None:
    import torch

    from tritondsl.compiler.check import check_source
    from tritondsl.program import compile

    predicted = [i.name for i in check_source(NAMED).models["M"].state_dict()]
    model = compile(NAMED).build()
    assert predicted == list(model.state_dict()) == [
        f"layers.encoder_layer_{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert model(torch.zeros(2, 8)).shape == (2, 8)


@pytest.mark.parametrize(("args", "message"), [
    (["a.b", None], "letters, digits or '_'"),
    (["", None], "letters, digits or '_'"),
    (["ok", 3], "expects a layer or block"),
])
def test_named_refuses_bad_names(args: list, message: str) -> None:
    with pytest.raises(EvalError, match=message):
        COMPILE_TIME["named"](args, {}, SPAN)


def test_str_and_table_repetition() -> None:
    from tritondsl.compiler.check import check_source

    assert COMPILE_TIME["str"]([12], {}, SPAN) == "12"
    with pytest.raises(EvalError, match="expects an int or a string"):
        COMPILE_TIME["str"]([1.5], {}, SPAN)
    source = ("model M(n: int = 3) {\n    input x: Tensor[N, 4]\n    let t = [4] * n\n"
              "    s = Sequential {\n        for w in t {\n            Linear(w, 4)\n        }\n"
              "    }\n    forward(x) {\n        return s(x)\n    }\n}\n")
    assert len(check_source(source).models["M"].state_dict()) == 6
