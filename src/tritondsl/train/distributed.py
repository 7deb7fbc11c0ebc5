"""Distributed set-up from torchrun's environment (nccl on GPUs, gloo on CPU): DDP or FSDP.

Under ``torchrun --nproc_per_node=K`` every process runs the same command; torchrun sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without them this module
describes a single process and every helper is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tritondsl.train import sharding
from tritondsl.train.errors import TrainingError

CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = CPU

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the only process that prints and writes files."""
        return self.rank == 0


def setup(device: str | None = None, parallel: str = "ddp") -> DistContext:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel == "fsdp" and world_size == 1:
        raise TrainingError(
            "--parallel fsdp shards the model over torchrun's processes, and this is one "
            "process: start it with torchrun --nproc_per_node=K (K >= 2), or drop --parallel"
        )
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {wanted!r} asked for, but torch sees no CUDA GPU")
    if wanted == "cuda":
        # One GPU per process: local rank k uses GPU k of its node.
        wanted = f"cuda:{local_rank}"
    chosen = torch.device(wanted)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, chosen)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (so torchrun sees a clean exit)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext, sync_bn: bool, parallel: str = "ddp") -> nn.Module:
    """DDP-wrap (or FSDP-shard in place) the model when distributed; BatchNorm becomes
    SyncBatchNorm on GPUs.

    PyTorch's SyncBatchNorm has no CPU implementation, so on CPU each process normalises
    with the statistics of its own share of the batch (and DDP copies rank 0's running
    statistics to the others at every forward; FSDP leaves each process its own).
    """
    if not ctx.distributed:
        return model
    if sync_bn and ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if parallel == "fsdp":
        sharding.shard(model)
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_sum(tensor: Tensor, ctx: DistContext) -> Tensor:
    """Sum ``tensor`` over all processes, in place; returns it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(value: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``value``, in rank order."""
    if not ctx.distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(ctx: DistContext) -> None:
    """Wait for every process (rank 0 finishing a checkpoint before others go on)."""
    if ctx.distributed:
        dist.barrier()
