"""The command line, through Typer's CliRunner and as a real subprocess."""

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


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["check"]).exit_code == 2
    assert runner.invoke(app, ["check", "--no-such-flag", "x.tdsl"]).exit_code == 2
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2


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


def test_missing_file_is_a_clean_error() -> None:
    result = runner.invoke(app, ["check", "does/not/exist.tdsl"])
    assert result.exit_code == 1
    assert "does/not/exist.tdsl: error: cannot read file" in result.output
    assert "Traceback" not in result.output


def test_compile_writes_the_generated_module(tmp_path: Path) -> None:
    out = tmp_path / "resnet.py"
    result = runner.invoke(app, ["compile", str(ROOT / "models" / "resnet18.tdsl"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "class ResNet18(nn.Module):" in out.read_text()
    printed = runner.invoke(app, ["compile", str(ROOT / "models" / "resnet18.tdsl")])
    assert printed.stdout == out.read_text()


def test_compile_with_errors_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tdsl"
    bad.write_text("model M() {\n  input x: Tensor[N, 4]\n  forward(x) { return y }\n}\n")
    out = tmp_path / "out.py"
    out.write_text("previous contents\n")
    result = runner.invoke(app, ["compile", str(bad), "-o", str(out)])
    assert result.exit_code == 1
    assert "unknown name 'y'" in result.output
    assert out.read_text() == "previous contents\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tdsl", "out.py"]


def test_compile_precision_override_and_bad_value() -> None:
    source = str(ROOT / "models" / "resnet18.tdsl")
    result = runner.invoke(app, ["compile", source, "--precision", "fp32"])
    assert result.exit_code == 0 and "rt.ternary(" not in result.stdout
    assert runner.invoke(app, ["compile", source, "--precision", "int3"]).exit_code == 2


def test_compile_as_a_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "mlp.py"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritondsl",
            "compile",
            str(ROOT / "examples" / "ternary_mlp.tdsl"),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    namespace: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)  # our own generated code
    assert namespace["TernaryMLP"]().out.out_features == 10


def test_summary_prints_a_table_with_totals() -> None:
    result = runner.invoke(
        app, ["summary", "resnet18", "--batch-size", "4", "--size", "64"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "layer",
        "kind",
        "precision",
        "params",
        "bits/w",
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
