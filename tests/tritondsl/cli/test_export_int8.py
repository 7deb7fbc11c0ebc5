"""tritondsl export --activations int8: the file, what it says about calibration and
verification, and one error (nothing written) for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT
from tritondsl.cli import app

runner = CliRunner()
FASHION = str(ROOT / "examples" / "fashion_mnist.tdsl")


def test_calibrated_on_data_and_verified_on_its_test_split(tmp_path: Path) -> None:
    out = tmp_path / "fm.onnx"
    result = runner.invoke(app, [
        "export", FASHION, "-o", str(out), "--activations", "int8",
        "--calibrate", "fashion-mnist-5k", "--calibration-batches", "4",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "4 batches (128 samples) of the fashion-mnist-5k training split" in result.output
    assert "calibration: 4 batches" in result.output
    assert "= 2.000 bits/weight" in result.output
    assert "onnxruntime int8 vs PyTorch W1.58A8: 1000 samples" in result.output
    assert "top-1 agreement" in result.output and " ok" in result.output


def test_random_init_without_data_names_what_needs_a_scale(tmp_path: Path) -> None:
    out = tmp_path / "fm.onnx"
    result = runner.invoke(app, ["export", FASHION, "-o", str(out), "--activations", "int8"])
    assert result.exit_code == 1
    assert "no activation scale" in result.output and "--calibrate DATA" in result.output
    assert "the input of stem.conv" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calibrate", "random"], "needs --activations int8"),
        (["--activations", "int8", "--format", "pt2"], "int8 activations are an ONNX form"),
        (["--activations", "int8", "--weights", "packed"], "store ternary weights as int2"),
        (["--keep-fp32"], "needs --activations int8"),
    ],
)
def test_option_mistakes_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["export", FASHION, "-o", str(tmp_path / "x.onnx"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())


HOOK = """
import torch
from torch.utils.data import TensorDataset
def wrong():
    x, y = torch.zeros(8, 1, 32, 32), torch.zeros(8, dtype=torch.long)
    return TensorDataset(x, y), TensorDataset(x, y)
"""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("no-such-data", "unknown dataset 'no-such-data'"),
        ("{hook}:wrong", "gives samples of shape [1, 32, 32]; the model takes [N, 1, 28, 28]"),
    ],
    ids=["unknown", "shape"],
)
def test_bad_calibration_data_writes_nothing(tmp_path: Path, data: str, message: str) -> None:
    hook = tmp_path / "hook.py"
    hook.write_text(HOOK)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = runner.invoke(app, [
        "export", FASHION, "-o", str(out_dir / "x.onnx"), "--activations", "int8",
        "--calibrate", data.format(hook=hook),
    ])  # fmt: skip
    assert result.exit_code == 1 and message in result.output
    assert not list(out_dir.iterdir())
