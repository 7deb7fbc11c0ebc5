"""``tritondsl train``, and how its options become a ``TrainConfig`` (resume included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, fail
from tritondsl.cli.choices import (
    BadImages,
    Optimizer,
    Parallel,
    Precision,
    Schedule,
    SmallImages,
    value,
)
from tritondsl.train import dataspec
from tritondsl.train.config import BUILTIN_DATASETS, PER_RUN_FIELDS, TrainConfig
from tritondsl.train.errors import CheckpointError, TrainingError

IMAGES = "image folders (imagefolder:DIR)"
PRETRAINED = "pretrained weights and distillation"


@app.command()
def train(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo name", show_default=False)],
    data: Annotated[
        str | None,
        typer.Option(
            help=f"{', '.join(BUILTIN_DATASETS)} (default synthetic), imagefolder:DIR, "
            "text:fortunes or text:PATH (language models), or module:function"
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="epochs in all (default 1)")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="global batch, split over processes (default 64)")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="peak LR (default sgd 0.05, adamw 1e-3)")] = None,
    optimizer: Annotated[Optimizer | None, typer.Option(help="default sgd")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum (default 0.9)")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="default sgd 0, adamw 0.01")] = None,
    schedule: Annotated[Schedule | None, typer.Option(help="default cosine")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="default 0")] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="model argument NAME=VALUE (JSON), repeatable")
    ] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="override every weight precision")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="run folder (default runs/STEM)")
    ] = None,
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
    parallel: Annotated[
        Parallel | None,
        typer.Option(help="under torchrun: ddp (replicas, default) or fsdp (FSDP2 sharding)"),
    ] = None,
    hub: Annotated[
        Path | None, typer.Option(help="write the best checkpoint here as a Hub folder")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="text data: bytes (default) or bpe:N (trained on it)")
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option(min=1, help="text data: tokens per block (default: T, else 256)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="progress bars (in a terminal)")] = True,
    init: Annotated[
        Path | None,
        typer.Option(help="start from these weights: .pth/.pt (a state_dict), .safetensors, "
                     "or a Hub, checkpoint or save_pretrained folder", rich_help_panel=PRETRAINED),
    ] = None,
    init_strict: Annotated[
        bool, typer.Option(help="every tensor must match (--no-init-strict: load what fits and "
                           "report the rest)", rich_help_panel=PRETRAINED),
    ] = True,
    reinit: Annotated[
        list[str] | None,
        typer.Option(help="module kept at its fresh initialization (e.g. fc for another "
                     "number of classes), repeatable", rich_help_panel=PRETRAINED),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(help="distill from: fp32 (this model in fp32 with the --init weights), "
                     "a checkpoint, Hub or weights PATH, or MODEL=PATH",
                     rich_help_panel=PRETRAINED),
    ] = None,
    teacher_param: Annotated[
        list[str] | None,
        typer.Option(help="argument NAME=VALUE of a MODEL=PATH teacher, repeatable",
                     rich_help_panel=PRETRAINED),
    ] = None,
    distill_temperature: Annotated[
        float | None, typer.Option(help="default 4", rich_help_panel=PRETRAINED)
    ] = None,
    distill_weight: Annotated[
        float | None,
        typer.Option(help="w in (1-w)·CE + w·distillation (default 0.5)",
                     rich_help_panel=PRETRAINED),
    ] = None,
    fp32_warmup_epochs: Annotated[
        int | None,
        typer.Option(min=0, help="train the quantized layers in fp32 for the first N epochs "
                     "(default 0)", rich_help_panel=PRETRAINED),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(min=1, help="input size for symbolic H, W (default: the images' most "
                     "common size)", rich_help_panel=IMAGES),
    ] = None,
    small_images: Annotated[
        SmallImages | None,
        typer.Option(help="images smaller than the input (default resize)",
                     rich_help_panel=IMAGES),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(help="per-channel mean, e.g. 0.5,0.5,0.5 (default ImageNet's)",
                     rich_help_panel=IMAGES),
    ] = None,
    std: Annotated[
        str | None, typer.Option(help="per-channel std (default ImageNet's)",
                                 rich_help_panel=IMAGES),
    ] = None,
    crop_scale: Annotated[
        float | None,
        typer.Option(help="smallest area fraction of a random resized crop (default 0.08)",
                     rich_help_panel=IMAGES),
    ] = None,
    eval_crop: Annotated[
        float | None,
        typer.Option(help="evaluation center crop: size / shorter side (default 0.875)",
                     rich_help_panel=IMAGES),
    ] = None,
    flip: Annotated[
        bool | None,
        typer.Option("--flip/--no-flip", help="random horizontal flips (default on)",
                     rich_help_panel=IMAGES, show_default=False),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="validation share when DIR has no train/ and val/ (default 0.1)",
                     rich_help_panel=IMAGES),
    ] = None,
    bad_images: Annotated[
        BadImages | None,
        typer.Option(help="unreadable images: skip (and count) or error (default skip)",
                     rich_help_panel=IMAGES),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=0, help="DataLoader processes decoding images (default min(4, CPUs))",
                     rich_help_panel=IMAGES),
    ] = None,
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Train a model with quantization-aware training; checkpoints, logs and plots go to --output.

    Under `torchrun --nproc_per_node=K` the same command trains with DistributedDataParallel
    (or with FSDP2 sharding: `--parallel fsdp`).
    """
    import os

    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.train.errors import TrainingError

    options = {
        "data": data, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "optimizer": value(optimizer), "momentum": momentum, "weight_decay": weight_decay,
        "schedule": value(schedule), "label_smoothing": label_smoothing, "seed": seed,
        "model": model, "precision": value(precision), "out": output, "resume": resume,
        "stop_after": stop_after, "limit_train": limit_train, "limit_test": limit_test,
        "device": device, "hub": hub, "init": init, "reinit": reinit or None,
        "teacher": teacher, "distill_temperature": distill_temperature,
        "distill_weight": distill_weight, "fp32_warmup_epochs": fp32_warmup_epochs,
        "workers": workers, "tokenizer": tokenizer, "seq_len": seq_len,
        "parallel": value(parallel),
    }  # fmt: skip
    images = {
        "size": size, "small": value(small_images), "crop_scale": crop_scale,
        "eval_crop": eval_crop, "flip": flip, "val_fraction": val_fraction,
        "bad_images": value(bad_images),
    }  # fmt: skip
    # Each torchrun process reports its own failure; say which one when there are several.
    several = os.environ.get("WORLD_SIZE", "1") != "1"
    rank = f"[rank {os.environ.get('RANK', '0')}] " if several else ""
    try:
        from tritondsl.train import Trainer, interrupts

        options["params"] = parse_params(param) if param else None
        options["teacher_params"] = parse_params(teacher_param) if teacher_param else None
        images["mean"] = parse_floats(mean, "--mean") if mean is not None else None
        images["std"] = parse_floats(std, "--std") if std is not None else None
        options["images"] = {k: v for k, v in images.items() if v is not None}
        config = config_for_cli(file, options)
        config.init_strict = init_strict
        config.progress = progress
        # Nested in main()'s: a no-op there, and the same guard for callers of this function.
        with interrupts.catching():
            Trainer(config).fit()
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(EXIT_INPUT) from None
    except TrainingError as error:
        fail(f"{rank}{error}")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs from the command line; values are JSON, else plain strings."""
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise TrainingError(f"--param {item!r}: expected NAME=VALUE, e.g. hidden=[64,32]")
        try:
            params[name.strip()] = json.loads(text)
        except ValueError:
            params[name.strip()] = text
    return params


def parse_floats(text: str, option: str) -> list[float]:
    """``0.485,0.456,0.406`` as floats."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise TrainingError(f"{option} {text!r}: expected numbers separated by commas") from None


