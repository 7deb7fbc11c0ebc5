"""What a checkpoint's trainer_state.json and RNG tensors must hold, checked whole on read.

A resumed run uses every field (epochs, the optimizer's structure, each rank's RNG state,
the history that metrics.csv and the plots are redrawn from), so a field of the wrong type
or a garbage RNG state would otherwise surface as a traceback halfway through resuming.
``validate`` reports the first problem as one CheckpointError naming the file and field.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tritondsl.train.config import TrainConfig
from tritondsl.train.errors import CheckpointError, TrainingError

TASKS = ("classification", "language-model")
# Numbers every history record has (and metrics.csv, the plots and the model card read).
RECORD_NUMBERS = ("step", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
MT_WORDS = 624  # Mersenne Twister state words (Python's and NumPy's generators)
WORD = 2**32
# The JSON type of each TrainConfig annotation (its first part; "| None" allows null).
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "Path": (str,),
    "Optimizer": (str,), "Schedule": (str,), "Parallel": (str,),
    "dict": (dict,), "ImageOptions": (dict,),
    "list": (list,),
}  # fmt: skip


class _Checker:
    """Field checks that name the file and the field's path in every error."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, field: str, problem: str) -> None:
        raise CheckpointError(f"{self.file}: {field} {problem}")

    def get(self, record: Any, key: str, field: str) -> Any:
        if not isinstance(record, dict):
            self.fail(field.rpartition(".")[0] or "the file", "must be a JSON object")
        if key not in record:
            self.fail(field, "is missing")
        return record[key]

    def integer(self, value: Any, field: str, low: int = 0, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be an integer, not {_shown(value)}")
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            self.fail(field, f"must be {bounds}, not {value}")
        return value

    def number(self, value: Any, field: str, optional: bool = False) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, f"must be a number, not {_shown(value)}")

    def kind(self, value: Any, types: type | tuple[type, ...], field: str, what: str) -> Any:
        if not isinstance(value, types):
            self.fail(field, f"must be {what}, not {_shown(value)}")
        return value


def validate(state: Any, rng: dict[str, Tensor], file: Path) -> None:
    """Raise CheckpointError unless ``state`` (and the RNG tensors) can resume a run."""
    c = _Checker(file)
    c.kind(state, dict, "the file", "a JSON object")
    epoch = c.integer(c.get(state, "epoch", "epoch"), "epoch")
    c.integer(c.get(state, "step", "step"), "step")
    best = c.integer(c.get(state, "best_epoch", "best_epoch"), "best_epoch", high=epoch)
    c.number(state.get("best_score", 0.0), "best_score")
    c.number(c.get(state, "best_test_acc", "best_test_acc"), "best_test_acc")
    task = state.get("task", "classification")
    if task not in TASKS:
        c.fail("task", f"must be one of {', '.join(TASKS)}, not {_shown(task)}")
    if state.get("seq_len") is not None:
        c.integer(state["seq_len"], "seq_len", low=1)
    _config(c, c.get(state, "config", "config"))
    spec = c.kind(c.get(state, "spec", "spec"), dict, "spec", "a JSON object")
    for key in ("source", "model"):
        c.kind(c.get(spec, key, f"spec.{key}"), str, f"spec.{key}", "a string")
    c.kind(c.get(spec, "params", "spec.params"), dict | None, "spec.params", "an object or null")
    c.kind(c.get(spec, "precision", "spec.precision"), str | None, "spec.precision",
           "a string or null")  # fmt: skip
    teacher = state.get("teacher")
    if teacher is not None:
        for key in ("digest", "description"):
            c.kind(c.get(teacher, key, f"teacher.{key}"), str, f"teacher.{key}", "a string")
    _history(c, c.get(state, "history", "history"), epoch, best)
    _optimizer(c, c.get(state, "optimizer", "optimizer"))
    _rng(c, c.get(state, "rng", "rng"), rng)


def _config(c: _Checker, config: Any) -> None:
    c.kind(config, dict, "config", "a JSON object")
    for spec in dataclasses.fields(TrainConfig):
        if spec.name not in config:
            continue
        value, annotation = config[spec.name], str(spec.type)
        if value is None and "None" in annotation:
            continue
        base = annotation.split("|")[0].split("[")[0].strip()
        types = JSON_TYPES[base]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            c.fail(f"config.{spec.name}", f"must be {annotation}, not {_shown(value)}")
    try:
        TrainConfig.from_json(config)
    except (TrainingError, TypeError, ValueError) as error:
        c.fail("config", f"is not a valid configuration: {error}")


def _history(c: _Checker, history: Any, epoch: int, best: int) -> None:
    c.kind(history, list, "history", "a list")
    if len(history) != epoch:
        c.fail("history", f"has {len(history)} epochs, the checkpoint says {epoch}")
    for index, record in enumerate(history):
        field = f"history[{index}]"
        c.kind(record, dict, field, "a JSON object")
        if c.get(record, "epoch", f"{field}.epoch") != index + 1:
            c.fail(f"{field}.epoch", f"must be {index + 1}, not {_shown(record['epoch'])}")
        for key in RECORD_NUMBERS:
            c.number(c.get(record, key, f"{field}.{key}"), f"{field}.{key}")
        for key in ("grad_norms", "ternary"):
            layers = c.kind(record.get(key, {}), dict, f"{field}.{key}", "a JSON object")
            for layer, values in layers.items():
                c.kind(values, dict, f"{field}.{key}.{layer}", "a JSON object")
                for name, value in values.items():
                    c.number(value, f"{field}.{key}.{layer}.{name}", optional=True)
        warnings = c.kind(record.get("warnings", []), list, f"{field}.warnings", "a list")
        for line in warnings:
            c.kind(line, str, f"{field}.warnings", "a list of strings")
    if best and not math.isfinite(float(history[best - 1]["test_acc"])):
        c.fail(f"history[{best - 1}].test_acc", "must be finite (it is the best epoch's)")


