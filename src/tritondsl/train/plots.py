"""PNG plots of a run: ``training_curves.png`` (loss, accuracy) and ``sparsity.png``.

Figures are drawn on matplotlib's Agg canvas directly, so no global backend is switched
and no display is needed. matplotlib is the ``plots`` extra: without it ``MISSING`` says
what to install and the trainer skips the plots (its logs have the same numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritondsl.files import open_atomically

try:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    MISSING = None
except ImportError:
    MISSING = "plots need matplotlib: pip install 'tritondsl[plots]'"

History = list[dict[str, Any]]


def training_curves(history: History, path: Path) -> None:
    """Write ``curves_figure(history)`` as a PNG."""
    _save(curves_figure(history), path)


def sparsity(history: History, path: Path) -> None:
    """Write ``sparsity_figure(history)`` as a PNG."""
    _save(sparsity_figure(history), path)


def curves_figure(history: History) -> Figure:
    """Loss and accuracy per epoch, train and test."""
    figure = Figure(figsize=(10, 4), dpi=100)
    epochs = [h["epoch"] for h in history]
    loss_ax, acc_ax = figure.subplots(1, 2)
    for split in ("train", "test"):
        loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
        acc_ax.plot(epochs, [100 * h[f"{split}_acc"] for h in history], marker="o", label=split)
    loss_ax.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="accuracy", xlabel="epoch", ylabel="%")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        _epoch_axis(ax, epochs)
    # Fixed margins: tight_layout costs more than drawing the plot.
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    return figure


def sparsity_figure(history: History) -> Figure:
    """Fraction of zero trits and mean scale of each ternary layer, per epoch."""
    figure = Figure(figsize=(10, 6), dpi=100)
    zero_ax, scale_ax = figure.subplots(2, 1, sharex=True)
    layers = list(history[-1]["ternary"]) if history else []
    epochs = [h["epoch"] for h in history]
    for layer in layers:
        rows = [h["ternary"].get(layer, {}) for h in history]
        zero_ax.plot(epochs, [r.get("zero_fraction") for r in rows], marker="o", label=layer)
        scale_ax.plot(epochs, [r.get("scale") for r in rows], marker="o", label=layer)
    zero_ax.set(title="ternary layers: fraction of zero trits", ylabel="zeros")
    scale_ax.set(title="ternary layers: mean scale", xlabel="epoch", ylabel="scale")
    _epoch_axis(scale_ax, epochs)
    if layers:
        zero_ax.set_ylim(0, 1)
        columns = 1 + len(layers) // 16
        zero_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small",
                       ncols=columns)  # fmt: skip
    else:
        zero_ax.text(0.5, 0.5, "no ternary layers in this model", ha="center", va="center",
                     transform=zero_ax.transAxes)  # fmt: skip
    for ax in (zero_ax, scale_ax):
        ax.grid(alpha=0.3)
    figure.subplots_adjust(left=0.08, right=0.72 if layers else 0.97, bottom=0.09, top=0.94,
                           hspace=0.25)  # fmt: skip
    return figure


def _epoch_axis(ax: Axes, epochs: list[int]) -> None:
    """Whole epochs only, with room around a single point."""
    if not epochs:
        return
    low, high = min(epochs), max(epochs)
    if high - low < 15:
        ax.set_xticks(range(low, high + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(low - 0.5, high + 0.5)


def _save(figure: Figure, path: Path) -> None:
    with open_atomically(path) as file:  # a reader never sees half a PNG
        FigureCanvasAgg(figure).print_png(file)
