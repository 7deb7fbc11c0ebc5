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


@app.command()
def train(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo model", show_default=False)],
    data: Annotated[
        str | None,
        typer.Option(help="fashion-mnist, mnist5k, synthetic (default), module:function"),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="epochs in all (default 1)")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="global batch, split over processes (default 64)")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="peak LR (default sgd 0.05, adamw 1e-3)")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd (default) or adamw")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum (default 0.9)")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="default sgd 0, adamw 0.01")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="cosine (default), onecycle or constant")
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="default 0")] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="model argument NAME=VALUE (JSON), repeatable")
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="override every weight precision: fp32, fp16, int8")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default runs/STEM)")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue from a checkpoint folder or a run folder")
    ] = None,
    stop_after: Annotated[
        int | None, typer.Option(min=1, help="stop after this many epochs in all (resume later)")
    ] = None,
    limit_train: Annotated[int | None, typer.Option(min=1, help="first N train samples")] = None,
    limit_test: Annotated[int | None, typer.Option(min=1, help="first N test samples")] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 (default: cuda if any)")
    ] = None,
    hub: Annotated[
        Path | None, typer.Option(help="write the best checkpoint here as a Hub folder")
    ] = None,
    progress: Annotated[bool, typer.Option(help="progress bars (in a terminal)")] = True,
) -> None:
    """Train a model with quantization-aware training; checkpoints, logs and plots go to --out.

    Under `torchrun --nproc_per_node=K` the same command trains with DistributedDataParallel.
    """
    import os

    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.train.config import TrainingError, config_for_cli, parse_params

    options = {
        "data": data, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
        "schedule": schedule, "label_smoothing": label_smoothing, "seed": seed, "model": model,
        "precision": precision, "out": out, "resume": resume, "stop_after": stop_after,
        "limit_train": limit_train, "limit_test": limit_test, "device": device, "hub": hub,
    }  # fmt: skip
    # Each torchrun process reports its own failure; say which one when there are several.
    several = os.environ.get("WORLD_SIZE", "1") != "1"
    rank = f"[rank {os.environ.get('RANK', '0')}] " if several else ""
    try:
        from tritondsl.train import Trainer

        options["params"] = parse_params(param) if param else None
        config = config_for_cli(file, options)
        config.progress = progress
        Trainer(config).fit()
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None
    except TrainingError as error:
        typer.echo(f"{rank}error: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def export(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo model", show_default=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="the file to write", show_default=False)
    ],
    format_: Annotated[
        str, typer.Option("--format", help="onnx, torchscript or pt2 (tritondsl.export.EXPORTERS)")
    ] = "onnx",
    weights: Annotated[
        str | None, typer.Option(help="onnx: int2 (default, opset 25), packed (opset 18), float")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="take the weights from this save_pretrained folder")
    ] = None,
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    batch: Annotated[
        int, typer.Option(min=1, help="batch of the example input (the file's batch is dynamic)")
    ] = 1,
    size: Annotated[int, typer.Option(min=1, help="value for symbolic input sizes (H, W)")] = 224,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="run the file and compare with PyTorch")
    ] = True,
) -> None:
    """Export a model, deployed, to ONNX, TorchScript or torch.export and check the file.

    Prints file size, bits per ternary weight and errors against PyTorch; exits 1 on a mismatch.
    """
    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.export import EXPORTERS, ExportJob, prepare

    chosen = EXPORTERS.get(format_)
    if chosen is None:
        raise typer.BadParameter(f"choose one of {', '.join(EXPORTERS)}", param_hint="--format")
    if weights is not None and weights not in chosen.weights:
        accepted = ", ".join(chosen.weights) or f"none (--format {format_} takes no --weights)"
        raise typer.BadParameter(f"choose one of {accepted}", param_hint="--weights")
    try:
        built, example, notes = prepare(file, model, checkpoint, batch, size)
        for note in notes:
            typer.echo(note, err=True)
        report = chosen.run(ExportJob(built, example, output, weights, verify))
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(1) from None
    except (ValueError, RuntimeError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        typer.echo(f"error: {output} does not match the PyTorch model", err=True)
        raise typer.Exit(1)


@app.command("publish-release")
def publish_release(
    bundle: Annotated[
        Path, typer.Argument(help="a folder written by build_release", show_default=False)
    ],
    repo: Annotated[str, typer.Option(help="GitHub repository OWNER/NAME", show_default=False)],
    tag: Annotated[str, typer.Option(help="release tag, e.g. v1.0.0", show_default=False)],
    token_env: Annotated[
        str, typer.Option(help="environment variable that holds the GitHub token")
    ] = "GITHUB_TOKEN",
    api_url: Annotated[str, typer.Option(help="GitHub REST API root")] = "https://api.github.com",
) -> None:
    """Upload a release bundle as a GitHub release; every file's sha256 is checked first."""
    import os

    from tritondsl.backend.release import ReleaseError
    from tritondsl.backend.release import publish_release as publish

    # The token comes from the environment, never the command line (shell history, ps).
    token = os.environ.get(token_env, "")
    if not token:
        raise typer.BadParameter(f"${token_env} is not set", param_hint="--token-env")
    try:
        result = publish(bundle, repo, tag, token, api_url=api_url)
    except ReleaseError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"released {tag}: {result['html_url']}")
    for url in result["assets"]:
        typer.echo(f"  {url}")


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
