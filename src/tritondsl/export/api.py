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

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

from tritondsl.export.onnx import export_onnx
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
    checks: list[OutputCheck] = field(default_factory=list)  # empty when not verified
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
) -> ExportReport:
    """Deploy a copy of ``model``, write it as ONNX (int2 / packed / float) and verify it."""
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
