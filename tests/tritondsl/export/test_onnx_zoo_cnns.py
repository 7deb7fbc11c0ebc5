"""Issue 15's zoo CNNs in ONNX Runtime: fp32 files compute what PyTorch computes, int2 files
what the deployed ternary model computes, W1.58A8 files follow the PyTorch W1.58A8 model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tritondsl
from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_int8 import export_int8
from tritondsl.export.onnx_session import onnx_session

from .test_hub import randomize_norms

SLOW = pytest.mark.slow
# name, load_model arguments, input (C, H, W): the smallest each model's ONNX export allows
# (VGG's AdaptiveAvgPool2d((7, 7)) needs a multiple of 7x7 after five halvings: 224x224)
MODELS: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    "resnet50": ({"num_classes": 10}, (3, 32, 32)),
    "vgg11_bn": ({"num_classes": 10}, (3, 224, 224)),
    "mobilenet_v3_small": ({"num_classes": 10}, (3, 32, 32)),
    "mobilenet_v3_large": ({"num_classes": 10}, (3, 32, 32)),
    "efficientnet_b0": ({"num_classes": 10}, (3, 32, 32)),
    "unet": ({"width": 8}, (1, 32, 32)),
}
FAST = {"mobilenet_v3_small", "unet"}


def _params(fast: set[str]) -> list[Any]:
    return [n if n in fast else pytest.param(n, marks=SLOW) for n in MODELS]


def _load(name: str, **overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_norms(tritondsl.load_model(name, **MODELS[name][0], **overrides)).eval()


def _input(name: str, batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, *MODELS[name][1], generator=torch.Generator().manual_seed(seed))


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    session = onnx_session(path)
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _relative_error(got: np.ndarray, expected: torch.Tensor) -> float:
    return float(np.abs(got - expected.numpy()).max() / expected.abs().max())


@pytest.mark.parametrize("name", _params(FAST))
def test_fp32_file_computes_what_pytorch_computes(name: str, tmp_path: Path) -> None:
    model = _load(name, precision="fp32")
    export_onnx(model, tmp_path / "m.onnx", _input(name, 1, 0), "float")
    x = _input(name, 2, 1)
    with torch.no_grad():
        expected = model(x)
    assert _relative_error(_run(tmp_path / "m.onnx", x), expected) < 1e-4


@pytest.mark.parametrize("name", _params(FAST))
def test_int2_file_computes_what_the_deployed_model_computes(name: str, tmp_path: Path) -> None:
    model = _load(name)
    export_onnx(model, tmp_path / "m.onnx", _input(name, 1, 0), "int2")
    x = _input(name, 2, 1)
    with torch.no_grad():
        expected = tritondsl.deploy(copy.deepcopy(model))(x)
    assert _relative_error(_run(tmp_path / "m.onnx", x), expected) < 1e-4


@pytest.mark.parametrize("name", _params(FAST))
def test_w158a8_file_follows_the_pytorch_w158a8_model(name: str, tmp_path: Path) -> None:
    # U-Net's 2-channel 1x1 output conv has no int8 kernel onnxruntime would pick: kept float
    float_layers = ("outc",) if name == "unet" else ()
    calibration = [_input(name, 4, seed) for seed in (2, 3)]
    result = export_int8(_load(name), tmp_path / "m.onnx", _input(name, 1, 0), calibration,
                         float_layers=float_layers)  # fmt: skip
    x = _input(name, 4, 5)
    with torch.no_grad():
        expected = result.reference(x)
    assert _relative_error(_run(result.path, x), expected) <= 0.05
    assert set(result.float_layers) >= set(float_layers)
