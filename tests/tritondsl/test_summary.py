"""The summary table: sizes from real tensors, memory estimates checked against measurement."""

from __future__ import annotations

import copy

import pytest
import torch

import tritondsl
from tests.conftest import ROOT
from tritondsl.summary import measure_peak, summarize


def test_rows_are_computed_from_the_built_model() -> None:
    table = summarize(ROOT / "models" / "resnet18.tdsl")
    rows = {r.name: r for r in table.rows}
    conv = rows["layer1.0.conv1"]
    assert (conv.kind, conv.precision, conv.params) == (
        "Conv2d",
        "ternary(threshold=0.7, scale=per_channel)",
        64 * 64 * 9,
    )
    # 64 rows of ceil(576 / 4) packed bytes plus 64 fp32 scales
    assert conv.packed_bytes == 64 * 144 + 64 * 4
    assert conv.fp32_bytes == 64 * 64 * 9 * 4
    assert 2.0 < conv.bits_per_weight < 2.1
    assert rows["fc"].precision == "fp32" and rows["fc"].packed_bytes == (512 * 1000 + 1000) * 4
    assert rows["bn1"].params == 128 and rows["relu"].params == 0
    assert table.params == 11_689_512
    assert "layer4" not in rows  # containers are not rows; their layers are
    assert all(r.kind not in ("Sequential", "BasicBlock") for r in table.rows)


def test_totals_and_compression_match_the_deployed_state_dict() -> None:
    table = summarize(ROOT / "models" / "resnet18.tdsl")
    deployed = tritondsl.deploy(tritondsl.load_model("resnet18"))
    assert table.packed_bytes == sum(
        t.numel() * t.element_size() for t in deployed.state_dict().values()
    )
    assert 9.0 < table.compression < 12.0


@pytest.mark.slow
@pytest.mark.parametrize(("zoo", "batch", "size"), [("resnet18", 8, 64), ("mobilenetv2", 8, 64)])
def test_memory_estimates_are_within_25_percent_of_measured(
    zoo: str, batch: int, size: int
) -> None:
    table = summarize(ROOT / "models" / f"{zoo}.tdsl", batch=batch, size=size)
    torch.manual_seed(0)
    model = tritondsl.load_model(zoo)
    x = torch.randn(batch, 3, size, size)
    measured_training = measure_peak(model, x, train=True)
    measured_inference = measure_peak(tritondsl.deploy(copy.deepcopy(model)), x, train=False)
    assert table.peak_inference is not None and table.peak_training is not None
    assert abs(table.peak_inference / measured_inference - 1) <= 0.25
    assert abs(table.peak_training / measured_training - 1) <= 0.25
