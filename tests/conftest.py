"""Shared fixtures: paths to the project's example and zoo programs; a clean logger per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "models").glob("*.tdsl"))
EXAMPLES = sorted((ROOT / "examples").glob("*.tdsl"))
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(autouse=True)
def _fresh_tritondsl_logger() -> Iterator[None]:
    """Undo what a CLI run does to the "tritondsl" logger (handler, level, no propagation),
    so caplog sees its records in every later test."""
    log = logging.getLogger("tritondsl")
    saved = (list(log.handlers), log.level, log.propagate)
    yield
    log.handlers[:], log.level, log.propagate = saved
