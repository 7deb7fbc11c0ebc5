"""``tritondsl summary`` (cli/summary.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tritondsl.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_summary_prints_a_table_with_totals() -> None:
    result = runner.invoke(app, ["summary", "resnet18", "--batch-size", "4", "--size", "64"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "layer",
        "kind",
        "precision",
        "params",
        "bits/w",
        "act",
        "bits",
        "packed",
        "B",
        "fp32",
        "B",
        "output",
        "activ.",
        "B",
    ]
    conv1 = next(line for line in lines if line.startswith("conv1 "))
    assert "fp32" in conv1 and "9,408" in conv1 and "[4, 64, 32, 32]" in conv1
    assert "ResNet18: 11,689,512 parameters" in result.output
    assert "estimated peak" in result.output
