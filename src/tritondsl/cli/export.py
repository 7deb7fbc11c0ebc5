"""``tritondsl export``: write a model as ONNX, TorchScript, pt2, a Hub folder or a release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tritondsl.cli.app import app


@app.command()
def export(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo model", show_default=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the file to write", show_default=False)
    ],
    format_: Annotated[
        str, typer.Option("--format", help="onnx, torchscript or pt2 (tritondsl.export.EXPORTERS)")
    ] = "onnx",
    weights: Annotated[
        str | None, typer.Option(help="onnx: int2 (default, opset 25), packed (opset 18), float")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="take the weights from this save_pretrained folder")
    ] = None,
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    batch: Annotated[
        int, typer.Option(min=1, help="batch of the example input (the file's batch is dynamic)")
    ] = 1,
    size: Annotated[int, typer.Option(min=1, help="value for symbolic input sizes (H, W)")] = 224,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="run the file and compare with PyTorch")
    ] = True,
) -> None:
    """Export a model, deployed, to ONNX, TorchScript or torch.export and check the file.

    Prints file size, bits per ternary weight and errors against PyTorch; exits 1 on a mismatch.
    """
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.export import EXPORTERS, ExportJob, prepare

    chosen = EXPORTERS.get(format_)
    if chosen is None:
        raise typer.BadParameter(f"choose one of {', '.join(EXPORTERS)}", param_hint="--format")
    if weights is not None and weights not in chosen.weights:
        accepted = ", ".join(chosen.weights) or f"none (--format {format_} takes no --weights)"
        raise typer.BadParameter(f"choose one of {accepted}", param_hint="--weights")
    try:
        built, example, notes = prepare(file, model, checkpoint, batch, size)
        for note in notes:
            typer.echo(note, err=True)
        report = chosen.run(ExportJob(built, example, output, weights, verify))
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None
    except (ValueError, RuntimeError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        typer.echo(f"error: {output} does not match the PyTorch model", err=True)
        raise typer.Exit(1)