def config_for_cli(source: str, options: dict[str, Any]) -> TrainConfig:
    """The config of a ``tritondsl train`` call: options given (not None) override the
    defaults, or, with ``resume``, the settings the checkpoint was trained with."""
    given = {k: v for k, v in options.items() if v is not None}
    resume = given.get("resume")
    images = given.pop("images", {})
    if resume is None:
        given["images"] = images
        given.setdefault("out", Path("runs") / Path(source).stem)
        return TrainConfig(source=source, **given)
    from tritondsl.train import checkpoint

    saved = checkpoint.read(Path(resume))
    if "out" not in given:
        # Continue in the run folder the checkpoint belongs to; the checkpoint's own
        # `out` is never used (a copied or hostile checkpoint must not choose where we write).
        if saved.path.parent.name != "checkpoints":
            raise CheckpointError(
                f"{saved.path} is not inside a run folder (RUN/checkpoints/NAME): "
                "give --output to say where the resumed run writes"
            )
        given["out"] = saved.path.parent.parent
    inherited = {k: v for k, v in saved.state["config"].items() if k not in PER_RUN_FIELDS}
    data = inherited.get("data")
    if "data" not in given and not _spec_allowed(data):
        # A checkpoint is data: it may name a built-in dataset, an image folder or text,
        # never code to import.
        raise CheckpointError(
            f"{saved.path} was trained with --data {data!r}, which is not a built-in dataset; "
            "a checkpoint cannot choose code to run: pass --data yourself to resume with it"
        )
    saved_images = inherited.get("images")
    given["images"] = {**(saved_images if isinstance(saved_images, dict) else {}), **images}
    return TrainConfig.from_json(inherited, source=source, **given)


def _spec_allowed(data: object) -> bool:
    """Whether a checkpoint's own data spec may be used (it must not name code)."""
    if not isinstance(data, str):
        return False
    try:
        return dataspec.parse(data).from_checkpoint_allowed
    except TrainingError:
        return False
