"""Shape rules shared by layers and forward operations; dimensions may be symbolic."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tritondsl.compiler import symbolic
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import Dim, EvalError, Tensor, show_shape

MAX_SIZE = 2**31 - 1  # a size (channels, features, a dimension): torch kernels index with int32
MAX_ELEMENTS = 2**34  # elements of one tensor or layer weight (64 GiB in fp32)


def check_sizes(value: object, what: str, span: Span) -> None:
    """Refuse a tensor (or a tuple of them) larger than anything torch could build."""
    for tensor in value if isinstance(value, tuple | list) else (value,):
        if not isinstance(tensor, Tensor):
            continue
        known = [d for d in tensor.shape if isinstance(d, int)]
        if any(d > MAX_SIZE for d in known):
            raise EvalError(
                f"{what}: the output shape {tensor.show()} has a size above the limit of "
                f"{MAX_SIZE:,}",
                span,
            )
        if math.prod(known) > MAX_ELEMENTS:
            raise EvalError(
                f"{what}: the output shape {tensor.show()} has {math.prod(known):,} elements "
                f"per batch item, above the limit of {MAX_ELEMENTS:,}",
                span,
            )


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
        if not ceil:
            return f"{inner} // {s} + 1"
        # torch drops a last window that would start in the padding (see below).
        start = f"({size} {'+' if p >= 1 else '-'} {abs(p - 1)})" if p != 1 else size
        return f"min(ceil({inner} / {s}) + 1, {start} // {s} + 1)"
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
    return symbolic.multiply(dims)


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
    total: Dim = 0
    for d in dims:
        total = symbolic.combine(total, "+", d)
    return total


def reshape(x: Tensor, target: Sequence[Dim], span: Span) -> Tensor:
    """Shape of ``x.reshape(target)``; one ``-1`` is inferred, symbolic factors cancel."""
    if sum(1 for d in target if d == -1) > 1:
        raise EvalError("reshape: only one dimension can be -1", span)
    if any(isinstance(d, int) and d < -1 for d in target):
        raise EvalError(f"reshape: invalid size in {show_shape(tuple(target))}", span)
    total = product(x.shape)
    known = product([d for d in target if d != -1])
    wanted = show_shape(tuple(target))
    if -1 in target:
        inferred = symbolic.divide(total, known) if known != 0 else None
        if inferred is None:
            raise EvalError(f"reshape: cannot view {x.show()} as {wanted}", span)
        return Tensor(tuple(inferred if d == -1 else d for d in target), x.dtype)
    if symbolic.divide(total, known) != 1 or symbolic.divide(known, total) != 1:
        raise EvalError(f"reshape: {x.show()} has {total} elements, {wanted} has {known}", span)
    return Tensor(tuple(target), x.dtype)


def _dims(dims: int | Sequence[int], rank: int, op: str, span: Span) -> list[int]:
    """Normalized, distinct axes."""
    axes = [_axis(d, rank, op, span) for d in ([dims] if isinstance(dims, int) else dims)]
    if len(set(axes)) != len(axes):
        raise EvalError(f"{op}: dimension {dims} repeats an axis", span)
    return axes


def reduce(
    x: Tensor, dims: int | Sequence[int] | None, keepdim: bool, op: str, span: Span
) -> Tensor:
    """Shape of a reduction such as ``torch.mean(x, dims, keepdim)`` (None: every axis)."""
    rank = len(x.shape)
    axes = list(range(rank)) if dims is None else _dims(dims, max(rank, 1), op, span)
    if keepdim:
        return Tensor(tuple(1 if i in axes else d for i, d in enumerate(x.shape)), x.dtype)
    return Tensor(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)


def permute(x: Tensor, order: Sequence[int], span: Span) -> Tensor:
    """Shape of ``torch.permute(x, order)``."""
    rank = len(x.shape)
    if len(order) != rank:
        raise EvalError(
            f"permute: {list(order)} has {len(order)} axes, the tensor {x.show()} has {rank}",
            span,
        )
    axes = _dims(order, rank, "permute", span)
    return Tensor(tuple(x.shape[i] for i in axes), x.dtype)


def transpose(x: Tensor, dim0: int, dim1: int, span: Span) -> Tensor:
    """Shape of ``torch.transpose(x, dim0, dim1)``."""
    rank = len(x.shape)
    a, b = _axis(dim0, rank, "transpose", span), _axis(dim1, rank, "transpose", span)
    shape = list(x.shape)
    shape[a], shape[b] = shape[b], shape[a]
    return Tensor(tuple(shape), x.dtype)


def _slice_length(size: Dim, key: slice) -> Dim:
    """Length of ``range(size)[key]``; symbolic sizes are assumed to reach the bounds."""
    step = 1 if key.step is None else key.step
    if isinstance(size, int):
        return len(range(size)[key])
    lo = 0 if key.start is None else key.start
    hi: Dim = size if key.stop is None else key.stop
    if isinstance(lo, int) and lo < 0:
        lo = symbolic.combine(size, "-", -lo)
    if isinstance(hi, int) and hi < 0:
        hi = symbolic.combine(size, "-", -hi)
    length = symbolic.combine(hi, "-", lo)
    if step == 1:
        return length
    return symbolic.combine(symbolic.combine(length, "+", step - 1), "//", step)


def index(x: Tensor, keys: Sequence[int | slice], span: Span) -> Tensor:
    """Shape of ``x[keys]`` for int and slice keys (an int drops its axis)."""
    if len(keys) > len(x.shape):
        raise EvalError(f"too many indices ({len(keys)}) for the tensor {x.show()}", span)
    shape: list[Dim] = []
    for i, (size, key) in enumerate(zip(x.shape, keys, strict=False)):
        if isinstance(key, slice):
            if key.step is not None and key.step < 1:
                raise EvalError("a tensor slice needs a positive step", span)
            shape.append(_slice_length(size, key))
        elif isinstance(size, int) and not -size <= key < size:
            raise EvalError(f"index {key} is out of range for dimension {i} of {x.show()}", span)
    shape += x.shape[len(keys) :]
    return Tensor(tuple(shape), x.dtype)


def _known_size(x: Tensor, dim: int, op: str, span: Span) -> tuple[int, int]:
    axis = _axis(dim, len(x.shape), op, span)
    size = x.shape[axis]
    if not isinstance(size, int):
        raise EvalError(f"{op} needs a known size along dimension {dim}, got {size}", span)
    return axis, size


def _pieces(x: Tensor, axis: int, sizes: Sequence[int]) -> tuple[Tensor, ...]:
    return tuple(Tensor((*x.shape[:axis], s, *x.shape[axis + 1 :]), x.dtype) for s in sizes)


def chunk(x: Tensor, chunks: int, dim: int, span: Span) -> tuple[Tensor, ...]:
    """Shapes of ``torch.chunk(x, chunks, dim)`` (which may return fewer pieces)."""
    axis, size = _known_size(x, dim, "chunk", span)
    each = -(-size // chunks)
    count = -(-size // each) if size else 1
    return _pieces(x, axis, [min(each, size - i * each) for i in range(count)])


def split(x: Tensor, sizes: int | Sequence[int], dim: int, span: Span) -> tuple[Tensor, ...]:
    """Shapes of ``torch.split(x, sizes, dim)``: pieces of one size, or the sizes listed."""
    axis, size = _known_size(x, dim, "split", span)
    if isinstance(sizes, int):
        parts = [min(sizes, size - start) for start in range(0, size, sizes)] or [0]
    else:
        if sum(sizes) != size:
            raise EvalError(
                f"split: sizes {list(sizes)} add up to {sum(sizes)}, dimension {dim} of "
                f"{x.show()} has {size}",
                span,
            )
        parts = list(sizes)
    return _pieces(x, axis, parts)


INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


def _scaled(size: Dim, factor: int | float) -> Dim:
    """``floor(size * factor)``, as torch sizes an interpolation's output."""
    if isinstance(factor, int) or float(factor).is_integer():
        return symbolic.multiply([size, int(factor)])
    if isinstance(size, int):
        return math.floor(size * factor)
    return f"floor({size} * {factor!r})"


