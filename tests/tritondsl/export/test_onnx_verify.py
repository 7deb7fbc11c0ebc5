"""Verification must be able to fail: corrupted files, NaNs, wrong shapes, padded bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

import tritondsl
from tritondsl.export.onnx import OnnxExport, export_onnx
from tritondsl.export.onnx_verify import (
    TERNARY_KEY,
    compare_outputs,
    create_session,
    verify_onnx,
    weight_stats,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _export(model: torch.nn.Module, path: Path, form: str) -> OnnxExport:
    x = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    return export_onnx(model, path, x, form)


def _rewrite_initializer(path: Path, name: str, change: object) -> None:
    """Apply ``change`` to the numpy value of initializer ``name`` and save the file."""
    proto = onnx.load(str(path))
    tensor = next(t for t in proto.graph.initializer if t.name == name)
    value = numpy_helper.to_array(tensor).copy()
    change(value)  # type: ignore[operator]
    tensor.CopyFrom(numpy_helper.from_array(value, name))
    onnx.save(proto, str(path))


def _flip_first(value: np.ndarray) -> None:
    """Negate the first output channel's scale (or, for a float weight, its weights)."""
    if value.ndim:
        value[0] *= -1
    else:
        value *= -1


@pytest.mark.parametrize(
    ("form", "initializer"),
    [
        ("int2", "res.conv1.weight.scale"),  # per-channel DQ scale
        ("int2", "pw.weight.scale"),  # per-tensor scalar DQ scale
        ("int2", "down.weight.scale_neg"),  # Learned negative scale
        ("packed", "res.conv2.weight.scale"),
        ("float", "res.conv1.weight"),  # no scales: negate the first channel instead
    ],
)
def test_a_flipped_scale_fails_every_session(
    mixed: torch.nn.Module, tmp_path: Path, form: str, initializer: str
) -> None:
    result = _export(mixed, tmp_path / "m.onnx", form)
    assert verify_onnx(result.path, result.example_input, result.expected).ok
    _rewrite_initializer(result.path, initializer, _flip_first)
    report = verify_onnx(result.path, result.example_input, result.expected)
    assert not report.ok
    assert len(report.checks) == (3 if form != "float" else 2)
    assert not any(check.ok for check in report.checks), [c.line() for c in report.checks]


def test_flipped_int2_code_fails(mixed: torch.nn.Module, tmp_path: Path) -> None:
    result = _export(mixed, tmp_path / "m.onnx", "int2")
    proto = onnx.load(str(result.path))
    codes = next(t for t in proto.graph.initializer if t.name == "res.conv1.weight.codes")
    # Invert the first 72 bytes (288 codes: 0 <-> -1, 1 <-> -2), the first channels' rows.
    codes.raw_data = bytes(b ^ 0xFF for b in codes.raw_data[:72]) + codes.raw_data[72:]
    onnx.save(proto, str(result.path))
    report = verify_onnx(result.path, result.example_input, result.expected)
    assert not any(check.ok for check in report.checks)


def test_bits_are_read_from_the_file_not_assumed(mixed: torch.nn.Module, tmp_path: Path) -> None:
    # The same INT2 codes stored in int32_data (what helper.make_tensor(vals=list) does)
    # take 32 bits per value; weight_stats must see that.
    result = _export(mixed, tmp_path / "m.onnx", "int2")
    assert weight_stats(result.path).code_bits_per_weight <= 2.05
    proto = onnx.load(str(result.path))
    for tensor in proto.graph.initializer:
        if tensor.data_type == TensorProto.INT2:
            values = numpy_helper.to_array(tensor).reshape(-1).astype(np.int32).tolist()
            tensor.ClearField("raw_data")
            tensor.int32_data.extend(values)
    onnx.save(proto, str(tmp_path / "unpacked.onnx"))
    stats = weight_stats(tmp_path / "unpacked.onnx")
    assert stats.code_bits_per_weight == 32.0 and stats.int2_tensors == 0


