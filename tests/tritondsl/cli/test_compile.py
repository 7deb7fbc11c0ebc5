"""``tritondsl compile`` (cli/compile.py), through CliRunner and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import ROOT
from tritondsl.cli import app

runner = CliRunner()


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
    plain = runner.invoke(app, ["compile", source])
    assert plain.exit_code == 0 and "rt.TWN(threshold=0.7, per_channel=True)" in plain.stdout
    result = runner.invoke(app, ["compile", source, "--precision", "fp32"])
    assert result.exit_code == 0 and "rt.TWN(" not in result.stdout
    assert "weights = rt.FP32() if weights is None else weights" in result.stdout
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


@pytest.mark.parametrize(
    ("where", "message"),
    [("missing/out.py", "does not exist"), (".", "it is a folder"),
     ("a_file/out.py", "is a file, not a folder")],
)  # fmt: skip
def test_an_output_that_cannot_be_written_is_one_line_and_nothing_is_left(
    tmp_path: Path, where: str, message: str
) -> None:
    (tmp_path / "a_file").write_text("x")
    source = str(ROOT / "examples" / "ternary_mlp.tdsl")
    result = runner.invoke(app, ["compile", source, "-o", str(tmp_path / where)])
    assert result.exit_code == 1, result.output
    assert f"error: cannot write {tmp_path / where}: " in result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a_file"]
