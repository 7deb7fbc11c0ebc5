"""Shape rules shared by layers and forward operations; dimensions may be symbolic."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import Dim, EvalError, Tensor, show_shape


def expect_choice(value: str, choices: Sequence[str], what: str, span: Span) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise EvalError(
            f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}", span
        )


def expect_image(x: Tensor, layer: str, span: Span) -> tuple[tuple[Dim, ...], Dim, Dim, Dim]:
    """Split an image tensor ``[N, C, H, W]`` (or unbatched ``[C, H, W]``) into its parts."""
    if len(x.shape) not in (3, 4):
        raise EvalError(f"{layer} expects a 4-D input [N, C, H, W], got shape {x.show()}", span)
    *batch, c, h, w = x.shape
    return tuple(batch), c, h, w


def expect_dim(actual: Dim, expected: int, layer: str, what: str, x: Tensor, span: Span) -> None:
    """Raise when a known dimension differs from what a layer was built for."""
    if isinstance(actual, int) and actual != expected:
        what = what.removesuffix("s") if expected == 1 else what  # "1 input channel"
        raise EvalError(
            f"{layer} expects {expected} {what}, got {actual} (input shape {x.show()})", span
        )


def window_out(
    size: Dim, k: int, s: int, p: int, d: int, layer: str, x: Tensor, span: Span, ceil: bool = False
) -> Dim:
    """Output length of a sliding window (conv/pool) over ``size``, as torch computes it."""
    delta = 2 * p - d * (k - 1) - 1
    if isinstance(size, str):
        if s == 1 and delta == -1:
            return size
        sign = "+" if delta >= 0 else "-"
        inner = f"({size} {sign} {abs(delta)})" if delta else size
        return f"ceil({inner} / {s}) + 1" if ceil else f"{inner} // {s} + 1"
    span_len = size + delta
    out = (-(-span_len // s) if ceil else span_len // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1  # torch drops a last window that would start in the padding
    if span_len < 0 or out < 1:
        raise EvalError(
            f"{layer}: input of shape {x.show()} is too small for kernel {k} "
            f"(stride {s}, padding {p}, dilation {d}): the output would be empty",
            span,
        )
    return out


def product(dims: Sequence[Dim]) -> Dim:
    """Product of dimensions, symbolic when any is symbolic."""
    if all(isinstance(d, int) for d in dims):
        return math.prod(dims)  # type: ignore[arg-type]
    return " * ".join(str(d) for d in dims)


def _axis(dim: int, rank: int, op: str, span: Span) -> int:
    if not -rank <= dim < rank:
        raise EvalError(f"{op}: dimension {dim} is out of range for a {rank}-D tensor", span)
    return dim % rank


def flatten(x: Tensor, start: int, end: int, span: Span) -> Tensor:
    """Shape of ``torch.flatten(x, start, end)``."""
    rank = len(x.shape)
    if rank == 0:
        return Tensor((1,), x.dtype)
    lo, hi = _axis(start, rank, "flatten", span), _axis(end, rank, "flatten", span)
    if lo > hi:
        raise EvalError(f"flatten: start_dim {start} comes after end_dim {end}", span)
    merged = product(x.shape[lo : hi + 1])
    return Tensor((*x.shape[:lo], merged, *x.shape[hi + 1 :]), x.dtype)


def _merge(a: Dim, b: Dim) -> Dim | None:
    """Broadcast two dimensions; None when they cannot match."""
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    if isinstance(a, str) or isinstance(b, str):
        return b if isinstance(a, str) else a  # a symbol may take the concrete size
    return None


def broadcast(a: tuple[Dim, ...], b: tuple[Dim, ...], what: str, span: Span) -> tuple[Dim, ...]:
    """Broadcast two shapes as torch does, or raise naming both shapes."""
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        merged = _merge(da, db)
        if merged is None:
            raise EvalError(
                f"cannot {what} tensors of shapes {show_shape(a)} and {show_shape(b)} "
                f"(dimension {-i}: {da} vs {db})",
                span,
            )
        out.append(merged)
    return tuple(reversed(out))


def matmul(a: Tensor, b: Tensor, span: Span) -> Tensor:
    """Shape of ``a @ b`` with torch.matmul's rules."""
    if not a.shape or not b.shape:
        raise EvalError("matmul needs tensors with at least one dimension", span)
    sa = a.shape if len(a.shape) > 1 else (1, *a.shape)
    sb = b.shape if len(b.shape) > 1 else (*b.shape, 1)
    k1, k2 = sa[-1], sb[-2]
    if _merge(k1, k2) is None or (k1 != k2 and 1 in (k1, k2)):
        raise EvalError(
            f"matmul: inner dimensions differ: {a.show()} @ {b.show()} ({k1} vs {k2})", span
        )
    batch = broadcast(sa[:-2], sb[:-2], "matmul", span)
    out = (*batch, sa[-2], sb[-1])
    if len(a.shape) == 1:
        out = (*out[:-2], out[-1])
    if len(b.shape) == 1:
        out = out[:-1]
    return Tensor(tuple(out), a.dtype)


