"""Shape rules of the transformer operations: attention, heads, rotary positions, KV cache.

Tensors are laid out as torch's ``scaled_dot_product_attention`` wants them: queries
``[..., heads, T, head_dim]``. ``split_heads`` and ``merge_heads`` move between that and
the ``[..., T, features]`` layout that ``Linear`` layers see.
"""

from __future__ import annotations

from typing import Any

from tritondsl.compiler import nodes as n
from tritondsl.compiler import shapes as sh
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.tensor_ops import as_tensor
from tritondsl.compiler.values import (
    INT_DTYPES,
    Dim,
    EvalError,
    Init,
    SymSize,
    Tensor,
    is_int,
    is_number,
    show_value,
)

_GELU_MODES = ("none", "tanh")


def bind_args(
    op: str, names: tuple[str, ...], required: int, args: list[Any], kwargs: dict[str, Any],
    span: Span,
) -> dict[str, Any]:
    """Bind positional and keyword arguments of a forward operation to ``names``."""
    if len(args) > len(names):
        raise EvalError(f"{op}() takes at most {len(names)} arguments, got {len(args)}", span)
    bound = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in names:
            raise EvalError(f"{op}() got an unexpected keyword argument '{key}'", span)
        if key in bound:
            raise EvalError(f"{op}() got two values for '{key}'", span)
        bound[key] = value
    missing = [name for name in names[:required] if name not in bound]
    if missing:
        raise EvalError(f"{op}() is missing its argument '{missing[0]}'", span)
    return bound


def _int_arg(op: str, name: str, value: Any, span: Span, low: int | None = None) -> int:
    if not is_int(value) or (low is not None and value < low):
        words = "an int" if low is None else ("a positive int" if low == 1 else f"an int >= {low}")
        raise EvalError(f"{op}(): {name} must be {words}, got {show_value(value)}", span)
    return value


def _float_arg(op: str, name: str, value: Any, span: Span) -> float:
    if not is_number(value):
        raise EvalError(f"{op}(): {name} must be a number, got {show_value(value)}", span)
    return float(value)


def _bool_arg(op: str, name: str, value: Any, span: Span) -> bool:
    if not isinstance(value, bool):
        raise EvalError(f"{op}(): {name} must be true or false, got {show_value(value)}", span)
    return value


def _float_tensor(x: Tensor, op: str, span: Span) -> Tensor:
    if x.dtype in INT_DTYPES:
        raise EvalError(f"{op} expects a float tensor, got {x.dtype} {x.show()}", span)
    return x


def _rank(x: Tensor, low: int, op: str, what: str, span: Span) -> None:
    if len(x.shape) < low:
        raise EvalError(f"{op} expects {what}, got shape {x.show()}", span)


def _same(a: Dim, b: Dim) -> bool:
    """Whether two dimensions may be equal (symbols may stand for anything)."""
    return a == b or isinstance(a, str) or isinstance(b, str)


# ---------------------------------------------------------------- element-wise


def activation(name: str) -> Any:
    """An element-wise activation of one float tensor (``relu2``)."""

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
        a = bind_args(name, ("x",), 1, args, kwargs, span)
        return _float_tensor(as_tensor(a["x"], f"{name}()", span), f"{name}()", span)

    return fn


