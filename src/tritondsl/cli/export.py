"""``tritondsl export``: write a model as ONNX, TorchScript, pt2, a Hub folder or a release."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, fail
from tritondsl.cli.choices import Format, Weights, value

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


@app.command()
def export(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo name", show_default=False)],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="the file (hub, release: the folder) to write",
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
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Export a model, deployed, and check the file it wrote against PyTorch.

    Prints file size, bits per ternary weight and errors against PyTorch; exits 1 on a mismatch.
    """
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.export import EXPORTERS, ExportJob, prepare
    from tritondsl.progress import task
    from tritondsl.train.errors import TrainingError

    chosen = EXPORTERS[str(format_)]
    if weights is not None and str(weights) not in chosen.weights:
        accepted = ", ".join(chosen.weights) or f"none (--format {format_} takes no --weights)"
        raise typer.BadParameter(f"choose one of {accepted}", param_hint="--weights")
    try:
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
        job = ExportJob(built, example, output, value(weights), verify, force, card=card,
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
