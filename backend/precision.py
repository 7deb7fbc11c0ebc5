"""Precisions: the one definition of every quantizer's options, defaults and limits.

A precision is a small frozen dataclass, validated when it is made. The same objects flow
through the whole pipeline: the front end's ``ternary(...)``, ``fp16`` and ``int8`` produce
them (so a bad option is a located ``tritondsl check`` error), generated code constructs them
(``rt.TWN(threshold=0.7, per_channel=True)``), ``backend/quantizers.py`` registers a
decomposition for each weight precision, and summary, the Hub's config.json and deploy read
them. This module imports nothing but the standard library: ``tritondsl check`` stays free
of torch.

Extension point (issue 14, activation precision): activation precisions are a sibling
family. Subclass ``Precision`` (say ``ActivationPrecision``) with its own frozen configs,
validated in ``__post_init__`` with ``_require`` like the weight ones; add the language's
constructor function to ``BUILDERS`` and its option words to ``OPTION_WORDS``, and import
the new classes and builder into ``tritondsl.runtime`` (generated code calls them there).
The compiler turns every ``BUILDERS`` entry into a compile-time builtin with located errors
and codegen emits the config construction (``rt.<repr>``) of literal calls. Nothing in the
weight family needs reshaping: a layer's weight and activation precisions are independent
values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Kind = Literal["fp32", "fp16", "int8", "ternary"]

TWN_THRESHOLD = 0.7  # Δ = 0.7·E|W|: TWN's closed-form approximation for Gaussian weights
TWN_MAX_THRESHOLD = 10.0  # past a few E|W| every weight is zero; 10 rejects typos
LEARNED_THRESHOLD = 0.05  # Δ = 0.05·max|W| (TTQ's t)
SPARSITY = 0.5


class PrecisionError(ValueError):
    """An invalid precision option; the message names the option and the allowed values."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise PrecisionError(message)


def _show(value: Any) -> str:
    """A value in the language's spelling (true, per_channel), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_flag(config: Precision, name: str) -> None:
    value = getattr(config, name)
    _require(isinstance(value, bool), f"{name} must be true or false, got {_show(value)}")


def _as_float(config: Precision, name: str) -> None:
    """Store a validated int option as float, so equal configs also print the same."""
    object.__setattr__(config, name, float(getattr(config, name)))


def _scale_word(per_channel: bool) -> str:
    return "per_channel" if per_channel else "per_tensor"


@dataclass(frozen=True)
class Precision:
    """Base of every precision config: immutable, validated on construction, spelled back."""

    kind: ClassVar[str]

    def describe(self) -> str:
        """The language's spelling of this precision, e.g. ``ternary(method=absmean, ...)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class WeightPrecision(Precision):
    """How a layer's weights are stored and fake-quantized (the language's ``precision``)."""

    kind: ClassVar[Kind]


@dataclass(frozen=True)
class FP32(WeightPrecision):
    """No quantization: the layer stays a plain ``nn.Conv2d`` / ``nn.Linear``."""

    kind: ClassVar[Kind] = "fp32"

    def describe(self) -> str:
        """``fp32``."""
        return "fp32"


@dataclass(frozen=True)
class FP16(WeightPrecision):
    """Round-trip through float16; stored as float16."""

    kind: ClassVar[Kind] = "fp16"

    def describe(self) -> str:
        """``fp16``."""
        return "fp16"


@dataclass(frozen=True)
class Int8(WeightPrecision):
    """Symmetric int8: codes in [-127, 127], scale = max|W| / 127 per output channel."""

    per_channel: bool = True
    kind: ClassVar[Kind] = "int8"

    def __post_init__(self) -> None:
        _check_flag(self, "per_channel")

    def describe(self) -> str:
        """``int8`` (per output channel), or ``int8(per_tensor)``."""
        return "int8" if self.per_channel else "int8(per_tensor)"


@dataclass(frozen=True)
class TWN(WeightPrecision):
    """Ternary Weight Networks: Δ = threshold·E|W|, α = mean |W| over |W| > Δ."""

    threshold: float = TWN_THRESHOLD
    per_channel: bool = True
    kind: ClassVar[Kind] = "ternary"

    def __post_init__(self) -> None:
        t = self.threshold
        _require(
            _is_number(t) and 0 < t < TWN_MAX_THRESHOLD,
            f"threshold must be a number in (0, {TWN_MAX_THRESHOLD:g}) for method=twn "
            f"(Δ = threshold·mean|W|), got {_show(t)}",
        )
        _check_flag(self, "per_channel")
        _as_float(self, "threshold")

    def describe(self) -> str:
        """``ternary(threshold=0.7, scale=per_channel)``."""
        return f"ternary(threshold={self.threshold:g}, scale={_scale_word(self.per_channel)})"


@dataclass(frozen=True)
class AbsMean(WeightPrecision):
    """BitNet b1.58: γ = mean|W|, codes = clamp(round(W/γ), -1, 1), scale γ (per layer)."""

    per_channel: bool = False
    kind: ClassVar[Kind] = "ternary"

    def __post_init__(self) -> None:
        _check_flag(self, "per_channel")

    def describe(self) -> str:
        """``ternary(method=absmean, scale=per_tensor)``."""
        return f"ternary(method=absmean, scale={_scale_word(self.per_channel)})"


