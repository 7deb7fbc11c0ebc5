"""Both plots are real PNG images, with and without ternary layers."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image

from tritondsl.train import plots


def epoch(n: int, ternary: dict[str, dict[str, float]]) -> dict:
    return {"epoch": n, "train_loss": 2.0 / n, "test_loss": 2.1 / n, "train_acc": 0.3 * n,
            "test_acc": 0.28 * n, "ternary": ternary}  # fmt: skip


def image(path: Path) -> tuple[int, int, float]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)
    return pixels.shape[0], pixels.shape[1], float(pixels.std())


def test_training_curves_png(tmp_path: Path) -> None:
    plots.training_curves([epoch(1, {}), epoch(2, {})], tmp_path / "curves.png")
    height, width, spread = image(tmp_path / "curves.png")
    assert (height, width) == (400, 1000) and spread > 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary left


def test_sparsity_png_with_and_without_ternary_layers(tmp_path: Path) -> None:
    layers = {f"block{i}.conv": {"zero_fraction": 0.3 + i / 100, "scale": 0.02} for i in range(20)}
    plots.sparsity([epoch(1, layers), epoch(2, layers)], tmp_path / "many.png")
    plots.sparsity([epoch(1, {})], tmp_path / "none.png")
    many, none = image(tmp_path / "many.png"), image(tmp_path / "none.png")
    assert many[:2] == none[:2] == (600, 1000)
    assert many[2] > none[2] > 0.01  # twenty coloured lines and a legend vs a note
