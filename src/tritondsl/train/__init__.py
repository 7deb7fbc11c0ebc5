"""Quantization-aware training of .tdsl models: ``Trainer(TrainConfig(...)).fit()``.

See docs/training.md. The CLI front end is ``tritondsl train``. Members load on first
use, so the torch-free parts (``config``, ``errors``) import without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CheckpointError": "tritondsl.train.errors",
    "DataError": "tritondsl.train.errors",
    "NonFiniteError": "tritondsl.train.errors",
    "TrainingError": "tritondsl.train.errors",
    "TrainConfig": "tritondsl.train.config",
    "Trainer": "tritondsl.train.trainer",
    "to_hub": "tritondsl.train.checkpoint",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Load a member's module on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tritondsl.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
