"""The implicit-GEMM conv2d kernel, run through the Triton interpreter, against the reference."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from tests.kernels.cases import DTYPES
from tritondsl.kernels._common import conv2d_geometry
from tritondsl.kernels.reference import ternary_conv2d_reference
from tritondsl.kernels.ternary_conv2d_igemm import (
    GPU_CONFIGS,
    prune_configs,
    ternary_conv2d_igemm,
)

pytestmark = pytest.mark.triton_interpret


GEOMETRIES = {
    # id: (x shape, weight shape [out, in/groups, kh, kw], stride, padding, dilation, groups)
    "3x3-pad1": ((2, 3, 9, 7), (5, 3, 3, 3), 1, 1, 1, 1),
    "3x2-stride2-padh1-groups2": ((1, 4, 10, 11), (8, 2, 3, 2), 2, (1, 0), 1, 2),
    "5x5-stride2x1-dil1x2-groups4": ((1, 8, 12, 9), (16, 2, 5, 5), (2, 1), 2, (1, 2), 4),
    "depthwise-3x3-dil2": ((2, 6, 8, 8), (6, 1, 3, 3), 1, 2, 2, 6),
    "depthwise-x2-stride2": ((1, 4, 7, 9), (8, 1, 3, 3), 2, 1, 1, 4),
    "1x1-stride2": ((2, 5, 7, 6), (9, 5, 1, 1), 2, 0, 1, 1),
    "7x7-stride3-pad3-wide": ((1, 3, 13, 17), (20, 3, 7, 7), 3, 3, 1, 1),
    "3x3-deep-K": ((1, 40, 5, 5), (33, 40, 3, 3), 1, 1, 1, 1),
    "kernel-equals-input": ((3, 2, 4, 5), (3, 2, 4, 5), 1, 0, 1, 1),
}
CASES = list(itertools.product(GEOMETRIES, DTYPES, [True, False]))
# Fast tier: each geometry once, the dtype and bias cycling (make test runs all of CASES).
FAST = {(g, list(DTYPES)[i % 3], i % 2 == 0) for i, g in enumerate(GEOMETRIES)}


@pytest.mark.parametrize(
    ("geometry", "dtype", "bias"),
    [pytest.param(*case, marks=() if case in FAST else pytest.mark.slow) for case in CASES],
    ids=[f"{g}-{d}-{'bias' if b else 'nobias'}" for g, d, b in CASES],
)
def test_conv2d_igemm_matches_reference(
    conv_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    geometry: str,
    dtype: str,
    bias: bool,
) -> None:
    x_shape, weight_shape, stride, padding, dilation, groups = GEOMETRIES[geometry]
    x, packed, scale, b = conv_args(x_shape, weight_shape, DTYPES[dtype], bias)
    args = (x, packed, scale, b, conv2d_geometry(x, packed, scale, b, weight_shape, stride,
                                                 padding, dilation, groups))  # fmt: skip
    assert_close(ternary_conv2d_igemm(*args), ternary_conv2d_reference(*args))


def test_conv2d_igemm_channels_last_input(
    conv_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    weight_shape = (6, 4, 3, 3)
    x, packed, scale, bias = conv_args((2, 4, 6, 5), weight_shape, torch.float16)
    x = x.to(memory_format=torch.channels_last)
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, 1, 1, 1, 1)
    y = ternary_conv2d_igemm(x, packed, scale, bias, geo)
    assert y.is_contiguous()
    assert_close(y, ternary_conv2d_reference(x, packed, scale, bias, geo))


def test_conv2d_igemm_per_tensor_scale(
    conv_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    weight_shape = (4, 3, 2, 2)
    x, packed, _, bias = conv_args((1, 3, 5, 5), weight_shape, torch.float32)
    scale = torch.tensor([0.75])
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, 1, 0, 1, 1)
    assert_close(
        ternary_conv2d_igemm(x, packed, scale, bias, geo),
        ternary_conv2d_reference(x, packed, scale, bias, geo),
    )


def test_conv2d_igemm_rejects_tensors_its_geometry_is_not_for(
    conv_args: Callable[..., tuple],
) -> None:
    weight_shape = (4, 3, 2, 2)
    x, packed, scale, bias = conv_args((1, 3, 5, 5), weight_shape, torch.float32)
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, 1, 0, 1, 1)
    with pytest.raises(ValueError, match=r"x: shape \[1, 3, 5, 6\] does not match"):
        ternary_conv2d_igemm(torch.zeros(1, 3, 5, 6), packed, scale, bias, geo)
    with pytest.raises(ValueError, match=r"packed: shape \[4, 2\] does not match"):
        ternary_conv2d_igemm(x, packed[:, :-1], scale, bias, geo)


def test_prune_configs_fits_tiles_to_a_group() -> None:
    depthwise = {"BATCH": 1, "H_OUT": 8, "W_OUT": 8, "N_G": 1, "K_G": 9}
    kept = prune_configs(GPU_CONFIGS, depthwise)
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept] == [(64, 16)]
    wide = {"BATCH": 8, "H_OUT": 28, "W_OUT": 28, "N_G": 256, "K_G": 1152}
    assert prune_configs(GPU_CONFIGS, wide) == GPU_CONFIGS
