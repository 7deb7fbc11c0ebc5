"""8-bit fake quantization of a layer's input, with ONNX's arithmetic and an STE.

Contract (what exporters, calibration and tests rely on):

* A layer that quantizes its input holds an ``ActivationQuantizer`` child named
  ``input_quant`` (``input_quantizer_of(layer)`` returns it, or None; ``add_input_quantizers``
  in ``backend/deploy.py`` gives existing Conv2d/Linear layers one). Its ``config`` is one of
  ``A8Static`` / ``A8LSQ`` / ``A8PerToken`` (``backend/precision.py``; ``A32`` means none).
* Static and LSQ quantizers keep, in the state_dict (so they travel in safetensors and Hub
  artifacts), under ``<layer>.input_quant.``:

  - ``scale``: float32, shape ``[]`` (per tensor; ONNX's ``y_scale``);
  - ``zero_point``: shape ``[]``, dtype ``torch.uint8`` (unsigned) or ``torch.int8`` (signed,
    always 0); the dtype is ONNX's ``y_zero_point`` type;
  - ``range_min`` / ``range_max``: float32 ``[]``, the running observed range;
  - ``num_batches_observed``: int64 ``[]``; 0 means never observed, and then forward passes
    the input through unchanged (``is_calibrated`` is False; exporters must refuse it).

  For ``A8LSQ`` the ``scale`` is an ``nn.Parameter`` until ``freeze_()`` (which ``deploy``
  calls) turns it into a buffer of the same name. ``A8PerToken`` has no state: its scale
  is computed per row at run time.
* Arithmetic, per tensor, exactly ONNX's QuantizeLinear then DequantizeLinear in float32:
  ``q = saturate(round_half_even(x / scale) + zero_point)`` to [0, 255] (uint8) or
  [-128, 127] (int8), ``y = (q - zero_point) * scale``. ``quantize(x)`` returns ``q`` as
  uint8/int8. Per token: ``scale = max(max|x|, 1e-5) / 127`` over the last dimension, int8.
* Scale from a range [lo, hi]: unsigned: lo' = min(lo, 0), hi' = max(hi, 0),
  ``scale = (hi' - lo') / 255``, ``zero_point = round(-lo' / scale)``; signed:
  ``scale = max(|lo|, |hi|) / 127``, ``zero_point = 0``.
* When the range updates: static quantizers observe every training-mode forward (EMA with
  the config's momentum; the first batch sets the range); LSQ ones observe only their first
  training batch, which initialises the scale (from the union of every process's range
  under torch.distributed), then learn it. Eval mode never updates.
  ``calibrate(model, batches)`` is the observer pass over data: it resets every static and
  LSQ quantizer, runs the model in eval mode without gradients, sets each range to the mean
  of the per-batch ranges, and returns the number of batches it used; on any error every
  quantizer is restored as it was.

Gradients: a clipped straight-through estimator (1 inside the representable range, 0 where
the input saturates); LSQ's scale gets ``(q - zp) - x/s`` inside and the clip level outside,
times ``1 / sqrt(numel · Qp)``. The forward value is exactly the quantized one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tritondsl.backend.precision import (
    A8LSQ,
    A32,
    A8PerToken,
    A8Static,
    ActivationConfig,
    ActivationPrecision,
)

STATE_NAMES = ("scale", "zero_point", "range_min", "range_max", "num_batches_observed")
_SCALE_FLOOR = 1e-12  # a constant input gives range 0; any positive scale then maps it exactly


def qrange(signed: bool) -> tuple[int, int]:
    """ONNX's saturation bounds: int8 [-128, 127] or uint8 [0, 255]."""
    return (-128, 127) if signed else (0, 255)


def fake_quantize(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int) -> Tensor:
    """QuantizeLinear + DequantizeLinear of ``x`` (float32 math), clipped STE to ``x``."""
    x32 = x.float()
    zp = zero_point.float()
    with torch.no_grad():
        ratio = x32 / scale
        q = torch.clamp(torch.round(ratio) + zp, qmin, qmax)
        y = (q - zp) * scale
        inside = (ratio >= qmin - zp) & (ratio <= qmax - zp)
    # y + 0 keeps the forward value exact; the gradient is 1 where x was not saturated.
    passthrough = x32 * inside
    return (y + (passthrough - passthrough.detach())).to(x.dtype)


