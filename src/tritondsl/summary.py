"""``tritondsl summary``: a per-layer table computed from the real tensors of a built model.

Sizes come from the module's actual parameters, deployed (packed) on a copy; output
shapes come from the front end's shape inference. With a batch size the table also
estimates activation memory per layer and the peaks for inference and training, from a
liveness model of the forward pass (see ``_peaks``); ``measure_peak`` measures the real
thing with the PyTorch profiler so the estimate can be checked.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tritondsl.backend.deploy import deploy
from tritondsl.backend.layers import QuantModule
from tritondsl.compiler.check import ModelInfo, check_file
from tritondsl.compiler.layers import LAYERS
from tritondsl.compiler.values import Dim, Module, Tensor, TensorDecl
from tritondsl.models import resolve
from tritondsl.program import compile as compile_program

BYTES_FP32 = 4


@dataclass
class LayerRow:
    """One row of the table: a layer of the model."""

    name: str
    kind: str
    precision: str
    params: int
    packed_bytes: int
    fp32_bytes: int
    shape: str
    activation_bytes: int | None = None
    activation: str = "-"  # the input's precision (a8(...), a32) for quantizable layers
    activation_bits: int | None = None  # 8 or 32; None for layers without weights

    @property
    def bits_per_weight(self) -> float | None:
        """Stored bits per parameter once deployed (None for layers without parameters)."""
        return 8 * self.packed_bytes / self.params if self.params else None


@dataclass
class Summary:
    """The whole table plus totals."""

    model: str
    rows: list[LayerRow]
    packed_bytes: int  # the deployed state_dict, every tensor
    fp32_bytes: int  # the same model with every tensor in fp32
    params: int
    batch: int | None = None
    peak_inference: int | None = None
    peak_training: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def compression(self) -> float:
        """fp32 bytes / deployed bytes (1 for a model without any tensors)."""
        return self.fp32_bytes / self.packed_bytes if self.packed_bytes else 1.0


def summarize(
    path: str | Path, model: str | None = None, batch: int | None = None, size: int = 224
) -> Summary:
    """Build the model of ``path`` (a .tdsl file or zoo name) with its defaults; tabulate it."""
    path = resolve(path)
    info = _checked_model(path, model, size)
    program = compile_program(Path(path))
    built = program.build(info.name)
    deployed = deploy(copy.deepcopy(built))
    torch_modules = dict(built.named_modules())
    deployed_modules = dict(deployed.named_modules())
    rows = []
    for module in info.modules():
        rows += _param_rows(module, torch_modules, deployed_modules)
        spec = LAYERS.get(module.kind)
        if spec is None or module.sequential:
            continue
        live = torch_modules[module.path]
        params = sum(p.numel() for p in live.parameters(recurse=False))
        packed = _storage_bytes(deployed_modules[module.path])
        rows.append(
            LayerRow(
                module.path,
                module.kind,
                module.precision.describe() if module.precision else "-",
                params,
                packed,
                params * BYTES_FP32,
                _shape_text(module, batch),
                _bytes(module.out_shapes[0], batch) if batch and module.out_shapes else None,
                module.activation.describe() if module.activation else "-",
                module.activation.bits if module.activation else None,
            )
        )
    packed_total = sum(t.numel() * t.element_size() for t in deployed.state_dict().values())
    fp32_total = sum(t.numel() * BYTES_FP32 for t in built.state_dict().values())
    result = Summary(
        info.name, rows, packed_total, fp32_total, sum(p.numel() for p in built.parameters()), batch
    )
    if batch is not None:
        param_bytes = sum(p.numel() * p.element_size() for p in built.parameters())
        quantized = [m for m in built.modules() if isinstance(m, QuantModule)]
        largest = max(quantized, key=lambda m: m.weight.numel(), default=None)
        unpack, quantize = _overheads(largest) if largest is not None else (0.0, 0.0)
        weight_bytes = largest.weight.numel() * BYTES_FP32 if largest is not None else 0
        resident = packed_total + _cache_bytes(deployed)
        result.peak_inference, result.peak_training = _peaks(
            info, batch, resident, param_bytes, weight_bytes, unpack, quantize
        )
    return result


def _param_rows(
    module: Module, torch_modules: dict[str, nn.Module], deployed_modules: dict[str, nn.Module]
) -> list[LayerRow]:
    """Rows for the ``param W: TernaryTensor`` weights of a layer-form definition."""
    rows = []
    for child in module.children.values():
        if isinstance(child, TensorDecl) and child.learnable:
            params = sum(p.numel() for p in torch_modules[child.path].parameters())
            packed = _storage_bytes(deployed_modules[child.path])
            precision = child.precision.describe() if child.precision else "-"
            rows.append(LayerRow(child.path, "TernaryTensor", precision, params, packed,
                                 params * BYTES_FP32, "-"))  # fmt: skip
    return rows


def _checked_model(path: str | Path, model: str | None, size: int) -> ModelInfo:
    first = check_file(path)
    names = list(first.models)
    if model is None:
        if len(names) != 1:
            raise ValueError(f"{path} has models {names}; choose one with --model")
        model = names[0]
    if model not in first.models:
        raise ValueError(f"{path} has no model {model!r} (models: {names})")
    symbols = {
        d for t in first.models[model].inputs.values() for d in t.shape[1:] if isinstance(d, str)
    }
    return check_file(path, sizes=dict.fromkeys(symbols, size)).models[model]


def _storage_bytes(module: nn.Module) -> int:
    """Bytes of the tensors a layer owns once deployed (packed codes, scales, bias...)."""
    if isinstance(module, QuantModule):
        tensors = list(module.storage_tensors().values())
        if module.bias is not None:
            tensors.append(module.bias)
    else:
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        tensors = [t for t in tensors if t.dtype.is_floating_point]
    return sum(t.numel() * t.element_size() for t in tensors)


def _numel(shape: tuple[Dim, ...], batch: int) -> int:
    dims = [batch if d == "N" else d for d in shape]
    if not all(isinstance(d, int) for d in dims):
        raise ValueError(f"shape {list(shape)} is not concrete; pass --size")
    return math.prod(dims)  # type: ignore[arg-type]


def _bytes(shape: Tensor, batch: int) -> int:
    return _numel(shape.shape, batch) * BYTES_FP32


def _shape_text(module: Module, batch: int | None) -> str:
    if not module.out_shapes:
        return "-"
    dims = [batch if (d == "N" and batch) else d for d in module.out_shapes[0].shape]
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _peaks(
    info: ModelInfo,
    batch: int,
    deployed_bytes: int,
    fp32_param_bytes: int,
    largest_weight: int,
    unpack_overhead: float,
    quantize_overhead: float,
) -> tuple[int, int]:
    """Estimated peak bytes for deployed inference and for one training step.

    Inference (deployed model): the packed model and its weight caches, plus the tensors
    alive at the worst layer call or tensor operation (each forward frame's variables, e.g.
    a residual branch's input, plus the operation's inputs and output, as recorded by the
    front end), plus the temporaries of unpacking the largest weight on the fly.
    Training: fp32 weights and their gradients, every layer's output kept for the
    backward pass, the gradient of the largest activation, and the temporaries of
    fake-quantizing the largest weight. Both temporaries are measured once on a small
    weight (``_overheads``), as a multiple of the weight's fp32 size.
    """
    live = max(
        (sum(_bytes(t, batch) for t in call) for m in info.modules() for call in m.live_at_calls),
        default=0,
    )
    outputs = [
        _bytes(t, batch)
        for m in info.modules()
        if LAYERS.get(m.kind) is not None and not m.sequential
        for t in m.out_shapes
    ]
    inputs = sum(_bytes(t, batch) for t in info.inputs.values())
    inference = deployed_bytes + live + int(unpack_overhead * largest_weight)
    training = (
        2 * fp32_param_bytes
        + inputs
        + sum(outputs)
        + max(outputs, default=0)
        + int(quantize_overhead * largest_weight)
    )
    return inference, training


def _cache_bytes(deployed: nn.Module) -> int:
    """Bytes of every layer's weight cache once filled (what the first forward keeps)."""
    layers = [m for m in deployed.modules() if isinstance(m, QuantModule)]
    with torch.no_grad():
        for layer in layers:
            layer.quantized_weight()
    return sum(layer.weight_cache_bytes() for layer in layers)


