"""Forward operations on tensors: argument checks and output shapes (the table is in functions.py).

Each operation takes the arguments of the torch function it is generated as (same names,
same defaults), so ``codegen.FORWARD_CALLS`` can pass them through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tritondsl.compiler import shapes as sh
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import (
    Dim,
    EvalError,
    SymSize,
    Tensor,
    TensorDecl,
    is_int,
    is_number,
    show_value,
)

Builtin = Callable[[list[Any], dict[str, Any], Span], Any]
REQUIRED = object()


def as_tensor(value: Any, op: str, span: Span) -> Tensor:
    """A tensor operand, or an error naming the operation."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, TensorDecl) and value.learnable and value.ternary:
        raise EvalError(
            f"the param '{value.name}' can only be the weight of ternary_matmul(x, {value.name})",
            span,
            "a TernaryTensor param is a ternary weight, quantized by ternary_matmul",
        )
    if isinstance(value, TensorDecl):
        return Tensor(value.shape)
    # No "use it inside forward" hint: layers called outside forward fail earlier, in
    # ExprEvaluator.call, so this is reached with a wrong value inside forward.
    raise EvalError(f"{op} expects a tensor, got {show_value(value)}", span)


def bind_call(
    name: str, args: list[Any], kwargs: dict[str, Any], span: Span, **params: Any
) -> dict[str, Any]:
    """Match a call to ``params`` (name -> default, or REQUIRED), as Python binds arguments."""
    names = list(params)
    if len(args) > len(names):
        count = len(names)
        some = any(default is not REQUIRED for default in params.values())
        noun = "argument" if count == 1 else "arguments"
        want = f"at most {count} {noun}" if some else f"{count} {noun}"
        raise EvalError(f"{name}() takes {want}, got {len(args)}", span)
    bound = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in params:
            raise EvalError(f"{name}() got an unexpected keyword argument '{key}'", span)
        if key in bound:
            raise EvalError(f"{name}() got two values for '{key}'", span)
        bound[key] = value
    for key, default in params.items():
        if key not in bound:
            if default is REQUIRED:
                raise EvalError(f"{name}() is missing its argument '{key}'", span)
            bound[key] = default
    return bound


def _int(name: str, what: str, value: Any, span: Span) -> int:
    if not is_int(value):
        raise EvalError(f"{name}(): {what} must be an int, got {show_value(value)}", span)
    return value


def _ints(name: str, what: str, value: Any, span: Span) -> list[int]:
    """An int or a list/tuple of ints, as a list."""
    items = list(value) if isinstance(value, tuple | list) else [value]
    if not items or not all(is_int(v) for v in items):
        raise EvalError(
            f"{name}(): {what} must be an int or a list of ints, got {show_value(value)}", span
        )
    return items


def _flag(name: str, what: str, value: Any, span: Span) -> bool:
    if not isinstance(value, bool):
        raise EvalError(f"{name}(): {what} must be true or false, got {show_value(value)}", span)
    return value


def unary(name: str, **defaults: float) -> Builtin:
    """An elementwise op of one tensor; ``defaults`` are its numeric options (``alpha=1.0``)."""

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
        bound = bind_call(name, args, kwargs, span, input=REQUIRED, **defaults)
        for key in defaults:
            if not is_number(bound[key]):
                raise EvalError(
                    f"{name}(): {key} must be a number, got {show_value(bound[key])}", span
                )
        return as_tensor(bound["input"], f"{name}()", span)

    return fn


def along_dim(name: str) -> Builtin:
    """``softmax(x, dim)`` and ``log_softmax(x, dim)``: shape kept, dim checked."""

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
        bound = bind_call(name, args, kwargs, span, input=REQUIRED, dim=REQUIRED)
        x = as_tensor(bound["input"], f"{name}()", span)
        sh.reduce(x, _int(name, "dim", bound["dim"], span), False, name, span)  # checks dim
        return x

    return fn