def _lsq_fake_quantize(
    x: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int
) -> Tensor:
    """Like ``fake_quantize``, with LSQ's gradient reaching ``scale`` too."""
    x32 = x.float()
    zp = zero_point.float()
    s = scale.clamp(min=1e-12)
    grad_scale = 1.0 / math.sqrt(x32.numel() * qmax)  # LSQ's g = 1/sqrt(N·Qp)
    s_scaled = s * grad_scale + (s - s * grad_scale).detach()  # value s, gradient × g
    with torch.no_grad():
        ratio = x32 / s
        q = torch.clamp(torch.round(ratio) + zp, qmin, qmax)
        y = (q - zp) * s
        inside = (ratio >= qmin - zp) & (ratio <= qmax - zp)
        # d(y)/d(s): round(x/s) - x/s inside the range, the clip level (q - zp) outside.
        coefficient = (q - zp) - ratio * inside
    surrogate = x32 * inside + s_scaled * coefficient
    return (y + (surrogate - surrogate.detach())).to(x.dtype)


def per_token_scale(x: Tensor) -> Tensor:
    """BitNet b1.58's per-token scale: max|x| over the last dimension / 127, float32."""
    # 1e-5 is BitNet's floor on max|x| (an all-zero token must not divide by 0); a literal
    # because TorchScript cannot read module globals.
    return x.float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-5) / 127.0


def fake_quantize_per_token(x: Tensor) -> Tensor:
    """Symmetric int8 per token (dynamic absmax), identity straight-through gradient."""
    x32 = x.float()
    with torch.no_grad():
        scale = per_token_scale(x32)
        y = torch.clamp(torch.round(x32 / scale), -128, 127) * scale
    return (y + (x32 - x32.detach())).to(x.dtype)


def scale_from_range(lo: float, hi: float, signed: bool) -> tuple[float, int]:
    """(scale, zero point) covering [lo, hi] (see the module docstring)."""
    if signed:
        return max(abs(lo), abs(hi)) / 127.0 or _SCALE_FLOOR, 0
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or _SCALE_FLOOR
    return scale, int(min(max(round(-lo / scale), 0), 255))


def batch_range(x: Tensor, percentile: float | None, signed: bool) -> tuple[float, float]:
    """The range one batch shows: min/max, or the ``percentile`` (and its mirror) of it."""
    flat = x.detach().float().flatten()
    if flat.numel() == 0:
        raise ValueError("cannot observe an empty tensor")
    if percentile is None:
        return float(flat.min()), float(flat.max())
    n = flat.numel()
    if signed:
        k = min(max(math.ceil(percentile / 100 * n), 1), n)
        top = float(flat.abs().kthvalue(k).values)
        return -top, top
    high = min(max(math.ceil(percentile / 100 * n), 1), n)
    low = min(max(n + 1 - high, 1), n)  # the mirrored order statistic
    return float(flat.kthvalue(low).values), float(flat.kthvalue(high).values)