def _overheads(layer: QuantModule) -> tuple[float, float]:
    """Temporaries of unpacking (deployed, first call, without the cache it keeps) and of
    fake-quantizing (training) a weight, as a multiple of its fp32 bytes, measured on a
    256x256 layer with the same quantizer."""
    from tritondsl.backend.layers import QuantLinear

    probe = QuantLinear(256, 256, bias=False, quantizer=layer.quantizer)
    weight_bytes = probe.weight.numel() * BYTES_FP32
    with torch.no_grad():
        training = _allocated_peak(lambda: probe.quantized_weight())
        probe.deploy_()
        deployed = _allocated_peak(lambda: probe(torch.zeros(1, 256)))
    return (deployed - probe.weight_cache_bytes()) / weight_bytes, training / weight_bytes


def _allocated_peak(run: object) -> int:
    """High-water mark of bytes allocated while ``run()`` executes (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()  # type: ignore[operator]
    # Every allocation and free is attributed to the op that made it (or to a "[memory]"
    # event outside ops); replaying them in time order gives the allocator's high-water mark.
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's C++ start/stop lines, which go straight to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measure_peak(model: nn.Module, example: torch.Tensor, train: bool) -> int:
    """Peak bytes during a forward (and backward): the model's tensors, the input, and the
    most the allocator held on top of them, read from the profiler's memory events."""
    model.train(train)

    def run() -> None:
        if train:
            model(example).float().pow(2).mean().backward()
        else:
            with torch.no_grad():
                model(example)

    resident = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return resident + example.numel() * example.element_size() + _allocated_peak(run)


