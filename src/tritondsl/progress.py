"""Progress of steps that take more than a few seconds (export checks, uploads, benchmarks).

    with task("checking in onnxruntime", total=3) as advance:
        for setting in settings:
            ...
            advance()

On a terminal, and unless logging is quieter than INFO (``tritondsl -q``), this shows a
rich spinner (with a bar when ``total`` is given) on stderr that vanishes when the step
ends; a task started inside another joins the same display. Every task also logs a debug
line with its time (``tritondsl -v``), so pipes and CI logs can see where time goes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

log = logging.getLogger(__name__)
_active: list[Progress] = []  # the display tasks join while one is shown


def _display() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _shown(console: Console) -> bool:
    return console.is_terminal and logging.getLogger("tritondsl").isEnabledFor(logging.INFO)


@contextmanager
def task(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Show ``description`` while the block runs; the value advances the bar by n (1)."""
    start = time.perf_counter()
    progress = _active[-1] if _active else None
    owner = progress is None and _shown(Console(stderr=True))
    if owner:
        progress = _display()
        progress.start()
        _active.append(progress)
    try:
        if progress is None:
            yield lambda n=1: None
            return
        bar = progress.add_task(description, total=total)
        try:
            yield lambda n=1: progress.advance(bar, n)
        finally:
            progress.remove_task(bar)
    finally:
        if owner and progress is not None:
            _active.remove(progress)
            progress.stop()
        log.debug("%s: %.2f s", description, time.perf_counter() - start)
