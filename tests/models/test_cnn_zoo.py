"""The CNN zoo: torchvision's layouts and functions, where precision is kept, ONNX export.

State_dict layouts are checked in tests/compiler/test_check.py (front end only); here the
built models are run against the independent functional forwards of tests/reference_nets.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import tritondsl
from tests import reference_nets as ref
from tritondsl.compiler.check import check_file
from tritondsl.export.api import to_onnx
from tritondsl.models import zoo_path

CNNS = ["resnet50", "vgg11_bn", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
        "unet"]


def randomize_batchnorm(model: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so BN layout errors show."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


FUNCTIONS: list[tuple[str, Callable, dict, tuple[int, ...]]] = [
    ("resnet50", ref.resnet50, {}, (2, 3, 64, 64)),
    ("mobilenet_v3_small", functools.partial(ref.mobilenet_v3, "small"), {}, (2, 3, 64, 64)),
    ("mobilenet_v3_small", functools.partial(ref.mobilenet_v3, "small", width_mult=0.75),
     {"width_mult": 0.75}, (2, 3, 48, 40)),
    ("mobilenet_v3_large", functools.partial(ref.mobilenet_v3, "large"), {}, (2, 3, 64, 64)),
    ("efficientnet_b0", ref.efficientnet_b0, {}, (2, 3, 64, 64)),
    ("unet", ref.unet, {"in_channels": 3, "num_classes": 5, "width": 8}, (2, 3, 32, 48)),
    ("unet", functools.partial(ref.unet, depth=3), {"depth": 3, "width": 16}, (1, 1, 12, 20)),
    pytest.param("vgg11_bn", ref.vgg11_bn, {"num_classes": 10}, (2, 3, 32, 32),
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "reference", "args", "shape"), FUNCTIONS,
                         ids=["resnet50", "mobilenet_v3_small", "mobilenet_v3_small-0.75",
                              "mobilenet_v3_large", "efficientnet_b0", "unet-width8",
                              "unet-depth3", "vgg11_bn"])
def test_fp32_model_computes_the_reference_function(name: str, reference: Callable, args: dict,
                                                    shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model(name, precision="fp32", **args).eval()
    randomize_batchnorm(model)
    x = torch.randn(shape)
    with torch.no_grad():
        expected = reference(model.state_dict(), x)
        got = model(x)
    assert got.shape == expected.shape
    relative = (got - expected).abs().max() / expected.abs().max()
    assert relative < 1e-5, f"relative error {relative:.2e}"


def test_unet_has_the_paper_parameter_counts() -> None:
    counts = {}
    for args in ({}, {"in_channels": 3}, {"bilinear": True}):
        checked = check_file(zoo_path("unet"), args={"UNet": args}, sizes={"H": 64, "W": 96})
        (info,) = checked.models.values()
        assert info.output.shape == ("N", 2, 64, 96)  # padded convs: output size = input size
        counts[str(args)] = info.num_parameters()
    assert counts["{}"] == 31_030_658
    assert counts["{'in_channels': 3}"] == 31_031_810
    # bilinear: a 1x1 conv instead of each 2x2 transposed conv (3 fewer weights per pair)
    assert counts["{'bilinear': True}"] == 31_030_658 - 3 * sum(
        (64 * 2**i) * (32 * 2**i) for i in range(1, 5))


@pytest.mark.parametrize("name", CNNS)
def test_ternary_model_keeps_the_first_conv_and_the_classifier_full_precision(name: str) -> None:
    (info,) = check_file(zoo_path(name)).models.values()
    layers = [m for m in info.modules() if m.precision is not None]
    first, last = layers[0], layers[-1]
    assert first.kind == "Conv2d" and first.precision.kind == "fp32"
    assert last.precision.kind == "fp32"
    inner = [m for m in layers[1:-1] if not m.path.startswith("classifier.")]
    assert inner and all(m.precision.kind == "ternary" for m in inner)
    if name == "vgg11_bn":  # the 4096-wide hidden layers hold most weights: ternary
        assert [m.precision.kind for m in layers if m.path.startswith("classifier")] == [
            "ternary", "ternary", "fp32"]


EXPORTS = [
    ("resnet50", {"num_classes": 10}, (1, 3, 32, 32)),
    ("mobilenet_v3_small", {"num_classes": 10}, (1, 3, 32, 32)),
    ("mobilenet_v3_large", {"num_classes": 10}, (1, 3, 32, 32)),
    ("efficientnet_b0", {"num_classes": 10}, (1, 3, 32, 32)),
    ("unet", {"width": 8, "depth": 3}, (1, 1, 16, 16)),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "args", "shape"), EXPORTS, ids=[e[0] for e in EXPORTS])
def test_ternary_model_exports_to_onnx_and_verifies_in_onnxruntime(
        name: str, args: dict, shape: tuple[int, ...], tmp_path: Path) -> None:
    model = tritondsl.load_model(name, **args).eval()
    randomize_batchnorm(model)
    sizes = {}
    for form in ("int2", "packed", "float"):
        report = to_onnx(model, tmp_path / f"{name}-{form}.onnx", torch.randn(*shape),
                         weights=form)
        assert report.verified and report.ok, report.lines()
        sizes[form] = report.file_bytes
    assert sizes["int2"] < sizes["float"] and sizes["packed"] < sizes["float"]
