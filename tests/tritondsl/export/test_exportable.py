"""Export refuses what torch's ONNX exporter cannot write with one located .tdsl error, before
tracing; what it can write with fixed sizes it writes; models with several inputs export."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

import tritondsl
from tritondsl.cli.app import app
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.export import to_onnx


def _model(forward: str, members: str = "", dims: str = "N, 4, H, W") -> torch.nn.Module:
    source = (f"model M() {{\n    input x: Tensor[{dims}]\n{members}    forward(x) {{\n"
              f"        return {forward}\n    }}\n}}\n")
    return tritondsl.compile(source).build()


@pytest.mark.parametrize(("forward", "members", "message"), [
    ('interpolate(x, scale_factor=2, mode="nearest-exact")', "",
     'interpolate(): mode "nearest-exact" cannot be exported to ONNX'),
    ("up(x)", '    up = Upsample(scale_factor=2, mode="nearest-exact")\n',
     "Upsample(mode='nearest-exact'): mode \"nearest-exact\" cannot be exported to ONNX"),
    ("adaptive_avg_pool2d(x, 3)", "",
     "adaptive_avg_pool2d() cannot be exported to ONNX for the input [N, 4, 6, 8]: ONNX pools "
     "with a fixed window, so the input's height and width must be multiples of the output's "
     "(3, 3)"),
    ("pool(x)", "    pool = AdaptiveMaxPool2d((4, 3))\n",
     "AdaptiveMaxPool2d((4, 3)) cannot be exported to ONNX for the input [N, 4, 6, 8]"),
    ('interpolate(x, size=[4, 4], mode="area")', "", "interpolate() cannot be exported"),
], ids=["nearest-exact", "upsample-nearest-exact", "adaptive-op", "adaptive-layer", "area"])
def test_unexportable_model_gets_one_located_error_before_tracing(
    forward: str, members: str, message: str, tmp_path: Path
) -> None:
    model = _model(forward, members)
    with pytest.raises(CompileError) as info:
        to_onnx(model, tmp_path / "m.onnx", torch.randn(2, 4, 6, 8))
    (diag,) = info.value.diagnostics
    assert diag.message.startswith(message)
    # a layer is shown where it is created, an operation where it is called
    assert diag.span is not None and diag.span.line == (3 if members else 4)
    assert "graph(" not in info.value.render() and not (tmp_path / "m.onnx").exists()


def test_adaptive_pooling_fixes_the_input_size_and_exports(tmp_path: Path) -> None:
    model = _model("flatten(pool(x), 1)", "    pool = AdaptiveAvgPool2d((3, 2))\n").eval()
    report = to_onnx(model, tmp_path / "m.onnx", torch.randn(2, 4, 6, 8), weights="float")
    assert report.ok and report.verified
    assert "note: H=6, W=8 fixed in the file" in "\n".join(report.lines())
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 4, 6, 8]
    # global pooling keeps every size dynamic
    model = _model("adaptive_max_pool2d(x, 1)")
    report = to_onnx(model, tmp_path / "g.onnx", torch.randn(2, 4, 6, 8), weights="float")
    dims = onnx.load(str(tmp_path / "g.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert report.ok and [d.dim_param or d.dim_value for d in dims] == ["batch", 4, "H", "W"]


TWO_INPUTS = """
model Pair() {
    input a: Tensor[N, 3, H, W]
    input b: Tensor[N, 5]
    conv = Conv2d(3, 5, 3, padding=1)
    fc = Linear(5, 5)
    forward(a, b) {
        return mean(conv(a), dim=[2, 3]) + fc(b)
    }
}
"""


def test_a_model_with_two_inputs_exports_and_verifies(tmp_path: Path) -> None:
    model = tritondsl.compile(TWO_INPUTS).build().eval()
    example = (torch.randn(2, 3, 5, 7), torch.randn(2, 5))
    for form in ("int2", "float"):
        report = to_onnx(model, tmp_path / f"pair-{form}.onnx", example, weights=form)
        assert report.ok and report.verified, report.lines()
    graph = onnx.load(str(tmp_path / "pair-int2.onnx")).graph
    assert [i.name for i in graph.input] == ["a", "b"]
    source = tmp_path / "pair.tdsl"
    source.write_text(TWO_INPUTS)
    result = CliRunner().invoke(app, ["export", str(source), "-o", str(tmp_path / "c.onnx"),
                                      "--size", "6"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["export", str(source), "--format", "pt2",
                                      "-o", str(tmp_path / "c.pt2"), "--size", "6"])
    assert result.exit_code == 1
    assert "--format pt2 exports models with one input; this one has 2" in result.output


def test_cli_prints_the_located_error(tmp_path: Path) -> None:
    source = tmp_path / "m.tdsl"
    source.write_text("model M() {\n    input x: Tensor[N, 4, H, W]\n    forward(x) {\n"
                      "        return adaptive_avg_pool2d(x, 5)\n    }\n}\n")
    result = CliRunner().invoke(app, ["export", str(source), "-o", str(tmp_path / "m.onnx"),
                                      "--size", "8"])
    assert result.exit_code != 0
    assert f"{source}:4:16: error: adaptive_avg_pool2d() cannot be exported to ONNX" in (
        result.output)
    assert "Torch IR" not in result.output and "graph(" not in result.output
