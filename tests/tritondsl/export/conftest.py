"""Shared fixtures of the export tests: one torch thread, MixedNet, one release bundle."""

from __future__ import annotations

from collections.abc import Iterator
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
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``)."""
    # Small inputs gain nothing from threads; two OpenMP threads on a busy 2-core machine
    # made exports about 3x slower. Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mixed() -> torch.nn.Module:
    """MixedNet: TWN per channel, Learned, AbsMean per tensor, int8 and fp16 layers."""
    torch.manual_seed(0)
    return tritondsl.load_model(MIXED)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """MixedNet's release bundle, built once; tests that change it work on a copy."""
    model = randomize_norms(tritondsl.load_model(MIXED))
    out = tmp_path_factory.mktemp("release") / "mixednet-v1.0.0"
    return out, build_release(model, out, EXAMPLE, version="v1.0.0")
