"""Shared set-up of the training tests: one thread, a tiny model, a config factory."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import ROOT
from tritondsl.train import TrainConfig

MLP = str(ROOT / "examples" / "ternary_mlp.tdsl")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, and a shared 2-core machine stays predictable."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def train_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The training log lines (info and up) of the test."""
    with caplog.at_level(logging.INFO, logger="tritondsl.train"):
        yield caplog


def tiny(out: Path, **overrides: Any) -> TrainConfig:
    """A ternary MLP (one hidden layer of 16, dropout 0.1) on 256 synthetic samples."""
    values: dict[str, Any] = {
        "source": MLP, "params": {"hidden": [16]}, "data": "synthetic", "epochs": 2,
        "batch_size": 32, "limit_train": 256, "limit_test": 128, "out": out,
        "progress": False,
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes (to prove nothing changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
