"""`tritondsl train`: a run, a resume, and every input error as exit 1 without a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tritondsl.train.conftest import MLP, one_thread, snapshot, tiny
from tritondsl.cli import app
from tritondsl.cli.train import config_for_cli, parse_params
from tritondsl.train import CheckpointError, Trainer, TrainingError

__all__ = ["one_thread"]  # the autouse fixture of the training tests applies here too

runner = CliRunner()
TINY = ["--param", "hidden=[16]", "--limit-train", "128", "--limit-test", "64",
        "--batch-size", "32", "--no-progress"]  # fmt: skip


def train(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_train_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = train(MLP, *TINY, "--epochs", "2", "--stop-after", "1", "--output", str(out))
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
        (["--param", "hidden"], "expected NAME=VALUE"),
        (["--resume", "{tmp}/nowhere"], "no checkpoint at"),
    ],
)
def test_bad_input_exits_1(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = train(MLP, *[a.format(tmp=tmp_path) for a in args], "--output", str(tmp_path))
    assert code == 1 and message in output
    assert not any(tmp_path.iterdir())


def test_a_wheel_alone_trains_the_shipped_example(tmp_path: Path) -> None:
    # Zoo name and packaged data: nothing from the repository or the system is read.
    out = tmp_path / "fm"
    code, output = train("fashion_mnist", "--data", "fashion-mnist-5k", "--limit-train", "64",
                         "--limit-test", "32", "--batch-size", "32", "--no-progress",
                         "--output", str(out))  # fmt: skip
    assert code == 0, output
    assert "epoch 1/1: train loss" in output
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file()


def test_compile_errors_and_missing_files_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tdsl"
    bad.write_text("model M() {\n  input x: Tensor[N, 4]\n  a = Lineer(4, 2)\n}\n")
    code, output = train(str(bad), "--output", str(tmp_path / "o"))
    assert code == 1 and "unknown name 'Lineer'" in output
    code, output = train(str(tmp_path / "none.tdsl"), "--output", str(tmp_path / "o"))
    assert code == 1 and "no such file" in output
    assert not (tmp_path / "o").exists()


def test_incompatible_resume_leaves_the_run_untouched(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train(MLP, *TINY, "--output", str(out))[0] == 0
    before = snapshot(out)
    code, output = train(MLP, "--resume", str(out), "--param", "hidden=[8]", "--epochs", "2")
    assert code == 1 and "params: checkpoint {'hidden': [16]}, this run {'hidden': [8]}" in output
    code, output = train(MLP, "--resume", str(out), "--epochs", "2", "--lr", "1")
    assert code == 1 and "lr: checkpoint 0.05, this run 1.0" in output
    code, output = train(MLP, *TINY, "--output", str(out))
    assert code == 1 and "already holds a training run" in output
    assert snapshot(out) == before


def test_nan_data_stops_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "nan_data.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load():\n    x = torch.full((64, 784), float('nan'))\n"
        "    y = torch.zeros(64, dtype=torch.long)\n"
        "    return TensorDataset(x, y), TensorDataset(x, y)\n"
    )
    code, output = train(MLP, *TINY, "--data", f"{tmp_path}/nan_data.py:load", "--output",
                         str(tmp_path / "run"))  # fmt: skip
    assert code == 1 and "at step 1 (epoch 1, batch 1)" in output and "input batch" in output


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["train"]).exit_code == 2
    assert runner.invoke(app, ["train", MLP, "--epochs", "0"]).exit_code == 2


def test_parse_params() -> None:
    params = parse_params(["hidden=[64, 32]", "dropout=0", "name=wide", "flag=true"])
    assert params == {"hidden": [64, 32], "dropout": 0, "name": "wide", "flag": True}
    with pytest.raises(TrainingError, match="expected NAME=VALUE"):
        parse_params(["hidden"])


def test_cli_config_inherits_from_the_checkpoint(tmp_path: Path) -> None:
    fresh = config_for_cli(MLP, {"lr": 0.1, "epochs": None})
    assert fresh.lr == 0.1 and fresh.epochs == 1 and fresh.out == Path("runs/ternary_mlp")
    Trainer(tiny(tmp_path / "run", lr=0.02, stop_after=1, hub=tmp_path / "hub")).fit()
    resumed = config_for_cli(MLP, {"resume": tmp_path / "run", "epochs": 3, "lr": None})
    # Settings come from the checkpoint, the out folder is the run's, per-run fields reset.
    assert (resumed.lr, resumed.params, resumed.batch_size) == (0.02, {"hidden": [16]}, 32)
    assert resumed.out == tmp_path / "run" and resumed.epochs == 3
    assert resumed.stop_after is None and resumed.hub is None
    with pytest.raises(CheckpointError, match="does not exist"):
        config_for_cli(MLP, {"resume": tmp_path / "nothing"})


def _tamper(run: Path, **config: object) -> Path:
    """Copy of a run's last checkpoint with ``config`` fields rewritten in its JSON."""
    state_file = run / "checkpoints" / "last" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["config"].update(config)
    state_file.write_text(json.dumps(state))
    return run


