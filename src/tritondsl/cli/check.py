"""``tritondsl check``: check .tdsl programs, print inferred output shapes."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, info_enabled

if TYPE_CHECKING:
    from tritondsl.compiler.check import CheckedProgram


@app.command()
def check(
    files: Annotated[
        list[str],
        typer.Argument(
            help=".tdsl files, zoo names (resnet18, ...) or - for standard input",
            show_default=False,
        ),
    ],
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Check .tdsl programs and print each model's inferred output shape (-q: errors only)."""
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.compiler.report import describe_models

    failed = False
    for name in files:
        try:
            checked = read_program(name)
        except CompileError as error:
            failed = True
            typer.echo(error.render(), err=True)
            continue
        if info_enabled():
            typer.echo(f"{name}: ok")
            for line in describe_models(checked):
                typer.echo(f"  {line}")
    raise typer.Exit(EXIT_INPUT if failed else 0)


def read_program(name: str) -> CheckedProgram:
    """Check a program argument: ``-`` (standard input), a .tdsl path or a zoo name."""
    from tritondsl.compiler.check import check_file, check_source
    from tritondsl.compiler.parser import MAX_SOURCE_BYTES, decode
    from tritondsl.models import resolve

    if name == "-":
        # One byte past the limit at most: the parser reports the size, input never ends.
        data = sys.stdin.buffer.read(MAX_SOURCE_BYTES + 1)
        return check_source(decode(data, "<stdin>"), "<stdin>")
    return check_file(resolve(name))
