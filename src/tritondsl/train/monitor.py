"""What training watches: per-layer gradient norms, non-finite values, ternary sparsity, memory."""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tritondsl.backend.layers import QuantModule
from tritondsl.backend.quantizers import is_ternary
from tritondsl.train.sharding import is_sharded, local, unsharded


class GradientMonitor:
    """Per-layer gradient norms of every step, summarised per epoch (of FSDP's shards too)."""

    def __init__(self, model: nn.Module) -> None:
        # Under FSDP each process holds a shard of each gradient: norms sum all the squares.
        self.sharded = is_sharded(model)
        self.params: list[Tensor] = []
        self.layers: list[str] = []
        index: list[int] = []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            layer = name.rpartition(".")[0] or name
            if layer not in self.layers:
                self.layers.append(layer)
            self.params.append(param)
            index.append(self.layers.index(layer))
        device = self.params[0].device if self.params else torch.device("cpu")
        self._index = torch.tensor(index, dtype=torch.long, device=device)
        self._device = device
        self.reset()

    def reset(self) -> None:
        """Start a new epoch."""
        zeros = torch.zeros(len(self.layers), device=self._device)
        self._sum, self._max, self._steps = zeros, zeros.clone(), 0

    def step(self) -> Tensor:
        """Norms of this step's gradients per layer (after backward); accumulates them."""
        norms = torch.stack([
            torch.zeros((), device=self._device) if p.grad is None
            else torch.linalg.vector_norm(local(p.grad.detach()).float())
            for p in self.params
        ])  # fmt: skip
        squares = torch.zeros(len(self.layers), device=self._device)
        squares.index_add_(0, self._index, norms.square())
        if self.sharded:
            dist.all_reduce(squares)
        layer_norms = squares.sqrt()
        self._sum += layer_norms
        self._max = torch.maximum(self._max, layer_norms)
        self._steps += 1
        return layer_norms

    def nonfinite_layers(self, layer_norms: Tensor) -> list[str]:
        """Layers whose gradient norm in ``layer_norms`` is NaN or infinite."""
        bad = (~torch.isfinite(layer_norms)).nonzero().flatten().tolist()
        return [self.layers[i] for i in bad]

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and max gradient norm per layer over the epoch so far."""
        steps = max(self._steps, 1)
        means, maxes = (self._sum / steps).tolist(), self._max.tolist()
        return {layer: {"mean": mean, "max": top}
                for layer, mean, top in zip(self.layers, means, maxes, strict=True)}  # fmt: skip

    def warnings(self, vanishing: float, exploding: float) -> list[str]:
        """Messages for layers whose gradients vanished or exploded this epoch."""
        found = []
        for layer, norms in self.summary().items():
            if norms["mean"] < vanishing:
                found.append(
                    f"vanishing gradient: layer {layer} mean gradient norm {norms['mean']:.3g} "
                    f"< {vanishing:g} (it barely learns)"
                )
            elif norms["max"] > exploding:
                found.append(
                    f"exploding gradient: layer {layer} gradient norm reached "
                    f"{norms['max']:.3g} > {exploding:g} (try a lower --lr)"
                )
        return found


@torch.no_grad()
def first_nonfinite_module(model: nn.Module, x: Tensor) -> str | None:
    """Rerun ``model(x)`` with forward hooks: the first module whose output is NaN/Inf.

    Returns ``"<input>"`` if the batch itself is not finite, the model's class name if only
    its final output is (a functional op in its forward), and None if all is finite.
    """
    if not bool(torch.isfinite(x).all()):
        return "<input>"
    names = {id(m): name or type(model).__name__ for name, m in model.named_modules()}
    found: list[str] = []

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        if not found and _nonfinite(output):
            found.append(names[id(module)])

    # Hooks fire when a module returns, so a layer reports before the block around it.
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _nonfinite(output: Any) -> bool:
    if isinstance(output, Tensor):
        return output.is_floating_point() and not bool(torch.isfinite(output).all())
    if isinstance(output, tuple | list):
        return any(_nonfinite(o) for o in output)
    if isinstance(output, dict):
        return any(_nonfinite(o) for o in output.values())
    return False


@torch.no_grad()
def ternary_stats(model: nn.Module) -> dict[str, dict[str, float]]:
    """Per ternary layer: the fraction of zero trits and the mean scale (FSDP: on every rank)."""
    stats = {}
    with unsharded(model):
        for name, module in model.named_modules():
            if isinstance(module, QuantModule) and is_ternary(module.quantizer):
                dec = module.decomposition()
                scales = torch.cat([s.detach().flatten().float() for s in dec.scales])
                stats[name] = {
                    "zero_fraction": float((dec.codes == 0).float().mean()),
                    "scale": float(scales.mean()),
                }
    return stats


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    # Linux keeps getrusage's ru_maxrss across exec, so a training process started by a big
    # one (a benchmark driver) would report its parent's peak; VmHWM is this program's own.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
