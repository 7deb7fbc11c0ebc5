"""``tritondsl summary``: the per-layer table of a model."""

from __future__ import annotations

from typing import Annotated

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, fail


@app.command()
def summary(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo name", show_default=False)],
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="also estimate activation memory at this batch")
    ] = None,
    size: Annotated[int, typer.Option(min=1, help="value for symbolic input sizes (H, W)")] = 224,
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Per-layer table: precision, parameters, bits per weight, packed vs fp32 bytes, shapes."""
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.summary import render_summary, summarize

    try:
        table = summarize(file, model=model, batch=batch_size, size=size)
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(EXIT_INPUT) from None
    except ValueError as error:
        fail(str(error))
    typer.echo(render_summary(table))
