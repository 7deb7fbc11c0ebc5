"""The whole toolchain on the showcase models, from their real .tdsl text.

check -> compile -> forward (32x32 and 224x224) -> backward -> a few QAT steps -> deploy ->
ONNX (every weight form, verified) -> TorchScript / torch.export -> Hub folder round trip.
Measured peak memory and bytes go to integration_report.json in the test's temp folder.
"""

from __future__ import annotations

import copy
import json
import math
import resource
from pathlib import Path

import pytest
import torch

import tritondsl
from tests.conftest import ROOT
from tests.reference_nets import mobilenet_v2_parameter_count
from tritondsl.compiler.check import check_source, verify
from tritondsl.export import to_onnx, to_pt2, to_torchscript

pytestmark = pytest.mark.slow
ZOO = {"resnet18": "ResNet18", "mobilenetv2": "MobileNetV2"}


def _expected_deployed_bytes(source: str) -> int:
    """Deployed state_dict bytes from the front end's prediction alone: 2-bit codes
    (ceil(K/4) bytes per output channel) plus an fp32 scale per channel for ternary
    layers, 4 bytes per float and 8 per int64 everywhere else."""
    (info,) = check_source(source).models.values()
    ternary = {m.path: m for m in info.modules()
               if m.precision is not None and m.precision.kind == "ternary"}
    total = 0
    for item in info.state_dict():
        layer, _, leaf = item.name.rpartition(".")
        if layer in ternary and leaf == "weight":
            n, k = item.shape[0], math.prod(item.shape[1:])
            total += n * math.ceil(k / 4) + 4 * n
        else:
            total += math.prod(item.shape) * (8 if item.dtype == "int64" else 4)
    return total


@pytest.mark.parametrize("zoo", sorted(ZOO))
def test_toolchain_end_to_end(zoo: str, tmp_path: Path) -> None:
    source = (ROOT / "models" / f"{zoo}.tdsl").read_text()
    checked = check_source(source, f"{zoo}.tdsl")
    verify(checked)
    program = tritondsl.compile(source)
    torch.manual_seed(0)
    model = program.build(ZOO[zoo], num_classes=10)

    # forward at CIFAR and ImageNet sizes; output shape as the front end inferred
    for size in (32, 224):
        (info,) = check_source(source, args={ZOO[zoo]: {"num_classes": 10}},
                               sizes={"H": size, "W": size}).models.values()
        out = model(torch.randn(2, 3, size, size))
        assert tuple(out.shape) == (2, *info.output.shape[1:])

    # backward reaches every parameter; a few QAT steps on one batch lower the loss
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert missing == []
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    # deployed (2-bit packed) equals the training-mode model in eval
    model.eval()
    deployed = tritondsl.deploy(copy.deepcopy(model))
    example = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deployed(example), model(example), rtol=1e-5, atol=1e-5)
    packed = sum(t.numel() * t.element_size() for t in deployed.state_dict().values())
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values())
    assert packed == _expected_deployed_bytes(source.replace("num_classes: int = 1000",
                                                             "num_classes: int = 10"))

    # every ONNX weight form passes onnxruntime verification at both optimization levels
    sizes = {}
    for form in ("int2", "packed", "float"):
        report = to_onnx(model, tmp_path / f"{zoo}-{form}.onnx", example, weights=form)
        assert report.verified and report.ok, report.lines()
        sizes[form] = report.file_bytes
    assert sizes["int2"] < sizes["float"] and sizes["packed"] < sizes["float"]

    # TorchScript and torch.export reload and match
    for export in (to_torchscript, to_pt2):
        report = export(model, tmp_path / f"{zoo}.{export.__name__}", example)
        assert report.verified and report.ok, report.lines()
        if export is to_torchscript:  # scripted, not traced: branches survive
            assert report.method == "script", report.fallback_reason

    # Hub folder round trip: identical outputs, nothing unpickled
    tritondsl.save_pretrained(model, tmp_path / "hub")
    reloaded = tritondsl.from_pretrained(tmp_path / "hub")
    with torch.no_grad():
        assert torch.equal(reloaded(example), deployed(example))

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (tmp_path / "integration_report.json").write_text(json.dumps({
        "model": zoo, "peak_rss_mib": peak_rss_mib, "packed_bytes": packed,
        "fp32_bytes": fp32, "onnx_bytes": sizes, "losses": losses}, indent=2))
    print(f"{zoo}: peak RSS {peak_rss_mib:.0f} MiB, state_dict {fp32:,} B fp32 -> "
          f"{packed:,} B deployed ({fp32 / packed:.1f}x), ONNX {sizes}")


@pytest.mark.parametrize("width", [0.5, 1.4])
def test_mobilenet_widths_match_torchvisions_parameter_counts(width: float) -> None:
    model = tritondsl.load_model("mobilenetv2", width_mult=width).eval()
    assert sum(p.numel() for p in model.parameters()) == mobilenet_v2_parameter_count(width)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_wrong_input_and_device_errors_name_what_was_expected() -> None:
    model = tritondsl.load_model("mobilenetv2", width_mult=0.5)
    with pytest.raises(ValueError, match=r"MobileNetV2 expects 'x' of shape \[N, 3, H, W\] "
                                         r"\(declared at mobilenetv2\.tdsl, line \d+\), "
                                         r"got \[1, 1, 32, 32\]"):
        model(torch.zeros(1, 1, 32, 32))
    meta_model = copy.deepcopy(model).to("meta")
    with pytest.raises(RuntimeError, match="MobileNetV2 is on meta but 'x' is on cpu"):
        meta_model(torch.zeros(1, 3, 32, 32))