def _optimizer(c: _Checker, optimizer: Any) -> None:
    c.kind(optimizer, dict, "optimizer", "a JSON object")
    names = c.kind(c.get(optimizer, "param_names", "optimizer.param_names"), list,
                   "optimizer.param_names", "a list")  # fmt: skip
    for name in names:
        c.kind(name, str, "optimizer.param_names", "a list of strings")
    groups = c.kind(c.get(optimizer, "param_groups", "optimizer.param_groups"), list,
                    "optimizer.param_groups", "a list")  # fmt: skip
    for index, group in enumerate(groups):
        field = f"optimizer.param_groups[{index}]"
        c.kind(group, dict, field, "a JSON object")
        params = c.kind(c.get(group, "params", f"{field}.params"), list, f"{field}.params",
                        "a list")  # fmt: skip
        for param in params:
            c.integer(param, f"{field}.params", high=max(len(names) - 1, 0))
    state = c.kind(c.get(optimizer, "state", "optimizer.state"), dict, "optimizer.state",
                   "a JSON object")  # fmt: skip
    for index, entries in state.items():
        field = f"optimizer.state.{index}"
        if not index.isdigit() or int(index) >= len(names):
            c.fail(field, f"names no parameter (there are {len(names)})")
        c.kind(entries, dict, field, "a JSON object")
        for name, ref in entries.items():
            c.kind(ref, dict, f"{field}.{name}", "a JSON object")
            if "tensor" in ref:
                c.kind(ref["tensor"], str, f"{field}.{name}.tensor", "a string")
            elif "value" not in ref:
                c.fail(f"{field}.{name}", "has neither a tensor nor a value")


def _rng(c: _Checker, saved: Any, tensors: dict[str, Tensor]) -> None:
    c.kind(saved, list, "rng", "a list")
    if not saved:
        c.fail("rng", "is empty (it holds one state per process)")
    torch_state = torch.get_rng_state()
    for rank, extra in enumerate(saved):
        field = f"rng[{rank}]"
        python = c.kind(c.get(extra, "python", f"{field}.python"), list, f"{field}.python",
                        "a list")  # fmt: skip
        if len(python) != 3:
            c.fail(f"{field}.python", "must be [version, state words, gauss]")
        c.integer(python[0], f"{field}.python[0]", low=3, high=3)
        words = c.kind(python[1], list, f"{field}.python[1]", "a list")
        if len(words) != MT_WORDS + 1:
            c.fail(f"{field}.python[1]", f"must hold {MT_WORDS + 1} integers, not {len(words)}")
        for word in words[:-1]:
            c.integer(word, f"{field}.python[1]", high=WORD - 1)
        c.integer(words[-1], f"{field}.python[1]", high=MT_WORDS)
        c.number(python[2], f"{field}.python[2]", optional=True)
        numpy = c.kind(c.get(extra, "numpy", f"{field}.numpy"), list, f"{field}.numpy", "a list")
        if len(numpy) != 4 or numpy[0] != "MT19937":
            c.fail(f"{field}.numpy", "must be ['MT19937', position, has_gauss, gauss]")
        c.integer(numpy[1], f"{field}.numpy[1]", high=MT_WORDS)
        c.integer(numpy[2], f"{field}.numpy[2]", high=1)
        c.number(numpy[3], f"{field}.numpy[3]")
        expected = {"torch": (torch_state.dtype, torch_state.shape),
                    "numpy": (torch.int64, torch.Size([MT_WORDS]))}  # fmt: skip
        for name, (dtype, shape) in expected.items():
            key = f"rank{rank}.{name}"
            tensor = tensors.get(key)
            if tensor is None:
                c.fail(f"rng.safetensors {key}", "is missing")
            elif tensor.dtype != dtype or tensor.shape != shape:
                c.fail(f"rng.safetensors {key}", f"must be {dtype} {list(shape)}, "
                       f"not {tensor.dtype} {list(tensor.shape)}")  # fmt: skip
        numbers = tensors[f"rank{rank}.numpy"]
        if bool(((numbers < 0) | (numbers >= WORD)).any()):
            c.fail(f"rng.safetensors rank{rank}.numpy", "holds words outside 0..2**32-1")
        # The generators themselves have the last word on what is a state.
        try:
            torch.Generator().set_state(tensors[f"rank{rank}.torch"])
        except RuntimeError as error:
            c.fail(f"rng.safetensors rank{rank}.torch", f"is not a torch RNG state ({error})")
        try:
            random.Random().setstate((python[0], tuple(words), python[2]))
            np.random.RandomState().set_state(
                ("MT19937", numbers.numpy().astype(np.uint32), *numpy[1:])
            )
        except (TypeError, ValueError) as error:
            c.fail(field, f"is not an RNG state ({error})")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
