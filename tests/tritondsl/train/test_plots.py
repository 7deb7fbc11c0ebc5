"""The plots draw exactly the recorded series, and are written as real PNG images."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tritondsl.train import plots

HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "test_loss": 2.5, "train_acc": 0.25, "test_acc": 0.2,
     "ternary": {"conv1": {"zero_fraction": 0.3, "scale": 0.02},
                 "fc": {"zero_fraction": 0.4, "scale": 0.05}}},
    {"epoch": 2, "train_loss": 1.0, "test_loss": 1.5, "train_acc": 0.5, "test_acc": 0.45,
     "ternary": {"conv1": {"zero_fraction": 0.35, "scale": 0.01},
                 "fc": {"zero_fraction": 0.5, "scale": 0.04}}},
]  # fmt: skip


def lines(axes) -> dict[str, list[tuple[float, float]]]:
    """Each labelled line of ``axes`` as its (x, y) points."""
    return {line.get_label(): [tuple(p) for p in line.get_xydata()] for line in axes.lines}


def test_training_curves_plot_the_recorded_losses_and_accuracies_in_percent() -> None:
    loss, accuracy = plots.curves_figure(HISTORY).axes
    assert lines(loss) == {"train": [(1, 2.0), (2, 1.0)], "test": [(1, 2.5), (2, 1.5)]}
    assert lines(accuracy) == {"train": [(1, 25.0), (2, 50.0)], "test": [(1, 20.0), (2, 45.0)]}
    assert [tick for tick in loss.get_xticks()] == [1, 2]  # whole epochs only


def test_sparsity_plots_each_ternary_layer() -> None:
    zeros, scales = plots.sparsity_figure(HISTORY).axes
    assert lines(zeros) == {"conv1": [(1, 0.3), (2, 0.35)], "fc": [(1, 0.4), (2, 0.5)]}
    assert lines(scales) == {"conv1": [(1, 0.02), (2, 0.01)], "fc": [(1, 0.05), (2, 0.04)]}
    assert zeros.get_ylim() == (0, 1)


def test_sparsity_without_ternary_layers_says_so() -> None:
    zeros, scales = plots.sparsity_figure([{**HISTORY[0], "ternary": {}}]).axes
    assert not zeros.lines and not scales.lines
    assert [t.get_text() for t in zeros.texts] == ["no ternary layers in this model"]


def test_pngs_are_written_atomically_at_their_size(tmp_path: Path) -> None:
    plots.training_curves(HISTORY, tmp_path / "curves.png")
    plots.sparsity(HISTORY, tmp_path / "sparsity.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "sparsity.png"]
    curves = matplotlib.image.imread(tmp_path / "curves.png")
    assert curves.shape[:2] == (400, 1000)
    assert matplotlib.image.imread(tmp_path / "sparsity.png").shape[:2] == (600, 1000)
    # The first default colour (C0, #1f77b4) is the train line: drawn, so in the pixels.
    blue = np.all(np.abs(curves[..., :3] - [0x1F / 255, 0x77 / 255, 0xB4 / 255]) < 0.02, axis=-1)
    assert blue.sum() > 100


def test_without_matplotlib_training_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.tritondsl.train.conftest import tiny
    from tritondsl.train import Trainer

    monkeypatch.setattr(plots, "MISSING", "plots need matplotlib: pip install 'tritondsl[plots]'")
    with caplog.at_level("WARNING", logger="tritondsl.train"):
        Trainer(tiny(tmp_path / "run", epochs=2)).fit()
    warned = [r.message for r in caplog.records if "matplotlib" in r.message]
    assert warned == ["plots need matplotlib: pip install 'tritondsl[plots]'; "
                      "metrics.csv has the same numbers"]  # fmt: skip
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert not list((tmp_path / "run").glob("*.png"))
