"""Every fixed set of option values, as ``StrEnum`` types Typer lists in --help and checks.

Spelled out here, importing nothing (``--help`` and ``check`` stay fast), while the sets
themselves are defined where they are used (the named precisions, the training config,
``tritondsl.export.EXPORTERS``); ``tests/tritondsl/cli/test_choices.py`` checks each enum
matches its source, so a new format or precision fails a test until it is listed here.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """``--precision``: override every layer's precision (``backend.precision.NAMED``)."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class Optimizer(StrEnum):
    """``train --optimizer`` (``train.config.OPTIMIZERS``)."""

    sgd = "sgd"
    adamw = "adamw"


class Schedule(StrEnum):
    """``train --schedule`` (``train.config.SCHEDULES``)."""

    cosine = "cosine"
    onecycle = "onecycle"
    constant = "constant"


class Parallel(StrEnum):
    """``train --parallel`` under torchrun (``train.config.PARALLEL``)."""

    ddp = "ddp"
    fsdp = "fsdp"


class SmallImages(StrEnum):
    """``train --small-images`` (``train.dataspec.SMALL_IMAGES``)."""

    resize = "resize"
    pad = "pad"


class BadImages(StrEnum):
    """``train --bad-images`` (``train.dataspec.BAD_IMAGES``)."""

    skip = "skip"
    error = "error"


class Format(StrEnum):
    """``tritondsl export --format``: one per entry of ``tritondsl.export.EXPORTERS``."""

    onnx = "onnx"
    decoder = "decoder"
    torchscript = "torchscript"
    pt2 = "pt2"
    hub = "hub"
    release = "release"


class Weights(StrEnum):
    """``tritondsl export --weights``: every format's weight forms (each takes some)."""

    int2 = "int2"
    packed = "packed"
    float = "float"
    bits2 = "2bit"
    base3 = "base3"
    nbits = "nbits"


class Runtime(StrEnum):
    """``tritondsl generate --runtime``: PyTorch, or the ONNX decoder in onnxruntime."""

    torch = "torch"
    onnx = "onnx"


class Activations(StrEnum):
    """``tritondsl export --activations`` (``tritondsl.export.onnx_int8.ACTIVATION_FORMS``)."""

    float = "float"
    int8 = "int8"


class Linear(StrEnum):
    """``tritondsl export --linear`` (``tritondsl.export.onnx_int8.LINEAR_KERNELS``)."""

    int8 = "int8"
    nbits = "nbits"


def value(choice: StrEnum | None) -> str | None:
    """The plain string of a choice (None stays None), for library calls."""
    return None if choice is None else str(choice)
