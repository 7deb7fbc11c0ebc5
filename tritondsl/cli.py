"""The ``tritondsl`` command line: a thin Typer app over the library.

Exit codes: 0 success, 1 errors in the input, 2 usage errors. Commands that need
torch import it inside the command, so ``tritondsl check`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="tritondsl",
    help="Compile .tdsl descriptions of ternary neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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


@app.command()
def version() -> None:
    """Print the tritondsl version."""
    from tritondsl import __version__

    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
