"""FSDP2 (``fully_shard``) under torchrun: sharded parameters, full safetensors checkpoints.

Each quantized layer and each module whose own parameters hold at least ``MIN_SHARD``
values becomes one FSDP unit (its weight, bias and quantizer scales all-gathered together
before its forward), then the root takes the rest. Buffers (BatchNorm statistics,
activation-observer ranges) are not sharded: as under DDP, every training forward starts
from rank 0's, which the checkpoint keeps.

Checkpoints stay the single-process format: ``full_state`` gathers the full model and
optimizer state dicts on rank 0 (torch's ``get_*_state_dict`` with ``full_state_dict``),
and ``load_optimizer`` shards a full one back (``set_optimizer_state_dict``). So a run may
resume on any number of processes, with DDP or FSDP. Torch's distributed checkpoint files
(``.distcp`` and a pickled ``.metadata``) are never written or read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard

from tritondsl.backend.layers import QuantModule
from tritondsl.train.checkpoint import param_names

MIN_SHARD = 4096  # parameters below this stay with the enclosing unit (fewer collectives)
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: nn.Module) -> None:
    """``fully_shard`` the model in place: quantized layers and large modules, then the root."""
    # Every process starts from rank 0's weights (DDP's guarantee), whatever --init did.
    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)
    # Deepest first: a unit owns the parameters that no unit below it took.
    for _name, module in reversed(list(model.named_modules())[1:]):
        if isinstance(module, QuantModule) or _own_size(module) >= MIN_SHARD:
            fully_shard(module)
    fully_shard(model)
    model.register_forward_pre_hook(_sync_buffers)


def _sync_buffers(model: nn.Module, _inputs: Any) -> None:
    """Rank 0's buffers (BatchNorm statistics, observer ranges) before each training forward,
    as DDP's ``broadcast_buffers`` does: the replicas stay one model."""
    if model.training:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``shard`` has run on the model."""
    return isinstance(model, FSDPModule)


def _own_size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Tensor], dict[str, Any], list[str]]:
    """What ``checkpoint.write`` takes: the full model and (index-keyed) optimizer state
    dicts, and the optimizer's parameter names; complete on rank 0, call it on every rank."""
    names = param_names(optimizer, model)
    if not is_sharded(model):
        return model.state_dict(), optimizer.state_dict(), names
    weights = get_model_state_dict(model, options=_FULL)
    by_name = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if not by_name:  # ranks other than 0 get nothing
        return weights, {"state": {}, "param_groups": []}, names
    index = {name: i for i, name in enumerate(names)}
    state = {index[name]: entries for name, entries in by_name["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in by_name["param_groups"]]
    return weights, {"state": state, "param_groups": groups}, names


def missing_forwards(model: nn.Module, total: int, mine: int, batch_size: int, world: int) -> int:
    """Forwards this rank adds to an evaluation of ``mine`` of ``total`` samples so that it
    runs as many as rank 0 (which has the most): FSDP all-gathers in each; 0 unsharded."""
    if not is_sharded(model):
        return 0
    most = len(range(0, total, world))
    return -(-most // batch_size) - -(-mine // batch_size)


def optimizer_loader(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[dict[str, Any]], None]:
    """``load_state_dict`` for a full index-keyed optimizer state (sharded into an FSDP model's)."""
    if not is_sharded(model):
        return optimizer.load_state_dict
    names = param_names(optimizer, model)

    def load(state_dict: dict[str, Any]) -> None:
        shaped = [v for entries in state_dict["state"].values() for v in entries.values()
                  if isinstance(v, Tensor) and v.dim() > 0]  # fmt: skip
        if not shaped:  # nothing to shard (SGD without momentum), which torch's loader refuses
            optimizer.load_state_dict(state_dict)
            return
        by_name = {
            "state": {names[i]: entries for i, entries in state_dict["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                             for g in state_dict["param_groups"]],
        }  # fmt: skip
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, by_name, options=options)

    return load


@contextmanager
def unsharded(model: nn.Module) -> Iterator[None]:
    """Every parameter whole (all-gathered) inside the block; call on every rank."""
    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()


def local(grad: Tensor) -> Tensor:
    """This process's shard of a sharded (DTensor) gradient; a plain one as it is."""
    to_local = getattr(grad, "to_local", None)
    return grad if to_local is None else to_local()
