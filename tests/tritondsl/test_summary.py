"""The summary table: sizes from real tensors, memory estimates checked against measurement."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import tritondsl
from tests.conftest import ROOT
from tritondsl.summary import Summary, measure_peak, render_summary, summarize


@pytest.fixture(scope="module")
def table() -> Summary:
    """ResNet18's summary, built once for the tests that read it."""
    return summarize(ROOT / "models" / "resnet18.tdsl")


def test_rows_are_computed_from_the_built_model(table: Summary) -> None:
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


# ResNet18's ternary convs as (out, in, kernel), from the architecture (torchvision's
# BasicBlock layout), and its BatchNorm widths: the sizes below are derived from these alone.
TERNARY_CONVS = (
    [(64, 64, 3)] * 4
    + [(128, 64, 3), (128, 128, 3), (128, 64, 1), (128, 128, 3), (128, 128, 3)]
    + [(256, 128, 3), (256, 256, 3), (256, 128, 1), (256, 256, 3), (256, 256, 3)]
    + [(512, 256, 3), (512, 512, 3), (512, 256, 1), (512, 512, 3), (512, 512, 3)]
)
NORMS = [64] * 5 + [128] * 5 + [256] * 5 + [512] * 5


def test_totals_and_compression_are_what_the_architecture_gives(table: Summary) -> None:
    # Deployed: 2-bit rows of ceil(K / 4) bytes plus one fp32 scale per output channel;
    # the stem and the classifier stay fp32; BatchNorm keeps 4 fp32 vectors and an int64.
    ternary = sum(o * -(-(i * k * k) // 4) + 4 * o for o, i, k in TERNARY_CONVS)
    stem, fc = 64 * 3 * 7 * 7 * 4, (512 * 1000 + 1000) * 4
    norms = sum(4 * 4 * c + 8 for c in NORMS)
    assert table.packed_bytes == ternary + stem + fc + norms == 4_974_912
    # fp32: every weight at 4 bytes, plus BatchNorm's running statistics and counters.
    assert table.fp32_bytes == (11_689_512 + 2 * sum(NORMS) + len(NORMS)) * 4 == 46_796_528
    assert table.compression == pytest.approx(46_796_528 / 4_974_912)


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


def test_models_without_conv_or_linear_are_summarized(tmp_path: Path) -> None:
    bare = tmp_path / "bare.tdsl"
    bare.write_text("model Net() {\n    input x: Tensor[N, 4]\n    act = ReLU()\n"
                    "    forward(x) {\n        return act(x)\n    }\n}\n")  # fmt: skip
    table = summarize(bare, batch=2)
    assert [(r.name, r.params, r.packed_bytes) for r in table.rows] == [("act", 0, 0)]
    assert "Net: 0 parameters; no weights or buffers" in render_summary(table)


def test_layer_form_weights_are_rows_with_their_packed_size() -> None:
    table = summarize(ROOT / "examples" / "low_level_layer.tdsl")
    rows = {r.name: r for r in table.rows}
    # 64 x 4 ternary weights: 64 rows of one packed byte, plus one fp32 scale (per_tensor).
    assert (rows["dense1.W"].kind, rows["dense1.W"].params) == ("TernaryTensor", 256)
    assert rows["dense1.W"].packed_bytes == 64 + 4
    assert rows["dense2.W"].packed_bytes == 4 * 16 + 4  # 4 x 64: 16 bytes per row
    assert "Tiny: 512 parameters" in render_summary(table)


@pytest.mark.slow
def test_rows_show_each_layers_activation_bits() -> None:
    summary = summarize(ROOT / "examples" / "fashion_mnist_a8.tdsl")
    rows = {r.name: r for r in summary.rows}
    assert (rows["stem.conv"].activation, rows["stem.conv"].activation_bits) == ("a8", 8)
    assert (rows["classifier"].activation_bits, rows["stem.bn"].activation_bits) == (8, None)
    text = render_summary(summary)
    assert "act bits" in text.splitlines()[0]
    assert any(line.startswith("block2.conv ") and " 8 (a8) " in line for line in text.splitlines())
    float_inputs = {r.name: r.activation_bits for r in summarize("resnet18").rows}
    assert float_inputs["conv1"] == 32 and float_inputs["bn1"] is None