def _activation_cell(row: LayerRow) -> str:
    """``8 (a8(method=lsq))`` for a quantized input, ``32`` for a float one."""
    if row.activation_bits is None:
        return "-"
    return f"8 ({row.activation})" if row.activation_bits == 8 else "32"


def render_summary(summary: Summary) -> str:
    """The table as text."""
    headers = [
        "layer", "kind", "precision", "params", "bits/w", "act bits", "packed B", "fp32 B",
        "output",
    ]  # fmt: skip
    if summary.batch:
        headers.append("activ. B")
    lines = []
    for r in summary.rows:
        bits = f"{r.bits_per_weight:.2f}" if r.bits_per_weight is not None else "-"
        cells = [
            r.name,
            r.kind,
            r.precision,
            f"{r.params:,}",
            bits,
            _activation_cell(r),
            f"{r.packed_bytes:,}",
            f"{r.fp32_bytes:,}",
            r.shape,
        ]
        if summary.batch:
            cells.append(f"{r.activation_bytes:,}" if r.activation_bytes is not None else "-")
        lines.append(cells)
    widths = [max([len(h), *(len(c[i]) for c in lines)]) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip(), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*cells).rstrip() for cells in lines]
    out.append("")
    sizes = (
        f"deployed {summary.packed_bytes:,} B vs fp32 {summary.fp32_bytes:,} B "
        f"({summary.compression:.1f}x smaller)"
        if summary.fp32_bytes
        else "no weights or buffers"
    )
    out.append(f"{summary.model}: {summary.params:,} parameters; {sizes}")
    if summary.batch:
        out.append(
            f"batch {summary.batch}: estimated peak {summary.peak_inference / 2**20:.1f} MiB "
            f"for inference, {summary.peak_training / 2**20:.1f} MiB for a training step"
        )
    return "\n".join(out)