def gelu(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``gelu(x, approximate="none")``; ``"tanh"`` is GeGLU's and GPT-2's form."""
    a = bind_args("gelu", ("x", "approximate"), 1, args, kwargs, span)
    mode = a.get("approximate", "none")
    if mode not in _GELU_MODES:
        raise EvalError(
            f"gelu(): approximate must be 'none' or 'tanh', got {show_value(mode)}", span
        )
    return as_tensor(a["x"], "gelu()", span)


def linear(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``linear(x, W, b)`` = ``x · Wᵀ + b`` for a ``param`` weight ``W: Tensor[out, in]``."""
    a = bind_args("linear", ("x", "weight", "bias"), 2, args, kwargs, span)
    x = _float_tensor(as_tensor(a["x"], "linear()", span), "linear()", span)
    w = as_tensor(a["weight"], "linear()", span)
    if len(w.shape) != 2:
        raise EvalError(f"linear(): the weight must be 2-D [out, in], got {w.show()}", span)
    if not x.shape:
        raise EvalError("linear(): x must have at least one dimension", span)
    if not _same(x.shape[-1], w.shape[1]):
        raise EvalError(
            f"linear: x has {x.shape[-1]} features but the weight is {w.show()} "
            f"(expects {w.shape[1]})",
            span,
        )
    if "bias" in a:
        b = as_tensor(a["bias"], "linear()", span)
        if len(b.shape) != 1 or not _same(b.shape[0], w.shape[0]):
            raise EvalError(
                f"linear(): the bias must be [{w.shape[0]}] to match the weight {w.show()}, "
                f"got {b.show()}",
                span,
            )
    return Tensor((*x.shape[:-1], w.shape[0]), x.dtype)


# ---------------------------------------------------------------- heads and attention


def split_heads(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``split_heads(x, heads)``: ``[..., T, heads * d]`` -> ``[..., heads, T, d]``."""
    a = bind_args("split_heads", ("x", "heads"), 2, args, kwargs, span)
    x = as_tensor(a["x"], "split_heads()", span)
    heads = _int_arg("split_heads", "heads", a["heads"], span, low=1)
    _rank(x, 2, "split_heads", "a tensor [..., T, features]", span)
    features = x.shape[-1]
    if not is_int(features):
        raise EvalError(f"split_heads needs a known feature size, got {x.show()}", span)
    if features % heads:
        raise EvalError(
            f"split_heads: {features} features do not split into {heads} heads "
            f"(input shape {x.show()})",
            span,
        )
    return Tensor((*x.shape[:-2], heads, x.shape[-2], features // heads), x.dtype)


def merge_heads(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``merge_heads(x)``: ``[..., heads, T, d]`` -> ``[..., T, heads * d]``."""
    a = bind_args("merge_heads", ("x",), 1, args, kwargs, span)
    x = as_tensor(a["x"], "merge_heads()", span)
    _rank(x, 3, "merge_heads", "a tensor [..., heads, T, head_dim]", span)
    *batch, heads, t, d = x.shape
    return Tensor((*batch, t, sh.product([heads, d])), x.dtype)


_SDPA_ARGS = ("q", "k", "v", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def scaled_dot_product_attention(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """torch's ``F.scaled_dot_product_attention`` over ``[..., heads, T, head_dim]`` tensors."""
    op = "scaled_dot_product_attention"
    a = bind_args(op, _SDPA_ARGS, 3, args, kwargs, span)
    q, k, v = (_float_tensor(as_tensor(a[n], f"{op}()", span), f"{op}()", span) for n in "qkv")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _rank(t, 2, op, f"'{name}' of shape [..., T, head_dim]", span)
    if not len(q.shape) == len(k.shape) == len(v.shape):
        raise EvalError(
            f"{op}: q, k and v must have the same rank, got {q.show()}, {k.show()}, {v.show()}",
            span,
        )
    if not _same(q.shape[-1], k.shape[-1]):
        raise EvalError(
            f"{op}: q and k have different head sizes: {q.show()} vs {k.show()}", span
        )
    if not _same(k.shape[-2], v.shape[-2]) or not _same(k.shape[-3:-2], v.shape[-3:-2]):
        raise EvalError(
            f"{op}: k and v must have the same heads and length, got {k.show()} and {v.show()}",
            span,
        )
    gqa = _bool_arg(op, "enable_gqa", a.get("enable_gqa", False), span)
    _bool_arg(op, "is_causal", a.get("is_causal", False), span)
    dropout = _float_arg(op, "dropout_p", a.get("dropout_p", 0.0), span)
    if not 0 <= dropout < 1:
        raise EvalError(f"{op}(): dropout_p must be in [0, 1), got {dropout:g}", span)
    if "scale" in a:
        _float_arg(op, "scale", a["scale"], span)
    batch = sh.broadcast(q.shape[:-3], k.shape[:-3], "attend", span)
    if len(q.shape) >= 3:
        hq, hk = q.shape[-3], k.shape[-3]
        if is_int(hq) and is_int(hk) and hq != hk:
            if not gqa:
                raise EvalError(
                    f"{op}: q has {hq} heads but k and v have {hk}",
                    span,
                    "for grouped-query attention pass enable_gqa=true",
                )
            if hq % hk:
                raise EvalError(
                    f"{op}: {hq} query heads do not divide into groups of {hk} key heads", span
                )
        batch = (*batch, hq)
    out = Tensor((*batch, q.shape[-2], v.shape[-1]), q.dtype)
    if "attn_mask" in a:
        mask = as_tensor(a["attn_mask"], f"{op}()", span)
        scores = (*batch, q.shape[-2], k.shape[-2])
        sh.broadcast(mask.shape, scores, "apply the mask to", span)
    return out


def causal_mask(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``causal_mask(scores)``: -inf where a query would see a later key (``[..., T, S]``)."""
    a = bind_args("causal_mask", ("scores",), 1, args, kwargs, span)
    x = _float_tensor(as_tensor(a["scores"], "causal_mask()", span), "causal_mask()", span)
    _rank(x, 2, "causal_mask", "attention scores [..., T, S]", span)
    return x


def rotary(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``rotary(x, theta=10000.0, context=0)``: rotary positions on ``[..., T, head_dim]``."""
    a = bind_args("rotary", ("x", "theta", "context"), 1, args, kwargs, span)
    x = _float_tensor(as_tensor(a["x"], "rotary()", span), "rotary()", span)
    theta = _float_arg("rotary", "theta", a.get("theta", 10000.0), span)
    if theta <= 1:
        raise EvalError(f"rotary(): theta must be greater than 1, got {theta:g}", span)
    _int_arg("rotary", "context", a.get("context", 0), span, low=0)
    _rank(x, 2, "rotary", "a tensor [..., T, head_dim]", span)
    d = x.shape[-1]
    if is_int(d) and d % 2:
        raise EvalError(f"rotary: the head size must be even, got {d} ({x.show()})", span)
    return x


def kv_cache(args: list[Any], kwargs: dict[str, Any], span: Span) -> tuple[Tensor, Tensor]:
    """``kv_cache(k, v)``: keys and values of every token so far (just these without a cache)."""
    a = bind_args("kv_cache", ("k", "v"), 2, args, kwargs, span)
    k, v = (as_tensor(a[n], "kv_cache()", span) for n in "kv")
    _rank(k, 2, "kv_cache", "keys [..., T, head_dim]", span)
    if len(k.shape) != len(v.shape) or not _same(k.shape[-2], v.shape[-2]):
        raise EvalError(
            f"kv_cache: keys and values must have the same length, got {k.show()} and {v.show()}",
            span,
        )
    return k, v


# ---------------------------------------------------------------- parameter initializers


def initializer(kind: str) -> Any:
    """``zeros()``, ``ones()``, ``normal(mean=0, std=1)``, ``uniform(low=0, high=1)``."""
    names = {"normal": ("mean", "std"), "uniform": ("low", "high")}.get(kind, ())
    defaults = {"normal": (0.0, 1.0), "uniform": (0.0, 1.0)}.get(kind, (0.0, 0.0))

    def fn(args: list[Any], kwargs: dict[str, Any], span: Span) -> Init:
        a = bind_args(kind, names, 0, args, kwargs, span)
        first, second = (
            _float_arg(kind, name, a.get(name, default), span)
            for name, default in zip(names, defaults, strict=True)
        ) if names else (0.0, 0.0)
        if kind == "normal" and second < 0:
            raise EvalError(f"normal(): std must not be negative, got {second:g}", span)
        if kind == "uniform" and second < first:
            raise EvalError(f"uniform(): high ({second:g}) is below low ({first:g})", span)
        return Init(kind, first, second)

    return fn


def linear_weights(definition: n.Definition) -> set[str]:
    """Names passed as the weight of ``linear(x, W, ...)`` in a definition's forward: float
    ``param``s that take the definition's weight precision, as ``Linear`` layers do."""
    return {
        node.args[1].id
        for node in n.walk(definition)
        if isinstance(node, n.Call)
        and isinstance(node.func, n.Name)
        and node.func.id == "linear"
        and len(node.args) > 1
        and isinstance(node.args[1], n.Name)
    }


def expand(args: list[Any], kwargs: dict[str, Any], span: Span) -> Tensor:
    """``expand(x, N, -1, -1)``: torch's ``Tensor.expand`` (a class token per batch row).

    -1 keeps a size; only size-1 dimensions grow; new leading dimensions may be added.
    """
    if kwargs or len(args) < 2:
        raise EvalError("expand() expects a tensor and sizes, e.g. expand(t, x.shape[0], -1)", span)
    x = as_tensor(args[0], "expand()", span)
    sizes = list(args[1]) if len(args) == 2 and isinstance(args[1], tuple | list) else args[1:]
    target: list[Dim] = []
    for size in sizes:
        if isinstance(size, SymSize):
            target.append(size.dim)
        elif is_int(size) and (size == -1 or size >= 1):
            target.append(size)
        else:
            raise EvalError(
                f"expand(): sizes must be positive ints, -1 or tensor sizes, got "
                f"{show_value(size)}",
                span,
            )
    lead = len(target) - len(x.shape)
    if lead < 0:
        raise EvalError(
            f"expand(): {len(target)} sizes for a {len(x.shape)}-D tensor {x.show()}", span
        )
    out: list[Dim] = []
    for i, size in enumerate(target):
        current = x.shape[i - lead] if i >= lead else None
        if size == -1:
            if current is None:
                raise EvalError("expand(): a new leading dimension cannot be -1", span)
            out.append(current)
        elif current is None or current == 1 or _same(current, size):
            out.append(size)
        else:
            raise EvalError(
                f"expand(): dimension {i} of {x.show()} has size {current} and cannot become "
                f"{size} (only size-1 dimensions expand)",
                span,
            )
    return Tensor(tuple(out), x.dtype)
