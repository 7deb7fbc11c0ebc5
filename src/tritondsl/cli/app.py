"""The ``tritondsl`` Typer app, its exit codes and the console-script entry point.

Exit codes: 0 success, 1 errors in the input, 2 usage errors. Commands import what they
need inside the command, so ``tritondsl check`` stays fast (no torch).
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="tritondsl",
    help="Compile .tdsl descriptions of ternary neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
