"""docs/export.md's stand-alone rewrite (onnx + numpy + onnxruntime, no tritondsl) runs a
W1.58A8 file exactly as ``tritondsl.onnx_session`` does, on the int8 kernels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import tritondsl
from tests.conftest import ROOT
from tritondsl.export.onnx_int8 import export_int8

DOC = (ROOT / "docs" / "export.md").read_text()
SOURCE = """
model Small() {
    input x: Tensor[N, 3, 8, 8]
    weights ternary(scale=per_channel)
    conv = Conv2d(3, 8, 3, padding=1, bias=false)
    bn = BatchNorm2d(8)
    fc1 = Linear(512, 128)
    fc2 = Linear(128, 10)
    forward(x) {
        return fc2(relu(fc1(flatten(relu(bn(conv(x))), 1))))
    }
}
"""


def _doc_functions() -> dict[str, object]:
    blocks = re.findall(r"```python\n(.*?)```", DOC, re.S)
    [block] = [b for b in blocks if "def int8_session" in b]
    assert "tritondsl" not in block  # what another language would do, without us
    namespace: dict[str, object] = {}
    exec(compile(block, "docs/export.md", "exec"), namespace)  # our own doc, not outside input
    return namespace


@pytest.mark.slow
def test_the_documented_rewrite_matches_onnx_session(tmp_path: Path) -> None:
    (tmp_path / "small.tdsl").write_text(SOURCE)
    torch.manual_seed(0)
    model = tritondsl.load_model(tmp_path / "small.tdsl").eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 8, 8, generator=g) for _ in range(3)]
    path = tmp_path / "small.onnx"
    export_int8(model, path, batches[0][:1], batches, linear="nbits")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Cast", "MatMulNBits"} <= ops  # the file has both things the rewrite handles
    doc = _doc_functions()
    rewritten = doc["int8_model"](str(path))  # type: ignore[operator]
    weights = {t.name: t.data_type for t in rewritten.graph.initializer}
    assert onnx.TensorProto.INT2 not in weights.values()
    dequantized = [n.input[0] for n in rewritten.graph.node if n.op_type == "DequantizeLinear"]
    # every ternary weight is dequantized straight from an int8 constant: no Cast between
    trits = [w for w in dequantized if w.endswith(".weight_quantized")]
    assert trits and all(weights.get(w) == onnx.TensorProto.INT8 for w in trits), trits
    assert not any(n.op_type == "Cast" for n in rewritten.graph.node)
    ours = tritondsl.onnx_session(path)
    theirs = doc["int8_session"](str(path))  # type: ignore[operator]
    assert isinstance(theirs, ort.InferenceSession)
    x = batches[2].numpy()
    expected = ours.run(None, {ours.get_inputs()[0].name: x})[0]
    got = theirs.run(None, {theirs.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
