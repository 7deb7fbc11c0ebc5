"""A corrupted trainer_state.json or RNG file gets one CheckpointError naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from tests.tritondsl.train.conftest import tiny
from tritondsl.train import CheckpointError, Trainer, TrainingError
from tritondsl.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with one epoch trained (its checkpoints/last is what tests corrupt)."""
    folder = tmp_path_factory.mktemp("state") / "run"
    torch.set_num_threads(1)
    Trainer(tiny(folder, stop_after=1)).fit()
    return folder


def corrupted(run: Path, target: Path, state: Any = None,
              rng: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
    """A copy of the run's last checkpoint with another state and/or RNG tensors."""
    folder = target / "ckpt"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(run / "checkpoints" / "last", folder)
    if state is not None:
        (folder / ckpt.STATE_FILE).write_text(json.dumps(state))
    if rng is not None:
        save_file(rng, folder / ckpt.RNG_FILE)
    return folder


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a JSON value (the long RNG word lists by a few entries only)."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index in sorted({0, 1, len(value) - 1} & set(range(len(value)))):
            found += paths(value[index], (*prefix, index))
    return found


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=3),
    max_leaves=6,
)  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(data=st.data())
def test_any_one_field_changed_or_removed_is_refused_or_resumes(
    run: Path, tmp_path: Path, data: st.DataObject
) -> None:
    state = json.loads((run / "checkpoints" / "last" / ckpt.STATE_FILE).read_text())
    path = data.draw(st.sampled_from(paths(state)))
    *parents, last = path
    holder = state
    for key in parents:
        holder = holder[key]
    if data.draw(st.booleans()):
        if isinstance(holder, dict):
            del holder[last]
        else:
            holder.pop(last)
    else:
        holder[last] = data.draw(JSON_VALUES)
    folder = corrupted(run, tmp_path, state=state)
    try:
        checkpoint = ckpt.read(folder)
    except CheckpointError as error:
        assert str(folder / ckpt.STATE_FILE) in str(error) or str(folder) in str(error)
        assert "\n" not in str(error)
        return
    # What reading accepts, resuming either uses or refuses with a TrainingError.
    try:
        trainer = Trainer(tiny(tmp_path / "out", resume=checkpoint.path, epochs=2))
        ckpt.restore_rng(checkpoint)
        ckpt.card(checkpoint)
    except TrainingError:
        return
    assert trainer.epoch == checkpoint.state["epoch"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("rank0.torch"), r"rank0\.torch is missing"),
        (lambda t: t.update({"rank0.torch": torch.zeros(5056, dtype=torch.uint8)}),
         "not a torch RNG state"),
        (lambda t: t.update({"rank0.torch": torch.zeros(10, dtype=torch.uint8)}),
         r"rank0\.torch must be torch\.uint8 \[5056\]"),
        (lambda t: t.update({"rank0.numpy": t["rank0.numpy"].float()}),
         r"rank0\.numpy must be torch\.int64"),
        (lambda t: t.update({"rank0.numpy": t["rank0.numpy"] - 2**40}), "outside 0..2"),
    ],
)  # fmt: skip
def test_a_garbage_rng_file_is_refused(run: Path, tmp_path: Path, change: Any,
                                       message: str) -> None:  # fmt: skip
    tensors = load_file(run / "checkpoints" / "last" / ckpt.RNG_FILE)
    change(tensors)
    with pytest.raises(CheckpointError, match=message):
        ckpt.read(corrupted(run, tmp_path, rng=tensors))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update(epoch="1"), "epoch must be an integer, not '1'"),
        (lambda s: s.pop("step"), "step is missing"),
        (lambda s: s.update(best_epoch=5), r"best_epoch must be 0\.\.1, not 5"),
        (lambda s: s["config"].update(epochs="3"), "config.epochs must be int"),
        (lambda s: s["config"].update(optimizer="lion"), "unknown optimizer 'lion'"),
        (lambda s: s["history"][0].update(test_acc="high"), r"history\[0\]\.test_acc must be"),
        (lambda s: s["optimizer"]["state"].update({"99": {}}), r"optimizer\.state\.99 names no"),
        (lambda s: s["rng"][0]["python"][1].pop(), r"rng\[0\]\.python\[1\] must hold 625"),
        (lambda s: s["rng"][0]["numpy"].__setitem__(1, 700), r"rng\[0\]\.numpy\[1\] must be"),
        (lambda s: s.update(rng=[]), "rng is empty"),
    ],
)  # fmt: skip
def test_each_bad_field_is_named(run: Path, tmp_path: Path, edit: Any, message: str) -> None:
    state = json.loads((run / "checkpoints" / "last" / ckpt.STATE_FILE).read_text())
    edit(state)
    with pytest.raises(CheckpointError, match=message):
        ckpt.read(corrupted(run, tmp_path, state=state))
