"""The plain-torch references against dense math on the original trits (no unpacking)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.cases import DTYPES
from tritondsl.kernels._common import conv2d_geometry
from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference

LINEAR_CASES = list(itertools.product([1, 17], [5, 300], [7, 65], DTYPES, [True, False]))


@pytest.mark.parametrize(
    ("m", "k", "n", "dtype", "bias"),
    LINEAR_CASES,
    ids=[f"M{m}-K{k}-N{n}-{d}-{'bias' if b else 'nobias'}" for m, k, n, d, b in LINEAR_CASES],
)
def test_linear_reference_matches_dense_math(
    ternary_weights: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    m: int,
    k: int,
    n: int,
    dtype: str,
    bias: bool,
) -> None:
    trits, packed = ternary_weights(n, k)
    x = torch.randn(2, m, k).to(DTYPES[dtype])
    scale = torch.rand(n) + 0.5
    b = torch.randn(n) if bias else None
    dense = trits.double() * scale.double()[:, None]
    expected = x.double() @ dense.T + (b.double() if bias else 0.0)
    actual = ternary_linear_reference(x, packed, scale, b, k=k)
    assert_close(actual, expected.to(x.dtype))


def test_linear_reference_per_tensor_scale(
    ternary_weights: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> None:
    trits, packed = ternary_weights(6, 9)
    x = torch.randn(4, 9)
    actual = ternary_linear_reference(x, packed, torch.tensor([0.25]))
    torch.testing.assert_close(actual, 0.25 * (x @ trits.float().T))


CONV_CASES = [
    # (x shape, weight shape, stride, padding, dilation, groups)
    ((2, 3, 9, 7), (5, 3, 3, 3), 1, 1, 1, 1),
    ((1, 4, 10, 11), (8, 2, 3, 2), 2, (1, 0), 1, 2),
    ((2, 6, 8, 8), (6, 1, 3, 3), 1, 2, 2, 6),
]


@pytest.mark.parametrize(
    ("x_shape", "weight_shape", "stride", "padding", "dilation", "groups"),
    CONV_CASES,
    ids=["3x3-pad1", "grouped-stride2", "depthwise-dilated"],
)
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_conv2d_reference_matches_dense_conv(
    ternary_weights: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    x_shape: tuple[int, int, int, int],
    weight_shape: tuple[int, int, int, int],
    stride: int,
    padding: int,
    dilation: int,
    groups: int,
    dtype: str,
) -> None:
    c_out = weight_shape[0]
    trits, packed = ternary_weights(c_out, weight_shape[1] * weight_shape[2] * weight_shape[3])
    x = torch.randn(x_shape).to(DTYPES[dtype])
    scale, bias = torch.rand(c_out) + 0.5, torch.randn(c_out)
    dense = trits.double().reshape(weight_shape) * scale.double().reshape(-1, 1, 1, 1)
    expected = F.conv2d(x.double(), dense, bias.double(), stride, padding, dilation, groups)
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, stride, padding, dilation, groups)
    actual = ternary_conv2d_reference(x, packed, scale, bias, geo)
    assert_close(actual, expected.to(x.dtype))
