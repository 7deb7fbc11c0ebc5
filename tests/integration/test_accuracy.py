"""Real-data accuracy: ternary QAT keeps fp32's accuracy (with float or 8-bit
activations); a broken STE does not.

Fashion-MNIST comes from Debian's dataset-fashion-mnist package, which `make test`
installs (`make data`). Each variant trains in its own single-threaded process,
all at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _train(variants: tuple[str, ...], data: str, epochs: int, out: Path) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # All at once: three single-threaded runs on two cores finish in ~1.5 run-lengths,
    # where running them two by two would leave a core idle for the last one.
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.accuracy",
                               "--variant", v, "--data", data, "--epochs", str(epochs),
                               "--output", str(out)], cwd=ROOT, env=env) for v in variants]
    assert [p.wait(timeout=3600) for p in procs] == [0] * len(variants)
    results = {v: json.loads((out / f"{v}.json").read_text()) for v in variants}
    print({v: f"{r['test_accuracy']:.2%}" for v, r in results.items()})
    return results


def test_fashion_mnist_three_epochs(tmp_path: Path) -> None:
    r = _train(("fp32", "ternary", "broken_ste"), "fashion-mnist", 3, tmp_path)
    fp32, ternary = r["fp32"]["test_accuracy"], r["ternary"]["test_accuracy"]
    assert ternary >= fp32 - 0.015
    assert ternary >= 0.86
    assert r["broken_ste"]["test_accuracy"] <= ternary - 0.08
    # every ternary tensor holds exactly three values per scale group
    assert r["ternary"]["values_per_scale_group"] == [3]


def test_fashion_mnist_5k_smoke(tmp_path: Path) -> None:
    # 8 epochs of 4,000 images (250 steps): Fashion-MNIST needs them where the MNIST-digit
    # subset this smoke once used reached 80% in 2 (measured on fashion-mnist-5k, seed 0:
    # ternary 72.4% after 2 epochs, 76.4% after 4, 83.4% after 8; broken STE 62.1%).
    r = _train(("ternary", "a8", "broken_ste"), "fashion-mnist-5k", 8, tmp_path)
    ternary = r["ternary"]["test_accuracy"]
    assert ternary >= 0.80
    assert r["broken_ste"]["test_accuracy"] <= ternary - 0.08
    assert r["ternary"]["values_per_scale_group"] == [3]
    # 8-bit inputs, trained or only calibrated, cost little (the full measurement is
    # `python -m tests.integration.accuracy`, on all of Fashion-MNIST).
    assert r["a8"]["test_accuracy"] >= ternary - 0.03
    assert r["a8"]["values_per_scale_group"] == [3]
    calibrated = json.loads((tmp_path / "a8_calibrated.json").read_text())
    assert calibrated["calibration_batches"] == 16
    assert calibrated["float_inputs_accuracy"] == ternary  # the best checkpoint, reloaded
    assert calibrated["test_accuracy"] >= ternary - 0.03
