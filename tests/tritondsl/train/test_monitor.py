"""Gradient norms per layer, the non-finite finder, ternary statistics, memory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tritondsl.backend.layers import QuantLinear
from tritondsl.backend.precision import TWN, Int8
from tritondsl.train.monitor import (
    GradientMonitor,
    first_nonfinite_module,
    peak_rss_mb,
    ternary_stats,
)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        QuantLinear(4, 8, quantizer=TWN()), nn.ReLU(), QuantLinear(8, 8, quantizer=Int8()),
        nn.Sequential(nn.Linear(8, 3)),
    )  # fmt: skip


def test_gradient_norms_are_per_layer() -> None:
    model = net()
    monitor = GradientMonitor(model)
    assert monitor.layers == ["0", "2", "3.0"]
    model(torch.randn(5, 4)).square().sum().backward()
    # Layer 0: 32 weight gradients of 1 and 8 bias gradients of 2: sqrt(32 + 32) = 8.
    model[0].weight.grad.fill_(1.0)
    model[0].bias.grad.fill_(2.0)
    # Layer "3.0": 24 + 3 gradients; a single 3 and a single 4 elsewhere zero: norm 5.
    model[3][0].weight.grad.zero_()
    model[3][0].bias.grad.zero_()
    model[3][0].weight.grad[0, 0], model[3][0].bias.grad[2] = 3.0, 4.0
    first = monitor.step()
    assert first[0].item() == 8.0 and first[2].item() == 5.0
    model[0].weight.grad.mul_(0.5)
    model[0].bias.grad.mul_(0.5)
    assert monitor.step()[0].item() == 4.0
    summary = monitor.summary()
    assert (summary["0"]["mean"], summary["0"]["max"]) == (6.0, 8.0)  # steps 8 and 4
    assert summary["3.0"] == {"mean": 5.0, "max": 5.0}
    model[2].weight.grad[0, 0] = float("nan")
    assert monitor.nonfinite_layers(monitor.step()) == ["2"]


def test_first_nonfinite_module_is_the_earliest_in_execution_order() -> None:
    model = net()
    x = torch.randn(2, 4)
    assert first_nonfinite_module(model, x) is None
    with torch.no_grad():
        model[3][0].weight[0, 0] = float("inf")
    assert first_nonfinite_module(model, x) == "3.0"  # reported before its Sequential "3"
    with torch.no_grad():
        model[2].bias[1] = float("nan")
    assert first_nonfinite_module(model, x) == "2"
    x[1, 1] = float("inf")
    assert first_nonfinite_module(model, x) == "<input>"
    assert not model[0]._forward_hooks  # hooks removed again


def test_ternary_stats_cover_ternary_layers_only() -> None:
    model = net()
    # TWN per row: (1, 2, 3, -6) has Δ = 2.1, two zeros and α = 4.5; (4, 4, 4, 4) has
    # Δ = 2.8, no zeros and α = 4. Four rows of each: a quarter zeros, mean scale 4.25.
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2, 3, -6]] * 4 + [[4.0, 4, 4, 4]] * 4))
    stats = ternary_stats(model)
    assert stats == {"0": {"zero_fraction": 0.25, "scale": 4.25}}  # int8 and fp32 are left out


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_rss_is_the_kernels_high_water_mark_in_mib() -> None:
    block = torch.ones(64 * 2**20 // 4)  # touch 64 MiB so the peak is recent
    status = Path("/proc/self/status").read_text()
    high_water_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    assert abs(peak_rss_mb() - high_water_kib / 1024) < 8
    del block


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_process_started_by_a_bigger_one_reports_its_own_peak() -> None:
    block = torch.ones(1024 * 2**20 // 4)  # this process now peaks above 1 GiB
    probe = "from tritondsl.train.monitor import peak_rss_mb; print(peak_rss_mb())"
    child = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True)  # fmt: skip
    assert float(child.stdout) < peak_rss_mb() - 512, (child.stdout, peak_rss_mb())
    del block
