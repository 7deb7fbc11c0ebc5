"""Built-in functions: compile-time helpers, precisions, and forward tensor operations."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from tritondsl.backend.precision import (
    ACTIVATION_NAMED,
    BUILDERS,
    NAMED,
    OPTION_WORDS,
    Precision,
    PrecisionError,
)
from tritondsl.compiler import tensor_ops as op
from tritondsl.compiler import transformer as tf
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import (
    EvalError,
    Module,
    Named,
    Symbol,
    is_int,
    is_number,
    show_value,
)

MAX_RANGE = 100_000
# Elementwise activations without options: each is a forward function and, spelled as in
# torch.nn, a layer (layers.py).
ACTIVATIONS = (
    "relu",
    "relu6",
    "gelu",
    "sigmoid",
    "tanh",
    "silu",
    "hardswish",
    "hardsigmoid",
    "mish",
)

Builtin = Callable[[list[Any], dict[str, Any], Span], Any]

CONSTANTS: dict[str, Any] = {
    **NAMED,
    **ACTIVATION_NAMED,
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
        if len(args) == 1 and not isinstance(args[0], tuple | list):
            # As in Python (the generated code calls Python's min/max).
            raise EvalError(f"{name}() needs two or more values, or one list of them", span)
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


def _str(args: list[Any], kwargs: dict[str, Any], span: Span) -> str:
    _no_kwargs("str", kwargs, span)
    _arity("str", args, 1, 1, span)
    if not is_int(args[0]) and not isinstance(args[0], str):
        raise EvalError(f"str() expects an int or a string, got {show_value(args[0])}", span)
    return str(args[0])


CHILD_NAME = re.compile(r"[A-Za-z0-9_]{1,100}")


def _named(args: list[Any], kwargs: dict[str, Any], span: Span) -> Named:
    """``named(name, layer)``: a Sequential child under ``name`` instead of its position."""
    _no_kwargs("named", kwargs, span)
    _arity("named", args, 2, 2, span)
    name, module = args
    if not isinstance(name, str) or not CHILD_NAME.fullmatch(name):
        raise EvalError(
            "named(): the name must be 1 to 100 letters, digits or '_', got "
            f"{show_value(name)}",
            span,
        )
    if not isinstance(module, Module):
        raise EvalError(f"named(): expects a layer or block, got {show_value(module)}", span)
    return Named(name, module)


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


def _rounding(name: str, fn: Callable[[float], int]) -> Builtin:
    """``ceil(x)`` / ``floor(x)`` of a compile-time number, as an int."""

    def builtin(args: list[Any], kwargs: dict[str, Any], span: Span) -> int:
        _no_kwargs(name, kwargs, span)
        _arity(name, args, 1, 1, span)
        value = _number(name, args[0], span)
        if not math.isfinite(value):
            raise EvalError(f"{name}() cannot round {value}", span)
        return fn(value)

    return builtin


COMPILE_TIME: dict[str, Builtin] = {
    "min": _min_max(min, "min"),
    "max": _min_max(max, "max"),
    "int": _int,
    "float": _float,
    "round": _round,
    "abs": _abs,
    "len": _len,
    "str": _str,
    "named": _named,
    "range": _range,
    "make_divisible": _make_divisible,
    "ceil": _rounding("ceil", math.ceil),
    "floor": _rounding("floor", math.floor),
    **{name: _precision_builder(name, build) for name, build in BUILDERS.items()},
    "zeros": tf.initializer("zeros"),
    "ones": tf.initializer("ones"),
    "normal": tf.initializer("normal"),
    "uniform": tf.initializer("uniform"),
}

# One entry per operation; codegen.FORWARD_CALLS says which torch function each becomes.
FORWARD_OPS: dict[str, Builtin] = {
    **{name: op.unary(name) for name in ACTIVATIONS},
    "leaky_relu": op.unary("leaky_relu", negative_slope=0.01),
    "elu": op.unary("elu", alpha=1.0),
    "sqrt": op.unary("sqrt"),
    "exp": op.unary("exp"),
    "softmax": op.along_dim("softmax"),
    "log_softmax": op.along_dim("log_softmax"),
    "mean": op.reduction("mean"),
    "sum": op.reduction("sum"),
    "amax": op.reduction("amax"),
    "flatten": op.flatten,
    "cat": op.cat,
    "reshape": op.reshape,
    "permute": op.permute,
    "transpose": op.transpose,
    "chunk": op.chunk,
    "split": op.split,
    "matmul": op.matmul,
    "ternary_matmul": op.ternary_matmul,
    "adaptive_avg_pool2d": op.adaptive_pool("adaptive_avg_pool2d"),
    "adaptive_max_pool2d": op.adaptive_pool("adaptive_max_pool2d"),
    "interpolate": op.interpolate,
    "gelu": tf.gelu,  # with approximate="tanh" (GeGLU)
    "relu2": tf.activation("relu2"),
    "linear": tf.linear,
    "split_heads": tf.split_heads,
    "merge_heads": tf.merge_heads,
    "scaled_dot_product_attention": tf.scaled_dot_product_attention,
    "causal_mask": tf.causal_mask,
    "rotary": tf.rotary,
    "kv_cache": tf.kv_cache,
    "expand": tf.expand,
}
