"""``tritondsl version`` (the same as ``tritondsl --version``)."""

from __future__ import annotations

import typer

from tritondsl.cli.app import app


@app.command()
def version() -> None:
    """Print the tritondsl version."""
    from tritondsl import __version__

    typer.echo(f"tritondsl {__version__}")
