"""TorchScript and torch.export (.pt2) files of a deployed model, reloaded and checked.

Both exporters work on a deployed copy (``deployed_copy``), so the files keep the 2-bit
``weight_packed`` buffers and unpack them in the graph, as the deployed layers do on CPU.

TorchScript: ``QuantConv2d`` / ``QuantConvTranspose2d`` / ``QuantLinear`` cannot be scripted
(their quantizer is a Python dataclass and their forward dispatches to Triton), so
``to_torchscript`` swaps each deployed layer for its ``Scriptable...`` twin: the same buffers
under the
same names, the same arithmetic, written in TorchScript's subset. When scripting still fails
(something in the model's own code), it falls back to ``torch.jit.trace`` of the deployed
model and says why. Tracing is sound for generated models: their Python-level branches
depend on constructor arguments only, never on tensor values.

torch.export: the deployed model exports as is, with a dynamic batch dimension and the
input sizes the .tdsl file leaves symbolic (H, W) dynamic too (``Dim.AUTO``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritondsl.backend.deploy import deploy
from tritondsl.backend.layers import (
    LEARNED_SCALE_NAMES,
    QuantConv2d,
    QuantConvTranspose2d,
    QuantLinear,
    QuantModule,
)
from tritondsl.backend.quantizers import quantizer_kind
from tritondsl.compiler.check import ModelInfo, check_source
from tritondsl.export.onnx_verify import OutputCheck, compare_outputs
from tritondsl.files import open_atomically

# Kinds of weight storage a scriptable layer decodes (TorchScript constants, not strings).
TERNARY, LEARNED, INT8, FP16 = 0, 1, 2, 3
_STORAGE_NAMES = (
    "weight_packed",
    "weight_scale",
    *LEARNED_SCALE_NAMES,
    "weight_int8",
    "weight_fp16",
)


@dataclass
class TorchExport:
    """What a TorchScript / pt2 export wrote and how its reloaded file compared."""

    path: Path
    method: str  # "script", "trace" or "torch.export"
    checks: list[OutputCheck]
    fallback_reason: str | None = None  # why scripting failed, when method is "trace"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every reloaded output matched the deployed model."""
        return all(check.ok for check in self.checks)


def deployed_copy(model: nn.Module) -> nn.Module:
    """A deployed, eval-mode CPU copy of ``model`` (the original is left untouched)."""
    # CPU: deployed layers on CUDA would call Triton kernels, which no exporter can follow.
    return deploy(copy.deepcopy(model).cpu()).eval()


Inputs = Tensor | tuple[Tensor, ...]  # one input, or one per forward parameter


def as_inputs(example_input: Inputs) -> tuple[Tensor, ...]:
    """The example as a tuple of CPU tensors, one per forward parameter."""
    items = (example_input,) if isinstance(example_input, Tensor) else tuple(example_input)
    return tuple(t.detach().cpu() for t in items)


def run_outputs(model: nn.Module | Any, example_input: Inputs) -> list[Tensor]:
    """The model's output(s) on ``example_input`` as a flat list of tensors."""
    with torch.no_grad():
        out = model(*as_inputs(example_input))
    return [out] if isinstance(out, Tensor) else list(out)


def spec_info(model: nn.Module) -> ModelInfo | None:
    """The front end's view of a built model (None for a model not built from .tdsl)."""
    spec = getattr(model, "tdsl_spec", None)
    if spec is None:
        return None
    return check_source(spec.source, spec.path, {spec.model: dict(spec.params)}).models[spec.model]


def input_axes(info: ModelInfo | None, index: int = 0) -> dict[int, str]:
    """Dynamic axes of input ``index``: the batch, and every size its .tdsl declaration
    leaves symbolic."""
    axes = {0: "batch"}
    inputs = list(info.inputs.values()) if info is not None else []
    if index < len(inputs):
        shape = inputs[index].shape
        axes.update({i: d for i, d in enumerate(shape) if i and isinstance(d, str)})
    return axes


def unpack_trits(packed: Tensor, k: int) -> Tensor:
    """float32 trits [N, K] from the 2-bit layout (docs/packing.md), in TorchScript's subset."""
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    codes = torch.bitwise_and(torch.bitwise_right_shift(packed.unsqueeze(-1), shifts), 3)
    return codes.reshape(packed.shape[0], -1)[:, :k].to(torch.float32) - 1.0


