"""Built-in functions: compile-time helpers, precisions, and forward tensor operations."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tritondsl.backend.precision import BUILDERS, NAMED, OPTION_WORDS, Precision, PrecisionError
from tritondsl.compiler import shapes as sh
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import (
    EvalError,
    Symbol,
    Tensor,
    TensorDecl,
    is_int,
    is_number,
    show_value,
)

MAX_RANGE = 100_000

Builtin = Callable[[list[Any], dict[str, Any], Span], Any]

CONSTANTS: dict[str, Any] = {
    **NAMED,
    **{name: Symbol(name) for name in OPTION_WORDS},
}


def _no_kwargs(
    name: str, kwargs: dict[str, Any], span: Span, allowed: tuple[str, ...] = ()
) -> None:
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        raise EvalError(f"{name}() got an unexpected keyword argument '{extra[0]}'", span)


def _arity(name: str, args: list[Any], low: int, high: int, span: Span) -> None:
    if not low <= len(args) <= high:
        want = f"{low}" if low == high else f"{low} to {high}"
        noun = "argument" if want == "1" else "arguments"
        raise EvalError(f"{name}() takes {want} {noun}, got {len(args)}", span)


def _number(name: str, value: Any, span: Span) -> int | float:
    if not is_number(value):
        raise EvalError(f"{name}() expects a number, got {show_value(value)}", span)
    return value


def _min_max(pick: Callable[..., Any], name: str) -> Builtin:
    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Any:
        _no_kwargs(name, kwargs, span)
        items = list(args[0]) if len(args) == 1 and isinstance(args[0], tuple | list) else args
        if not items:
            raise EvalError(f"{name}() needs at least one value", span)
        return pick(_number(name, v, span) for v in items)

    return fn


def _int(args: list[Any], kwargs: dict[str, Any], span: Span) -> int:
    _no_kwargs("int", kwargs, span)
    _arity("int", args, 1, 1, span)
    value = _number("int", args[0], span)
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError(f"int() cannot convert {value}", span)
    return int(value)


def _float(args: list[Any], kwargs: dict[str, Any], span: Span) -> float:
    _no_kwargs("float", kwargs, span)
    _arity("float", args, 1, 1, span)
    return float(_number("float", args[0], span))


def _round(args: list[Any], kwargs: dict[str, Any], span: Span) -> int | float:
    _no_kwargs("round", kwargs, span)
    _arity("round", args, 1, 2, span)
    value = _number("round", args[0], span)
    if isinstance(value, float) and not math.isfinite(value):
        raise EvalError(f"round() cannot round {value}", span)
    if len(args) == 2:
        if not is_int(args[1]):
            raise EvalError("round(): ndigits must be an int", span)
        return round(value, args[1])
    return round(value)


def _abs(args: list[Any], kwargs: dict[str, Any], span: Span) -> int | float:
    _no_kwargs("abs", kwargs, span)
    _arity("abs", args, 1, 1, span)
    return abs(_number("abs", args[0], span))


def _len(args: list[Any], kwargs: dict[str, Any], span: Span) -> int:
    _no_kwargs("len", kwargs, span)
    _arity("len", args, 1, 1, span)
    if not isinstance(args[0], tuple | list | str):
        raise EvalError(f"len() expects a list, tuple or string, got {show_value(args[0])}", span)
    return len(args[0])


def _range(args: list[Any], kwargs: dict[str, Any], span: Span) -> list[int]:
    _no_kwargs("range", kwargs, span)
    _arity("range", args, 1, 3, span)
    if not all(is_int(a) for a in args):
        raise EvalError("range() expects int arguments", span)
    if len(args) == 3 and args[2] == 0:
        raise EvalError("range(): step must not be zero", span)
    r = range(*args)
    # len() of a range raises OverflowError past sys.maxsize; count with Python ints instead.
    count = max(0, (r.stop - r.start + r.step - (1 if r.step > 0 else -1)) // r.step)
    if count > MAX_RANGE:
        raise EvalError(
            f"range() of {count} items is too large for compile time (the limit is {MAX_RANGE})",
            span,
        )
    return list(r)


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going 10% below it (torchvision's rule)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _make_divisible(args: list[Any], kwargs: dict[str, Any], span: Span) -> int:
    _no_kwargs("make_divisible", kwargs, span, ("divisor", "min_value"))
    _arity("make_divisible", args, 1, 3, span)
    names = ("v", "divisor", "min_value")
    bound = dict(zip(names, args, strict=False)) | kwargs
    v = _number("make_divisible", bound.get("v"), span)
    divisor = bound.get("divisor", 8)
    min_value = bound.get("min_value")
    if not is_int(divisor) or divisor < 1:
        raise EvalError("make_divisible(): divisor must be a positive int", span)
    if min_value is not None and not is_int(min_value):
        raise EvalError("make_divisible(): min_value must be an int", span)
    if not math.isfinite(v) or abs(v) > 1e15:
        raise EvalError(f"make_divisible(): value {v} is out of range", span)
    return make_divisible(v, divisor, min_value)


def _precision_builder(name: str, build: Callable[..., Precision]) -> Builtin:
    """A compile-time builtin for a precision constructor of ``backend/precision.py``."""

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Precision:
        if args:
            raise EvalError(f"{name}() takes keyword arguments only", span)
        options = {k: v.name if isinstance(v, Symbol) else v for k, v in kwargs.items()}
        try:
            return build(**options)
        except PrecisionError as error:
            raise EvalError(str(error), span) from None

    return fn


# ---------------------------------------------------------------- forward operations


def as_tensor(value: Any, op: str, span: Span) -> Tensor:
    """A tensor operand, or an error naming the operation."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, TensorDecl):
        return Tensor(value.shape)
    # No "use it inside forward" hint: layers called outside forward fail earlier, in
    # ExprEvaluator.call, so this is reached with a wrong value inside forward.
    raise EvalError(f"{op} expects a tensor, got {show_value(value)}", span)