class ActivationQuantizer(nn.Module):
    """Fake-quantizes a layer's input to 8 bits (the contract is in the module docstring)."""

    __constants__: ClassVar[list[str]] = ["per_token", "learned", "qmin", "qmax"]

    def __init__(self, config: ActivationConfig) -> None:
        super().__init__()
        if not isinstance(config, A8Static | A8LSQ | A8PerToken):
            raise TypeError(f"unknown activation config {config!r}")
        self.config = config
        self.method: str = config.method
        self.per_token = isinstance(config, A8PerToken)
        self.learned = isinstance(config, A8LSQ)
        self.qmin, self.qmax = qrange(config.signed)
        self.frozen = False  # set by freeze_(): training-mode forwards stop observing
        self.calibrating = False  # set by calibrate(): eval-mode forwards observe
        # Mirrors num_batches_observed > 0 without reading the tensor (no GPU sync a step).
        self.observed = isinstance(config, A8PerToken)
        if isinstance(config, A8PerToken):
            return
        zp_dtype = torch.int8 if config.signed else torch.uint8
        scale = torch.ones(())
        if isinstance(config, A8LSQ):
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.zeros((), dtype=zp_dtype))
        self.register_buffer("range_min", torch.zeros(()))
        self.register_buffer("range_max", torch.zeros(()))
        self.register_buffer("num_batches_observed", torch.zeros((), dtype=torch.int64))

    @property
    def is_calibrated(self) -> bool:
        """Whether the scale is known: per-token always, others after one observed batch."""
        return self.observed

    def forward(self, x: Tensor) -> Tensor:
        """The fake-quantized input (unchanged while a static/LSQ scale is still unknown)."""
        if self.per_token:
            return fake_quantize_per_token(x)
        # Scripted models are for inference: observing (host-side Python) is eager only.
        observe = (self.training and not self.frozen) or self.calibrating
        if not torch.jit.is_scripting() and observe:
            self._observe(x)
        if not self.observed:
            return x
        if self.learned and self.training and not self.frozen:
            return _lsq_fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax)
        return fake_quantize(x, self.scale.detach(), self.zero_point, self.qmin, self.qmax)

    def _observe(self, x: Tensor) -> None:
        """Update the running range (and, for static or calibration, the scale) from ``x``."""
        seen = int(self.num_batches_observed) if self.observed else 0
        if self.learned and seen and not self.calibrating:
            return  # LSQ learns its scale after the first batch
        if x.numel() == 0:
            return  # an empty batch shows no range
        if not bool(torch.isfinite(x).all()):
            if self.calibrating:
                raise ValueError("calibration input holds NaN or infinite values")
            # A diverged training step: keep the range; the trainer reports the NaN loss.
            return
        config = self.config
        percentile = config.percentile if isinstance(config, A8Static) else None
        lo, hi = batch_range(x, percentile, config.signed)
        if self.learned and dist.is_available() and dist.is_initialized():
            # DDP broadcasts parameters once, before this first batch: every process must
            # start the learned scale from the same range, so take the union of theirs.
            lo, hi = _global_range(lo, hi, x.device)
        if seen == 0:
            weight = 1.0
        elif self.calibrating:
            weight = 1.0 / (seen + 1)  # the mean of the per-batch ranges
        else:
            weight = config.momentum if isinstance(config, A8Static) else 1.0
        with torch.no_grad():
            self.range_min.lerp_(torch.tensor(lo, device=self.range_min.device), weight)
            self.range_max.lerp_(torch.tensor(hi, device=self.range_max.device), weight)
            scale, zero_point = scale_from_range(
                float(self.range_min), float(self.range_max), config.signed
            )
            self.scale.fill_(scale)
            self.zero_point.fill_(zero_point)
            self.num_batches_observed.fill_(seen + 1)
        self.observed = True

    def quantize(self, x: Tensor) -> Tensor:
        """The integer codes ONNX's QuantizeLinear gives for ``x`` (uint8 or int8)."""
        if self.per_token:
            scale, zp = per_token_scale(x), torch.zeros(())
        else:
            if not self.is_calibrated:
                raise ValueError("the input scale was never observed; calibrate first")
            scale, zp = self.scale.detach(), self.zero_point.float()
        with torch.no_grad():
            q = torch.clamp(torch.round(x.float() / scale) + zp, self.qmin, self.qmax)
        return q.to(torch.int8 if self.config.signed else torch.uint8)

    @torch.no_grad()
    def freeze_(self) -> ActivationQuantizer:
        """Stop observing and learning: an LSQ scale parameter becomes a buffer (idempotent)."""
        if "scale" in self._parameters:
            value = self.scale.detach().clone()
            del self.scale
            self.register_buffer("scale", value)
        self.frozen = True
        return self

    def check_state_dict(self, state_dict: Mapping[str, Any], prefix: str = "") -> None:
        """Raise ValueError naming the entry unless this quantizer's state would load cleanly."""
        if self.per_token:
            return
        for name in STATE_NAMES:
            key, current = prefix + name, getattr(self, name)
            incoming = state_dict.get(key)
            if not isinstance(incoming, Tensor):
                continue
            if incoming.shape != current.shape:
                raise ValueError(
                    f"{key}: expected shape {tuple(current.shape)}, got {tuple(incoming.shape)}"
                )
            if incoming.dtype != current.dtype:
                raise ValueError(f"{key}: expected dtype {current.dtype}, got {incoming.dtype}")
        scale, zero_point = state_dict.get(prefix + "scale"), state_dict.get(prefix + "zero_point")
        if isinstance(scale, Tensor) and not (bool(torch.isfinite(scale)) and float(scale) > 0):
            raise ValueError(f"{prefix}scale: must be a positive finite number, got {float(scale)}")
        if self.config.signed and isinstance(zero_point, Tensor) and int(zero_point) != 0:
            raise ValueError(f"{prefix}zero_point: must be 0 for signed (int8) activations")

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *rest: Any
    ) -> None:  # rest: nn.Module's metadata, strict flag and key/error lists
        if self.per_token:
            return
        if not any(prefix + k in state_dict for k in STATE_NAMES):
            # A checkpoint trained without activation quantization: keep this quantizer
            # unobserved (calibrate or train to set it) instead of failing strict loading.
            return
        self.check_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *rest)
        self.observed = int(self.num_batches_observed) > 0

    def extra_repr(self) -> str:
        """The config in the language's words, and whether it is observed yet."""
        return f"{self.config.describe()}, calibrated={self.is_calibrated}"


