"""The tiled tl.dot GEMM kernel, run through the Triton interpreter, against the reference."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from tests.kernels.cases import DTYPES, diagonal, linear_cases
from tritondsl.kernels.reference import ternary_linear_reference
from tritondsl.kernels.ternary_gemm import GPU_CONFIGS, prune_configs, ternary_gemm

pytestmark = pytest.mark.triton_interpret

SHAPES = list(itertools.product([1, 3, 17, 64], [5, 127, 300, 1024], [7, 65, 256]))
CASES = [
    (m, k, n, dtype, bias)
    for (m, k, n), dtype, bias in itertools.product(SHAPES, DTYPES, [True, False])
]


@linear_cases(CASES, fast=diagonal)
def test_gemm_matches_reference(
    matches_linear_reference: Callable[..., None], m: int, k: int, n: int, dtype: str, bias: bool
) -> None:
    matches_linear_reference(ternary_gemm, m, k, n, DTYPES[dtype], bias)


def test_gemm_per_tensor_scale_and_leading_dims(
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    x, packed, scale, bias = linear_args(40, 33, 20, torch.bfloat16, per_tensor=True)
    x = x.reshape(2, 4, 5, 33)
    y = ternary_gemm(x, packed, scale, bias, k=33)
    assert y.shape == (2, 4, 5, 20)
    assert_close(y, ternary_linear_reference(x, packed, scale, bias))


def test_gemm_strided_x(
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    x, packed, scale, bias = linear_args(20, 70, 9, torch.float16)
    x = x.T.contiguous().T  # same values, column-major
    assert x.stride() == (1, 20)
    assert_close(
        ternary_gemm(x, packed, scale, bias), ternary_linear_reference(x, packed, scale, bias)
    )


def test_gemm_all_zero_weights_give_bias(linear_args: Callable[..., tuple]) -> None:
    x, packed, scale, bias = linear_args(18, 9, 5, torch.float32)
    zero = torch.full_like(packed, 0b01010101)  # every code 0b01: trit 0
    torch.testing.assert_close(ternary_gemm(x, zero, scale, bias), bias.expand(18, 5))


def test_gemm_rejects_bad_arguments(linear_args: Callable[..., tuple]) -> None:
    x, packed, scale, bias = linear_args(18, 9, 5, torch.float32)
    with pytest.raises(TypeError, match="x: expected float32"):
        ternary_gemm(x.to(torch.int32), packed, scale, bias)
    with pytest.raises(ValueError, match=r"bias: expected shape \[5\]"):
        ternary_gemm(x, packed, scale, bias[:4])


def test_prune_configs_fits_tiles_to_the_problem() -> None:
    kept = prune_configs(GPU_CONFIGS, {"M": 20, "N": 4096, "K": 4096})
    assert {c.kwargs["BLOCK_M"] for c in kept} == {16, 32}
    tiny = prune_configs(GPU_CONFIGS, {"M": 1, "N": 7, "K": 5})
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in tiny] == [
        (16, 64, 128)
    ]
