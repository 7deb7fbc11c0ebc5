"""What ``tritondsl export --format`` can write: one ``ExportFormat`` per format.

``EXPORTERS`` maps a format name to how it runs and which ``--weights`` it accepts; the
CLI builds the model once (``prepare``) and dispatches through it, so a new format is one
entry here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tritondsl.backend.deploy import deploy
from tritondsl.compiler.check import check_file
from tritondsl.export.api import ExportReport, to_onnx, to_pt2, to_torchscript
from tritondsl.export.artifact import CONFIG_NAME, DTYPES, WEIGHTS_NAME
from tritondsl.export.hub import from_pretrained, save_pretrained
from tritondsl.export.onnx import WEIGHT_FORMS
from tritondsl.export.onnx_verify import OutputCheck
from tritondsl.export.release import MANIFEST_NAME, build_release, hub_parity
from tritondsl.files import replace_dir
from tritondsl.models import resolve
from tritondsl.program import compile as compile_program

TOKEN_LENGTH = 16  # the example's length for a model of token ids [N, T]


@dataclass(frozen=True)
class ExportJob:
    """Everything a format's exporter gets from ``tritondsl export``."""

    model: nn.Module
    example_input: Tensor | tuple[Tensor, ...]  # a tuple for a model with several inputs
    output: Path
    weights: str | None = None  # one of the format's ``weights`` (None: its default)
    verify: bool = True
    force: bool = False  # folder formats: replace a non-empty output folder
    options: dict[str, Any] = field(default_factory=dict)  # format-specific extras
    card: dict[str, Any] | None = None  # hub: model-card metadata (a training run's)
    tokenizer: str | None = None  # hub: a language model's tokenizer.json text


@dataclass(frozen=True)
class ExportFormat:
    """One ``--format``: how to run it and which ``--weights`` values it accepts."""

    run: Callable[[ExportJob], ExportReport]
    weights: tuple[str, ...] = ()  # accepted --weights values, the default first; () = none
    help: str = ""
    folder: bool = False  # -o names a folder (else a file)


def _onnx_job(job: ExportJob) -> ExportReport:
    # options: activations, calibration, verify_data, keep_fp32, float_layers, linear
    return to_onnx(
        job.model, job.output, job.example_input, job.weights or "int2", job.verify,
        **job.options,
    )  # fmt: skip


def _one_input(job: ExportJob, form: str) -> Tensor:
    """The example of a single-input model; the formats other than ONNX take one input."""
    if isinstance(job.example_input, Tensor):
        return job.example_input
    raise ValueError(
        f"--format {form} exports models with one input; this one has "
        f"{len(job.example_input)} (--format onnx takes several)"
    )


def _decoder_job(job: ExportJob) -> ExportReport:
    from tritondsl.export.onnx_decoder import export_decoder

    exported = export_decoder(job.model, job.output, job.weights or "nbits", job.verify)
    notes = [f"KV cache: {len(exported.layout.kv)} attention layers, context "
             f"{exported.layout.context or 'unlimited'}; run it with "
             "tritondsl generate --runtime onnx or "
             "tritondsl.export.onnx_decoder_runner.OnnxDecoder"]
    return ExportReport("decoder", job.output, _file_bytes(job.output),
                        exported.checks, weights=job.weights or "nbits",
                        layers=exported.layers, notes=notes)  # fmt: skip


def _file_bytes(path: Path) -> int:
    """A file's bytes, with its external data file (PATH.data) if it has one."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _torchscript_job(job: ExportJob) -> ExportReport:
    # Reloading and comparing is the export itself here (cheap), so --no-verify keeps it.
    return to_torchscript(job.model, job.output, _one_input(job, "torchscript"))


def _pt2_job(job: ExportJob) -> ExportReport:
    return to_pt2(job.model, job.output, _one_input(job, "pt2"))


def check_output_folder(folder: Path, force: bool) -> None:
    """The rule of every folder output: new or empty, or replaced only with ``force``."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise FileExistsError(f"{folder} is not empty; pass --force to replace it")


def export_hub(job: ExportJob) -> ExportReport:
    """``tritondsl export --format hub``: save_pretrained, then reload and compare."""
    pack = job.weights or "2bit"
    check_output_folder(job.output, job.force)
    deployed = deploy(copy.deepcopy(job.model).to("cpu")).eval()
    # Written aside and swapped in: a failure leaves the previous folder as it was.
    replace_dir(job.output, lambda tmp: save_pretrained(deployed, tmp, pack=pack, card=job.card,
                                                        tokenizer=job.tokenizer))  # fmt: skip
    folder = job.output
    checks = []
    if job.verify:
        check = hub_parity(deployed, folder, _one_input(job, "hub").detach().to("cpu"))
        checks.append(_output_check(check))
    size = (folder / WEIGHTS_NAME).stat().st_size
    return ExportReport("hub", folder, size, checks, weights=pack)


