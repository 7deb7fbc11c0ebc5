"""Exporters: ONNX (INT2, packed or float ternary weights), TorchScript and torch.export.

    import tritondsl.export as tx

    report = tx.to_onnx(model, "resnet18.onnx", torch.randn(1, 3, 224, 224))
    print("\\n".join(report.lines()))   # sizes, bits per ternary weight, errors
    assert report.ok

Every exporter works on a deployed CPU copy of the model (the caller's model is left as it
is) and checks the file it wrote against that deployed copy: ONNX files in onnxruntime
with graph optimizations off, all on, and, when the file has DequantizeLinear nodes, with
``session.disable_quant_qdq=1``; TorchScript and .pt2 files by reloading them. All files
have a dynamic batch dimension. Details of each form: ``onnx.py`` and ``torch_export.py``.

The ``tritondsl export`` formats (ONNX, TorchScript, pt2, Hub folders, release bundles)
are listed in ``formats.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tritondsl.export.int8_verify import (
    MIN_AGREEMENT,
    AgreementCheck,
    example_batches,
    verify_int8,
)
from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_int8 import ACTIVATION_FORMS, IR_VERSION, OPSET, export_int8
from tritondsl.export.onnx_verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    OutputCheck,
    WeightStats,
    verify_onnx,
    weight_stats,
)
from tritondsl.export.torch_export import export_pt2, export_torchscript

__all__ = ["ExportReport", "to_onnx", "to_pt2", "to_torchscript"]


@dataclass
class ExportReport:
    """What an exporter wrote and how the written file compared with the deployed model."""

    format: str  # "onnx", "torchscript", "pt2"
    path: Path
    file_bytes: int
    checks: list[OutputCheck | AgreementCheck] = field(default_factory=list)  # [] = not verified
    weights: str | None = None  # ONNX weight form
    opset: int | None = None
    ir_version: int | None = None
    stats: WeightStats | None = None  # ONNX: ternary code / scale bytes from the file
    method: str | None = None  # TorchScript: "script" or "trace"
    fallback_reason: str | None = None  # why scripting failed, when traced
    layers: dict[str, str] = field(default_factory=dict)  # layer -> how its weight is stored
    notes: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        """Whether the file was checked at all."""
        return bool(self.checks)

    @property
    def ok(self) -> bool:
        """No check failed (True when verification was skipped)."""
        return all(check.ok for check in self.checks)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line (what the CLI prints)."""
        what = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": "torch.export"}
        detail = [what.get(self.format, self.format)]
        if self.opset is not None:
            detail.append(f"opset {self.opset}, IR {self.ir_version}")
        if self.weights:
            detail.append(f"{self.weights} weights")
        if self.method:
            detail.append(f"torch.jit.{self.method}")
        lines = [f"wrote {self.path}: {_mb(self.file_bytes)} ({', '.join(detail)})"]
        if self.fallback_reason:
            lines.append(f"torch.jit.script failed, traced instead: {self.fallback_reason}")
        if self.stats is not None and self.stats.ternary_weights:
            s = self.stats
            lines.append(
                f"ternary codes: {s.ternary_weights:,} weights in {s.code_bytes:,} bytes = "
                f"{s.code_bits_per_weight:.3f} bits/weight (read from the file's initializers); "
                f"their scales take {s.scale_bytes:,} bytes more, not counted in bits/weight"
            )
        lines.extend(self.notes)
        lines.extend(check.line() for check in self.checks)
        if not self.checks:
            lines.append("not verified (--no-verify)")
        return lines


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def to_onnx(
    model: nn.Module,
    path: str | Path,
    example_input: Tensor | tuple[Tensor, ...],
    weights: str = "int2",
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    *,
    activations: str = "float",
    calibration: Sequence[Tensor] | None = None,
    verify_data: Iterable[Any] | None = None,
    keep_fp32: bool = False,
    float_layers: Sequence[str] = (),
    linear: str = "int8",
    min_agreement: float | None = MIN_AGREEMENT,
) -> ExportReport:
    """Deploy a copy of ``model``, write it as ONNX and verify it.

    ``activations="float"``: ternary weights as int2 / packed / float, float kernels.
    ``activations="int8"``: W1.58A8 for onnxruntime's int8 kernels (``onnx_int8.py``), trits
    2-bit on disk; ``calibration`` batches set the activation scales the model lacks,
    ``verify_data`` ((input, label) batches; default: the calibration batches) is what the
    file is compared with the PyTorch W1.58A8 model on; ``keep_fp32`` keeps full-precision
    layers float, ``float_layers`` names layers to keep float, ``linear="nbits"`` writes
    ternary Linear layers as 2-bit MatMulNBits where the lookup-table kernel fits.
    Verification on data fails below ``min_agreement`` top-1 agreement (None: report only,
    e.g. for an untrained model, whose nearly tied logits make agreement meaningless).
    """
    if activations not in ACTIVATION_FORMS:
        raise ValueError(
            f"activations must be one of {', '.join(ACTIVATION_FORMS)}, got {activations!r}"
        )
    if activations == "int8":
        if weights != "int2":
            raise ValueError("activations='int8' stores ternary weights as int2; drop weights=")
        return _to_onnx_int8(
            model, path, example_input, verify, calibration, verify_data,
            Int8Options(keep_fp32, tuple(float_layers), linear, min_agreement),
        )  # fmt: skip
    result = export_onnx(model, path, example_input, weights)
    report = ExportReport(
        "onnx",
        result.path,
        result.path.stat().st_size,
        weights=weights,
        opset=result.opset,
        ir_version=result.ir_version,
        stats=weight_stats(result.path),
        layers=result.layers,
        notes=list(result.notes),
    )
    kinds = sorted(set(result.layers.values()))
    if kinds:
        report.notes.append(f"quantized layers stored as: {'; '.join(kinds)}")
    else:
        report.notes.append("note: no QuantConv2d/QuantLinear layers, every weight is float")
    if verify:
        verdict = verify_onnx(result.path, result.inputs, result.expected, atol, rtol)
        report.checks = verdict.checks
    return report


