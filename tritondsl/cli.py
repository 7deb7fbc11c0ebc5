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
    _write_atomically(output, source)
    typer.echo(f"wrote {output}", err=True)


@app.command()
def summary(
    file: Annotated[Path, typer.Argument(help="the .tdsl file", show_default=False)],
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    batch: Annotated[
        int | None, typer.Option(min=1, help="also estimate activation memory at this batch")
    ] = None,
    size: Annotated[int, typer.Option(min=1, help="value for symbolic input sizes (H, W)")] = 224,
) -> None:
    """Per-layer table: precision, parameters, bits per weight, packed vs fp32 bytes, shapes."""
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.summary import render_summary, summarize

    try:
        table = summarize(file, model=model, batch=batch, size=size)
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(render_summary(table))


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file so a failure never leaves half a file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


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
