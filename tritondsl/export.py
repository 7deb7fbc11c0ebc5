"""Exporters: ONNX (INT2, packed or float ternary weights), TorchScript and torch.export.

    import tritondsl.export as tx

    report = tx.to_onnx(model, "resnet18.onnx", torch.randn(1, 3, 224, 224))
    print("\\n".join(report.lines()))   # sizes, bits per ternary weight, errors
    assert report.ok

Every exporter works on a deployed CPU copy of the model (the caller's model is left as it
is) and checks the file it wrote against that deployed copy: ONNX files in onnxruntime
with graph optimizations off, all on, and, when the file has DequantizeLinear nodes, with
``session.disable_quant_qdq=1``; TorchScript and .pt2 files by reloading them. All files
have a dynamic batch dimension. Details of each form: ``backend/onnx_export.py`` and
``backend/torch_export.py``.

``EXPORTERS`` maps a ``tritondsl export --format`` name to an ``ExportFormat``; the CLI
builds the model once (``prepare``) and dispatches through it, so a new format is one
entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tritondsl.backend.onnx_export import WEIGHT_FORMS, export_onnx
from tritondsl.backend.onnx_verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    OutputCheck,
    WeightStats,
    verify_onnx,
    weight_stats,
)
from tritondsl.backend.torch_export import export_pt2, export_torchscript

__all__ = [
    "EXPORTERS",
    "ExportFormat",
    "ExportJob",
    "ExportReport",
    "prepare",
    "to_onnx",
    "to_pt2",
    "to_torchscript",
]


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
    example_input: Tensor,
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
    )
    kinds = sorted(set(result.layers.values()))
    if kinds:
        report.notes.append(f"quantized layers stored as: {'; '.join(kinds)}")
    else:
        report.notes.append("note: no QuantConv2d/QuantLinear layers, every weight is float")
    if verify:
        verdict = verify_onnx(result.path, result.example_input, result.expected, atol, rtol)
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


# --------------------------------------------------------------------------- CLI registry


@dataclass(frozen=True)
class ExportJob:
    """Everything a format's exporter gets from ``tritondsl export``."""

    model: nn.Module
    example_input: Tensor
    output: Path
    weights: str | None = None  # one of the format's ``weights`` (None: its default)
    verify: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # format-specific extras


@dataclass(frozen=True)
class ExportFormat:
    """One ``--format``: how to run it and which ``--weights`` values it accepts."""

    run: Callable[[ExportJob], ExportReport]
    weights: tuple[str, ...] = ()  # accepted --weights values, the default first; () = none
    help: str = ""


def _onnx_job(job: ExportJob) -> ExportReport:
    return to_onnx(job.model, job.output, job.example_input, job.weights or "int2", job.verify)


def _torchscript_job(job: ExportJob) -> ExportReport:
    # Reloading and comparing is the export itself here (cheap), so --no-verify keeps it.
    return to_torchscript(job.model, job.output, job.example_input)


def _pt2_job(job: ExportJob) -> ExportReport:
    return to_pt2(job.model, job.output, job.example_input)


EXPORTERS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(
        _onnx_job,
        WEIGHT_FORMS,
        "ONNX; --weights int2 (opset 25), packed (opset 18 uint8 + unpack nodes) or float",
    ),
    "torchscript": ExportFormat(_torchscript_job, (), "TorchScript (.pt), scripted or traced"),
    "pt2": ExportFormat(_pt2_job, (), "torch.export program (.pt2)"),
    "hub": ExportFormat(
        lambda job: _release_module().export_hub(job),
        ("2bit", "base3"),
        "Hugging Face folder (save_pretrained; -o is a folder); --weights 2bit or base3",
    ),
    "release": ExportFormat(
        lambda job: _release_module().export_release(job),
        ("2bit", "base3"),
        "release bundle: Hub folder + int2 ONNX + manifest.json (-o is a new folder)",
    ),
}


def _release_module() -> Any:
    # Lazy: the Hub writer needs safetensors, and release imports this module back.
    from tritondsl.backend import release

    return release


def prepare(
    file: str | Path,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    batch: int = 1,
    size: int = 224,
) -> tuple[nn.Module, Tensor, list[str]]:
    """Model to export (weights from a Hub folder if given), a seeded example input, notes."""
    from tritondsl.compiler.check import check_file
    from tritondsl.program import ZOO, zoo_path
    from tritondsl.program import compile as compile_program

    if str(file).lower() in ZOO and not Path(file).exists():
        file = zoo_path(str(file).lower())
    checked = check_file(file)
    names = list(checked.models)
    name = model if model is not None else (names[0] if len(names) == 1 else None)
    if name is None or name not in names:
        raise ValueError(f"{file} has models {names}; choose one with --model")
    inputs = list(checked.models[name].inputs.values())
    if len(inputs) != 1:
        raise ValueError(f"model {name} has {len(inputs)} inputs; export takes exactly one")
    declared = inputs[0].shape
    shape = [batch if isinstance(declared[0], str) else declared[0]]
    shape += [size if isinstance(d, str) else d for d in declared[1:]]
    notes = []
    if checkpoint is None:
        built = compile_program(Path(file)).build(name)
        notes.append("note: no --checkpoint given, so the weights are the model's random init")
    else:
        built = _load_checkpoint(Path(checkpoint), name)
        notes.append(f"weights from {checkpoint}")
        spec = getattr(built, "tdsl_spec", None)
        if spec is not None and spec.source != checked.source:
            notes.append(f"note: {checkpoint} holds a different .tdsl text; its copy is exported")
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(shape, generator=generator)
    return built, example, notes


def _load_checkpoint(folder: Path, name: str) -> nn.Module:
    """``tritondsl.backend.hub.from_pretrained(folder)``, checked against the .tdsl file."""
    if not folder.is_dir():
        # A missing folder would otherwise be taken for a Hub repo id and fetched.
        raise ValueError(f"--checkpoint {folder}: no such folder")
    from tritondsl.backend import hub  # lazy: only this option needs it

    loaded = hub.from_pretrained(folder)
    spec = getattr(loaded, "tdsl_spec", None)
    found = spec.model if spec is not None else type(loaded).__name__
    if found != name:
        raise ValueError(f"--checkpoint {folder} holds model {found}, not {name}")
    return loaded