def dequantize_stored(
    kind: int,
    packed: Tensor,
    scale: Tensor,
    scale_pos: Tensor,
    scale_neg: Tensor,
    int8: Tensor,
    fp16: Tensor,
    k: int,
    shape: list[int],
) -> Tensor:
    """Float weight from deployed buffers, as ``Decomposition.dequantize`` computes it."""
    # Literal kinds: TorchScript cannot read module-level constants (TERNARY = 0, ...).
    if kind == 3:
        return fp16.to(torch.float32)
    if kind == 2:
        codes = int8.reshape(shape[0], -1).to(torch.float32)
        return (codes * scale.reshape(-1, 1)).reshape(shape)
    trits = unpack_trits(packed, k)
    if kind == 1:
        # Positive trits take the positive scale, negative ones the negative scale.
        return (trits.clamp(min=0.0) * scale_pos + trits.clamp(max=0.0) * scale_neg).reshape(shape)
    return (trits * scale.reshape(-1, 1)).reshape(shape)


class _ScriptableWeight(nn.Module):
    """Holds a deployed layer's buffers under their own names; decodes them in TorchScript."""

    __constants__: ClassVar[list[str]] = ["kind", "k"]

    def _take_storage(self, layer: QuantModule) -> None:
        kind = quantizer_kind(layer.quantizer)
        stored = layer.storage_tensors()
        if kind == "ternary":
            self.kind = LEARNED if "weight_scale_pos" in stored else TERNARY
        else:
            self.kind = INT8 if kind == "int8" else FP16
        self.k = layer.reduction_size
        self.shape = list(layer.weight_shape)
        for name in _STORAGE_NAMES:
            if name in stored:
                self.register_buffer(name, stored[name].detach().clone())
            else:
                # Every name must exist for TorchScript to compile all branches; the empty
                # placeholders stay out of the state_dict, which matches the deployed layer's.
                self.register_buffer(name, torch.empty(0), persistent=False)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.input_quant = layer.input_quant  # scriptable in eval mode; None for float input

    def _weight(self) -> Tensor:
        return dequantize_stored(
            self.kind,
            self.weight_packed,
            self.weight_scale,
            self.weight_scale_pos,
            self.weight_scale_neg,
            self.weight_int8,
            self.weight_fp16,
            self.k,
            self.shape,
        )


class NoScriptableTwin(Exception):
    """A deployed layer has no scriptable twin; the exporter traces the model instead."""


class ScriptableConv2d(_ScriptableWeight):
    """TorchScript-compatible twin of a deployed ``QuantConv2d`` (numeric zero padding)."""

    def __init__(self, layer: QuantConv2d) -> None:
        super().__init__()
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise NoScriptableTwin(
                f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}"
            )
        self._take_storage(layer)
        self.stride, self.padding = list(layer.stride), list(layer.padding)
        self.dilation, self.groups = list(layer.dilation), layer.groups

    def forward(self, x: Tensor) -> Tensor:
        """2-D convolution of the (quantized) input with the decoded weight."""
        if self.input_quant is not None:
            x = self.input_quant(x)
        weight = self._weight()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScriptableConvTranspose2d(_ScriptableWeight):
    """TorchScript-compatible twin of a deployed ``QuantConvTranspose2d``."""

    def __init__(self, layer: QuantConvTranspose2d) -> None:
        super().__init__()
        self._take_storage(layer)
        self.stride, self.padding = list(layer.stride), list(layer.padding)
        self.output_padding, self.dilation = list(layer.output_padding), list(layer.dilation)
        self.groups = layer.groups

    def forward(self, x: Tensor) -> Tensor:
        """Transposed 2-D convolution of the (quantized) input with the decoded weight."""
        if self.input_quant is not None:
            x = self.input_quant(x)
        return F.conv_transpose2d(
            x, self._weight(), self.bias, self.stride, self.padding, self.output_padding,
            self.groups, self.dilation,
        )  # fmt: skip


class ScriptableLinear(_ScriptableWeight):
    """TorchScript-compatible twin of a deployed ``QuantLinear``."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        self._take_storage(layer)

    def forward(self, x: Tensor) -> Tensor:
        """y = q(x) Wᵀ + b with the decoded weight (q: the input quantizer, if any)."""
        if self.input_quant is not None:
            x = self.input_quant(x)
        return F.linear(x, self._weight(), self.bias)


def replace_modules(model: nn.Module, make: Any) -> nn.Module:
    """Replace every deployed QuantModule ``m`` of ``model`` in place by ``make(m)``."""
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantModule):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, make(module))
    return model


def _scriptable_twin(layer: QuantModule) -> nn.Module:
    if isinstance(layer, QuantConv2d):
        return ScriptableConv2d(layer)
    if isinstance(layer, QuantConvTranspose2d):
        return ScriptableConvTranspose2d(layer)
    if isinstance(layer, QuantLinear):
        return ScriptableLinear(layer)
    raise NoScriptableTwin(f"no TorchScript twin for {type(layer).__name__}")


def _first_line(error: BaseException) -> str:
    """The gist of a TorchScript error: its first line and where in the source it points."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    gist = lines[0].rstrip(" :") if lines else type(error).__name__
    where = next((line for line in lines if line.startswith("File ")), None)
    return f"{gist} ({where})" if where else gist


