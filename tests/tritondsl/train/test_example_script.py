"""examples/train_fashion_mnist.py runs (on synthetic data here, so no package is needed)."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_example_script(tmp_path: Path) -> None:
    script = runpy.run_path(str(ROOT / "examples" / "train_fashion_mnist.py"))
    best = script["main"](["--data", "synthetic", "--limit-train", "64", "--output", str(tmp_path)])
    last = tmp_path / "checkpoints" / "last"
    assert "model FashionCNN" in (last / "model.tdsl").read_text()
    # What it returns is the run's recorded best: the one epoch's test accuracy, as the
    # metrics log and the best checkpoint both say.
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    state = json.loads((tmp_path / "checkpoints" / "best" / "trainer_state.json").read_text())
    assert best == record["test_acc"] == state["best_test_acc"]
    assert (tmp_path / "training_curves.png").is_file()
