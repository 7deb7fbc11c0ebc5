"""The ``tritondsl`` command line: a thin Typer app over the library, one module per command."""

from __future__ import annotations

from tritondsl.cli import check, compile, export, generate, release, summary, train, version
from tritondsl.cli.app import app, main

__all__ = ["app", "check", "compile", "export", "generate", "main", "release", "summary",
           "train", "version"]  # fmt: skip
