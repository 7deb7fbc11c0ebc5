"""tritondsl.onnx_session: INT2 weights become INT8 before the session is built, and the
session options that matter are set (or left to the caller)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import tritondsl
from tritondsl.export.onnx import export_onnx, int2_tensor
from tritondsl.export.onnx_session import (
    FOLD_DQ_KEY,
    LUT_GEMM_KEY,
    int2_to_int8,
    materialize_int8,
    onnx_session,
)


@pytest.mark.parametrize("count", [1, 3, 4, 5, 37])
def test_int2_to_int8_reads_every_value(count: int) -> None:
    values = torch.tensor([(-2, -1, 0, 1)[i % 4] for i in range(count)], dtype=torch.int8)
    tensor = int2_tensor("w", values.reshape(1, count))
    out = int2_to_int8(tensor)
    assert out.data_type == TensorProto.INT8 and list(out.dims) == [1, count]
    assert numpy_helper.to_array(out).reshape(-1).tolist() == values.tolist()


def _cast_model() -> onnx.ModelProto:
    """INT2 trits -> Cast(INT8) -> DequantizeLinear -> Add: how int8 files store weights."""
    trits = int2_tensor("w.int2", torch.tensor([-1, 0, 1, 1, -1], dtype=torch.int8))
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["w.int2"], ["w"], to=TensorProto.INT8),
            helper.make_node("DequantizeLinear", ["w", "s"], ["d"]),
            helper.make_node("Add", ["x", "d"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
        [trits, scale],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)], ir_version=13)


def test_cast_of_int2_becomes_an_int8_initializer() -> None:
    proto = _cast_model()
    assert materialize_int8(proto) == 1
    assert [n.op_type for n in proto.graph.node] == ["DequantizeLinear", "Add"]
    weight = next(t for t in proto.graph.initializer if t.name == "w")
    assert weight.data_type == TensorProto.INT8
    x = np.arange(5, dtype=np.float32)
    ours = onnx_session(_cast_model().SerializeToString()).run(None, {"x": x})[0]
    plain = ort.InferenceSession(_cast_model().SerializeToString()).run(None, {"x": x})[0]
    assert ours.tolist() == plain.tolist() == [-0.5, 1.0, 2.5, 3.5, 3.5]


@pytest.mark.slow
def test_float_forms_get_weight_dequantize_folded_and_callers_options_win(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    model = tritondsl.load_model("resnet18", num_classes=4)
    export_onnx(model, path, torch.randn(1, 3, 32, 32), "int2")
    session = onnx_session(path, threads=1)
    options = session.get_session_options()
    assert options.get_session_config_entry(FOLD_DQ_KEY) == "1"
    assert options.intra_op_num_threads == 1
    mine = ort.SessionOptions()
    mine.add_session_config_entry(FOLD_DQ_KEY, "0")
    mine.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnx_session(path, sess_options=mine)
    kept = session.get_session_options()
    assert kept.get_session_config_entry(FOLD_DQ_KEY) == "0"
    assert kept.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with pytest.raises(Exception, match=LUT_GEMM_KEY):
        kept.get_session_config_entry(LUT_GEMM_KEY)  # no MatMulNBits: no lookup-table entry


def test_package_level_name() -> None:
    assert tritondsl.onnx_session is onnx_session
