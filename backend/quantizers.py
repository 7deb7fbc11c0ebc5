"""Weight quantizers: a registry of pure decompositions and STE fake quantization.

A quantizer is a weight precision config from ``backend/precision.py`` (frozen, validated,
torch-free, shared with the front end). ``register_quantizer`` maps its type to a pure
function that splits a weight into integer codes and scale(s) (``decompose``, what deploy
stores). ``fake_quantize`` rebuilds the float weight from that decomposition and adds a
straight-through estimator, so training sees the quantized value in the forward pass while
the gradient reaches the latent fp32 weight unchanged (and, for ``Learned``, both scales).

Scales are per scale group: one per output channel (dim 0) or one for the whole tensor,
shaped ``[N]`` or ``[1]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from tritondsl.backend.precision import (
    FP16,
    TWN,
    AbsMean,
    Int8,
    Kind,
    Learned,
    QuantizerConfig,
    SparsityTarget,
)

LearnedScales = tuple[Tensor, Tensor]
INT8_MAX = 127


@dataclass(frozen=True)
class Decomposition:
    """Codes shaped like the weight plus the scale(s) that turn them back into floats."""

    codes: Tensor  # int8 trits or int8 codes; float16 values for FP16
    scale: Tensor | None  # [N] or [1]; the positive scale for Learned; None for FP16
    scale_neg: Tensor | None = None  # Learned only, a positive number
    delta: Tensor | None = None  # zeroing threshold per group, [G, 1], where one exists

    @property
    def scales(self) -> tuple[Tensor, ...]:
        """The scale tensors that exist, in storage order (scale, then scale_neg)."""
        return tuple(s for s in (self.scale, self.scale_neg) if s is not None)

    def dequantize(self) -> Tensor:
        """Float weight the codes and scales stand for (differentiable in the scales)."""
        if self.scale is None:
            return self.codes.float()
        group_shape = (-1,) + (1,) * (self.codes.dim() - 1)
        pos = self.scale.view(group_shape)
        if self.scale_neg is None:
            return self.codes.to(pos.dtype) * pos
        neg = self.scale_neg.view(group_shape)
        return (
            self.codes.clamp(min=0).to(pos.dtype) * pos
            + self.codes.clamp(max=0).to(neg.dtype) * neg
        )


C = TypeVar("C")
Decomposer = Callable[[Any, Tensor, LearnedScales | None], Decomposition]
_REGISTRY: dict[type, Decomposer] = {}


def register_quantizer(
    config_type: type[C],
) -> Callable[[Callable[[C, Tensor, LearnedScales | None], Decomposition]], Decomposer]:
    """Decorator: register the decorated pure decomposition as the one for ``config_type``."""

    def add(fn: Callable[[C, Tensor, LearnedScales | None], Decomposition]) -> Decomposer:
        _REGISTRY[config_type] = fn
        return fn

    return add


def quantizer_kind(config: QuantizerConfig) -> Kind:
    """Storage kind of a registered quantizer config; TypeError for unregistered types."""
    if type(config) not in _REGISTRY:
        known = ", ".join(t.__name__ for t in _REGISTRY)
        raise TypeError(f"unknown quantizer {config!r}; expected one of: {known}")
    return config.kind


def is_ternary(config: QuantizerConfig) -> bool:
    """Whether ``config`` quantizes to {-1, 0, +1} codes."""
    return quantizer_kind(config) == "ternary"


def decompose(
    config: QuantizerConfig, weight: Tensor, learned_scales: LearnedScales | None = None
) -> Decomposition:
    """Split ``weight`` into codes and scale(s) with the quantizer registered for ``config``.

    ``learned_scales`` (positive, negative) are used by ``Learned`` only; without them
    both are initialised to the TWN-style α of ``weight`` (see ``_learned``).
    """
    quantizer_kind(config)
    return _REGISTRY[type(config)](config, weight, learned_scales)


def fake_quantize(
    config: QuantizerConfig, weight: Tensor, learned_scales: LearnedScales | None = None
) -> Tensor:
    """Quantized float weight for training, with a straight-through gradient to ``weight``."""
    quantized = decompose(config, weight.detach(), learned_scales).dequantize()
    # Same STE as w + (q - w).detach(), but the forward value is exactly q (no rounding from
    # adding and subtracting w), so deployed layers reproduce training outputs bit for bit.
    return quantized + (weight - weight.detach())


def _groups(weight: Tensor, per_channel: bool) -> Tensor:
    """View the weight as [groups, elements]: one row per output channel or a single row."""
    return weight.reshape(weight.shape[0] if per_channel else 1, -1)


def _mean_abs_where(abs_w: Tensor, mask: Tensor) -> Tensor:
    """Per-row mean of ``abs_w`` over ``mask``; 0 for rows where the mask is empty."""
    return (abs_w * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _safe_divisor(scale: Tensor) -> Tensor:
    """``scale`` with zeros replaced by the tiniest normal float: 0/eps stays 0, others exact."""
    return scale.clamp(min=torch.finfo(scale.dtype).tiny)


def _ternary_codes(weight: Tensor, rows: Tensor, keep: Tensor) -> Tensor:
    """sign(W) where ``keep`` is set, else 0, as int8 shaped like ``weight``."""
    return (torch.sign(rows) * keep).to(torch.int8).reshape(weight.shape)


@register_quantizer(TWN)
def _twn(config: TWN, weight: Tensor, _: LearnedScales | None) -> Decomposition:
    rows = _groups(weight, config.per_channel)
    abs_w = rows.abs()
    delta = config.threshold * abs_w.mean(dim=1, keepdim=True)
    keep = abs_w > delta
    alpha = _mean_abs_where(abs_w, keep)
    return Decomposition(_ternary_codes(weight, rows, keep), alpha, delta=delta)


@register_quantizer(AbsMean)
def _absmean(config: AbsMean, weight: Tensor, _: LearnedScales | None) -> Decomposition:
    rows = _groups(weight, config.per_channel)
    gamma = rows.abs().mean(dim=1)
    codes = (rows / _safe_divisor(gamma)[:, None]).round().clamp(-1, 1)
    return Decomposition(codes.to(torch.int8).reshape(weight.shape), gamma)


@register_quantizer(Learned)
def _learned(config: Learned, weight: Tensor, scales: LearnedScales | None) -> Decomposition:
    rows = _groups(weight, per_channel=False)
    abs_w = rows.abs()
    delta = config.threshold * abs_w.amax(dim=1, keepdim=True)
    keep = abs_w > delta
    if scales is None:
        # TWN's α formula over this quantizer's own Δ: the best single scale for these codes.
        alpha = _mean_abs_where(abs_w, keep)
        scales = (alpha, alpha.clone())
    pos, neg = scales
    return Decomposition(_ternary_codes(weight, rows, keep), pos, neg, delta=delta)


@register_quantizer(SparsityTarget)
def _sparsity_target(
    config: SparsityTarget, weight: Tensor, _: LearnedScales | None
) -> Decomposition:
    rows = _groups(weight, config.per_channel)
    abs_w = rows.abs()
    n_zero = round(config.sparsity * rows.shape[1])
    # Rank instead of thresholding at a quantile so ties cannot overshoot the target.
    order = abs_w.argsort(dim=1, stable=True)
    keep = torch.zeros_like(abs_w, dtype=torch.bool).scatter_(1, order[:, n_zero:], True)
    if n_zero:
        delta = abs_w.gather(1, order[:, n_zero - 1 : n_zero])
    else:
        delta = torch.zeros_like(abs_w[:, :1])
    alpha = _mean_abs_where(abs_w, keep)
    return Decomposition(_ternary_codes(weight, rows, keep), alpha, delta=delta)


@register_quantizer(Int8)
def _int8(config: Int8, weight: Tensor, _: LearnedScales | None) -> Decomposition:
    rows = _groups(weight, config.per_channel)
    scale = rows.abs().amax(dim=1) / INT8_MAX
    codes = (rows / _safe_divisor(scale)[:, None]).round().clamp(-INT8_MAX, INT8_MAX)
    return Decomposition(codes.to(torch.int8).reshape(weight.shape), scale)


@register_quantizer(FP16)
def _fp16(config: FP16, weight: Tensor, _: LearnedScales | None) -> Decomposition:
    return Decomposition(weight.to(torch.float16, copy=True), None)
