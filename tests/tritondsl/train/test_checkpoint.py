"""Checkpoints: optimizer state through safetensors + JSON, RNG states, refusals."""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import tritondsl.train
from tests.tritondsl.train.conftest import tiny
from tritondsl.train import CheckpointError, Trainer
from tritondsl.train import checkpoint as ckpt


def stepped(
    optimizer_cls: type[torch.optim.Optimizer], **kwargs: float
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small model and its optimizer after two steps (so the state is not empty)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = optimizer_cls(model.parameters(), **kwargs)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        optimizer.step()
    return model, optimizer


def flattened(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return ckpt.flatten_optimizer(optimizer.state_dict(), ckpt.param_names(optimizer, model))


@pytest.mark.parametrize(
    ("optimizer_cls", "kwargs"),
    [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}), (torch.optim.AdamW, {"lr": 0.01})],
)
def test_optimizer_state_survives_safetensors_and_json(
    tmp_path: Path, optimizer_cls: type[torch.optim.Optimizer], kwargs: dict[str, float]
) -> None:
    model, optimizer = stepped(optimizer_cls, **kwargs)
    tensors, structure = flattened(optimizer, model)
    structure = json.loads(json.dumps(structure))  # exactly what the file holds
    checkpoint = ckpt.Checkpoint(tmp_path, {"optimizer": structure}, {}, tensors, {})
    fresh = optimizer_cls(model.parameters(), **kwargs)  # no state yet
    ckpt.load_optimizer(fresh, model, checkpoint)
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]  # AdamW's betas are a tuple again
    for index, entries in a["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, b["state"][index][name]), (index, name)


def test_optimizer_for_other_parameters_is_refused(tmp_path: Path) -> None:
    model, optimizer = stepped(torch.optim.SGD, lr=0.1, momentum=0.9)
    tensors, structure = flattened(optimizer, model)
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    checkpoint = ckpt.Checkpoint(tmp_path, {"optimizer": structure}, {}, tensors, {})
    with pytest.raises(CheckpointError, match="optimizer state is for other parameters"):
        ckpt.load_optimizer(torch.optim.SGD(other.parameters(), lr=0.1), other, checkpoint)


def draws() -> tuple[torch.Tensor, float, float]:
    return torch.rand(3), random.random(), float(np.random.rand())


def test_every_rng_of_every_rank_is_restored(tmp_path: Path) -> None:
    states, expected = [], []
    for seed in (1, 5):  # rank 0 and rank 1
        torch.manual_seed(seed)
        random.seed(seed + 1)
        np.random.seed(seed + 2)
        states.append(ckpt.rng_state())
        expected.append(draws())
    tensors = {f"rank{r}.{k}": v for r, (values, _) in enumerate(states) for k, v in values.items()}
    state = json.loads(json.dumps({"rng": [extra for _, extra in states]}))
    checkpoint = ckpt.Checkpoint(tmp_path, state, {}, {}, tensors)
    for rank, wanted in ((1, 1), (0, 0), (2, 0)):  # a rank it has no state for takes rank 0's
        ckpt.restore_rng(checkpoint, rank)
        got = draws()
        assert torch.equal(got[0], expected[wanted][0]) and got[1:] == expected[wanted][1:]


def refuse(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a checkpoint must never be unpickled")


def test_resume_unpickles_nothing_and_bad_checkpoints_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.read(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="is not a training checkpoint"):
        ckpt.read(tmp_path)
    Trainer(tiny(tmp_path / "run", stop_after=1)).fit()
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert len(Trainer(tiny(tmp_path / "run", resume=tmp_path / "run")).fit()) == 2
    monkeypatch.undo()
    last = tmp_path / "run" / "checkpoints" / "last"
    assert ckpt.read(tmp_path / "run").path == last  # a run folder means its last checkpoint
    (last / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable"):
        ckpt.read(last)
    state = json.loads((last / "trainer_state.json").read_text())
    (last / "trainer_state.json").write_text(json.dumps({**state, "version": 99}))
    with pytest.raises(CheckpointError, match="checkpoint version 99"):
        ckpt.read(last)
    (last / "trainer_state.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"trainer_state\.json: unreadable"):
        ckpt.read(last)


def test_no_pickle_anywhere_in_training() -> None:
    # Checkpoints are safetensors + JSON only: nothing in the package may unpickle, except
    # the one restricted read of a user's .pth state_dict (--init) in weights.py.
    package = Path(tritondsl.train.__file__).parent
    allowed = 'torch.load(path, map_location="cpu", weights_only=True)'
    assert (package / "weights.py").read_text().count(allowed) == 1
    for path in package.glob("*.py"):
        text = path.read_text().replace(allowed, "")
        assert not re.search(r"import pickle|pickle\.|torch\.load\(|torch\.save\(", text), path.name
