"""Shared fixtures of the export tests: one release bundle, built once per module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import tritondsl
from tritondsl.export.release import build_release

from .test_hub import MIXED, randomize_norms

BUNDLE = {"config.json", "model.safetensors", "model.tdsl", "README.md", "model.onnx"}
EXAMPLE = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """MixedNet's release bundle, built once; tests that change it work on a copy."""
    model = randomize_norms(tritondsl.load_model(MIXED))
    out = tmp_path_factory.mktemp("release") / "mixednet-v1.0.0"
    return out, build_release(model, out, EXAMPLE, version="v1.0.0")