def export_release(job: ExportJob) -> ExportReport:
    """``tritondsl export --format release``: build_release into the output folder."""
    pack = job.weights or "2bit"
    check_output_folder(job.output, job.force)
    example = _one_input(job, "release")
    manifest = build_release(job.model, job.output, example, pack=pack, force=job.force)
    total = sum(e["bytes"] for e in manifest["files"].values())
    checks = [_output_check(c) for c in manifest["parity"]]
    notes = [f"bundle: {', '.join(sorted(manifest['files']))} + {MANIFEST_NAME}"]
    return ExportReport("release", Path(job.output), total, checks, weights=pack, notes=notes)


def _output_check(check: dict[str, Any]) -> OutputCheck:
    return OutputCheck(check["name"], check["max_abs"], check.get("rel", 0.0), check["ok"])


EXPORTERS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(
        _onnx_job,
        WEIGHT_FORMS,
        "ONNX; --weights int2 (opset 25), packed (opset 18 uint8 + unpack nodes) or float",
    ),
    "decoder": ExportFormat(
        _decoder_job,
        ("nbits", "float"),
        "ONNX language-model decoder with the KV cache as inputs/outputs; --weights nbits "
        "(ternary Linear as 2-bit MatMulNBits) or float",
    ),
    "torchscript": ExportFormat(_torchscript_job, (), "TorchScript (.pt), scripted or traced"),
    "pt2": ExportFormat(_pt2_job, (), "torch.export program (.pt2)"),
    "hub": ExportFormat(
        export_hub,
        ("2bit", "base3"),
        "Hugging Face folder (save_pretrained; -o is a folder); --weights 2bit or base3",
        folder=True,
    ),
    "release": ExportFormat(
        export_release,
        ("2bit", "base3"),
        "release bundle: Hub folder + int2 ONNX + manifest.json (-o is a new folder)",
        folder=True,
    ),
}


def prepare(
    file: str | Path,
    model: str | None = None,
    checkpoint: str | Path | nn.Module | None = None,
    batch: int = 1,
    size: int = 224,
) -> tuple[nn.Module, Tensor | tuple[Tensor, ...], list[str]]:
    """Model to export, a seeded example input, and notes for the user.

    ``file`` is a .tdsl path or zoo name; ``checkpoint`` a save_pretrained folder or a model
    already loaded (say from a training checkpoint), checked against the file's model.
    """
    file = resolve(file)
    checked = check_file(file)
    names = list(checked.models)
    name = model if model is not None else (names[0] if len(names) == 1 else None)
    if name is None or name not in names:
        raise ValueError(f"{file} has models {names}; choose one with --model")
    inputs = list(checked.models[name].inputs.values())
    shapes = [
        [batch if isinstance(t.shape[0], str) else t.shape[0]]
        + [size if isinstance(d, str) else d for d in t.shape[1:]]
        for t in inputs
    ]
    notes = []
    if checkpoint is None:
        built = compile_program(Path(file)).build(name)
        notes.append("no --checkpoint given, so the weights are the model's random init")
    else:
        built = checkpoint if isinstance(checkpoint, nn.Module) else from_folder(Path(checkpoint))
        spec = getattr(built, "tdsl_spec", None)
        found = spec.model if spec is not None else type(built).__name__
        if found != name:
            raise ValueError(f"--checkpoint holds model {found}, not {name}")
        if spec is not None and spec.source != checked.source:
            notes.append("--checkpoint holds a different .tdsl text; its copy is exported")
    generator = torch.Generator().manual_seed(0)
    # Token ids: ids every embedding of the model takes, symbolic lengths of TOKEN_LENGTH.
    tables = [m.num_embeddings for m in built.modules() if isinstance(m, nn.Embedding)]
    examples = tuple(
        torch.randint(
            0, min(tables, default=2), _token_shape(t.shape, batch),
            generator=generator, dtype=DTYPES[t.dtype],
        )
        if t.dtype.startswith("int")
        else torch.randn(shape, generator=generator)
        for t, shape in zip(inputs, shapes, strict=True)
    )
    return built, examples[0] if len(examples) == 1 else examples, notes


def _token_shape(declared: Sequence[int | str], batch: int) -> list[int]:
    """A token-id input's example shape: the batch, then TOKEN_LENGTH for symbolic lengths."""
    rest = [TOKEN_LENGTH if isinstance(d, str) else d for d in declared[1:]]
    return [batch if isinstance(declared[0], str) else declared[0], *rest]


def from_folder(folder: Path) -> nn.Module:
    """``from_pretrained(folder)`` of a local folder (never a Hub repo id)."""
    if not folder.is_dir():
        # A missing folder would otherwise be taken for a Hub repo id and fetched.
        raise ValueError(f"--checkpoint {folder}: no such folder")
    if not (folder / CONFIG_NAME).is_file():
        raise ValueError(
            f"--checkpoint {folder}: no {CONFIG_NAME}; give a save_pretrained folder, "
            "a training run folder or one of its checkpoints"
        )
    return from_pretrained(folder)
