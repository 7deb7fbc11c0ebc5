"""``tritondsl compile``: .tdsl to PyTorch source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tritondsl.cli.app import app
from tritondsl.files import write_atomically


@app.command("compile")
def compile_(
    file: Annotated[Path, typer.Argument(help="the .tdsl file", show_default=False)],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="override every weight precision: fp32 (no quantization), fp16, int8"),
    ] = None,
) -> None:
    """Generate PyTorch source for a .tdsl file (nothing is written if it has errors)."""
    from tritondsl.compiler.check import check_file
    from tritondsl.compiler.codegen import PRECISIONS, generate
    from tritondsl.compiler.diagnostics import CompileError

    if precision is not None and precision not in PRECISIONS:
        raise typer.BadParameter(f"choose one of {', '.join(PRECISIONS)}", param_hint="--precision")
    try:
        source = generate(check_file(file), precision)
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None
    if output is None:
        typer.echo(source, nl=False)
        return
    write_atomically(output, source)
    typer.echo(f"wrote {output}", err=True)
