"""`tritondsl train`: a run, a resume, and every input error as exit 1 without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tritondsl.train.conftest import MLP, snapshot
from tritondsl.cli import app

runner = CliRunner()
TINY = ["--param", "hidden=[16]", "--limit-train", "128", "--limit-test", "64",
        "--batch-size", "32", "--no-progress"]  # fmt: skip


def train(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_train_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = train(MLP, *TINY, "--epochs", "2", "--stop-after", "1", "--out", str(out))
    assert code == 0, output
    assert "epoch 1/2: train loss" in output and "samples/s" in output and "peak RSS" in output
    code, output = train(MLP, "--resume", str(out), "--no-progress")
    assert code == 0, output
    assert "resuming after epoch 1" in output and "epoch 2/2" in output
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["config"]["limit_train"] == 128
    assert len((out / "metrics.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "imagenet"], "unknown dataset 'imagenet'"),
        (["--data", "nomodule:load"], "cannot import nomodule"),
        (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
        (["--param", "hidden"], "expected NAME=VALUE"),
        (["--resume", "{tmp}/nowhere"], "no checkpoint at"),
        (["--precision", "int3"], "unknown precision 'int3'"),
    ],
)
def test_bad_input_exits_1(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = train(MLP, *[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path))
    assert code == 1 and message in output
    assert not any(tmp_path.iterdir())


def test_compile_errors_and_missing_files_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tdsl"
    bad.write_text("model M() {\n  input x: Tensor[N, 4]\n  a = Lineer(4, 2)\n}\n")
    code, output = train(str(bad), "--out", str(tmp_path / "o"))
    assert code == 1 and "unknown name 'Lineer'" in output
    code, output = train(str(tmp_path / "none.tdsl"), "--out", str(tmp_path / "o"))
    assert code == 1 and "no such file" in output
    assert not (tmp_path / "o").exists()


def test_incompatible_resume_leaves_the_run_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(MLP, *TINY, "--out", str(out))[0] == 0
    before = snapshot(out)
    code, output = train(MLP, "--resume", str(out), "--param", "hidden=[8]", "--epochs", "2")
    assert code == 1 and "params: checkpoint {'hidden': [16]}, this run {'hidden': [8]}" in output
    code, output = train(MLP, "--resume", str(out), "--epochs", "2", "--lr", "1")
    assert code == 1 and "lr: checkpoint 0.05, this run 1.0" in output
    code, output = train(MLP, *TINY, "--out", str(out))
    assert code == 1 and "already holds a training run" in output
    assert snapshot(out) == before


def test_nan_data_stops_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "nan_data.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load():\n    x = torch.full((64, 784), float('nan'))\n"
        "    y = torch.zeros(64, dtype=torch.long)\n"
        "    return TensorDataset(x, y), TensorDataset(x, y)\n"
    )
    code, output = train(MLP, *TINY, "--data", f"{tmp_path}/nan_data.py:load", "--out",
                         str(tmp_path / "run"))  # fmt: skip
    assert code == 1 and "at step 1 (epoch 1, batch 1)" in output and "input batch" in output


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["train"]).exit_code == 2
    assert runner.invoke(app, ["train", MLP, "--epochs", "0"]).exit_code == 2