def make_input_quant(config: ActivationPrecision | None) -> ActivationQuantizer | None:
    """The ``input_quant`` child a layer holds for ``config`` (None or ``A32``: float input)."""
    return None if config is None or isinstance(config, A32) else ActivationQuantizer(config)


def input_quantizer_of(layer: nn.Module) -> ActivationQuantizer | None:
    """The layer's ``input_quant`` quantizer, or None when its input stays float."""
    found = getattr(layer, "input_quant", None)
    return found if isinstance(found, ActivationQuantizer) else None


def activation_quantizers(model: nn.Module) -> list[tuple[str, ActivationQuantizer]]:
    """Every ActivationQuantizer of ``model`` with its qualified module name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ActivationQuantizer)]


def _global_range(lo: float, hi: float, device: torch.device) -> tuple[float, float]:
    """The union of every process's [lo, hi] (torch.distributed is initialised)."""
    low, high = torch.tensor([lo], device=device), torch.tensor([hi], device=device)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float(low), float(high)


def _batch_input(batch: Any) -> Any:
    """The model input of one batch: the tensor itself, or the first item of (x, y)."""
    if isinstance(batch, tuple | list) and batch:
        return batch[0]
    return batch


@contextmanager
def _restoring(model: nn.Module, quantizers: list[ActivationQuantizer]) -> Iterator[None]:
    """Run the body in eval mode; on error put every quantizer's state back."""
    modes = {m: m.training for m in model.modules()}
    saved = [
        ({k: v.detach().clone() for k, v in q.state_dict().items()}, q.observed) for q in quantizers
    ]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for q, (state, observed) in zip(quantizers, saved, strict=True):
                for name, value in state.items():
                    getattr(q, name).copy_(value)
                q.observed = observed
        raise
    finally:
        for q in quantizers:
            q.calibrating = False
        for m, training in modes.items():
            m.train(training)


def calibrate(model: nn.Module, batches: Iterable[Any], max_batches: int | None = None) -> int:
    """Observer pass: set every static/LSQ input scale from ``batches``; return batches used.

    Each batch is the model's input tensor or a ``(input, target)`` pair as a DataLoader
    yields it. The model runs in eval mode (BatchNorm uses its running statistics) without
    gradients; its modes are restored afterwards. Raises ValueError when the model has no
    static or LSQ quantizer or no batch arrives; on any error nothing changes.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, got {max_batches}")
    quantizers = [q for _, q in activation_quantizers(model) if not q.per_token]
    if not quantizers:
        raise ValueError("the model has no static or learned activation quantizer to calibrate")
    used = 0
    with _restoring(model, quantizers), torch.no_grad():
        model.eval()
        for q in quantizers:
            q.num_batches_observed.zero_()
            q.observed, q.calibrating = False, True
        for batch in batches:
            model(_batch_input(batch))
            used += 1
            if max_batches is not None and used >= max_batches:
                break
        if used == 0:
            raise ValueError("no calibration batches: the data is empty")
        unseen = [q for q in quantizers if not q.is_calibrated]
        if unseen:
            names = [n for n, q in activation_quantizers(model) if q in unseen]
            raise ValueError(f"calibration never reached: {', '.join(names)}")
    return used
