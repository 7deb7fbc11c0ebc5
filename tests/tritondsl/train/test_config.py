"""The config: validation, defaults per optimizer, --param parsing, resume inheritance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.tritondsl.train.conftest import MLP, tiny
from tritondsl.train import CheckpointError, TrainConfig, Trainer, TrainingError
from tritondsl.train.config import config_for_cli, parse_params


def test_defaults_depend_on_the_optimizer() -> None:
    sgd, adamw = TrainConfig(MLP), TrainConfig(MLP, optimizer="adamw")
    assert (sgd.lr, sgd.weight_decay, adamw.lr, adamw.weight_decay) == (0.05, 0.0, 1e-3, 0.01)
    assert TrainConfig.from_json(adamw.to_json()) == adamw


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("epochs", 0, "epochs must be > 0"), ("schedule", "step", "unknown schedule 'step'"),
     ("label_smoothing", 1.0, "label_smoothing must be in"), ("limit_train", 0, ">= 1")],
)  # fmt: skip
def test_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainConfig(MLP, **{field: value})  # type: ignore[arg-type]


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
    with pytest.raises(CheckpointError, match="give --out"):
        config_for_cli(MLP, {"resume": loose, "epochs": 2})
    given = config_for_cli(MLP, {"resume": loose, "epochs": 2, "out": tmp_path / "new"})
    assert given.out == tmp_path / "new" and not elsewhere.exists()
