"""Published BitNet b1.58 checkpoints (Hugging Face layout) into a deployed zoo model.

Hugging Face's BitNet checkpoints store each ternary projection as two tensors:

* ``...proj.weight``: uint8 ``[ceil(out / 4), in]``; output row ``r = i * rows + j`` sits in
  byte row ``j`` at bits ``2i`` and ``2i + 1``, as ``trit + 1`` (transformers'
  ``integrations/bitnet.py``: ``pack_weights`` / ``unpack_weights``);
* ``...proj.weight_scale``: ``[1]``, the reciprocal of absmean's γ: transformers'
  ``BitLinear`` divides ``x · codesᵀ`` by it, so the float weight is ``codes / weight_scale``.

``convert_hf_bitnet`` rewrites those into this project's deployed layout (``weight_packed``
along the reduction axis, ``weight_scale`` = γ, see docs/packing.md) for a model whose
layers are already deployed; every other tensor passes through. ``load_hf_bitnet`` deploys a
model and loads such a checkpoint, or a float one, with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from tritondsl.backend.deploy import deploy
from tritondsl.backend.layers import QuantModule
from tritondsl.backend.quantizers import is_ternary
from tritondsl.kernels.packing import pack
from tritondsl.program import where_declared

HF_TRITS_PER_BYTE = 4


class CheckpointError(ValueError):
    """A BitNet checkpoint that does not fit the model (names the tensor and both shapes)."""


def unpack_hf_ternary(packed: Tensor, rows: int) -> Tensor:
    """Trits ``int8[rows, ...]`` from transformers' packed ``uint8[ceil(rows / 4), ...]``."""
    if packed.dtype != torch.uint8:
        raise CheckpointError(f"packed BitNet weights are uint8, got {packed.dtype}")
    parts = [((packed >> (2 * i)) & 0b11).to(torch.int8) - 1 for i in range(HF_TRITS_PER_BYTE)]
    codes = torch.cat(parts, dim=0)[:rows]
    if bool((codes > 1).any()):
        raise CheckpointError("packed BitNet weights hold the invalid code 0b11")
    return codes


def convert_hf_bitnet(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with every packed ternary projection in ``model``'s deployed layout."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantModule)}
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "weight_scale" and f"{prefix}.weight" in state:
            continue  # converted with its weight below
        if leaf != "weight" or tensor.dtype != torch.uint8:
            out[key] = tensor
            continue
        layer = layers.get(prefix)
        if layer is None or not is_ternary(layer.quantizer) or not layer.deployed:
            raise CheckpointError(
                f"{key} is a packed ternary weight, but {prefix or 'the model'} is not a "
                "deployed ternary layer of this model"
            )
        out_features = layer.weight_shape[0]
        want = (-(-out_features // HF_TRITS_PER_BYTE), layer.reduction_size)
        if tuple(tensor.shape) != want:
            raise CheckpointError(
                f"{key} has shape {list(tensor.shape)}; a packed {list(layer.weight_shape)} "
                f"weight is {list(want)}{where_declared(model, key)}: is the checkpoint for "
                "another model size?"
            )
        scale = state.get(f"{prefix}.weight_scale")
        if scale is None or scale.numel() != 1:
            raise CheckpointError(f"{prefix}.weight_scale must be one number next to {key}")
        if not bool(torch.isfinite(scale).all()) or float(scale.reshape(())) <= 0:
            raise CheckpointError(f"{prefix}.weight_scale must be positive, got {scale.item()}")
        codes = unpack_hf_ternary(tensor, out_features)
        out[f"{prefix}.weight_packed"] = pack(codes)
        gamma = (1.0 / scale.float()).reshape(1)
        size = layer.weight_scale.numel()  # per-channel layers repeat the one scale
        out[f"{prefix}.weight_scale"] = gamma.expand(size).clone()
    return out


def load_hf_bitnet(model: nn.Module, checkpoint: str | Path | Mapping[str, Tensor]) -> nn.Module:
    """Deploy ``model`` and load a Hugging Face BitNet checkpoint (packed or float) strictly.

    ``checkpoint`` is a ``.safetensors`` file or a state_dict. A float checkpoint (no uint8
    weights) loads into the training layout instead and is not deployed.
    """
    if isinstance(checkpoint, str | Path):
        try:
            state: Mapping[str, Tensor] = load_file(str(checkpoint))
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"cannot read {checkpoint}: {error}") from None
    else:
        state = checkpoint
    packed = any(t.dtype == torch.uint8 for t in state.values())
    if packed:
        deploy(model)
        state = convert_hf_bitnet(model, state)
    _load_strict(model, state)
    return model


def _load_strict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(
            "the checkpoint does not fit the model: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing[:5])}" if missing else "",
                    f"unexpected {', '.join(extra[:5])}" if extra else "",
                )
                if part
            )
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{key} has shape {list(tensor.shape)} in the checkpoint, the model has "
                f"{list(own[key].shape)}{where_declared(model, key)}: is the checkpoint for "
                "another vocabulary or model size?"
            )
    model.load_state_dict(dict(state), strict=True)
