"""What generated model code calls: precision configs, layer factories, input checks.

Generated modules import only ``torch`` and ``tritondsl``; everything tritondsl-specific
they use is in this module, so the generated source stays short and readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil as ceil  # the language's compile-time ceil() and floor()
from math import floor as floor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritondsl.backend.layers import (
    ActQuantConv2d,
    ActQuantConvTranspose2d,
    ActQuantLinear,
    QuantConv2d,
    QuantConvTranspose2d,
    QuantLinear,
)
from tritondsl.backend.precision import A8LSQ as A8LSQ

# Generated code constructs precisions by their class names (rt.TWN(...)) and calls the
# language's precision builders (rt.ternary(...)) where options are computed at run time.
from tritondsl.backend.precision import A32 as A32
from tritondsl.backend.precision import FP16 as FP16
from tritondsl.backend.precision import FP32 as FP32
from tritondsl.backend.precision import TWN as TWN
from tritondsl.backend.precision import A8PerToken as A8PerToken
from tritondsl.backend.precision import A8Static as A8Static
from tritondsl.backend.precision import AbsMean as AbsMean
from tritondsl.backend.precision import ActivationPrecision as ActivationPrecision
from tritondsl.backend.precision import Int8 as Int8
from tritondsl.backend.precision import Learned as Learned
from tritondsl.backend.precision import Precision
from tritondsl.backend.precision import SparsityTarget as SparsityTarget
from tritondsl.backend.precision import WeightPrecision as WeightPrecision
from tritondsl.backend.precision import a8 as a8
from tritondsl.backend.precision import as_activation as as_activation
from tritondsl.backend.precision import ternary as ternary
from tritondsl.backend.precision import ternary_or_default as ternary_or_default
from tritondsl.backend.quantizers import fake_quantize
from tritondsl.compiler.functions import COMPILE_TIME
from tritondsl.compiler.functions import make_divisible as make_divisible
from tritondsl.compiler.values import EvalError, Init

# Re-exported: generated code reaches everything through this module.
from tritondsl.transformer import (  # noqa: F401
    Embedding,
    KVCache,
    TiedLinear,
    causal_mask,
    decoding,
    kv_cache,
    merge_heads,
    relu2,
    rotary,
    scaled_dot_product_attention,
    split_heads,
)


def _builtin(name: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    """Run a compile-time builtin of the language; its errors become ValueErrors."""
    try:
        return COMPILE_TIME[name](list(args), options, None)  # type: ignore[arg-type]
    except EvalError as error:
        raise ValueError(error.message) from None


def zeros() -> Init:
    """A ``param`` initializer: all zeros."""
    return _builtin("zeros", (), {})


def ones() -> Init:
    """A ``param`` initializer: all ones."""
    return _builtin("ones", (), {})


def normal(*args: float, **kwargs: float) -> Init:
    """A ``param`` initializer: ``normal(mean=0, std=1)``."""
    return _builtin("normal", args, kwargs)


def uniform(*args: float, **kwargs: float) -> Init:
    """A ``param`` initializer: ``uniform(low=0, high=1)``."""
    return _builtin("uniform", args, kwargs)


def Conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    bias: bool = True,
    *,
    weights: WeightPrecision = FP32(),
    activations: ActivationPrecision = A32(),
) -> nn.Module:
    """``nn.Conv2d`` at fp32/a32; a ``QuantConv2d`` quantized by ``weights`` (its input by
    ``activations``); ``ActQuantConv2d`` for fp32 weights with 8-bit input."""
    args = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
    act = None if isinstance(activations, A32) else activations
    if isinstance(weights, FP32):
        return nn.Conv2d(*args) if act is None else ActQuantConv2d(*args, input_quantizer=act)
    return QuantConv2d(*args, quantizer=weights, input_quantizer=act)


def Linear(
    in_features: int,
    out_features: int,
    bias: bool = True,
    *,
    weights: WeightPrecision = FP32(),
    activations: ActivationPrecision = A32(),
) -> nn.Module:
    """``nn.Linear`` at fp32/a32; a ``QuantLinear`` quantized by ``weights`` (its input by
    ``activations``); ``ActQuantLinear`` for fp32 weights with 8-bit input."""
    args = (in_features, out_features, bias)
    act = None if isinstance(activations, A32) else activations
    if isinstance(weights, FP32):
        return nn.Linear(*args) if act is None else ActQuantLinear(*args, input_quantizer=act)
    return QuantLinear(*args, quantizer=weights, input_quantizer=act)


def weights_of(precision: Precision, weights: WeightPrecision | None) -> WeightPrecision | None:
    """``@P`` with P computed at run time: P if it is a weight precision, else ``weights``."""
    return precision if isinstance(precision, WeightPrecision) else weights


def activations_of(
    precision: Precision, activations: ActivationPrecision | None
) -> ActivationPrecision | None:
    """``@P`` with P computed at run time: P if it is an activation precision."""
    return precision if isinstance(precision, ActivationPrecision) else activations


def ConvTranspose2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
    groups: int = 1,
    bias: bool = True,
    dilation: int | tuple[int, int] = 1,
    *,
    weights: WeightPrecision = FP32(),
    activations: ActivationPrecision = A32(),
) -> nn.Module:
    """``nn.ConvTranspose2d`` at fp32/a32; a ``QuantConvTranspose2d`` quantized by
    ``weights`` (its input by ``activations``); ``ActQuantConvTranspose2d`` for fp32
    weights with 8-bit input."""
    args = (in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
            bias, dilation)  # fmt: skip
    act = None if isinstance(activations, A32) else activations
    if isinstance(weights, FP32):
        if act is None:
            return nn.ConvTranspose2d(*args)
        return ActQuantConvTranspose2d(*args, input_quantizer=act)
    return QuantConvTranspose2d(*args, quantizer=weights, input_quantizer=act)


class StochasticDepth(nn.Module):
    """``torchvision.ops.StochasticDepth``: while training, zero the input per sample
    (``mode="row"``) or all at once (``"batch"``) with probability ``p`` and scale what
    survives by 1 / (1 - p); the identity in eval mode."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
        if mode not in ("batch", "row"):
            raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
        self.p, self.mode = p, mode

    def forward(self, x: Tensor) -> Tensor:
        """Drop, or pass ``x`` through unchanged in eval mode."""
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        """``p=0.2, mode=row``, as torchvision prints it."""
        return f"p={self.p}, mode={self.mode}"


