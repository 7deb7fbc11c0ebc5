"""Argument checks and conv geometry shared by every kernel path (no Triton involved)."""

from __future__ import annotations

import pytest
import torch

from tritondsl.kernels._common import (
    check_linear,
    conv2d_geometry,
    interpreting,
    pair,
    uses_triton,
)
from tritondsl.kernels.packing import PackingError


def _linear(m: int = 2, k: int = 10, n: int = 3) -> dict[str, object]:
    return {
        "x": torch.randn(m, k),
        "packed": torch.zeros(n, (k + 3) // 4, dtype=torch.uint8),
        "scale": torch.ones(n),
        "bias": torch.zeros(n),
        "k": None,
    }


def test_check_linear_accepts_valid_arguments() -> None:
    check_linear(**_linear())
    check_linear(**{**_linear(), "scale": torch.ones(1), "bias": None, "k": 10})


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"x": torch.randn(2, 10, dtype=torch.float64)}, TypeError, "x: expected float32"),
        ({"x": torch.randint(0, 3, (2, 10))}, TypeError, "x: expected float32"),
        ({"x": torch.tensor(1.0)}, ValueError, "got a scalar"),
        ({"k": 12}, ValueError, "k=12 does not match the last dimension of x"),
        ({"packed": torch.zeros(3, 2, dtype=torch.uint8)}, PackingError, "K=10 needs 3 bytes"),
        ({"packed": torch.zeros(3, 3, dtype=torch.int8)}, PackingError, "expected dtype uint8"),
        ({"packed": torch.zeros(3, 3, 1, dtype=torch.uint8)}, PackingError, "2-D"),
        ({"scale": torch.ones(2)}, ValueError, r"scale: expected shape \[3\] or \[1\]"),
        ({"scale": torch.ones(3, 1)}, ValueError, "scale: expected shape"),
        ({"scale": torch.ones(3, dtype=torch.int32)}, TypeError, "scale: expected float32"),
        ({"bias": torch.ones(1)}, ValueError, r"bias: expected shape \[3\], got \[1\]"),
        ({"packed": torch.zeros(3, 3, dtype=torch.uint8, device="meta")}, ValueError,
         "packed: expected a tensor on cpu"),
        ({"scale": torch.ones(3, device="meta")}, ValueError, "scale: expected a tensor on cpu"),
    ],
    ids=[
        "x-float64", "x-int", "x-scalar", "k-mismatch", "packed-cols", "packed-dtype",
        "packed-3d", "scale-size", "scale-2d", "scale-int", "bias-size", "packed-device",
        "scale-device",
    ],
)  # fmt: skip
def test_check_linear_rejects_bad_arguments(
    change: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        check_linear(**{**_linear(), **change})


def test_pair() -> None:
    assert pair(3, "stride") == (3, 3)
    assert pair((1, 2), "stride") == (1, 2)
    with pytest.raises(ValueError, match="stride: expected an int or two ints"):
        pair((1, 2, 3), "stride")


def _conv(**change: object) -> dict[str, object]:
    args: dict[str, object] = {
        "x": torch.randn(2, 4, 9, 7),
        "packed": torch.zeros(6, 5, dtype=torch.uint8),  # K = 2 * 3 * 3 = 18 -> 5 bytes
        "scale": torch.ones(6),
        "bias": None,
        "weight_shape": (6, 2, 3, 3),
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 2,
    }
    return {**args, **change}


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "expected"),
    [(1, 0, 1, (7, 5)), (2, 1, 1, (5, 4)), ((1, 2), (2, 0), (2, 1), (9, 3))],
    ids=["plain", "stride2-pad1", "asymmetric"],
)
def test_conv2d_geometry_output_size(
    stride: object, padding: object, dilation: object, expected: tuple[int, int]
) -> None:
    geo = conv2d_geometry(**_conv(stride=stride, padding=padding, dilation=dilation))
    assert (geo.h_out, geo.w_out) == expected
    assert (geo.k_group, geo.n_group) == (18, 3)
    assert not geo.is_pointwise


def test_conv2d_geometry_pointwise() -> None:
    one_by_one = _conv(packed=torch.zeros(6, 1, dtype=torch.uint8), weight_shape=(6, 4, 1, 1))
    assert conv2d_geometry(**{**one_by_one, "groups": 1}).is_pointwise
    assert not conv2d_geometry(**{**one_by_one, "groups": 1, "stride": 2}).is_pointwise


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"x": torch.randn(4, 9, 7)}, ValueError, "expected an NCHW tensor"),
        ({"x": torch.randn(2, 4, 9, 7).double()}, TypeError, "x: expected float32"),
        ({"weight_shape": (6, 2, 3)}, ValueError, "weight_shape: expected"),
        ({"groups": 4}, ValueError, "groups=4 must be positive and divide out_channels=6"),
        ({"groups": 3}, ValueError, "x has 4 channels but weight_shape"),
        ({"stride": 0}, ValueError, "stride and dilation must be >= 1"),
        ({"padding": -1}, ValueError, "padding >= 0"),
        ({"x": torch.randn(2, 4, 2, 7)}, ValueError, "does not fit input 2x7"),
        ({"packed": torch.zeros(6, 4, dtype=torch.uint8)}, PackingError, "K=18 needs 5 bytes"),
        ({"packed": torch.zeros(5, 5, dtype=torch.uint8)}, ValueError, r"expected \[6, 5\]"),
        ({"bias": torch.zeros(3)}, ValueError, r"bias: expected shape \[6\]"),
    ],
    ids=[
        "x-3d", "x-float64", "weight-3d", "groups-not-dividing", "groups-channels",
        "stride-0", "padding-negative", "too-small", "packed-cols", "packed-rows", "bias-size",
    ],
)  # fmt: skip
def test_conv2d_geometry_rejects_bad_arguments(
    change: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        conv2d_geometry(**_conv(**change))


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)]
)
def test_interpreting_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert interpreting() is expected
    assert uses_triton(torch.zeros(1)) is expected
    assert uses_triton(torch.zeros(1, device="meta")) is False


def test_without_triton_the_interpreter_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tritondsl.kernels._common as common

    monkeypatch.setattr(common, "triton_installed", lambda: False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ImportError, match=r"pip install 'tritondsl\[gpu\]'"):
        uses_triton(torch.zeros(1))
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not uses_triton(torch.zeros(1))  # plain CPU never needed it
