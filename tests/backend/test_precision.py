"""Precision configs: one home for each default and limit, torch-free, validated when made."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from tritondsl.backend.precision import (
    A8LSQ,
    A32,
    FP16,
    FP32,
    NAMED,
    TWN,
    A8PerToken,
    A8Static,
    AbsMean,
    Int8,
    Learned,
    PrecisionError,
    SparsityTarget,
    activation_dict,
    ternary,
    ternary_or_default,
)


def test_the_module_and_the_checker_import_without_torch() -> None:
    code = (
        "import sys, tritondsl.backend.precision, tritondsl.compiler.check\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_are_the_documented_ones() -> None:
    assert (TWN().threshold, TWN().per_channel) == (0.7, True)
    assert AbsMean().per_channel is False
    assert Learned().threshold == 0.05
    assert (SparsityTarget().sparsity, SparsityTarget().per_channel) == (0.5, True)
    assert Int8().per_channel is True
    assert {"fp32": FP32(), "fp16": FP16(), "int8": Int8(per_channel=True)} == NAMED


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TWN(0), r"threshold must be a number in \(0, 10\) for method=twn"),
    (lambda: TWN(10), r"in \(0, 10\)"),
    (lambda: TWN(float("nan")), "got nan"),
    (lambda: TWN(True), "got true"),
    (lambda: TWN(0.7, per_channel=1), "per_channel must be true or false, got 1"),
    (lambda: Learned(1.0), r"threshold must be a number in \(0, 1\) for learned scales"),
    (lambda: Learned(0), r"in \(0, 1\)"),
    (lambda: SparsityTarget(1.0), r"sparsity must be a fraction in \[0, 1\), got 1.0"),
    (lambda: SparsityTarget(-0.1), r"sparsity must be a fraction in \[0, 1\)"),
    (lambda: AbsMean("yes"), "per_channel must be true or false, got yes"),
    (lambda: Int8(None), "per_channel must be true or false, got None"),
])  # fmt: skip
def test_limits_are_checked_on_construction(make, message: str) -> None:
    with pytest.raises(PrecisionError, match=message):
        make()


def test_configs_are_frozen_and_ints_become_floats() -> None:
    config = TWN(1, per_channel=False)
    assert repr(config) == "TWN(threshold=1.0, per_channel=False)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.threshold = 0.5  # type: ignore[misc]
    assert SparsityTarget(0).sparsity == 0.0 and isinstance(SparsityTarget(0).sparsity, float)


@pytest.mark.parametrize("config", [
    FP32(), FP16(), Int8(), TWN(0.25, per_channel=False), AbsMean(per_channel=True),
    Learned(0.125), SparsityTarget(0.75, per_channel=False),
])  # fmt: skip
def test_repr_is_the_python_that_builds_the_same_config(config: object) -> None:
    namespace = {c.__name__: c for c in (FP32, FP16, Int8, TWN, AbsMean, Learned, SparsityTarget)}
    assert eval(repr(config), namespace) == config  # what codegen emits, with rt. in front


@pytest.mark.parametrize(("options", "message"), [
    ({"learned": True, "threshold": 1.5}, r"ternary\(\): threshold must be a number in \(0, 1\)"),
    ({"threshold": 12}, r"ternary\(\): threshold must be a number in \(0, 10\)"),
    ({"scale": "rows"}, r"ternary\(\): scale must be one of per_channel, per_tensor, got rows"),
    ({"learned": "yes"}, r"ternary\(\): learned must be true or false, got yes"),
    ({"sparsity": 0.5, "method": "absmean"}, "sparsity sets the threshold itself"),
    ({"colour": 1}, r"ternary\(\): unexpected keyword argument 'colour'"),
])  # fmt: skip
def test_the_language_builder_reports_the_option(options: dict, message: str) -> None:
    with pytest.raises(PrecisionError, match=message):
        ternary(**options)


def test_a_ternary_param_keeps_a_ternary_precision_and_defaults_to_twn_otherwise() -> None:
    assert ternary_or_default(AbsMean()) == AbsMean()
    assert ternary_or_default(Int8()) == TWN(0.7, per_channel=True)
    assert ternary_or_default(FP32()) == TWN(0.7, per_channel=True)
    assert ternary_or_default(None) == TWN(0.7, per_channel=True)


def test_activation_defaults_and_spellings() -> None:
    assert (A8Static().signed, A8Static().percentile, A8Static().momentum) == (False, None, 0.1)
    assert A8LSQ().signed is False and A8PerToken().signed is True
    assert [c.describe() for c in (A32(), A8Static(), A8LSQ(signed=True), A8PerToken())] == [
        "a32",
        "a8",
        "a8(method=lsq, signed=true)",
        "a8(method=per_token)",
    ]
    config = A8Static(signed=True, percentile=99, momentum=0.01)
    assert config.describe() == "a8(percentile=99, momentum=0.01, signed=true)"
    assert activation_dict(config) == {
        "bits": 8,
        "method": "static",
        "dtype": "int8",
        "granularity": "per_tensor",
        "spelling": config.describe(),
        "observer": "percentile",
        "percentile": 99.0,
        "momentum": 0.01,
    }
    assert activation_dict(A8PerToken())["granularity"] == "per_token"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: A8Static(percentile=40), r"percentile must be a number in \(50, 100\], got 40"),
        (lambda: A8Static(percentile=True), "got true"),
        (lambda: A8Static(momentum=0), r"momentum must be in \(0, 1\], got 0"),
        (lambda: A8Static(signed=1), "signed must be true or false, got 1"),
        (lambda: A8LSQ(signed="yes"), "signed must be true or false, got yes"),
    ],
)
def test_activation_limits_are_errors_naming_the_option(make, message: str) -> None:
    with pytest.raises(PrecisionError, match=message):
        make()
