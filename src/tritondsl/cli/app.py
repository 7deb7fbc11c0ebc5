"""The ``tritondsl`` Typer app: conventions every command follows, logging, the entry point.

CLI conventions (every command, present and future, follows them):

* Exit codes: 0 success, 1 bad input (a .tdsl error, a corrupt artifact, a failed check:
  ``fail(...)``), 2 usage errors (Typer's own: unknown option, bad choice, missing
  argument; ours: ``raise typer.BadParameter(...)``), 130 interrupted.
* A fixed set of values is a choice: a ``StrEnum`` from ``cli/choices.py`` as the option's
  type, so ``--help`` lists it and a bad value exits 2. ``--help`` names no Python objects.
* One spelling per idea across commands: ``--batch-size``, ``--size`` (symbolic H and W),
  ``--model`` (which model of a file), ``--output/-o``, ``--precision``, ``--force``.
* A program argument is a .tdsl path, ``-`` (standard input, where text is enough) or a
  zoo name (``resnet18``; see ``tritondsl.models``).
* Results go to stdout (``typer.echo``); everything else (notes, progress, warnings,
  errors) goes through ``logging`` to stderr: ``log = logging.getLogger(__name__)``, never
  ``print``. ``-v`` shows debug lines, ``-q`` only warnings and errors; both work before or
  after the command name (``VERBOSE``/``QUIET`` below, added to each command).
* Steps that can take more than a few seconds run inside ``tritondsl.progress.task``
  (a rich spinner/bar on a terminal, a debug line with the time otherwise).
* Commands import torch and friends inside the function body, so ``tritondsl check`` and
  ``--help`` stay fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, NoReturn

import typer

log = logging.getLogger("tritondsl")

EXIT_INPUT = 1  # the input is wrong (file, artifact, check failed)
EXIT_USAGE = 2  # the command line is wrong (also Typer's own code)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


class _Formatter(logging.Formatter):
    """``message`` for info, ``warning: message`` / ``error: message`` / ``debug: message``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO:
            return text
        return f"{record.levelname.lower()}: {text}"


def configure_logging(level: int = logging.INFO) -> None:
    """Send the ``tritondsl`` loggers to stderr at ``level`` (idempotent)."""
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("%(message)s"))
        # Records still propagate: the root has no handler in a CLI process, and where an
        # application or pytest installed one, it sees tritondsl's records too.
        log.addHandler(handler)
    log.setLevel(level)


def _verbose(value: int) -> None:
    if value:
        configure_logging(logging.DEBUG)


def _quiet(value: bool) -> None:
    if value:
        configure_logging(logging.WARNING)


def _version(value: bool) -> None:
    if value:
        from tritondsl import __version__

        typer.echo(f"tritondsl {__version__}")
        raise typer.Exit()


VERBOSE = typer.Option(
    "--verbose", "-v", count=True, expose_value=False, callback=_verbose,
    show_default=False, help="Show debug lines too.",
)  # fmt: skip
QUIET = typer.Option(
    "--quiet", "-q", expose_value=False, callback=_quiet, show_default=False,
    help="Show only warnings and errors.",
)  # fmt: skip
Verbose = Annotated[int, VERBOSE]
Quiet = Annotated[bool, QUIET]

app = typer.Typer(
    name="tritondsl",
    help="Check, compile, train and export .tdsl ternary neural networks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, show_default=False, help=VERBOSE.help)
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", show_default=False, help=QUIET.help)
    ] = False,
) -> None:
    """Check, compile, train and export .tdsl ternary neural networks."""
    # Runs before the command's own options are parsed, so each invocation starts afresh.
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def info_enabled() -> bool:
    """Whether info lines are shown (not ``-q``): commands print their chatter only then."""
    return log.isEnabledFor(logging.INFO)


def fail(message: str) -> NoReturn:
    """Log ``error: message`` and exit 1 (the input is wrong)."""
    log.error(message)
    raise typer.Exit(EXIT_INPUT)


def main() -> None:
    """Console-script entry point."""
    # Signal handling only (no torch): from here on a Ctrl-C is remembered, so one that an
    # import or a library swallows still stops the command (see train/interrupts.py).
    from tritondsl.train import interrupts

    try:
        with interrupts.catching():
            app()
    except KeyboardInterrupt:
        sys.exit(130)
