"""``tritondsl check`` (cli/check.py), through CliRunner and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import ROOT
from tritondsl.cli import app

runner = CliRunner()


def test_check_prints_inferred_shapes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", str(ROOT / "models" / "resnet18.tdsl")])
    assert result.exit_code == 0, result.output
    assert "model ResNet18(num_classes=1000): x: [N, 3, H, W] -> [N, 1000]" in result.output
    assert "11,689,512 parameters" in result.output


def test_check_reports_every_error_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tdsl"
    bad.write_text(
        "model M() {\n  input x: Tensor[N, 4]\n  a = Lineer(4, 2)\n"
        "  forward(x) { return b(x) }\n}\n"
    )
    result = runner.invoke(app, ["check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:7: error: unknown name 'Lineer'" in result.output
    assert f"{bad}:4:23: error: unknown name 'b'" in result.output
    assert "2 errors in" in result.output


def test_check_keeps_going_after_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tdsl"
    bad.write_bytes(b"\xff\xfe garbage")
    good = ROOT / "examples" / "fashion_mnist.tdsl"
    result = runner.invoke(app, ["check", str(bad), str(good)])
    assert result.exit_code == 1
    assert "not valid UTF-8" in result.output
    assert "model FashionCNN" in result.output


def test_missing_file_is_a_clean_error() -> None:
    result = runner.invoke(app, ["check", "does/not/exist.tdsl"])
    assert result.exit_code == 1
    assert "does/not/exist.tdsl: error: cannot read file" in result.output
    assert "Traceback" not in result.output


def test_subprocess_entry_points_and_no_torch_import() -> None:
    # `python -m tritondsl` and the console script run the same app; `check` must not import
    # torch (that is what keeps it fast), which -X importtime reveals.
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "tritondsl",
            "check",
            str(ROOT / "models" / "mobilenetv2.tdsl"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "-> [N, 1000]" in proc.stdout
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "lark" in imported and "torch" not in imported
