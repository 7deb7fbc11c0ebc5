"""What generated model code calls: precisions, layer factories, input checks.

Generated modules import only ``torch`` and ``tritondsl``; everything tritondsl-specific
they use is in this module, so the generated source stays short and readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritondsl.backend import quantizers as q
from tritondsl.backend.layers import QuantConv2d, QuantLinear
from tritondsl.compiler.functions import COMPILE_TIME
from tritondsl.compiler.functions import make_divisible as make_divisible
from tritondsl.compiler.values import EvalError, Symbol
from tritondsl.compiler.values import Precision as Precision

FP32 = Precision("fp32")
FP16 = Precision("fp16")
INT8 = Precision("int8")


def ternary(**options: Any) -> Precision:
    """A ternary precision; options as in the language: threshold, scale, method, learned..."""
    symbolic = {
        k: Symbol(v) if k in ("scale", "method") and isinstance(v, str) else v
        for k, v in options.items()
    }
    try:
        return COMPILE_TIME["ternary"]([], symbolic, None)  # type: ignore[arg-type]
    except EvalError as error:
        raise ValueError(error.message) from None


def quantizer_for(precision: Precision) -> q.QuantizerConfig | None:
    """The backend quantizer config of a precision; None for fp32 (no quantization)."""
    per_channel = precision.scale == "per_channel"
    match precision.kind, precision.method:
        case "fp32", _:
            return None
        case "fp16", _:
            return q.FP16()
        case "int8", _:
            return q.Int8()
        case "ternary", "twn":
            return q.TWN(0.7 if precision.threshold is None else precision.threshold, per_channel)
        case "ternary", "absmean":
            return q.AbsMean(per_channel)
        case "ternary", "learned":
            return q.Learned(0.05 if precision.threshold is None else precision.threshold)
        case "ternary", "sparsity":
            return q.SparsityTarget(precision.sparsity or 0.0, per_channel)
    raise ValueError(f"unknown precision {precision}")


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
    weights: Precision = FP32,
) -> nn.Module:
    """``nn.Conv2d`` at fp32, otherwise a ``QuantConv2d`` with the precision's quantizer."""
    args = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)
    quantizer = quantizer_for(weights)
    return nn.Conv2d(*args) if quantizer is None else QuantConv2d(*args, quantizer=quantizer)


def Linear(
    in_features: int, out_features: int, bias: bool = True, *, weights: Precision = FP32
) -> nn.Module:
    """``nn.Linear`` at fp32, otherwise a ``QuantLinear`` with the precision's quantizer."""
    quantizer = quantizer_for(weights)
    if quantizer is None:
        return nn.Linear(in_features, out_features, bias)
    return QuantLinear(in_features, out_features, bias, quantizer=quantizer)


def ternary_matmul(x: Tensor, weight: Tensor, weights: Precision | None = None) -> Tensor:
    """``x · Wᵀ`` with W ternary: an int8 trit constant, or a latent weight quantized (STE)."""
    if weight.dtype == torch.int8:
        return F.linear(x, weight.to(x.dtype))
    quantizer = quantizer_for(weights or Precision("ternary"))
    assert quantizer is not None
    return F.linear(x, q.fake_quantize(quantizer, weight).to(x.dtype))


def ternary_parameter(shape: tuple[int, ...]) -> nn.Parameter:
    """A latent weight for a ``param W: TernaryTensor[...]``, initialised like ``nn.Linear``."""
    weight = nn.Parameter(torch.empty(shape))
    nn.init.kaiming_uniform_(weight, a=5**0.5)
    return weight


def check_input(model: Any, name: str, x: Any, shape: Any) -> None:
    """Raise a clear error when ``x`` does not match the model's declared input."""
    # TorchScript cannot compile the checks (they take the module itself and build messages
    # with f-strings), so scripted models skip them; eager, traced and exported runs check.
    # The loose annotations are what lets torch.jit.script compile this call at all.
    if not torch.jit.is_scripting():
        _check_input(model, name, x, shape)


@torch.jit.unused
def _check_input(model: nn.Module, name: str, x: Any, shape: Sequence[int | str]) -> None:
    label = type(model).__name__
    declared = "[" + ", ".join(str(d) for d in shape) + "]"
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{label} expects '{name}' to be a tensor of shape {declared}, got {type(x).__name__}"
        )
    bad_rank = x.dim() != len(shape)
    if bad_rank or any(isinstance(d, int) and d != x.shape[i] for i, d in enumerate(shape)):
        raise ValueError(f"{label} expects '{name}' of shape {declared}, got {list(x.shape)}")
    reference = next(model.parameters(), None)
    if reference is not None and reference.device != x.device:
        raise RuntimeError(
            f"{label} is on {reference.device} but '{name}' is on {x.device}; "
            f"move one of them, e.g. x.to({str(reference.device)!r})"
        )