def reduction(name: str) -> Builtin:
    """``mean``/``sum``/``amax(x, dim, keepdim=false)``; without dim, over every axis."""

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
        bound = bind_call(name, args, kwargs, span, input=REQUIRED, dim=None, keepdim=False)
        x = as_tensor(bound["input"], f"{name}()", span)
        dims = None if bound["dim"] is None else _ints(name, "dim", bound["dim"], span)
        keepdim = _flag(name, "keepdim", bound["keepdim"], span)
        return sh.reduce(x, dims, keepdim, name, span)

    return fn


def flatten(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``flatten(x, start_dim=0, end_dim=-1)``."""
    bound = bind_call("flatten", args, kwargs, span, input=REQUIRED, start_dim=0, end_dim=-1)
    start, end = bound["start_dim"], bound["end_dim"]
    if not is_int(start) or not is_int(end):
        raise EvalError("flatten(): start_dim and end_dim must be ints", span)
    return sh.flatten(as_tensor(bound["input"], "flatten()", span), start, end, span)


def cat(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``cat([a, b], dim=0)``."""
    bound = bind_call("cat", args, kwargs, span, tensors=REQUIRED, dim=0)
    tensors, dim = bound["tensors"], bound["dim"]
    if not isinstance(tensors, tuple | list) or not is_int(dim):
        raise EvalError(
            "cat() expects a list of tensors and an int dim, e.g. cat([a, b], dim=1)", span
        )
    return sh.cat([as_tensor(t, "cat()", span) for t in tensors], dim, span)


def _sizes(name: str, args: list[Any], span: Span) -> list[Any]:
    """The sizes of ``reshape(x, 4, -1)`` / ``reshape(x, [4, -1])`` (same for permute)."""
    return list(args[1]) if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]


