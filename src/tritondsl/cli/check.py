"""``tritondsl check``: check .tdsl files, print inferred output shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tritondsl.cli.app import app


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help=".tdsl files to check", show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Check .tdsl files and print each model's inferred output shape."""
    from tritondsl.compiler.check import check_file
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.compiler.report import describe_models

    failed = False
    for path in files:
        try:
            checked = check_file(path)
        except CompileError as error:
            failed = True
            typer.echo(error.render(), err=True)
            continue
        if not quiet:
            typer.echo(f"{path}: ok")
            for line in describe_models(checked):
                typer.echo(f"  {line}")
    raise typer.Exit(1 if failed else 0)
