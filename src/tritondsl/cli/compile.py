"""``tritondsl compile``: .tdsl to PyTorch source."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, fail
from tritondsl.cli.choices import Precision, value
from tritondsl.files import OutputError, write_atomically

log = logging.getLogger(__name__)


@app.command("compile")
def compile_(
    file: Annotated[
        str, typer.Argument(help="a .tdsl file, a zoo name or - for standard input",
                            show_default=False)
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here instead of stdout")
    ] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="override every weight precision")
    ] = None,
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Generate PyTorch source for a .tdsl program (nothing is written if it has errors)."""
    from tritondsl.cli.check import read_program
    from tritondsl.compiler.codegen import generate
    from tritondsl.compiler.diagnostics import CompileError

    try:
        source = generate(read_program(file), value(precision))
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(EXIT_INPUT) from None
    if output is None:
        typer.echo(source, nl=False)
        return
    try:
        write_atomically(output, source)
    except OutputError as error:
        fail(str(error))
    log.info("wrote %s", output)
