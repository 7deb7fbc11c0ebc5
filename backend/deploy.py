"""Whole-model deployment: convert every QuantModule, report deployed size.

``deploy(model)`` also makes ``model.load_state_dict`` check every quantized layer's
entries before any tensor is copied, so a corrupt deployed checkpoint (trit code 0b11,
wrong packed length, shape mismatch) leaves the whole model as it was, not only the
offending layer.
"""

from __future__ import annotations

from typing import Any, TypeVar

from torch import nn

from tritondsl.backend.layers import QuantModule

M = TypeVar("M", bound=nn.Module)
_GUARD_FLAG = "_tritondsl_checks_quant_state"


def _quant_modules(model: nn.Module) -> list[tuple[str, QuantModule]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantModule)]


def _check_all_before_load(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any
) -> None:
    """load_state_dict pre-hook on the root: validate every quantized layer up front."""
    for name, layer in _quant_modules(module):
        layer.check_state_dict(state_dict, f"{prefix}{name}." if name else prefix)


def deploy(model: M, cache_unpacked: bool = False) -> M:
    """Convert every QuantModule in ``model`` to deployed mode in place and return ``model``.

    With ``cache_unpacked`` each layer also keeps its dequantized float weight (not saved in
    the state_dict) so CPU forwards skip unpacking.
    """
    layers = _quant_modules(model)
    for _, layer in layers:
        layer.deploy_(cache_unpacked)
    if layers and not getattr(model, _GUARD_FLAG, False):
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