def _other_batch(example_input: Tensor) -> Tensor:
    """An input with a different batch size, to prove the file is not tied to the example's."""
    generator = torch.Generator().manual_seed(1)
    shape = (example_input.shape[0] + 1, *example_input.shape[1:])
    return torch.randn(shape, generator=generator, dtype=example_input.dtype)


def _fixed_batch(deployed: nn.Module, x: Tensor) -> bool:
    """Whether the model refuses a batch other than the example's (a declared fixed batch)."""
    try:
        run_outputs(deployed, x)
    except (ValueError, RuntimeError):
        return True
    return False


def _check_reloaded(
    loaded: Any, deployed: nn.Module, example_input: Tensor, atol: float, rtol: float
) -> tuple[list[OutputCheck], list[str]]:
    """Compare reloaded and deployed outputs on the example and on another batch size."""
    inputs = {"example input": example_input}
    other, notes = _other_batch(example_input), []
    if _fixed_batch(deployed, other):
        notes.append(f"note: the model takes batch {example_input.shape[0]} only; not dynamic")
    else:
        inputs["other batch"] = other
    checks = [
        compare_outputs(
            f"reloaded, {label} {list(x.shape)}",
            run_outputs(loaded, x),
            run_outputs(deployed, x),
            atol,
            rtol,
        )
        for label, x in inputs.items()
    ]
    return checks, notes


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    example_input: Tensor,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> TorchExport:
    """Script (else trace) a deployed copy of ``model``, save it, reload it and compare."""
    path = Path(path)
    deployed = deployed_copy(model)
    example_input = example_input.detach().cpu()
    reason = None
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream (its warning stays visible); only the tracer
        # warnings below are expected and silenced.
        try:
            twin = replace_modules(copy.deepcopy(deployed), _scriptable_twin)
            module: Any = torch.jit.script(twin)
            method = "script"
        except Exception as error:  # TorchScript reports unsupported Python with many types
            reason = _first_line(error)
            # The input check's shape comparisons become constants of the trace, as intended.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            module = torch.jit.trace(deployed, example_input, check_trace=False)
            method = "trace"
        with open_atomically(path) as file:
            torch.jit.save(module, file)
        loaded = torch.jit.load(str(path))
    checks, notes = _check_reloaded(loaded, deployed, example_input, atol, rtol)
    return TorchExport(path, method, checks, reason, notes)


def export_pt2(
    model: nn.Module,
    path: str | Path,
    example_input: Tensor,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> TorchExport:
    """``torch.export`` a deployed copy with a dynamic batch, save, reload and compare."""
    path = Path(path)
    deployed = deployed_copy(model)
    example_input = example_input.detach().cpu()
    traced_input = example_input
    if example_input.shape[0] == 1:
        # torch.export specialises a dimension of size 1; trace with two samples instead.
        traced_input = example_input.expand(2, *example_input.shape[1:]).contiguous()
    # Sizes the .tdsl input leaves symbolic (H, W) stay dynamic, as far as the model allows.
    dynamic: dict[int, Any] = {
        i: torch.export.Dim.AUTO for i in input_axes(spec_info(deployed)) if i
    }
    if _fixed_batch(deployed, traced_input) or _fixed_batch(deployed, _other_batch(traced_input)):
        # The model's declared input fixes the batch: export exactly that batch.
        traced_input = example_input
    else:
        dynamic[0] = torch.export.Dim("batch", min=1)
    shapes = ({**dynamic},) if dynamic else None
    program = torch.export.export(deployed, (traced_input,), dynamic_shapes=shapes)
    with open_atomically(path) as file:
        torch.export.save(program, file)
    loaded = torch.export.load(str(path)).module()
    checks, notes = _check_reloaded(loaded, deployed, example_input, atol, rtol)
    return TorchExport(path, "torch.export", checks, notes=notes)
