"""Kernel selection by shape, the dense fallback path, and the pointwise-conv route."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from tests.kernels.cases import DTYPES, linear_cases
from tritondsl.kernels import dispatch
from tritondsl.kernels._common import conv2d_geometry
from tritondsl.kernels.reference import (
    ternary_conv2d_reference,
    ternary_linear_reference,
)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("m", "device", "expected"),
    [
        (1, CPU, "gemv"),
        (dispatch.GEMV_MAX_M, CPU, "gemv"),
        (dispatch.GEMV_MAX_M + 1, CPU, "gemm"),
        (dispatch.DENSE_MIN_M, CPU, "gemm"),  # the interpreter always runs Triton kernels
        (1, CUDA, "gemv"),
        (dispatch.GEMV_MAX_M + 1, CUDA, "gemm"),
        (dispatch.DENSE_MIN_M - 1, CUDA, "gemm"),
        (dispatch.DENSE_MIN_M, CUDA, "dense"),
    ],
    ids=["cpu-1", "cpu-gemv-max", "cpu-gemv-max+1", "cpu-dense-min", "cuda-1", "cuda-gemv-max+1",
         "cuda-dense-min-1", "cuda-dense-min"],
)  # fmt: skip
def test_matmul_path_by_rows(m: int, device: torch.device, expected: str) -> None:
    assert dispatch.matmul_path(m, device) == expected


def test_thresholds_are_ordered() -> None:
    assert 1 <= dispatch.GEMV_MAX_M < dispatch.DENSE_MIN_M


DENSE_CASES = list(itertools.product([1, 17, 64], [5, 300], [7, 65], DTYPES, [True, False]))


@linear_cases(DENSE_CASES)
def test_dense_matmul_matches_reference(
    matches_linear_reference: Callable[..., None], m: int, k: int, n: int, dtype: str, bias: bool
) -> None:
    matches_linear_reference(dispatch.dense_matmul, m, k, n, DTYPES[dtype], bias)


@pytest.mark.triton_interpret
@pytest.mark.parametrize("m", [1, dispatch.GEMV_MAX_M, dispatch.GEMV_MAX_M + 1, 40])
def test_run_linear_matches_reference(
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    m: int,
) -> None:
    x, packed, scale, bias = linear_args(m, 77, 30, torch.float16)
    x = x.reshape(1, m, 77)
    assert_close(
        dispatch.run_linear(x, packed, scale, bias),
        ternary_linear_reference(x, packed, scale, bias),
    )


@pytest.mark.triton_interpret
@pytest.mark.parametrize(
    ("x_shape", "weight_shape", "stride", "groups"),
    [((2, 12, 5, 3), (10, 12, 1, 1), 1, 1), ((1, 5, 3, 2), (7, 5, 1, 1), 1, 1),
     ((2, 4, 6, 5), (6, 2, 3, 3), 2, 2)],
    ids=["pointwise-gemm", "pointwise-gemv", "grouped-3x3"],
)  # fmt: skip
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_run_conv2d_matches_reference(
    conv_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    x_shape: tuple[int, int, int, int],
    weight_shape: tuple[int, int, int, int],
    stride: int,
    groups: int,
    channels_last: bool,
) -> None:
    x, packed, scale, bias = conv_args(x_shape, weight_shape, torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, stride, 0, 1, groups)
    args = (x, packed, scale, bias, geo)
    y = dispatch.run_conv2d(*args)
    assert y.is_contiguous()
    assert_close(y, ternary_conv2d_reference(*args))
