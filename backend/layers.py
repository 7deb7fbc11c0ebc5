"""Quantized Linear / Conv2d / ConvTranspose2d layers with a training mode and a deployed mode.

Training mode holds exactly the tensors of ``nn.Linear`` / ``nn.Conv2d`` (latent fp32
``weight`` and ``bias``), so float checkpoints such as torchvision's load with
``strict=True``; the weight is fake-quantized on every forward with a straight-through
estimator. A ``Learned`` quantizer adds two parameters, ``weight_scale_pos`` and
``weight_scale_neg`` (shape [1]); a checkpoint without them initialises both from its own
weights, so strict loading still works. Setting ``fake_quant = False`` makes a
training-mode layer compute with its latent float weight (the trainer's fp32 warm-up);
deploying always quantizes.

``deploy_()`` drops the latent weight and keeps, as buffers:

* ternary: ``weight_packed`` uint8 [N, ceil(K/4)] (``kernels/packing.py``; for a conv,
  K = in/groups·kh·kw in ``weight.reshape(out, -1)`` order) and ``weight_scale`` fp32 [N]
  or [1] (``Learned``: ``weight_scale_pos`` and ``weight_scale_neg``);
* Int8: ``weight_int8`` int8 shaped like the weight and ``weight_scale`` fp32 [N] or [1];
* FP16: ``weight_fp16`` float16 shaped like the weight.

Either layer, and the float ``ActQuantLinear`` / ``ActQuantConv2d`` (fp32 weights), may also
fake-quantize its input to 8 bits: the ``input_quantizer`` argument (an ``A8Static``,
``A8LSQ`` or ``A8PerToken`` config) adds an ``input_quant`` child (``backend/activations.py``
has the contract); ``deploy_()`` keeps it, frozen.

Deployed single-scale ternary layers call the Triton kernels on CUDA inputs; everything
else (CPU, ``Learned``'s two scales, string padding or non-zero padding modes) computes with
a float weight and ``F.linear`` / ``F.conv2d``. That weight comes from the layer's
``WeightCache`` (``backend/weight_cache.py``) whenever no gradient has to reach the latent
weight: an eval-mode layer does not quantize its weight again on every call, and a deployed
one does not unpack its 2-bit codes again. ``weight_cache`` picks what is kept (``"int8"``
codes and scales by default, ``"float"``, or ``"none"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritondsl.backend.activations import make_input_quant
from tritondsl.backend.precision import A8PerToken, ActivationPrecision
from tritondsl.backend.quantizers import (
    TWN,
    Decomposition,
    Kind,
    Learned,
    QuantizerConfig,
    decompose,
    fake_quantize,
    is_ternary,
    quantizer_kind,
)
from tritondsl.backend.weight_cache import CacheMode, WeightCache, check_mode
from tritondsl.kernels.packing import pack, unpack, validate_packed

LEARNED_SCALE_NAMES = ("weight_scale_pos", "weight_scale_neg")
_DEFAULT_QUANTIZER = TWN()


@dataclass(frozen=True)
class _Storage:
    """How one quantizer kind stores its codes once deployed."""

    name: str
    encode: Callable[[Tensor], Tensor]  # codes shaped like the weight -> stored tensor
    decode: Callable[[Tensor, tuple[int, ...]], Tensor]  # stored tensor -> codes


_STORAGE: dict[Kind, _Storage] = {
    "ternary": _Storage(
        "weight_packed",
        lambda codes: pack(codes.reshape(codes.shape[0], -1)),
        lambda packed, shape: unpack(packed, math.prod(shape[1:])).reshape(shape),
    ),
    "int8": _Storage("weight_int8", lambda codes: codes, lambda codes, _: codes),
    "fp16": _Storage("weight_fp16", lambda codes: codes, lambda codes, _: codes),
}
_STORAGE_NAMES = frozenset(s.name for s in _STORAGE.values())


class InputQuantized(nn.Module):
    """A layer whose input may be fake-quantized by an ``input_quant`` child (or None)."""

    # No class-level annotation of ``input_quant``: TorchScript reads those and cannot parse
    # a postponed ``ActivationQuantizer | None``; it infers the attribute's type instead.

    def _init_input_quant(self, config: ActivationPrecision | None) -> None:
        if isinstance(config, A8PerToken) and not isinstance(self, nn.Linear):
            raise ValueError(
                f"per-token activation scales are for Linear layers, not {type(self).__name__}"
            )
        self.input_quant = make_input_quant(config)

    def quantize_input(self, x: Tensor) -> Tensor:
        """``x`` fake-quantized by ``input_quant``, or unchanged when there is none."""
        if self.input_quant is not None:
            return self.input_quant(x)
        return x


class ActQuantLinear(InputQuantized, nn.Linear):
    """``nn.Linear`` with fp32 weights whose input is fake-quantized to 8 bits."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *,
        input_quantizer: ActivationPrecision,
    ) -> None:  # fmt: skip
        super().__init__(in_features, out_features, bias)
        self._init_input_quant(input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        """y = q(x) Wᵀ + b."""
        return F.linear(self.quantize_input(x), self.weight, self.bias)


class ActQuantConv2d(InputQuantized, nn.Conv2d):
    """``nn.Conv2d`` with fp32 weights whose input is fake-quantized to 8 bits."""

    def __init__(self, *args: Any, input_quantizer: ActivationPrecision, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_input_quant(input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        """2-D convolution of the quantized input."""
        return self._conv_forward(self.quantize_input(x), self.weight, self.bias)


class ActQuantConvTranspose2d(InputQuantized, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with fp32 weights whose input is fake-quantized to 8 bits."""

    def __init__(self, *args: Any, input_quantizer: ActivationPrecision, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_input_quant(input_quantizer)

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        """Transposed 2-D convolution of the quantized input (``output_size`` as in torch)."""
        return super().forward(self.quantize_input(x), output_size)


class QuantModule(InputQuantized):
    """Shared behaviour of ``QuantLinear`` and ``QuantConv2d`` (isinstance target)."""

    _ternary_only: ClassVar[bool] = False
    quantizer: QuantizerConfig
    deployed: bool
    weight_cache: CacheMode
    fake_quant: bool
    weight_shape: tuple[int, ...]
    weight: Tensor
    bias: Tensor | None

    def _init_quantizer(self, quantizer: QuantizerConfig) -> None:
        kind = quantizer_kind(quantizer)
        if self._ternary_only and kind != "ternary":
            raise TypeError(
                f"{type(self).__name__} needs a ternary quantizer "
                f"(TWN, AbsMean, Learned, SparsityTarget), got {quantizer!r} ({kind})"
            )
        self.quantizer = quantizer
        self.deployed = False
        self.weight_cache = "int8"
        self._cache = WeightCache()
        # False: training mode runs on the latent float weight (fp32 warm-up before QAT).
        self.fake_quant = True
        self.weight_shape = tuple(self.weight.shape)
        if isinstance(quantizer, Learned):
            initial = decompose(quantizer, self.weight.detach())
            for name, value in zip(LEARNED_SCALE_NAMES, initial.scales, strict=True):
                self.register_parameter(name, nn.Parameter(value))

    @property
    def reduction_size(self) -> int:
        """K: weights per output channel (in/groups·kh·kw for a conv)."""
        return math.prod(self.weight_shape[1:])

    def _scale_names(self) -> tuple[str, ...]:
        """Names of the scale tensors this layer stores once deployed."""
        if isinstance(self.quantizer, Learned):
            return LEARNED_SCALE_NAMES
        return () if quantizer_kind(self.quantizer) == "fp16" else ("weight_scale",)

    def _learned_scales(self) -> tuple[Tensor, Tensor] | None:
        if not isinstance(self.quantizer, Learned):
            return None
        return (getattr(self, LEARNED_SCALE_NAMES[0]), getattr(self, LEARNED_SCALE_NAMES[1]))

    def decomposition(self) -> Decomposition:
        """Codes and scales of the current weight (training) or of the stored buffers."""
        if not self.deployed:
            return decompose(self.quantizer, self.weight.detach(), self._learned_scales())
        storage = _STORAGE[quantizer_kind(self.quantizer)]
        codes = storage.decode(getattr(self, storage.name), self.weight_shape)
        scales = [getattr(self, name) for name in self._scale_names()]
        return Decomposition(codes, *scales) if scales else Decomposition(codes, None)

    def quantized_weight(self) -> Tensor:
        """Float weight forward uses: STE fake quant when training, else the cached weight."""
        learned = self._learned_scales() or ()
        if not self.deployed:
            if not self.fake_quant:
                return self.weight
            needs_grad = torch.is_grad_enabled() and (
                self.weight.requires_grad or any(s.requires_grad for s in learned)
            )
            if self.training or needs_grad or _tracing():
                return fake_quantize(self.quantizer, self.weight, self._learned_scales())
            sources: tuple[Tensor, ...] = (self.weight, *learned)
        elif _tracing():
            return self.decomposition().dequantize()  # exporters see the stored buffers
        else:
            sources = tuple(self.storage_tensors().values())
        return self._cache.get(sources, self.quantizer, self.weight_cache, self.decomposition)

    def clear_weight_cache(self) -> None:
        """Drop the cached weight (needed only after in-place writes through ``.data``)."""
        self._cache.clear()

    def weight_cache_bytes(self) -> int:
        """Bytes the weight cache holds now."""
        return self._cache.nbytes()

    def train(self, mode: bool = True) -> Self:
        """nn.Module.train, and a fresh weight cache (the latent weight is about to change)."""
        self._cache.clear()
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Self:
        # .to(), .half(), .cuda() ... replace the tensors the cache was built from.
        self._cache.clear()
        return super()._apply(fn, recurse)

    def storage_tensors(self) -> dict[str, Tensor]:
        """The deployed tensors that represent the weight (codes and scales, no bias/cache)."""
        if not self.deployed:
            raise ValueError(f"{type(self).__name__} is not deployed")
        names = (_STORAGE[quantizer_kind(self.quantizer)].name, *self._scale_names())
        return {name: getattr(self, name) for name in names}

    @torch.no_grad()
    def deploy_(self, weight_cache: CacheMode = "int8") -> Self:
        """Replace the latent weight by packed / int8 / fp16 buffers in place (idempotent).

        ``weight_cache`` says what forward keeps between calls (``backend/weight_cache.py``).
        """
        self.weight_cache = check_mode(weight_cache)
        if not self.deployed:
            dec = self.decomposition()
            storage = _STORAGE[quantizer_kind(self.quantizer)]
            del self.weight
            stored = {storage.name: storage.encode(dec.codes)}
            for name, scale in zip(self._scale_names(), dec.scales, strict=True):
                if name in self._parameters:
                    delattr(self, name)
                stored[name] = scale.detach().to(torch.float32).clone()
            for name, value in stored.items():
                self.register_buffer(name, value)
            self.deployed = True
        if self.input_quant is not None:
            self.input_quant.freeze_()
        self._cache.clear()
        return self

    def check_state_dict(self, state_dict: Mapping[str, Any], prefix: str = "") -> None:
        """Raise ValueError naming the tensor unless this layer's entries would load cleanly."""
        if self.deployed:
            mode, foreign = "deployed", ("weight",)
            hint = "load the float checkpoint before deploy()"
        else:
            mode, foreign = "training-mode", tuple(sorted(_STORAGE_NAMES))
            hint = "deploy the model before loading a deployed checkpoint"
        for name in foreign:
            if prefix + name in state_dict:
                raise ValueError(f"{prefix}{name}: does not fit a {mode} layer; {hint}")
        local = {**self._parameters, **self._buffers}
        for name, current in local.items():
            key = prefix + name
            incoming = state_dict.get(key)
            skip = current is None or name in self._non_persistent_buffers_set
            if skip or not isinstance(incoming, Tensor):
                continue
            if name == "weight_packed":
                validate_packed(incoming, self.reduction_size, key)
            if incoming.shape != current.shape:
                raise ValueError(
                    f"{key}: expected shape {tuple(current.shape)}, got {tuple(incoming.shape)}"
                )
            if name in _STORAGE_NAMES and incoming.dtype != current.dtype:
                raise ValueError(f"{key}: expected dtype {current.dtype}, got {incoming.dtype}")

    def _fill_learned_scales(self, state_dict: dict[str, Any], prefix: str) -> None:
        """Initialise missing Learned scales from the checkpoint's own float weight."""
        keys = [prefix + name for name in LEARNED_SCALE_NAMES]
        weight = state_dict.get(prefix + "weight")
        if self.deployed or not isinstance(self.quantizer, Learned) or weight is None:
            return
        if any(key in state_dict for key in keys):
            return  # a partial pair is reported by the strict key check, not patched over
        initial = decompose(self.quantizer, weight.detach())
        state_dict.update(zip(keys, initial.scales, strict=True))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Validate before anything is copied, so a bad checkpoint leaves the layer untouched.
        self.check_state_dict(state_dict, prefix)
        self._fill_learned_scales(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._cache.clear()

    def _uses_kernel(self, x: Tensor) -> bool:
        """Whether forward goes to the Triton kernel: deployed, CUDA, one scale per group."""
        single_scale = self._scale_names() == ("weight_scale",)
        return self.deployed and x.is_cuda and single_scale and is_ternary(self.quantizer)

    def extra_repr(self) -> str:
        """nn.Module's description plus the quantizer and mode."""
        return f"{super().extra_repr()}, quantizer={self.quantizer!r}, deployed={self.deployed}"


class QuantLinear(QuantModule, nn.Linear):
    """``nn.Linear`` whose weight is quantized by ``quantizer`` (any registered config)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        quantizer: QuantizerConfig = _DEFAULT_QUANTIZER,
        input_quantizer: ActivationPrecision | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_quantizer(quantizer)
        self._init_input_quant(input_quantizer)

    def forward(self, x: Tensor) -> Tensor:
        """y = q(x) Wᵀ + b with the quantized weight (q: the input quantizer, if any)."""
        x = self.quantize_input(x)
        if self._uses_kernel(x):
            # Lazy: importing this module must never import triton or touch a GPU.
            from tritondsl.kernels import ternary_linear

            return ternary_linear(
                x, self.weight_packed, self.weight_scale, self.bias, self.in_features
            )
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantConv2d(QuantModule, nn.Conv2d):
    """``nn.Conv2d`` whose weight is quantized by ``quantizer`` (any registered config)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        quantizer: QuantizerConfig = _DEFAULT_QUANTIZER,
        input_quantizer: ActivationPrecision | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip
        self._init_quantizer(quantizer)
        self._init_input_quant(input_quantizer)

    def _uses_kernel(self, x: Tensor) -> bool:
        """The kernel takes numeric zero padding only; other paddings use F.conv2d."""
        numeric_zero_pad = self.padding_mode == "zeros" and not isinstance(self.padding, str)
        return numeric_zero_pad and super()._uses_kernel(x)

    def forward(self, x: Tensor) -> Tensor:
        """2-D convolution of the (quantized) input with the quantized weight."""
        x = self.quantize_input(x)
        if self._uses_kernel(x):
            # Lazy: importing this module must never import triton or touch a GPU.
            from tritondsl.kernels import ternary_conv2d

            return ternary_conv2d(
                x, self.weight_packed, self.weight_scale, self.bias, self.weight_shape,
                self.stride, self.padding, self.dilation, self.groups,
            )  # fmt: skip
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantConvTranspose2d(QuantModule, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` whose weight is quantized by ``quantizer``.

    The weight is laid out ``[in, out/groups, kh, kw]`` as in torch, so per-channel scales
    and packed rows follow the input channels (dim 0), like every other quantized layer.
    There is no Triton kernel for it: forward is ``F.conv_transpose2d`` with the
    dequantized weight."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | tuple[int, int] = 1,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        quantizer: QuantizerConfig = _DEFAULT_QUANTIZER,
        input_quantizer: ActivationPrecision | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
            bias, dilation, padding_mode, device, dtype,
        )  # fmt: skip
        self._init_quantizer(quantizer)
        self._init_input_quant(input_quantizer)

    def _uses_kernel(self, x: Tensor) -> bool:
        """No kernel computes a transposed convolution from packed codes."""
        return False

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        """Transposed 2-D convolution of the (quantized) input with the quantized weight
        (``output_size`` as in torch)."""
        x = self.quantize_input(x)
        output_padding = self._output_padding(
            x, output_size, list(self.stride), list(self.padding), list(self.kernel_size),
            2, list(self.dilation),
        )  # fmt: skip
        return F.conv_transpose2d(
            x, self.quantized_weight(), self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation,
        )  # fmt: skip


class TernaryLinear(QuantLinear):
    """``QuantLinear`` that accepts ternary quantizers only (default ``TWN()``)."""

    _ternary_only = True


class TernaryConv2d(QuantConv2d):
    """``QuantConv2d`` that accepts ternary quantizers only (default ``TWN()``)."""

    _ternary_only = True


def _tracing() -> bool:
    """Whether torch.export / torch.compile / torch.jit.trace is recording this forward."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()
