"""Whole-model deployment: convert every QuantModule, report deployed size.

``deploy(model)`` also makes ``model.load_state_dict`` check every quantized layer's
entries before any tensor is copied, so a corrupt deployed checkpoint (trit code 0b11,
wrong packed length, shape mismatch) leaves the whole model as it was, not only the
offending layer. Every activation quantizer (``backend/activations.py``) is frozen: its scale
and zero point stay as trained or calibrated, and its entries are checked up front too.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

from torch import nn

from tritondsl.backend.activations import activation_quantizers
from tritondsl.backend.layers import (
    ActQuantConv2d,
    ActQuantLinear,
    QuantConv2d,
    QuantLinear,
    QuantModule,
)
from tritondsl.backend.precision import A8PerToken, ActivationPrecision
from tritondsl.backend.weight_cache import CacheMode

M = TypeVar("M", bound=nn.Module)
_GUARD_FLAG = "_tritondsl_checks_quant_state"


def _quant_modules(model: nn.Module) -> list[tuple[str, QuantModule]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantModule)]


def _check_all_before_load(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any
) -> None:
    """load_state_dict pre-hook on the root: validate every quantized layer up front."""
    for name, layer in [*_quant_modules(module), *activation_quantizers(module)]:
        layer.check_state_dict(state_dict, f"{prefix}{name}." if name else prefix)


def deploy(model: M, weight_cache: CacheMode = "int8") -> M:
    """Convert every QuantModule in ``model`` to deployed mode in place and return ``model``.

    ``weight_cache`` is what each layer keeps between CPU forwards, never saved in the
    state_dict: ``"int8"`` codes and scales (a quarter of the float weight's bytes),
    ``"float"`` (the dequantized weight) or ``"none"`` (unpack the 2-bit codes every call).
    """
    layers, quantizers = _quant_modules(model), activation_quantizers(model)
    for _, layer in layers:
        layer.deploy_(weight_cache)
    for _, quantizer in quantizers:
        quantizer.freeze_()
    if (layers or quantizers) and not getattr(model, _GUARD_FLAG, False):
        model.register_load_state_dict_pre_hook(_check_all_before_load)
        setattr(model, _GUARD_FLAG, True)
    return model


def is_deployed(model: nn.Module) -> bool:
    """True if ``model`` contains QuantModules and all of them are deployed."""
    layers = _quant_modules(model)
    return bool(layers) and all(layer.deployed for _, layer in layers)


def deployed_bytes(model: nn.Module) -> int:
    """Bytes of weight storage (codes plus scales, no bias) of all QuantModules in ``model``.

    Raises ValueError if a QuantModule is still in training mode.
    """
    total = 0
    for name, layer in _quant_modules(model):
        if not layer.deployed:
            raise ValueError(f"{name or type(layer).__name__} is not deployed")
        total += sum(t.numel() * t.element_size() for t in layer.storage_tensors().values())
    return total


def _with_input_quant(layer: nn.Module, config: ActivationPrecision) -> nn.Module:
    """``layer`` given an input quantizer: in place for a QuantModule, else a float twin."""
    if isinstance(layer, QuantModule):
        layer._init_input_quant(config)
        return layer.train(layer.training)  # the new child takes the layer's mode
    if isinstance(layer, nn.Linear):
        twin: nn.Module = ActQuantLinear(
            layer.in_features, layer.out_features, layer.bias is not None, input_quantizer=config
        )
    else:
        assert isinstance(layer, nn.Conv2d)
        twin = ActQuantConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, layer.bias is not None,
            layer.padding_mode, input_quantizer=config,
        )  # fmt: skip
    twin.load_state_dict(layer.state_dict())
    return twin.to(layer.weight.device).train(layer.training)


def _takes_input_quant(layer: nn.Module | None, config: ActivationPrecision) -> bool:
    """Whether ``add_input_quantizers`` can give ``layer`` an input quantizer of ``config``."""
    if getattr(layer, "input_quant", None) is not None:
        return False
    linear = isinstance(layer, QuantLinear) or type(layer) is nn.Linear
    conv = isinstance(layer, QuantConv2d) or type(layer) is nn.Conv2d
    return linear or (conv and not isinstance(config, A8PerToken))


def add_input_quantizers(
    model: nn.Module, config: ActivationPrecision, names: Collection[str] | None = None
) -> list[str]:
    """Give Conv2d/Linear layers (all, or those in ``names``) an unobserved input quantizer.

    Layers that already quantize their input keep theirs; per-token configs go to Linear
    layers only. Plain ``nn.Conv2d`` / ``nn.Linear`` are replaced by ``ActQuantConv2d`` /
    ``ActQuantLinear`` with the same weights (state_dict keys gain only ``input_quant.*``).
    Returns the names of the layers changed; run ``calibrate`` (or train) afterwards to set
    their scales. A name that cannot take one raises ValueError before anything changes.
    """
    layers = dict(model.named_modules())
    if names is not None:
        bad = sorted(n for n in names if not _takes_input_quant(layers.get(n), config))
        if bad:
            raise ValueError(f"cannot add an input quantizer of {config} to: {', '.join(bad)}")
    targets = [
        name
        for name, layer in layers.items()
        if name and (names is None or name in names) and _takes_input_quant(layer, config)
    ]
    for name in targets:
        updated = _with_input_quant(layers[name], config)
        if updated is not layers[name]:
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, updated)
    return targets
