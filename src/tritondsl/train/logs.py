"""Per-epoch logs (``metrics.csv``, ``metrics.jsonl``) and the console: progress bars, lines.

Lines go through ``logging`` (logger ``tritondsl.train``: info for epoch lines, warning for
gradient reports); the ``tritondsl`` CLI shows them on stderr, ``-q`` hides the info ones.
Library users see them after ``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tritondsl.files import write_atomically

log = logging.getLogger("tritondsl.train")
CSV_FILE, JSON_FILE = "metrics.csv", "metrics.jsonl"
CSV_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
    "samples_per_s", "epoch_s", "peak_rss_mb", "cuda_peak_mb",
)  # fmt: skip


def write_logs(out: Path, history: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> None:
    """Rewrite both logs from the whole history (a resumed run keeps them consistent);
    ``extra`` columns follow the usual ones in metrics.csv (a language model's perplexity)."""
    table = io.StringIO()
    columns = (*CSV_COLUMNS, *extra)
    writer = csv.DictWriter(table, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_atomically(out / CSV_FILE, table.getvalue())
    write_atomically(out / JSON_FILE, "".join(json.dumps(h) + "\n" for h in history))


class Reporter:
    """Console output of rank 0; silent on other ranks."""

    def __init__(self, enabled: bool, progress: bool) -> None:
        self.enabled, self.progress = enabled, progress
        self.console = Console(stderr=True, highlight=False)

    def line(self, text: str) -> None:
        """Log an info line."""
        if self.enabled:
            log.info("%s", text)

    def warn(self, text: str) -> None:
        """Log a warning line."""
        if self.enabled:
            log.warning("%s", text)

    @contextmanager
    def epoch_bar(
        self, epoch: int, epochs: int, steps: int, unit: str = "samples"
    ) -> Iterator[EpochBar]:
        """A progress bar over one epoch's steps: loss, accuracy, ``unit``/s, peak memory."""
        # Bars are for terminals: in a CI log or a pipe the epoch lines say it all.
        shown = self.console.is_terminal and log.isEnabledFor(logging.INFO)
        if not (self.enabled and self.progress and shown):
            yield EpochBar(None, None)
            return
        progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}  "
                "{task.fields[sps]:,.0f} " + unit + "/s  peak RSS {task.fields[rss]:,.0f} MiB"
            ),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,  # the epoch's summary line takes its place
        )
        task = progress.add_task("train", total=steps, loss=0.0, acc=0.0, sps=0.0, rss=0.0)
        with progress:
            yield EpochBar(progress, task)


class EpochBar:
    """Handle to update one epoch's bar (does nothing when bars are off)."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress, self._task = progress, task

    def update(self, loss: float, acc: float, sps: float, rss: float) -> None:
        """Advance one step and show the running figures."""
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=loss, acc=acc, sps=sps, rss=rss)