def reshape(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``reshape(x, N, -1)``: sizes are ints or run-time sizes (``x.shape[0]``, ``H``)."""
    if kwargs:
        raise EvalError("reshape() takes its sizes positionally, e.g. reshape(x, N, -1)", span)
    if len(args) < 2:
        raise EvalError("reshape() expects a tensor and a shape, e.g. reshape(x, N, -1)", span)
    x = as_tensor(args[0], "reshape()", span)
    target: list[Dim] = []
    for size in _sizes("reshape", args, span):
        if isinstance(size, SymSize):
            target.append(size.dim)
        elif is_int(size):
            target.append(size)
        else:
            raise EvalError(
                f"reshape(): sizes must be ints or tensor sizes, got {show_value(size)}", span
            )
    return sh.reshape(x, target, span)


def permute(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``permute(x, 0, 2, 1)`` or ``permute(x, [0, 2, 1])``."""
    if kwargs or len(args) < 2:
        raise EvalError(
            "permute() expects a tensor and the new order, e.g. permute(x, 0, 2, 1)", span
        )
    order = _ints("permute", "the order", _sizes("permute", args, span), span)
    return sh.permute(as_tensor(args[0], "permute()", span), order, span)


def transpose(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``transpose(x, dim0, dim1)``."""
    bound = bind_call("transpose", args, kwargs, span, input=REQUIRED, dim0=REQUIRED, dim1=REQUIRED)
    x = as_tensor(bound["input"], "transpose()", span)
    dim0, dim1 = (_int("transpose", key, bound[key], span) for key in ("dim0", "dim1"))
    return sh.transpose(x, dim0, dim1, span)


def chunk(args: list[Any], kwargs: dict[str, Any], span: Span) -> tuple[Tensor, ...]:
    """``chunk(x, chunks, dim=0)``: a tuple of tensors (index it: ``parts[0]``)."""
    bound = bind_call("chunk", args, kwargs, span, input=REQUIRED, chunks=REQUIRED, dim=0)
    chunks = _int("chunk", "chunks", bound["chunks"], span)
    if chunks < 1:
        raise EvalError(f"chunk(): chunks must be positive, got {chunks}", span)
    x = as_tensor(bound["input"], "chunk()", span)
    return sh.chunk(x, chunks, _int("chunk", "dim", bound["dim"], span), span)


def split(args: list[Any], kwargs: dict[str, Any], span: Span) -> tuple[Tensor, ...]:
    """``split(x, size, dim=0)`` or ``split(x, [a, b], dim=0)``: a tuple of tensors."""
    bound = bind_call(
        "split", args, kwargs, span, tensor=REQUIRED, split_size_or_sections=REQUIRED, dim=0
    )
    sizes = bound["split_size_or_sections"]
    parts = _ints("split", "split_size_or_sections", sizes, span)
    if any(p < 0 for p in parts) or (is_int(sizes) and sizes < 1):
        raise EvalError(f"split(): sizes must be positive, got {show_value(sizes)}", span)
    x = as_tensor(bound["tensor"], "split()", span)
    dim = _int("split", "dim", bound["dim"], span)
    return sh.split(x, sizes if is_int(sizes) else parts, dim, span)


def matmul(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``matmul(a, b)`` with torch.matmul's broadcasting."""
    bound = bind_call("matmul", args, kwargs, span, input=REQUIRED, other=REQUIRED)
    a, b = (as_tensor(bound[k], "matmul()", span) for k in ("input", "other"))
    return sh.matmul(a, b, span)


def ternary_matmul(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``ternary_matmul(x, W)``: ``x · Wᵀ`` with W a 2-D TernaryTensor."""
    if kwargs:
        raise EvalError("ternary_matmul() takes its arguments positionally: (x, W)", span)
    bound = bind_call("ternary_matmul", args, kwargs, span, x=REQUIRED, W=REQUIRED)
    x, w = as_tensor(bound["x"], "ternary_matmul()", span), bound["W"]
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


def output_size(name: str, size: Any, span: Span) -> tuple[int, int]:
    """A positive int or pair of them, as a pair (adaptive pooling, interpolate's size)."""
    if is_int(size) and size >= 1:
        return size, size
    if (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(is_int(s) and s >= 1 for s in size)
    ):
        return size[0], size[1]
    raise EvalError(
        f"{name}: output size must be a positive int or a pair of them, got {show_value(size)}",
        span,
    )


def adaptive_pool(name: str) -> Builtin:
    """``adaptive_avg_pool2d(x, size)`` / ``adaptive_max_pool2d(x, size)``."""

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
        bound = bind_call(name, args, kwargs, span, input=REQUIRED, output_size=REQUIRED)
        x = as_tensor(bound["input"], f"{name}()", span)
        batch, c, _, _ = sh.expect_image(x, name, span)
        return Tensor((*batch, c, *output_size(f"{name}()", bound["output_size"], span)), x.dtype)

    return fn


def interpolate(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None)``."""
    bound = bind_call(
        "interpolate",
        args,
        kwargs,
        span,
        input=REQUIRED,
        size=None,
        scale_factor=None,
        mode="nearest",
        align_corners=None,
    )
    return interpolated(
        bound, as_tensor(bound["input"], "interpolate()", span), "interpolate()", span
    )


def interpolated(bound: dict[str, Any], x: Tensor, op: str, span: Span) -> Tensor:
    """Check interpolate's / Upsample's arguments and give the output shape."""
    size, factor = bound["size"], bound["scale_factor"]
    if size is not None:
        size = output_size(op, size, span)
    numbers = list(factor) if isinstance(factor, tuple | list) else [factor]
    if factor is not None and (len(numbers) not in (1, 2) or not all(map(is_number, numbers))):
        raise EvalError(
            f"{op}: scale_factor must be a number or a pair of numbers, got {show_value(factor)}",
            span,
        )
    if not isinstance(bound["mode"], str):
        raise EvalError(f'{op}: mode must be a string such as "bilinear"', span)
    if bound["align_corners"] is not None:
        _flag(op.rstrip("()"), "align_corners", bound["align_corners"], span)
    scale = None if factor is None else tuple(numbers) if len(numbers) == 2 else numbers[0]
    return sh.interpolate(x, size, scale, bound["mode"], bound["align_corners"], op, span)