def ternary_matmul(x: Tensor, weight: Tensor | nn.Module) -> Tensor:
    """``x · Wᵀ`` with W ternary: an int8 trit constant, or a ``param`` (a ``ternary_weight``)."""
    if isinstance(weight, nn.Module):
        return weight(x)
    return F.linear(x, weight.to(x.dtype))


def ternary_weight(
    out_features: int, in_features: int, *, weights: WeightPrecision
) -> nn.Module:
    """A ``param W: TernaryTensor[out, in]``: a bias-free ``Linear``, so training, ``deploy``
    (2-bit packing) and every exporter treat it like any other quantized layer."""
    return Linear(in_features, out_features, bias=False, weights=weights)


def linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, weights: WeightPrecision | None = None
) -> Tensor:
    """``x · Wᵀ + b``; a ``param`` weight of the block is quantized by its precision (STE)."""
    if weights is not None and not isinstance(weights, FP32):
        weight = fake_quantize(weights, weight).to(x.dtype)  # type: ignore[arg-type]
    return F.linear(x, weight, bias)




def parameter(shape: tuple[int, ...], init: Init | None = None) -> nn.Parameter:
    """A learnable ``param`` tensor: ``init`` if given, else initialised like ``nn.Linear``."""
    tensor = torch.empty(shape)
    match init:
        case None:
            nn.init.kaiming_uniform_(tensor, a=5**0.5)
        case Init(kind="zeros"):
            nn.init.zeros_(tensor)
        case Init(kind="ones"):
            nn.init.ones_(tensor)
        case Init(kind="normal", a=mean, b=std):
            nn.init.normal_(tensor, mean, std)
        case Init(kind="uniform", a=low, b=high):
            nn.init.uniform_(tensor, low, high)
        case _:
            raise ValueError(f"unknown initializer {init!r}")
    return nn.Parameter(tensor)


def check_input(
    model: Any, name: str, x: Any, shape: Any, dtype: str = "float32", where: str = ""
) -> None:
    """Raise a clear error when ``x`` does not match the model's declared input."""
    # TorchScript cannot compile the checks (they take the module itself and build messages
    # with f-strings), so scripted models skip them; eager, traced and exported runs check.
    # The loose annotations are what lets torch.jit.script compile this call at all.
    if not torch.jit.is_scripting():
        _check_input(model, name, x, shape, dtype, where)


@torch.jit.unused
def _check_input(
    model: nn.Module, name: str, x: Any, shape: Sequence[int | str], dtype: str, where: str
) -> None:
    label = type(model).__name__
    declared = "[" + ", ".join(str(d) for d in shape) + "]"
    at = f" (declared at {where})" if where else ""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{label} expects '{name}' to be a tensor of shape {declared}{at}, "
            f"got {type(x).__name__}"
        )
    bad_rank = x.dim() != len(shape)
    if bad_rank or any(isinstance(d, int) and d != x.shape[i] for i, d in enumerate(shape)):
        raise ValueError(
            f"{label} expects '{name}' of shape {declared}{at}, got {list(x.shape)}"
        )
    reference = next(model.parameters(), None)
    _check_dtype(label, name, x, dtype, reference, at)
    if reference is not None and reference.device != x.device:
        raise RuntimeError(
            f"{label} is on {reference.device} but '{name}' is on {x.device}; "
            f"move one of them, e.g. x.to({str(reference.device)!r})"
        )


def _check_dtype(
    label: str, name: str, x: Tensor, dtype: str, reference: Tensor | None, at: str
) -> None:
    """Integer inputs where floats are declared (or the reverse, or bools) never reach the
    layers, where they would meet weights cast to their dtype; a float input must have the
    weights' dtype (so ``model.half()`` takes half inputs)."""
    integer = dtype.startswith("int")
    integral = not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    if (integer and not integral) or (not integer and not x.is_floating_point()):
        kind = "an integer" if integer else "a floating-point"
        hint = f"x.to(torch.{dtype})" if integer else "x.float()"
        raise TypeError(
            f"{label} expects '{name}' to be {kind} tensor ({dtype}){at}, got {x.dtype}; "
            f"convert it, e.g. {hint}"
        )
    if x.is_floating_point() and reference is not None and reference.dtype != x.dtype:
        weights = str(reference.dtype).removeprefix("torch.")
        raise TypeError(
            f"{label}'s weights are {weights} but '{name}' is "
            f"{str(x.dtype).removeprefix('torch.')}; convert one of them, "
            f"e.g. x.to(torch.{weights})"
        )