def _unary_op(name: str) -> Builtin:
    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
        _no_kwargs(name, kwargs, span)
        _arity(name, args, 1, 1, span)
        return as_tensor(args[0], f"{name}()", span)

    return fn


def _flatten(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    _no_kwargs("flatten", kwargs, span, ("start_dim", "end_dim"))
    _arity("flatten", args, 1, 3, span)
    bound = dict(zip(("x", "start_dim", "end_dim"), args, strict=False)) | kwargs
    start, end = bound.get("start_dim", 0), bound.get("end_dim", -1)
    if not is_int(start) or not is_int(end):
        raise EvalError("flatten(): start_dim and end_dim must be ints", span)
    return sh.flatten(as_tensor(bound["x"], "flatten()", span), start, end, span)


def _cat(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    _no_kwargs("cat", kwargs, span, ("dim",))
    _arity("cat", args, 1, 2, span)
    dim = args[1] if len(args) == 2 else kwargs.get("dim", 0)
    if not isinstance(args[0], tuple | list) or not is_int(dim):
        raise EvalError(
            "cat() expects a list of tensors and an int dim, e.g. cat([a, b], dim=1)", span
        )
    return sh.cat([as_tensor(t, "cat()", span) for t in args[0]], dim, span)


def _reshape(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    _no_kwargs("reshape", kwargs, span)
    if len(args) < 2:
        raise EvalError("reshape() expects a tensor and a shape, e.g. reshape(x, N, -1)", span)
    x = as_tensor(args[0], "reshape()", span)
    target = list(args[1]) if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]
    if not all(is_int(d) for d in target):
        raise EvalError("reshape(): sizes must be ints (use -1 for the batch dimension)", span)
    return sh.reshape(x, target, span)


def _matmul(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    _no_kwargs("matmul", kwargs, span)
    _arity("matmul", args, 2, 2, span)
    return sh.matmul(
        as_tensor(args[0], "matmul()", span), as_tensor(args[1], "matmul()", span), span
    )


def _ternary_matmul(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    _no_kwargs("ternary_matmul", kwargs, span)
    _arity("ternary_matmul", args, 2, 2, span)
    x, w = as_tensor(args[0], "ternary_matmul()", span), args[1]
    if not isinstance(w, TensorDecl) or not w.ternary or len(w.shape) != 2:
        raise EvalError(
            "ternary_matmul(x, W) expects W to be a 2-D TernaryTensor[out, in], got "
            f"{show_value(w)}",
            span,
        )
    if not x.shape:
        raise EvalError("ternary_matmul(): x must have at least one dimension", span)
    k = x.shape[-1]
    if isinstance(k, int) and k != w.shape[1]:
        raise EvalError(
            f"ternary_matmul: x has {k} features but W is {list(w.shape)} (expects {w.shape[1]})",
            span,
        )
    return Tensor((*x.shape[:-1], w.shape[0]), x.dtype)


def _adaptive_avg_pool2d(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    _no_kwargs("adaptive_avg_pool2d", kwargs, span)
    _arity("adaptive_avg_pool2d", args, 2, 2, span)
    x = as_tensor(args[0], "adaptive_avg_pool2d()", span)
    size = args[1]
    batch, c, _, _ = sh.expect_image(x, "adaptive_avg_pool2d", span)
    if is_int(size) and size >= 1:
        return Tensor((*batch, c, size, size), x.dtype)
    if (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(is_int(s) and s >= 1 for s in size)
    ):
        return Tensor((*batch, c, *size), x.dtype)
    raise EvalError("adaptive_avg_pool2d(): output size must be a positive int or a pair", span)


COMPILE_TIME: dict[str, Builtin] = {
    "min": _min_max(min, "min"),
    "max": _min_max(max, "max"),
    "int": _int,
    "float": _float,
    "round": _round,
    "abs": _abs,
    "len": _len,
    "range": _range,
    "make_divisible": _make_divisible,
    **{name: _precision_builder(name, build) for name, build in BUILDERS.items()},
}

FORWARD_OPS: dict[str, Builtin] = {
    "relu": _unary_op("relu"),
    "relu6": _unary_op("relu6"),
    "gelu": _unary_op("gelu"),
    "sigmoid": _unary_op("sigmoid"),
    "flatten": _flatten,
    "cat": _cat,
    "reshape": _reshape,
    "matmul": _matmul,
    "ternary_matmul": _ternary_matmul,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
}
