"""Quantization-aware training of .tdsl models: ``Trainer(TrainConfig(...)).fit()``.

See docs/training.md. The CLI front end is ``tritondsl train``.
"""

from __future__ import annotations

from tritondsl.train.checkpoint import to_hub
from tritondsl.train.config import (
    CheckpointError,
    DataError,
    NonFiniteError,
    TrainConfig,
    TrainingError,
)
from tritondsl.train.trainer import Trainer

__all__ = [
    "CheckpointError",
    "DataError",
    "NonFiniteError",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "to_hub",
]
