"""Calibration batches for export --calibrate: any train --data spec or random, adapted to
the model's input, and one DataError for data the model cannot take."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tritondsl.train import DataError
from tritondsl.train.calibration import calibration_data


def test_packaged_fashion_mnist_subset() -> None:
    example = torch.zeros(1, 1, 28, 28)
    data = calibration_data("fashion-mnist-5k", ["N", 1, 28, 28], example, 3, 8, 20)
    assert [tuple(b.shape) for b in data.calibration] == [(8, 1, 28, 28)] * 3
    assert sum(len(x) for x, _ in data.verify) == 20
    assert all(y is not None and y.dtype == torch.long for _, y in data.verify)
    assert "3 batches (24 samples) of the fashion-mnist-5k training split" in data.description
    again = calibration_data("fashion-mnist-5k", ["N", 1, 28, 28], example, 3, 8, 20)
    assert all(torch.equal(a, b) for a, b in zip(data.calibration, again.calibration, strict=True))


def test_gray_images_feed_an_rgb_model_with_symbolic_sizes() -> None:
    data = calibration_data("fashion-mnist-5k", ["N", 3, "H", "W"], torch.zeros(1, 3, 224, 224),
                            1, 4, 0)  # fmt: skip
    assert tuple(data.calibration[0].shape) == (4, 3, 28, 28)


def test_random_is_shaped_like_the_example() -> None:
    data = calibration_data("random", ["N", 3, "H", "W"], torch.zeros(1, 3, 40, 24), 2, 5, 7)
    assert [tuple(b.shape) for b in data.calibration] == [(5, 3, 40, 24)] * 2
    assert sum(len(x) for x, _ in data.verify) == 10 and data.verify[0][1] is None


def test_a_shape_the_model_cannot_take_is_one_error() -> None:
    with pytest.raises(DataError, match=r"gives samples of shape \[1, 28, 28\]"):
        calibration_data("fashion-mnist-5k", ["N", 3, 32, 32], torch.zeros(1, 3, 32, 32))


def test_integer_inputs_and_empty_splits_are_refused(tmp_path: Path) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def ints():\n"
        "    x = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)\n"
        "    y = torch.zeros(4, dtype=torch.long)\n"
        "    return TensorDataset(x, y), TensorDataset(x, y)\n"
    )
    with pytest.raises(DataError, match=r"inputs are torch\.uint8, not floating point"):
        calibration_data(f"{hook}:ints", ["N", 1, 28, 28], torch.zeros(1, 1, 28, 28))
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        calibration_data("nope", ["N", 1, 28, 28], torch.zeros(1, 1, 28, 28))
