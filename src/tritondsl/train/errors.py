"""The errors training reports to users (the CLI prints them and exits 1)."""

from __future__ import annotations


class TrainingError(Exception):
    """A problem with the user's input or the run itself; the message says what to do."""


class DataError(TrainingError):
    """Unknown dataset, missing data package, or data that does not fit the model."""


class CheckpointError(TrainingError):
    """A checkpoint that does not exist, cannot be read, or does not fit this run."""


class NonFiniteError(TrainingError):
    """The loss or a gradient became NaN/Inf; names the step and the layer."""

    def __init__(self, message: str, step: int, layer: str | None) -> None:
        super().__init__(message)
        self.step, self.layer = step, layer
