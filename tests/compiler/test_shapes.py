"""Shape rules for forward operations agree with torch, including where torch refuses."""

from __future__ import annotations

import pytest
import torch

from tritondsl.compiler import shapes as sh
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import EvalError, Tensor

SPAN = Span(1, 1, 1, 2)


def _torch_shape(fn, *shapes):
    try:
        return tuple(fn(*[torch.zeros(s) for s in shapes]).shape)
    except RuntimeError:
        return None


def _ours(fn, *args):
    try:
        return fn(*args)
    except EvalError:
        return None


BROADCAST = [((2, 3), (3,)), ((2, 1, 4), (5, 1)), ((2, 3), (2, 4)), ((1,), (7, 7)), ((), (2,)),
             ((4, 1, 3), (4, 2, 3)), ((3, 4), (4, 3))]


@pytest.mark.parametrize(("a", "b"), BROADCAST, ids=str)
def test_broadcast_matches_torch(a, b) -> None:
    ours = _ours(sh.broadcast, a, b, "add", SPAN)
    assert ours == _torch_shape(torch.add, a, b)


MATMUL = [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4, 5)),
          ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((3, 4), (5, 6)), ((4,), (4,))]


@pytest.mark.parametrize(("a", "b"), MATMUL, ids=str)
def test_matmul_matches_torch(a, b) -> None:
    ours = _ours(sh.matmul, Tensor(a), Tensor(b), SPAN)
    assert (ours.shape if ours else None) == _torch_shape(torch.matmul, a, b)


CAT = [([(2, 3), (2, 5)], 1), ([(2, 3), (4, 3)], 0), ([(2, 3), (2, 4)], 0), ([(2, 3, 4)], -1),
       ([(1, 2), (1, 2, 3)], 0)]


@pytest.mark.parametrize(("shapes", "dim"), CAT, ids=str)
def test_cat_matches_torch(shapes, dim) -> None:
    ours = _ours(sh.cat, [Tensor(s) for s in shapes], dim, SPAN)
    expected = _torch_shape(lambda *ts: torch.cat(ts, dim), *shapes)
    assert (ours.shape if ours else None) == expected


RESHAPE = [((2, 3, 4), [6, 4]), ((2, 3, 4), [-1, 12]), ((2, 3, 4), [5, -1]), ((2, 3, 4), [-1]),
           ((2, 3, 4), [4, 6]), ((2, 3, 4), [-1, -1]), ((2, 3, 4), [7, 3])]


@pytest.mark.parametrize(("shape", "target"), RESHAPE, ids=str)
def test_reshape_matches_torch(shape, target) -> None:
    ours = _ours(sh.reshape, Tensor(shape), target, SPAN)
    expected = _torch_shape(lambda t: t.reshape(target), shape)
    assert (ours.shape if ours else None) == expected


@pytest.mark.parametrize(("shape", "start", "end"), [((2, 3, 4, 5), 1, -1), ((2, 3, 4), 0, 1),
                                                     ((2, 3, 4), 2, 1), ((5,), 0, -1)], ids=str)
def test_flatten_matches_torch(shape, start, end) -> None:
    ours = _ours(sh.flatten, Tensor(shape), start, end, SPAN)
    expected = _torch_shape(lambda t: torch.flatten(t, start, end), shape)
    assert (ours.shape if ours else None) == expected


def test_symbolic_batch_passes_through_and_mismatch_names_both_shapes() -> None:
    assert sh.broadcast(("N", 64, 8, 8), ("N", 64, 8, 8), "add", SPAN) == ("N", 64, 8, 8)
    with pytest.raises(EvalError, match=r"cannot add tensors of shapes \[N, 64, 8, 8\] and "
                                        r"\[N, 128, 4, 4\]"):
        sh.broadcast(("N", 64, 8, 8), ("N", 128, 4, 4), "add", SPAN)


def test_symbolic_reshape_keeps_the_batch_symbol() -> None:
    assert sh.reshape(Tensor(("N", 512, 1, 1)), [-1, 512], SPAN).shape == ("N", 512)
    assert sh.reshape(Tensor(("N", 8, 2, 2)), [-1, 32], SPAN).shape == ("N", 32)
    assert sh.reshape(Tensor(("N", 8, 2, 2)), [-1, 16], SPAN).shape == ("N * 2", 16)
