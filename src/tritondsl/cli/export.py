"""``tritondsl export``: write a model as ONNX, TorchScript, pt2, a Hub folder or a release."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, fail
from tritondsl.cli.choices import Activations, Format, Linear, Weights, value

if TYPE_CHECKING:
    from torch import Tensor, nn

log = logging.getLogger(__name__)


@app.command()
def export(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo name", show_default=False)],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="the file (hub, release: the folder) to write",
            show_default=False,
        ),
    ],
    format_: Annotated[
        Format,
        typer.Option(
            "--format",
            help="onnx, decoder (a language model's ONNX with the KV cache as inputs and "
            "outputs), torchscript (.pt), pt2 (torch.export), hub (a save_pretrained "
            "folder) or release (Hub folder + int2 ONNX + manifest.json)",
        ),
    ] = Format.onnx,
    weights: Annotated[
        Weights | None,
        typer.Option(
            help="onnx: int2 (default, opset 25), packed (opset 18), float; decoder: nbits "
            "(default) or float; hub, release: 2bit (default) or base3"
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="weights from a save_pretrained folder, a training run folder (its best "
            "checkpoint) or a checkpoint folder (RUN/checkpoints/best)"
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, help="batch of the example input (the file's batch is dynamic)")
    ] = 1,
    size: Annotated[int, typer.Option(min=1, help="value for symbolic input sizes (H, W)")] = 224,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="run the file and compare with PyTorch")
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="hub, release: replace a non-empty output folder")
    ] = False,
    activations: Annotated[
        Activations,
        typer.Option(
            help="onnx: float (default) or int8: W1.58A8 for onnxruntime's int8 kernels "
            "(QLinearConv, QGemm), ternary weights 2-bit on disk; run it with "
            "the onnx_session loader of the Python API (fast) or plain onnxruntime"
        ),
    ] = Activations.float,
    calibrate: Annotated[
        str | None,
        typer.Option(
            help="int8: data for the activation scales the model lacks and for --verify: "
            "any train --data spec, or random (a smoke run)"
        ),
    ] = None,
    calibration_batches: Annotated[
        int, typer.Option(min=1, help="int8: batches of 32 taken from the training split")
    ] = 16,
    keep_fp32: Annotated[
        bool,
        typer.Option("--keep-fp32", help="int8: keep the full-precision (@fp32) layers float"),
    ] = False,
    float_layer: Annotated[
        list[str] | None,
        typer.Option(help="int8: keep this layer float (repeatable), e.g. --float-layer fc"),
    ] = None,
    linear: Annotated[
        Linear,
        typer.Option(
            help="int8: ternary Linear layers on int8 QGemm, or nbits: 2-bit MatMulNBits "
            "(lookup-table kernel, for one row at a time) where K % 32 and N % 128 allow"
        ),
    ] = Linear.int8,
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Export a model, deployed, and check the file it wrote against PyTorch.

    Prints file size, bits per ternary weight and errors against PyTorch; exits 1 on a mismatch.
    """
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.export import EXPORTERS, ExportJob, prepare
    from tritondsl.files import check_output_file
    from tritondsl.progress import task
    from tritondsl.train.errors import TrainingError

    chosen = EXPORTERS[str(format_)]
    if weights is not None and str(weights) not in chosen.weights:
        accepted = ", ".join(chosen.weights) or f"none (--format {format_} takes no --weights)"
        raise typer.BadParameter(f"choose one of {accepted}", param_hint="--weights")
    int8 = activations == Activations.int8
    _check_int8_options(format_, weights, int8, calibrate, keep_fp32, float_layer, linear)
    try:
        if not chosen.folder:  # before minutes of building and exporting
            check_output_file(output)
        with task("building the model"):
            loaded, card, tokenizer = (_load_checkpoint(checkpoint) if checkpoint is not None
                                       else (None, None, None))  # fmt: skip
            built, example, notes = prepare(file, model, loaded, batch_size, size)
            if format_ == Format.onnx and "cache" in inspect.signature(built.forward).parameters:
                raise ValueError(f"{built.tdsl_spec.model} is a language model with a KV cache: "
                                 "export it with --format decoder")  # fmt: skip
        if checkpoint is not None:
            log.info("weights from %s", checkpoint)
        for note in notes:
            log.warning("%s", note)
        options: dict[str, object] = {}
        if int8:
            options = _int8_options(built, example, calibrate, calibration_batches, verify)
            options.update(keep_fp32=keep_fp32, float_layers=tuple(float_layer or ()))
            options.update(activations="int8", linear=str(linear))
            if checkpoint is None:  # random init: nearly tied logits, agreement says little
                options["min_agreement"] = None
        job = ExportJob(built, example, output, value(weights), verify, force, options, card=card,
                        tokenizer=tokenizer)  # fmt: skip
        with task(f"exporting {format_}"):
            report = chosen.run(job)
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(EXIT_INPUT) from None
    except (ValueError, RuntimeError, OSError, TrainingError) as error:
        fail(str(error))
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        fail(f"{output} does not match the PyTorch model")


def _check_int8_options(
    format_: Format,
    weights: Weights | None,
    int8: bool,
    calibrate: str | None,
    keep_fp32: bool,
    float_layer: list[str] | None,
    linear: Linear,
) -> None:
    """The int8-only options need --activations int8, which needs --format onnx."""
    if int8 and format_ != Format.onnx:
        raise typer.BadParameter("int8 activations are an ONNX form", param_hint="--activations")
    if int8 and weights not in (None, Weights.int2):
        raise typer.BadParameter(
            "int8 activations store ternary weights as int2", param_hint="--weights"
        )
    given = {
        "--calibrate": calibrate is not None, "--keep-fp32": keep_fp32,
        "--float-layer": bool(float_layer), "--linear": linear != Linear.int8,
    }  # fmt: skip
    for option, used in given.items():
        if used and not int8:
            raise typer.BadParameter("needs --activations int8", param_hint=option)


def _int8_options(
    built: nn.Module, example: Tensor, calibrate: str | None, batches: int, verify: bool
) -> dict[str, object]:
    """Calibration and verification batches from ``--calibrate DATA`` (none without it)."""
    if calibrate is None:
        return {}
    from tritondsl.export.onnx_int8 import declared_input
    from tritondsl.train.calibration import calibration_data

    declared = declared_input(built, example)
    data = calibration_data(calibrate, declared, example, num_batches=batches)
    log.warning("calibration data: %s", data.description)
    return {"calibration": data.calibration, "verify_data": data.verify if verify else None}


def _load_checkpoint(folder: Path) -> tuple[nn.Module, dict[str, Any] | None, str | None]:
    """A training checkpoint's model, card and tokenizer; a save_pretrained folder's model
    and tokenizer; or a clear error."""
    from tritondsl.export.formats import from_folder
    from tritondsl.export.hub import read_tokenizer
    from tritondsl.train.checkpoint import STATE_FILE, best_of, card, model_of

    training = [folder, folder / "checkpoints" / "best", folder / "checkpoints" / "last"]
    if any((candidate / STATE_FILE).is_file() for candidate in training):
        best = best_of(folder)
        return model_of(best), card(best), best.tokenizer_json
    return from_folder(folder), None, read_tokenizer(folder)
