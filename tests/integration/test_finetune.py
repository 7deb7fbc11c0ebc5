"""The fp32 -> ternary flows of benchmarks/bench_finetune.py at smoke size, end to end.

The full measurement (Fashion-MNIST, 5,000-image ResNet18 folder) is the command
``python benchmarks/bench_finetune.py``; this runs the same commands on a few hundred
images: pretrain in fp32, fine-tune ternary with --init (and --teacher fp32), warm up,
and export the ResNet18 to int2 ONNX (verified against PyTorch by the export command).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_quick_flows_run_and_fine_tuning_beats_scratch(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_finetune  # type: ignore[import-not-found]

    results = bench_finetune.measure(quick=True, out=tmp_path)
    fashion = results["fashion"]
    assert set(fashion) == {"fp32 (3 epochs)", "ternary from scratch", "ternary fine-tuned",
                            "ternary fine-tuned + distillation",
                            "ternary, fp32 warm-up 3 epochs", bench_finetune.ABLATION}  # fmt: skip
    # The ablation is the all-ternary model but for its first conv.
    assert "stem_fp32" in fashion[bench_finetune.ABLATION]["command"]
    # Three fp32 epochs are a head start one ternary epoch from scratch cannot make up.
    assert fashion["ternary fine-tuned"]["test_acc"] > fashion["ternary from scratch"]["test_acc"]
    assert "--init" in fashion["ternary fine-tuned + distillation"]["command"]
    resnet = results["resnet"]
    assert (tmp_path / "resnet" / "resnet18-int2.onnx").stat().st_size == resnet["onnx_bytes"]
    assert resnet["onnx_bytes"] < 4_000_000  # 2-bit weights: fp32 would be 45 MB
    assert any("| ResNet18, 32x32" in line for line in bench_finetune.tables(results))