@dataclass(frozen=True)
class Learned(WeightPrecision):
    """TTQ-style: Δ = threshold·max|W|, learnable positive and negative scales per layer."""

    threshold: float = LEARNED_THRESHOLD
    kind: ClassVar[Kind] = "ternary"

    def __post_init__(self) -> None:
        t = self.threshold
        _require(
            _is_number(t) and 0 < t < 1,
            f"threshold must be a number in (0, 1) for learned scales "
            f"(Δ = threshold·max|W|), got {_show(t)}",
        )
        _as_float(self, "threshold")

    def describe(self) -> str:
        """``ternary(learned=true, threshold=0.05)``."""
        return f"ternary(learned=true, threshold={self.threshold:g})"


@dataclass(frozen=True)
class SparsityTarget(WeightPrecision):
    """Zero the requested fraction of weights per group; scale = mean |W| over the rest."""

    sparsity: float = SPARSITY
    per_channel: bool = True
    kind: ClassVar[Kind] = "ternary"

    def __post_init__(self) -> None:
        s = self.sparsity
        _require(
            _is_number(s) and 0 <= s < 1,
            f"sparsity must be a fraction in [0, 1), got {_show(s)}",
        )
        _check_flag(self, "per_channel")
        _as_float(self, "sparsity")

    def describe(self) -> str:
        """``ternary(sparsity=0.5, scale=per_channel)``."""
        return f"ternary(sparsity={self.sparsity:g}, scale={_scale_word(self.per_channel)})"


# Weight precisions that quantize (everything but FP32); backend/quantizers.py registers
# one decomposition for each.
QuantizerConfig = TWN | AbsMean | Learned | SparsityTarget | Int8 | FP16

# ------------------------------------------------------------------ the language's spellings

# Precisions the language names directly (``@fp16``, ``weights int8``, ``--precision fp32``).
NAMED: dict[str, WeightPrecision] = {"fp32": FP32(), "fp16": FP16(), "int8": Int8()}

TERNARY_METHODS = ("twn", "absmean", "learned")
SCALES = ("per_channel", "per_tensor")
TERNARY_OPTIONS = ("threshold", "scale", "method", "learned", "sparsity")


def _choice(options: dict[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = options.get(name, default)
    _require(
        value in choices,
        f"{name} must be one of {', '.join(choices)}, got {_show(value)}",
    )
    return value


def _ternary(options: dict[str, Any]) -> WeightPrecision:
    unknown = sorted(set(options) - set(TERNARY_OPTIONS))
    if unknown:
        raise PrecisionError(f"unexpected keyword argument '{unknown[0]}'")
    method = _choice(options, "method", TERNARY_METHODS, "twn")
    learned = options.get("learned", False)
    _require(isinstance(learned, bool), f"learned must be true or false, got {_show(learned)}")
    if learned:
        method = "learned"
    threshold, sparsity = options.get("threshold"), options.get("sparsity")
    if sparsity is not None:
        _require(
            method == "twn" and threshold is None,
            "sparsity sets the threshold itself; drop 'threshold'/'method'",
        )
        scale = _choice(options, "scale", SCALES, "per_channel")
        return SparsityTarget(sparsity, scale == "per_channel")
    if method == "learned":
        scale = _choice(options, "scale", SCALES, "per_tensor")
        _require(scale == "per_tensor", "learned scales are per layer; drop 'scale'")
        return Learned() if threshold is None else Learned(threshold)
    if method == "absmean":
        _require(threshold is None, "method=absmean has no threshold")
        # BitNet's absmean scale is per layer by definition.
        return AbsMean(_choice(options, "scale", SCALES, "per_tensor") == "per_channel")
    per_channel = _choice(options, "scale", SCALES, "per_channel") == "per_channel"
    return TWN(per_channel=per_channel) if threshold is None else TWN(threshold, per_channel)


def ternary(**options: Any) -> WeightPrecision:
    """``ternary(threshold=, scale=, method=, learned=, sparsity=)``, as in the language.

    Option words (``per_channel``, ``absmean``) are plain strings here. Raises
    ``PrecisionError`` naming the option, prefixed ``ternary():``.
    """
    try:
        return _ternary(options)
    except PrecisionError as error:
        raise PrecisionError(f"ternary(): {error}") from None


# Functions of the language that build a precision from keyword options: the compiler
# makes each a compile-time builtin, the runtime gives it to generated code.
BUILDERS: dict[str, Callable[..., Precision]] = {"ternary": ternary}

# Bare words the builders accept as option values (the language's option constants).
OPTION_WORDS: tuple[str, ...] = (*SCALES, *TERNARY_METHODS)


def ternary_or_default(precision: WeightPrecision | None) -> WeightPrecision:
    """The precision of a ``param W: TernaryTensor``: the one in effect if ternary, else TWN."""
    if precision is not None and precision.kind == "ternary":
        return precision
    return TWN()