def test_stats_cross_check_int2_dims(mixed: torch.nn.Module, tmp_path: Path) -> None:
    result = _export(mixed, tmp_path / "m.onnx", "int2")
    proto = onnx.load(str(result.path))
    prop = next(p for p in proto.metadata_props if p.key == TERNARY_KEY)
    layout = json.loads(prop.value)
    layout["res.conv1.weight"]["count"] += 1
    prop.value = json.dumps(layout)
    with pytest.raises(ValueError, match=r"res\.conv1\.weight: INT2 dims"):
        weight_stats(proto)


def test_stats_need_tritondsl_metadata(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph([], "empty", [], [])
    with pytest.raises(ValueError, match="not a file written by tritondsl export"):
        weight_stats(onnx.helper.make_model(graph))


def test_compare_outputs_fails_on_nan_shape_and_tolerance() -> None:
    ref = [np.array([1.0, -2.0], np.float32)]
    assert compare_outputs("same", ref, ref, 0, 0).ok
    assert not compare_outputs("nan", [np.array([1.0, np.nan])], ref, 1, 1).ok
    assert not compare_outputs("shape", [np.array([1.0])], ref, 1, 1).ok
    assert not compare_outputs("count", [], ref, 1, 1).ok
    near = [np.array([1.0, -2.0002], np.float32)]
    check = compare_outputs("near", near, ref, atol=0, rtol=1e-4)
    assert check.max_abs == pytest.approx(2e-4, rel=1e-3)
    assert check.rel == pytest.approx(1e-4, rel=1e-3)
    assert not check.ok and compare_outputs("near", near, ref, atol=0, rtol=2e-4).ok


def test_create_session_folds_weight_dequantize_by_default(
    mixed: torch.nn.Module, tmp_path: Path
) -> None:
    result = _export(mixed, tmp_path / "m.onnx", "int2")
    entry = "session.disable_quant_qdq"
    folded = create_session(result.path).get_session_options()
    assert folded.get_session_config_entry(entry) == "1"
    kept = create_session(result.path, fold_weight_dequantize=False).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        kept.get_session_config_entry(entry)


def test_padded_packed_rows_count_against_the_bits(tmp_path: Path) -> None:
    # K = 9 (a 3x3 depthwise conv) needs 3 bytes per row in docs/packing.md's layout:
    # 24 bits for 9 weights. INT2 packs the whole tensor and pays no row padding.
    program = tritondsl.compile(
        "model Dw() {\n  input x: Tensor[N, 8, 8, 8]\n"
        "  weights ternary(threshold=0.7, scale=per_channel)\n"
        "  dw = Conv2d(8, 8, 3, padding=1, groups=8)\n"
        "  forward(x) { return dw(x) }\n}\n"
    )
    model = program.build()
    x = torch.randn(2, 8, 8, 8)
    packed = export_onnx(model, tmp_path / "p.onnx", x, "packed")
    int2 = export_onnx(model, tmp_path / "i.onnx", x, "int2")
    assert weight_stats(packed.path).code_bits_per_weight == pytest.approx(24 / 9)
    assert weight_stats(int2.path).code_bits_per_weight == pytest.approx(8 * 18 / 72)
    for result in (packed, int2):
        assert verify_onnx(result.path, result.example_input, result.expected).ok


def test_folding_removes_every_dequantize_from_the_running_graph(
    mixed: torch.nn.Module, tmp_path: Path
) -> None:
    # Why the runner sets session.disable_quant_qdq=1: only then does onnxruntime fold the
    # DequantizeLinear nodes on constant weights at load time instead of running them.
    result = _export(mixed, tmp_path / "m.onnx", "int2")
    create_session(result.path, save_optimized=tmp_path / "folded.onnx")
    create_session(result.path, fold_weight_dequantize=False, save_optimized=tmp_path / "kept.onnx")
    ops = {
        name: [n.op_type for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node]
        for name in ("folded", "kept")
    }
    assert "DequantizeLinear" not in ops["folded"]
    written = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert ops["kept"].count("DequantizeLinear") >= written.count("DequantizeLinear") >= 6
