"""Calibration and verification batches for ``tritondsl export --calibrate DATA``.

DATA is any data spec ``tritondsl train --data`` takes (``load_datasets``: fashion-mnist,
the image folders, ``module:function`` hooks, synthetic) or ``random`` (Gaussian inputs
shaped like the example input, for a smoke run). Samples are adapted to the model's declared
input as training does (``input_adapter``: flatten for an MLP, gray to RGB). Calibration
takes a seeded random subset of the training split; verification takes the first samples of
the test split, with their labels. Bad data is one ``DataError``: inputs that are not
floating point, shapes the model cannot take, an empty split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tritondsl.train.data import DATA_SEED, batches, input_adapter, load_datasets
from tritondsl.train.errors import DataError

RANDOM = "random"
DEFAULT_BATCHES = 16
DEFAULT_BATCH_SIZE = 32
DEFAULT_VERIFY_SAMPLES = 2000
_RANDOM_CLASSES = 10  # synthetic data needs a class count; labels do not matter here


@dataclass
class CalibrationData:
    """Batches to calibrate on, (input, label) batches to verify on, and where they came from."""

    calibration: list[Tensor]
    verify: list[tuple[Tensor, Tensor | None]]
    description: str


def calibration_data(
    spec: str,
    declared: Sequence[int | str],
    example: Tensor,
    num_batches: int = DEFAULT_BATCHES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    verify_samples: int = DEFAULT_VERIFY_SAMPLES,
) -> CalibrationData:
    """The batches of ``spec`` for a model whose input is declared ``declared``."""
    if num_batches < 1 or batch_size < 1 or verify_samples < 0:
        raise DataError("calibration needs at least one batch of at least one sample")
    if spec == RANDOM:
        return _random(example, num_batches, batch_size, verify_samples)
    sample = tuple(example.shape[1:])
    datasets = load_datasets(spec, sample, _RANDOM_CLASSES)
    train, test = _size(datasets.train), _size(datasets.test)
    for split, size in (("training", train), ("test", test)):
        if size == 0:
            raise DataError(f"{spec}: the {split} split is empty")
    adapt = input_adapter(declared, datasets.sample_shape(), spec)
    cpu = torch.device("cpu")
    count = min(num_batches * batch_size, train)
    generator = torch.Generator().manual_seed(DATA_SEED)
    order = torch.randperm(train, generator=generator)[:count].tolist()
    calibration = [
        _checked(adapt(x), spec) for x, _ in batches(datasets.train, order, batch_size, cpu)
    ]
    shown = list(range(min(verify_samples, test)))
    verify: list[tuple[Tensor, Tensor | None]] = [
        (_checked(adapt(x), spec), y) for x, y in batches(datasets.test, shown, batch_size, cpu)
    ]
    return CalibrationData(
        calibration, verify,
        f"{len(calibration)} batches ({count} samples) of the {spec} training split; "
        f"verified on {len(shown)} test samples",
    )  # fmt: skip


def _checked(x: Tensor, spec: str) -> Tensor:
    if not x.dtype.is_floating_point:
        raise DataError(f"{spec}: inputs are {x.dtype}, not floating point; standardise them")
    return x.float()


def _random(
    example: Tensor, num_batches: int, batch_size: int, verify_samples: int
) -> CalibrationData:
    generator = torch.Generator().manual_seed(DATA_SEED)
    shape = (batch_size, *example.shape[1:])
    calibration = [torch.randn(shape, generator=generator) for _ in range(num_batches)]
    rounds = -(-verify_samples // batch_size)
    verify: list[tuple[Tensor, Tensor | None]] = [
        (torch.randn(shape, generator=generator), None) for _ in range(rounds)
    ]
    return CalibrationData(
        calibration, verify,
        f"{num_batches} batches of {batch_size} random Gaussian inputs (a smoke run); "
        f"verified on {rounds * batch_size} more",
    )  # fmt: skip


def _size(data: Dataset[object]) -> int:
    return len(data)  # type: ignore[arg-type]
