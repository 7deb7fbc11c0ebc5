"""Precisions: the one definition of every quantizer's options, defaults and limits.

A precision is a small frozen dataclass, validated when it is made. The same objects flow
through the whole pipeline: the front end's ``ternary(...)``, ``fp16`` and ``int8`` produce
them (so a bad option is a located ``tritondsl check`` error), generated code constructs them
(``rt.TWN(threshold=0.7, per_channel=True)``), ``backend/quantizers.py`` registers a
decomposition for each weight precision, and summary, the Hub's config.json and deploy read
them. This module imports nothing but the standard library: ``tritondsl check`` stays free
of torch.

Activation precisions (``ActivationPrecision``: ``A32``, ``A8Static``, ``A8LSQ``,
``A8PerToken``) are the sibling family: what a quantized layer does to its *input*.
``backend/activations.py`` acts on them. A layer's weight and activation precisions are
independent values.

To add a family or a builder: subclass ``Precision`` with frozen configs validated in
``__post_init__`` with ``_require``; add the language's constructor function to ``BUILDERS``
and its option words to ``OPTION_WORDS``, and import the new classes and builder into
``tritondsl.runtime`` (generated code calls them there). The compiler turns every
``BUILDERS`` entry into a compile-time builtin with located errors and codegen emits the
config construction (``rt.<repr>``) of literal calls.
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

# ------------------------------------------------------------------ activation precisions

ACTIVATION_BITS = 8
ActMethod = Literal["static", "lsq", "per_token"]
ACT_MOMENTUM = 0.1  # weight of each new training batch in the running range, as BatchNorm's


@dataclass(frozen=True)
class ActivationPrecision(Precision):
    """How a layer's input is fake-quantized (the language's ``a8(...)`` / ``a32``)."""

    kind: ClassVar[str] = "activation"
    bits: ClassVar[int]


@dataclass(frozen=True)
class A32(ActivationPrecision):
    """No input quantization: the layer sees float activations."""

    bits: ClassVar[int] = 32

    def describe(self) -> str:
        """``a32``."""
        return "a32"


def _check_signed(config: A8Static | A8LSQ) -> None:
    _check_flag(config, "signed")


def _a8_words(method: str, signed: bool, extra: list[str]) -> str:
    words = [] if method == "static" else [f"method={method}"]
    words += extra + (["signed=true"] if signed else [])
    return f"a8({', '.join(words)})" if words else "a8"


@dataclass(frozen=True)
class A8Static(ActivationPrecision):
    """8-bit input, scale observed in training (EMA of each batch's min/max or percentile).

    ``signed=False``: uint8 with a zero point (ONNX Runtime's fast u8s8 form); ``True``:
    symmetric int8, zero point 0. ``percentile=None`` observes the batch min/max.
    """

    signed: bool = False
    percentile: float | None = None
    momentum: float = ACT_MOMENTUM
    bits: ClassVar[int] = ACTIVATION_BITS
    method: ClassVar[ActMethod] = "static"

    def __post_init__(self) -> None:
        _check_signed(self)
        p = self.percentile
        if p is not None:
            _require(
                _is_number(p) and 50 < p <= 100,
                f"percentile must be a number in (50, 100], got {_show(p)}",
            )
            _as_float(self, "percentile")
        m = self.momentum
        _require(_is_number(m) and 0 < m <= 1, f"momentum must be in (0, 1], got {_show(m)}")
        _as_float(self, "momentum")

    def describe(self) -> str:
        """``a8``, ``a8(percentile=99.99)``, ``a8(momentum=0.01, signed=true)``..."""
        extra = [] if self.percentile is None else [f"percentile={self.percentile:g}"]
        if self.momentum != ACT_MOMENTUM:
            extra.append(f"momentum={self.momentum:g}")
        return _a8_words("static", self.signed, extra)


@dataclass(frozen=True)
class A8LSQ(ActivationPrecision):
    """8-bit input with a learned step size (LSQ): the gradient reaches the scale."""

    signed: bool = False
    bits: ClassVar[int] = ACTIVATION_BITS
    method: ClassVar[ActMethod] = "lsq"

    def __post_init__(self) -> None:
        _check_signed(self)

    def describe(self) -> str:
        """``a8(method=lsq)`` or ``a8(method=lsq, signed=true)``."""
        return _a8_words("lsq", self.signed, [])


@dataclass(frozen=True)
class A8PerToken(ActivationPrecision):
    """BitNet b1.58: per token, scale = max|x| / 127 over the last dimension, int8 (Linear)."""

    bits: ClassVar[int] = ACTIVATION_BITS
    signed: ClassVar[bool] = True
    method: ClassVar[ActMethod] = "per_token"

    def describe(self) -> str:
        """``a8(method=per_token)``."""
        return "a8(method=per_token)"


# Activation precisions that quantize (everything but A32); backend/activations.py acts on them.
ActivationConfig = A8Static | A8LSQ | A8PerToken


def activation_dict(config: ActivationConfig) -> dict[str, Any]:
    """JSON-ready description (config.json): bits, method, dtype and the method's options."""
    out: dict[str, Any] = {
        "bits": config.bits,
        "method": config.method,
        "dtype": "int8" if config.signed else "uint8",
        "granularity": "per_token" if isinstance(config, A8PerToken) else "per_tensor",
        "spelling": config.describe(),
    }
    if isinstance(config, A8Static):
        out["observer"] = "minmax" if config.percentile is None else "percentile"
        if config.percentile is not None:
            out["percentile"] = config.percentile
        out["momentum"] = config.momentum
    return out


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


# Activation precisions the language names directly (``@a8``, ``activations a32``).
ACTIVATION_NAMED: dict[str, ActivationPrecision] = {"a8": A8Static(), "a32": A32()}
# ``activations int8`` / ``activations fp32`` read as the sentence they are.
ACTIVATION_ALIASES: dict[WeightPrecision, ActivationPrecision] = {
    Int8(): A8Static(),
    FP32(): A32(),
}
ACT_METHODS = ("static", "lsq", "per_token")
A8_OPTIONS = ("method", "signed", "percentile", "momentum")


def _a8(options: dict[str, Any]) -> ActivationPrecision:
    unknown = sorted(set(options) - set(A8_OPTIONS))
    if unknown:
        raise PrecisionError(f"unexpected keyword argument '{unknown[0]}'")
    method = _choice(options, "method", ACT_METHODS, "static")
    static_only = sorted({"percentile", "momentum"} & set(options))
    _require(
        method == "static" or not static_only,
        f"'{static_only[0] if static_only else ''}' applies to method=static only",
    )
    if method == "per_token":
        _require("signed" not in options, "method=per_token is always int8; drop 'signed'")
        return A8PerToken()
    signed = options.get("signed", False)
    if method == "lsq":
        return A8LSQ(signed)
    return A8Static(signed, options.get("percentile"), options.get("momentum", ACT_MOMENTUM))


def a8(**options: Any) -> ActivationPrecision:
    """``a8(method=static|lsq|per_token, signed=, percentile=, momentum=)``, as in the language.

    Raises ``PrecisionError`` naming the option, prefixed ``a8():``.
    """
    try:
        return _a8(options)
    except PrecisionError as error:
        raise PrecisionError(f"a8(): {error}") from None


def as_activation(value: Any) -> ActivationPrecision | None:
    """``value`` as an activation precision (``int8``/``fp32`` read as a8/a32), else None."""
    if isinstance(value, ActivationPrecision):
        return value
    return ACTIVATION_ALIASES.get(value) if isinstance(value, WeightPrecision) else None


# Functions of the language that build a precision from keyword options: the compiler
# makes each a compile-time builtin, the runtime gives it to generated code.
BUILDERS: dict[str, Callable[..., Precision]] = {"ternary": ternary, "a8": a8}
ACTIVATION_BUILDERS = frozenset({"a8"})  # the builders of activation precisions

# Bare words the builders accept as option values (the language's option constants).
OPTION_WORDS: tuple[str, ...] = (*SCALES, *TERNARY_METHODS, *ACT_METHODS)


def ternary_or_default(precision: WeightPrecision | None) -> WeightPrecision:
    """The precision of a ``param W: TernaryTensor``: the one in effect if ternary, else TWN."""
    if precision is not None and precision.kind == "ternary":
        return precision
    return TWN()
