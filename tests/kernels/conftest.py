"""Kernel tests run the real Triton kernels on CPU through Triton's interpreter.

``@triton.jit`` (triton's own helpers included) decides at decoration time whether to
interpret, so TRITON_INTERPRET must be set before triton is first imported: here, at
the top of this conftest, which pytest loads before the test modules of this folder.
"""

from __future__ import annotations

import os
import sys

_TRITON_PREIMPORTED = "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1"
os.environ["TRITON_INTERPRET"] = "1"

# The interpreter turns every tile op into small numpy/torch calls, on which OpenMP and
# OpenBLAS worker threads only spin: one thread halves this folder's CPU time on 2 cores.
# Both runtimes read their thread count when they load, so set it just for the imports
# below (a no-op when an earlier test module loaded them) and leave the environment as
# it was for everything else, subprocesses included.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_saved_env = {name: os.environ.get(name) for name in _THREAD_VARS}
for _name in _THREAD_VARS:
    os.environ.setdefault(_name, "1")

from collections.abc import Callable  # noqa: E402  (after the environment is set)

import numpy  # noqa: E402, F401  (loads OpenBLAS under the setting above)
import pytest  # noqa: E402
import torch  # noqa: E402

from tritondsl.kernels.packing import pack  # noqa: E402

for _name, _value in _saved_env.items():
    if _value is None:
        del os.environ[_name]

# Kernel and reference both accumulate in float32 and round once to the output dtype,
# so they differ by summation order plus at most one output ulp (relative 2^-10 in fp16,
# 2^-7 in bf16); the tolerances allow two.
TOLERANCES = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 1.6e-2, "rtol": 1.6e-2},
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail interpreter tests loudly when triton was imported before the interpreter was on."""
    if _TRITON_PREIMPORTED and item.get_closest_marker("triton_interpret"):
        pytest.fail(
            "triton was imported before tests/kernels/conftest.py set TRITON_INTERPRET=1, so "
            "its kernels are not interpreted; run with TRITON_INTERPRET=1 in the environment",
            pytrace=False,
        )


@pytest.fixture
def ternary_weights() -> Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """Factory: random trits [n, k] (one row all zero when possible) and their packing."""

    def make(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        trits = torch.randint(-1, 2, (n, k), dtype=torch.int8)
        if n > 1:
            trits[-1] = 0  # an all-zero channel, whose output is the bias alone
        return trits, pack(trits)

    return make


LinearArgs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]


@pytest.fixture
def linear_args(
    ternary_weights: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
) -> Callable[..., LinearArgs]:
    """Factory: (x [m, k], packed [n, ceil(k/4)], scale, bias or None) for a ternary linear."""

    def make(
        m: int, k: int, n: int, dtype: torch.dtype, bias: bool = True, per_tensor: bool = False
    ) -> LinearArgs:
        x = (torch.randn(m, k) / k**0.5).to(dtype)  # keeps outputs O(1) for every K
        _, packed = ternary_weights(n, k)
        scale = torch.rand(1 if per_tensor else n) + 0.5
        return x, packed, scale, torch.randn(n) if bias else None

    return make


@pytest.fixture
def conv_args(
    ternary_weights: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
) -> Callable[..., LinearArgs]:
    """Factory: (x NCHW, packed, scale, bias or None) for a conv with ``weight_shape``."""

    def make(
        x_shape: tuple[int, int, int, int],
        weight_shape: tuple[int, int, int, int],
        dtype: torch.dtype,
        bias: bool = True,
    ) -> LinearArgs:
        c_out, c_in_group, kh, kw = weight_shape
        k = c_in_group * kh * kw
        x = (torch.randn(x_shape) / k**0.5).to(dtype)
        _, packed = ternary_weights(c_out, k)
        return x, packed, torch.rand(c_out) + 0.5, torch.randn(c_out) if bias else None

    return make


@pytest.fixture
def matches_linear_reference(
    linear_args: Callable[..., LinearArgs],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
) -> Callable[..., None]:
    """Check: ``fn(x, packed, scale, bias)`` equals the reference on one (m, k, n) case."""
    from tritondsl.kernels.reference import ternary_linear_reference

    def check(
        fn: Callable[..., torch.Tensor], m: int, k: int, n: int, dtype: torch.dtype, bias: bool
    ) -> None:
        args = linear_args(m, k, n, dtype, bias)
        assert_close(fn(*args), ternary_linear_reference(*args))

    return check


@pytest.fixture
def assert_close() -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Compare a kernel output with its reference (shape, dtype, then per-dtype tolerance)."""

    def check(actual: torch.Tensor, expected: torch.Tensor) -> None:
        torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype])

    return check


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
