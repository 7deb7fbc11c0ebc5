"""Side-by-side timing for the benchmarks: round-robin rounds, min and median of each series.

Each round runs every variant once and the starting variant rotates, so machine noise (this
kind of host swings 2x) hits all of them alike; the minimum is what the code can do, the
median what a busy machine gives.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch


class Eager:
    """An eager model with onnxruntime's ``run`` signature, so one timer serves both."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()

    def run(self, _outputs: None, feed: dict[str, np.ndarray]) -> object:
        """One forward pass without autograd."""
        with torch.inference_mode():
            return self.model(torch.from_numpy(next(iter(feed.values()))))


def interleaved(sessions: dict[str, Any], feeds: dict[str, dict], rounds: int,
                warmup: int = 3) -> dict[str, tuple[float, float]]:  # fmt: skip
    """(min, median) seconds of one ``run`` of each session, measured round-robin."""
    for name, session in sessions.items():  # warm-up: allocations, first-run caches
        for _ in range(warmup):
            session.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for round_ in range(rounds):
        shift = round_ % len(order)
        for name in order[shift:] + order[:shift]:
            start = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append(time.perf_counter() - start)
    return {name: (min(v), statistics.median(v)) for name, v in times.items()}
