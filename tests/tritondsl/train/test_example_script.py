"""examples/train_fashion_mnist.py runs (on synthetic data here, so no package is needed)."""

from __future__ import annotations

import runpy
from pathlib import Path

from tests.conftest import ROOT


def test_example_script(tmp_path: Path) -> None:
    script = runpy.run_path(str(ROOT / "examples" / "train_fashion_mnist.py"))
    best = script["main"](["--data", "synthetic", "--limit-train", "64", "--output", str(tmp_path)])
    last = tmp_path / "checkpoints" / "last"
    assert "model FashionCNN" in (last / "model.tdsl").read_text()
    assert 0 <= best <= 1 and (tmp_path / "training_curves.png").is_file()
