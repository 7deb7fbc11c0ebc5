"""``tritondsl summary``: the per-layer table of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tritondsl.cli.app import app


@app.command()
def summary(
    file: Annotated[Path, typer.Argument(help="the .tdsl file", show_default=False)],
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="also estimate activation memory at this batch")
    ] = None,
    size: Annotated[int, typer.Option(min=1, help="value for symbolic input sizes (H, W)")] = 224,
) -> None:
    """Per-layer table: precision, parameters, bits per weight, packed vs fp32 bytes, shapes."""
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.summary import render_summary, summarize

    try:
        table = summarize(file, model=model, batch=batch, size=size)
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(render_summary(table))
