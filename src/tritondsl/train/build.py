"""Build the model a training config describes, and read its declared input shape."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

from torch import nn

from tritondsl.backend.precision import NAMED
from tritondsl.compiler.check import check_source
from tritondsl.compiler.nodes import InputDecl
from tritondsl.compiler.values import Tensor
from tritondsl.models import resolve, zoo_names
from tritondsl.program import compile
from tritondsl.train.errors import TrainingError


def resolve_source(source: str) -> str | Path:
    """A zoo name's file, an existing .tdsl path, or the text itself (if it has a newline)."""
    if "\n" in source:
        return source
    path = resolve(source)
    if not path.is_file():
        raise TrainingError(f"no such file: {source} (or give a zoo model name: {zoo_names()})")
    return path


def build_model(
    source: str | Path, model: str | None, params: dict[str, Any], precision: str | None
) -> nn.Module:
    """Compile and instantiate; CompileError propagates, bad arguments become TrainingError."""
    if precision is not None and precision not in NAMED:
        raise TrainingError(f"unknown precision {precision!r}; choose {', '.join(NAMED)}")
    program = compile(source, precision)
    try:
        return program.build(model, **params)
    except (TypeError, ValueError) as error:
        raise TrainingError(f"cannot build the model: {error}") from None


def declared_input(model: nn.Module) -> tuple[str, tuple[int | str, ...]]:
    """The model's single input: its name and declared shape, e.g. ``("x", ("N", 784))``."""
    name, tensor, _ = input_declaration(model)
    return name, tuple(tensor.shape)


def input_declaration(model: nn.Module) -> tuple[str, Tensor, str]:
    """The model's single input: name, declared tensor (shape, dtype) and where it is
    declared (``"lm.tdsl, line 4"``)."""
    spec = model.tdsl_spec
    checked = check_source(spec.source, spec.path, {spec.model: spec.params})
    info = checked.models[spec.model]
    inputs = info.inputs
    if len(inputs) != 1:
        raise TrainingError(
            f"model {spec.model} has inputs {', '.join(inputs)}; training takes one input"
        )
    ((name, tensor),) = inputs.items()
    lines = [s.span.line for s in info.definition.body if isinstance(s, InputDecl)]
    shown = PurePath(spec.path).name  # for messages, not code: shown as it is
    where = f"{shown}, line {lines[0]}" if lines else shown
    return name, tensor, where
