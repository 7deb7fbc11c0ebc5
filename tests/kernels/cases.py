"""Shared parametrization for the kernel tests (dtypes by name, readable case ids)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

LinearCase = tuple[int, int, int, str, bool]


def linear_cases(cases: Sequence[LinearCase]) -> pytest.MarkDecorator:
    """Parametrize (m, k, n, dtype, bias) with ids such as ``M17-K300-N65-fp16-bias``."""
    return pytest.mark.parametrize(
        ("m", "k", "n", "dtype", "bias"),
        cases,
        ids=[f"M{m}-K{k}-N{n}-{d}-{'bias' if b else 'nobias'}" for m, k, n, d, b in cases],
    )
