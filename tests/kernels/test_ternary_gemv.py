"""The split-K GEMV kernel, run through the Triton interpreter, against the reference."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from tests.kernels.cases import DTYPES, linear_cases
from tritondsl.kernels.reference import ternary_linear_reference
from tritondsl.kernels.ternary_gemv import (
    GPU_CONFIGS,
    choose_split_k,
    prune_configs,
    ternary_gemv,
)

pytestmark = pytest.mark.triton_interpret

SIZES_K = [5, 127, 300, 1024]
SIZES_N = [7, 65, 256]
# fp32: the full product for M = 1, 3, 17. The kernel runs one program per row, so in
# the interpreter M = 64 costs ~2 s a case; it gets a subset (the dispatcher only sends
# M <= GEMV_MAX_M here; 17 and 64 check that the kernel does not assume few rows).
# Half precision changes only the x load and the final cast: a diagonal subset.
FP32_CASES = [
    *itertools.product([1, 3, 17], SIZES_K, SIZES_N, ["fp32"], [True, False]),
    *itertools.product([64], [5, 1024], [65, 256], ["fp32"], [True]),
]
HALF_CASES = [
    (m, k, n, dtype, bias)
    for (m, k, n), dtype, bias in itertools.product(
        [(1, 1024, 65), (3, 127, 256), (17, 300, 7), (64, 5, 65)], ["fp16", "bf16"], [True, False]
    )
]
CASES = FP32_CASES + HALF_CASES


# Fast tier: every half-precision case and a third of the fp32 product (all sizes occur),
# without the interpreter's slowest (64 rows of 1024).
@linear_cases(
    CASES,
    fast=lambda case: (case[3] != "fp32" or sum(case[:3]) % 3 == 0) and case[0] * case[1] < 64**2,
)
def test_gemv_matches_reference(
    matches_linear_reference: Callable[..., None], m: int, k: int, n: int, dtype: str, bias: bool
) -> None:
    matches_linear_reference(ternary_gemv, m, k, n, DTYPES[dtype], bias)


@pytest.mark.parametrize("split_k", [1, 2, 3, 7])
def test_gemv_split_k_slices_cover_k_once(
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    split_k: int,
) -> None:
    # Slices are whole BLOCK_K steps: with 3 or 7 slices of K = 1000 the last ones are
    # empty (in the interpreter's 512-trit steps) and must add nothing.
    args = linear_args(2, 1000, 33, torch.float32)
    assert_close(ternary_gemv(*args, split_k=split_k), ternary_linear_reference(*args))


def test_gemv_per_tensor_scale_and_leading_dims(
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    x, packed, scale, bias = linear_args(6, 40, 9, torch.float16, per_tensor=True)
    x = x.reshape(2, 3, 40)
    y = ternary_gemv(x, packed, scale, bias, k=40)
    assert y.shape == (2, 3, 9)
    assert_close(y, ternary_linear_reference(x, packed, scale, bias))


def test_gemv_strided_x(
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    x, packed, scale, bias = linear_args(3, 40, 11, torch.float32)
    x = x.T.contiguous().T  # same values, stride 3 along K
    assert x.stride() == (1, 3)
    assert_close(
        ternary_gemv(x, packed, scale, bias), ternary_linear_reference(x, packed, scale, bias)
    )


def test_gemv_zero_rows(linear_args: Callable[..., tuple]) -> None:
    x, packed, scale, bias = linear_args(1, 8, 5, torch.float32)
    assert ternary_gemv(x[:0], packed, scale, bias).shape == (0, 5)


def test_gemv_rejects_bad_arguments(linear_args: Callable[..., tuple]) -> None:
    x, packed, scale, bias = linear_args(1, 8, 5, torch.float32)
    with pytest.raises(ValueError, match="split_k must be >= 1"):
        ternary_gemv(x, packed, scale, bias, split_k=0)
    with pytest.raises(TypeError, match="x: expected float32"):
        ternary_gemv(x.double(), packed, scale, bias)
    with pytest.raises(ValueError, match="k=9 does not match"):
        ternary_gemv(x, packed, scale, bias, k=9)


def test_choose_split_k() -> None:
    cpu = torch.device("cpu")
    assert choose_split_k(1, 8, 300, cpu) == 1  # K too short to split
    assert choose_split_k(1, 8, 4096, cpu) == 2  # one tile: two slices make two "waves"
    assert choose_split_k(64, 256, 4096, cpu) == 1  # plenty of tiles already


def test_prune_configs_fits_tiles_to_n_and_the_k_slice() -> None:
    kept = prune_configs(GPU_CONFIGS, {"N": 4096, "K": 1024, "SPLIT_K": 4})
    assert kept
    assert all(c.kwargs["BLOCK_K"] <= 256 for c in kept)  # 256-trit slices
    assert len(prune_configs(GPU_CONFIGS, {"N": 20, "K": 5, "SPLIT_K": 1})) == 1
