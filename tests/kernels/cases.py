"""Shared parametrization for the kernel tests (dtypes by name, readable case ids)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

LinearCase = tuple[int, int, int, str, bool]


def linear_cases(
    cases: Sequence[LinearCase], fast: Callable[[LinearCase], bool] = lambda _: True
) -> pytest.MarkDecorator:
    """Parametrize (m, k, n, dtype, bias) with ids such as ``M17-K300-N65-fp16-bias``.

    Cases ``fast`` rejects are marked slow: ``make test`` runs them all, the fast tier a
    subset that still covers every size and dtype.
    """
    return pytest.mark.parametrize(
        ("m", "k", "n", "dtype", "bias"),
        [pytest.param(*case, marks=() if fast(case) else pytest.mark.slow) for case in cases],
        ids=[f"M{m}-K{k}-N{n}-{d}-{'bias' if b else 'nobias'}" for m, k, n, d, b in cases],
    )


def diagonal(case: LinearCase) -> bool:
    """A subset of a full (m, k, n, dtype, bias) product in which every size and every dtype
    occurs: one dtype and bias setting per shape, cycling, and no 64 x 1024 products (the
    interpreter's slowest)."""
    m, k, n, dtype, bias = case
    index = (m + k + n) % len(DTYPES)
    return list(DTYPES)[index] == dtype and bias == (index != 1) and m * k <= 64 * 300
