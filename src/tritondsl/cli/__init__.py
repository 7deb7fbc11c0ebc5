"""The ``tritondsl`` command line: a thin Typer app over the library, one module per command."""

from __future__ import annotations

from tritondsl.cli import check, compile, export, release, summary, train, version
from tritondsl.cli.app import app, main

__all__ = ["app", "check", "compile", "export", "main", "release", "summary", "train", "version"]