def interpolate(
    x: Tensor,
    size: int | Sequence[int] | None,
    scale_factor: float | Sequence[float] | None,
    mode: str,
    align_corners: bool | None,
    op: str,
    span: Span,
) -> Tensor:
    """Shape of ``F.interpolate`` on an image ``[N, C, H, W]``, with torch's argument rules."""
    batch, c, h, w = expect_image(x, op, span)
    expect_choice(mode, INTERPOLATE_MODES, f"{op}: mode", span)
    if align_corners is not None and mode not in ("bilinear", "bicubic"):
        raise EvalError(f"{op}: align_corners applies to bilinear and bicubic modes only", span)
    if (size is None) == (scale_factor is None):
        raise EvalError(f"{op}: give either size or scale_factor", span)
    if size is not None:
        oh, ow = (size, size) if isinstance(size, int) else size
        return Tensor((*batch, c, oh, ow), x.dtype)
    assert scale_factor is not None
    fh, fw = (scale_factor,) * 2 if isinstance(scale_factor, int | float) else scale_factor
    if fh <= 0 or fw <= 0:
        raise EvalError(f"{op}: scale_factor must be positive", span)
    oh, ow = _scaled(h, fh), _scaled(w, fw)
    if 0 in (oh, ow):
        raise EvalError(f"{op}: input of shape {x.show()} scales to an empty output", span)
    return Tensor((*batch, c, oh, ow), x.dtype)


def transposed_out(
    size: Dim, k: int, s: int, p: int, d: int, op: int, x: Tensor, span: Span
) -> Dim:
    """Output length of a transposed convolution: (size - 1)·s - 2p + d(k - 1) + op + 1."""
    extra = d * (k - 1) - 2 * p + op + 1 - s  # out = size·s + extra
    if isinstance(size, str):
        return (
            symbolic.combine(symbolic.multiply([size, s]), "+", extra)
            if extra >= 0
            else symbolic.combine(symbolic.multiply([size, s]), "-", -extra)
        )
    out = size * s + extra
    if out < 1:
        raise EvalError(
            f"ConvTranspose2d: input of shape {x.show()} gives an empty output "
            f"(kernel {k}, stride {s}, padding {p})",
            span,
        )
    return out