def cat(tensors: Sequence[Tensor], dim: int, span: Span) -> Tensor:
    """Shape of ``torch.cat(tensors, dim)``."""
    if not tensors:
        raise EvalError("cat needs at least one tensor", span)
    rank = len(tensors[0].shape)
    axis = _axis(dim, rank, "cat", span) if rank else 0
    for t in tensors[1:]:
        same_rank = len(t.shape) == rank
        mismatch = same_rank and any(
            _merge(x, y) is None or (x != y and 1 in (x, y))
            for i, (x, y) in enumerate(zip(tensors[0].shape, t.shape, strict=True))
            if i != axis
        )
        if not same_rank or mismatch:
            shapes = ", ".join(x.show() for x in tensors)
            raise EvalError(f"cat: shapes {shapes} differ outside dimension {dim}", span)
    total = _sum_dims([t.shape[axis] for t in tensors])
    shape = list(tensors[0].shape)
    shape[axis] = total
    return Tensor(tuple(shape), tensors[0].dtype)


def _sum_dims(dims: Sequence[Dim]) -> Dim:
    if all(isinstance(d, int) for d in dims):
        return sum(dims)  # type: ignore[arg-type]
    return " + ".join(str(d) for d in dims)


def reshape(x: Tensor, target: Sequence[int], span: Span) -> Tensor:
    """Shape of ``x.reshape(target)``; one ``-1`` is inferred when sizes are known."""
    if sum(1 for d in target if d == -1) > 1:
        raise EvalError("reshape: only one dimension can be -1", span)
    if any(d < -1 for d in target):
        raise EvalError(f"reshape: invalid size in {list(target)}", span)
    total = product(x.shape)
    known = math.prod(d for d in target if d != -1)
    if isinstance(total, int):
        if -1 in target:
            if known == 0 or total % known:
                raise EvalError(f"reshape: cannot view {x.show()} as {list(target)}", span)
            return Tensor(tuple(total // known if d == -1 else d for d in target), x.dtype)
        if known != total:
            raise EvalError(
                f"reshape: {x.show()} has {total} elements, {list(target)} has {known}", span
            )
        return Tensor(tuple(target), x.dtype)
    if -1 not in target:
        return Tensor(tuple(target), x.dtype)
    # Symbolic size: the -1 takes the symbolic dims times what is left of the known ones.
    fixed = math.prod(d for d in x.shape if isinstance(d, int))
    symbols = " * ".join(str(d) for d in x.shape if isinstance(d, str))
    if fixed % known:
        raise EvalError(f"reshape: cannot view {x.show()} as {list(target)}", span)
    factor = fixed // known
    inferred: Dim = symbols if factor == 1 else f"{symbols} * {factor}"
    return Tensor(tuple(inferred if d == -1 else d for d in target), x.dtype)
