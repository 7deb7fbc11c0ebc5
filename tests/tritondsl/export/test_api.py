"""``tritondsl.export`` and ``tritondsl export``: reports, the format registry, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from typer.testing import CliRunner

import tritondsl
import tritondsl.export as tx
from tests.conftest import ROOT
from tritondsl.cli import app
from tritondsl.export import api as export_api
from tritondsl.export.onnx_verify import create_session
from tritondsl.export.torch_export import deployed_copy

MIXED = ROOT / "examples" / "mixed_precision.tdsl"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(batch: int = 2) -> torch.Tensor:
    return torch.randn((batch, 3, 32, 32), generator=torch.Generator().manual_seed(0))


def test_to_onnx_reports_sizes_bits_and_errors(mixed: torch.nn.Module, tmp_path: Path) -> None:
    report = tx.to_onnx(mixed, tmp_path / "m.onnx", _x())
    assert report.ok and report.verified and len(report.checks) == 3
    assert report.file_bytes == (tmp_path / "m.onnx").stat().st_size
    assert report.stats is not None and report.stats.code_bits_per_weight <= 2.05
    assert (report.opset, report.ir_version, report.weights) == (25, 13, "int2")
    text = "\n".join(report.lines())
    assert "bits/weight" in text and "not counted in bits/weight" in text
    assert "session.disable_quant_qdq=1" in text and "FAILED" not in text


def test_to_onnx_without_verification(mixed: torch.nn.Module, tmp_path: Path) -> None:
    report = tx.to_onnx(mixed, tmp_path / "m.onnx", _x(), weights="packed", verify=False)
    assert not report.verified and report.ok and report.opset == 18
    assert "not verified (--no-verify)" in report.lines()


def test_to_torchscript_and_to_pt2(mixed: torch.nn.Module, tmp_path: Path) -> None:
    script = tx.to_torchscript(mixed, tmp_path / "m.pt", _x())
    assert script.ok and script.method == "script" and len(script.checks) == 2
    assert "torch.jit.script" in script.lines()[0]
    pt2 = tx.to_pt2(mixed, tmp_path / "m.pt2", _x())
    assert pt2.ok and len(pt2.checks) == 2
    with torch.no_grad():
        expected = deployed_copy(mixed)(_x(3))
    assert torch.equal(torch.export.load(str(tmp_path / "m.pt2")).module()(_x(3)), expected)


def test_registry_names_formats_and_their_weights() -> None:
    assert {"onnx", "torchscript", "pt2"} <= set(tx.EXPORTERS)
    assert tx.EXPORTERS["onnx"].weights == ("int2", "packed", "float")  # int2 the default
    assert tx.EXPORTERS["pt2"].weights == ()


def test_prepare_shapes_the_example_like_the_declared_input() -> None:
    model, x, notes = tx.prepare("resnet18", batch=3, size=40)
    assert type(model).__name__ == "ResNet18" and x.shape == (3, 3, 40, 40)
    assert any("random init" in note for note in notes)
    _, x, _ = tx.prepare(MIXED, batch=2, size=99)  # MixedNet declares [N, 3, 32, 32]
    assert x.shape == (2, 3, 32, 32)


def test_cli_exports_int2_onnx_and_prints_the_report(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(MIXED), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "random init" in result.output
    assert "2.000 bits/weight" in result.output
    assert "all optimizations + session.disable_quant_qdq=1" in result.output
    proto = onnx.load(str(out))
    assert any(t.data_type == TensorProto.INT2 for t in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--weights", "packed", "--no-verify"], "not verified"),
        (["--weights", "float"], "32.000 bits/weight"),
        (["--format", "torchscript"], "torch.jit.script"),
        (["--format", "pt2", "--batch-size", "3"], "reloaded, other batch [4, 3, 32, 32]"),
    ],
)
def test_cli_formats_and_weights(tmp_path: Path, args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["export", str(MIXED), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 0, result.output
    assert expected in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--format", "tflite"],
        ["--format", "pt2", "--weights", "int2"],
        ["--weights", "int4"],
        ["--batch-size", "0"],
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = runner.invoke(app, ["export", str(MIXED), "-o", str(tmp_path / "x"), *args])
    assert result.exit_code == 2, result.output
    assert runner.invoke(app, ["export", str(MIXED)]).exit_code == 2  # no -o


def test_cli_exits_1_when_the_file_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = export_api.export_onnx

    def export_then_corrupt(*args: Any, **kwargs: Any) -> Any:
        result = real_export(*args, **kwargs)
        proto = onnx.load(str(result.path))
        scale = next(t for t in proto.graph.initializer if t.name == "res.conv1.weight.scale")
        value = -numpy_helper.to_array(scale)  # every channel's scale flipped
        scale.CopyFrom(numpy_helper.from_array(value, scale.name))
        onnx.save(proto, str(result.path))
        return result

    monkeypatch.setattr(export_api, "export_onnx", export_then_corrupt)
    result = runner.invoke(app, ["export", str(MIXED), "-o", str(tmp_path / "bad.onnx")])
    assert result.exit_code == 1, result.output
    assert "FAILED" in result.output and "does not match the PyTorch model" in result.output


def test_cli_reports_a_missing_checkpoint_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    args = ["export", str(MIXED), "--checkpoint", str(missing), "-o", str(tmp_path / "x.onnx")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "no such folder" in result.output


def test_cli_takes_weights_from_a_checkpoint(tmp_path: Path) -> None:
    from tritondsl.export.hub import save_pretrained

    torch.manual_seed(123)
    trained = tritondsl.load_model(MIXED)
    save_pretrained(trained, tmp_path / "ckpt")
    out = tmp_path / "c.onnx"
    args = ["export", str(MIXED), "--checkpoint", str(tmp_path / "ckpt"), "--batch-size", "2"]
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "random init" not in result.output and "weights from" in result.output
    session = create_session(out)
    got = session.run(None, {session.get_inputs()[0].name: _x().numpy()})[0]
    with torch.no_grad():
        expected = deployed_copy(trained)(_x()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    other = ROOT / "examples" / "fashion_mnist.tdsl"
    result = runner.invoke(
        app, ["export", str(other), "--checkpoint", str(tmp_path / "ckpt"), "-o", str(out)]
    )
    assert result.exit_code == 1 and "holds model MixedNet" in result.output


@pytest.mark.slow
def test_subprocess_export(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritondsl",
            "export",
            str(MIXED),
            "--weights",
            "int2",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2.000 bits/weight" in proc.stdout and "random init" in proc.stderr
    assert proc.stdout.count(" ok") == 3 and out.stat().st_size > 0