def test_resume_never_imports_code_the_checkpoint_names(tmp_path: Path) -> None:
    payload = tmp_path / "payload.py"
    marker = tmp_path / "ran"
    payload.write_text(f"open({str(marker)!r}, 'w').close()\ndef make():\n    return None\n")
    Trainer(tiny(tmp_path / "run", stop_after=1)).fit()
    run = _tamper(tmp_path / "run", data=f"{payload}:make")
    with pytest.raises(CheckpointError, match="cannot choose code to run"):
        config_for_cli(MLP, {"resume": run, "epochs": 2})
    assert not marker.exists()
    # Naming it on the command line is the user's own opt-in.
    chosen = config_for_cli(MLP, {"resume": run, "epochs": 2, "data": f"{payload}:make"})
    assert chosen.data == f"{payload}:make" and not marker.exists()


def test_resume_writes_only_into_its_run_folder_or_out(tmp_path: Path) -> None:
    Trainer(tiny(tmp_path / "run", stop_after=1)).fit()
    elsewhere = tmp_path / "elsewhere"
    run = _tamper(tmp_path / "run", out=str(elsewhere))
    assert config_for_cli(MLP, {"resume": run, "epochs": 2}).out == run
    assert config_for_cli(MLP, {"resume": run / "checkpoints" / "last"}).out == run
    loose = tmp_path / "loose"
    shutil.copytree(run / "checkpoints" / "last", loose)
    with pytest.raises(CheckpointError, match="give --output"):
        config_for_cli(MLP, {"resume": loose, "epochs": 2})
    given = config_for_cli(MLP, {"resume": loose, "epochs": 2, "out": tmp_path / "new"})
    assert given.out == tmp_path / "new" and not elsewhere.exists()


def test_resume_never_reads_weights_or_a_teacher_the_checkpoint_names(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"would be read")
    Trainer(tiny(tmp_path / "run", stop_after=1)).fit()
    run = _tamper(tmp_path / "run", init=str(evil), teacher=str(evil), reinit=["out"])
    config = config_for_cli(MLP, {"resume": run, "epochs": 2})
    assert (config.init, config.teacher, config.reinit) == (None, None, [])
    state_file = run / "checkpoints" / "last" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["teacher"] = {"digest": "0" * 16, "description": f"from {evil}"}
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="pass --teacher again"):
        Trainer(config_for_cli(MLP, {"resume": run, "epochs": 2}))


def test_init_and_image_folder_from_the_command_line(tmp_path: Path) -> None:
    from tests import fashion_folder

    folder = fashion_folder.write(tmp_path / "images", 64, 40)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(b"\x80\x04cposix\nsystem\n.")  # a pickle naming os.system
    base = [MLP, "--data", f"imagefolder:{folder}", "--param", "hidden=[16]", "--no-progress",
            "--workers", "0"]  # fmt: skip
    code, output = train(*base, "--init", str(evil), "-o", str(tmp_path / "a"))
    assert code == 1 and "refused: it holds a Python object (posix.system)" in output
    code, output = train(*base, "--teacher", "fp32", "-o", str(tmp_path / "b"))
    assert code == 1 and "give --init too" in output
    code, output = train(*base, "--mean", "0.5,x", "-o", str(tmp_path / "c"))
    assert code == 1 and "expected numbers separated by commas" in output
    code, output = train(*base, "--mean", "0.3", "--std", "0.4", "--no-flip", "--val-fraction",
                         "0.2", "-o", str(tmp_path / "d"))  # fmt: skip
    assert code == 0, output
    assert "images: 10 classes, input 1x28x28, mean (0.300) std (0.400), 0 worker(s)" in output
    saved = json.loads((tmp_path / "d" / "checkpoints" / "last" / "trainer_state.json").read_text())
    images = saved["config"]["images"]
    assert (images["flip"], images["mean"], images["val_fraction"]) == (False, [0.3], 0.2)
    assert not {"a", "b", "c"} & {p.name for p in tmp_path.iterdir()}  # refused: nothing written