@dataclass(frozen=True)
class Int8Options:
    """The choices of an ``activations="int8"`` export besides its data."""

    keep_fp32: bool = False
    float_layers: tuple[str, ...] = ()
    linear: str = "int8"
    min_agreement: float | None = MIN_AGREEMENT


def _to_onnx_int8(
    model: nn.Module,
    path: str | Path,
    example_input: Tensor,
    verify: bool,
    calibration: Sequence[Tensor] | None,
    verify_data: Iterable[Any] | None,
    options: Int8Options,
) -> ExportReport:
    result = export_int8(
        model, path, example_input, calibration, keep_fp32=options.keep_fp32,
        float_layers=options.float_layers, linear=options.linear,
    )  # fmt: skip
    report = ExportReport(
        "onnx", result.path, result.path.stat().st_size, weights="int2", opset=OPSET,
        ir_version=IR_VERSION, stats=weight_stats(result.path), layers=result.layers,
    )  # fmt: skip
    kernels = sorted({how.rpartition("; ")[2] for how in result.layers.values()})
    report.notes.append(
        f"activations int8 (W1.58A8): {len(result.layers) - len(result.float_layers)} layers on "
        f"onnxruntime integer kernels ({', '.join(kernels)}); run it with "
        "tritondsl.onnx_session(path) or plain onnxruntime"
    )
    if calibration is not None:
        report.notes.append(f"calibration: {result.calibration_batches} batches")
    report.notes.extend(result.notes)
    report.notes.extend(f"kept float: {name} ({why})" for name, why in result.float_layers.items())
    if verify:
        data = verify_data if verify_data is not None else calibration
        batches = data if data is not None else example_batches(result.example_input)
        report.checks = [
            verify_int8(result.path, result.reference, batches, judged=data is not None)
        ]
    return report


def to_torchscript(model: nn.Module, path: str | Path, example_input: Tensor) -> ExportReport:
    """``torch.jit.script`` (else ``trace``) a deployed copy; reload it and compare outputs."""
    result = export_torchscript(model, path, example_input)
    return ExportReport(
        "torchscript",
        result.path,
        result.path.stat().st_size,
        result.checks,
        method=result.method,
        fallback_reason=result.fallback_reason,
        notes=result.notes,
    )


def to_pt2(model: nn.Module, path: str | Path, example_input: Tensor) -> ExportReport:
    """``torch.export`` a deployed copy (dynamic batch) to .pt2; reload it and compare."""
    result = export_pt2(model, path, example_input)
    return ExportReport(
        "pt2", result.path, result.path.stat().st_size, result.checks, notes=result.notes
    )
