"""Shared fixtures: paths to the project's example and zoo programs."""

from __future__ import annotations

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
