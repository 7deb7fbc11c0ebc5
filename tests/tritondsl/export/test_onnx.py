"""ONNX export: every weight form runs in onnxruntime and matches the deployed model; the
files really hold INT2 / packed uint8 codes at ~2 bits per ternary weight."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

import tritondsl
from tests.conftest import ROOT
from tritondsl.backend.layers import QuantModule
from tritondsl.export.onnx import OPSET, export_onnx, int2_tensor
from tritondsl.export.onnx_verify import create_session, verify_onnx, weight_stats
from tritondsl.export.torch_export import deployed_copy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

X32 = (2, 3, 32, 32)



def _input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small_models() -> dict[str, torch.nn.Module]:
    """The zoo models with 10 classes, deployed once (exporting skips packing them again)."""
    torch.manual_seed(0)
    return {
        "resnet18": tritondsl.deploy(tritondsl.load_model("resnet18", num_classes=10)),
        "mobilenetv2": tritondsl.deploy(tritondsl.load_model("mobilenetv2", num_classes=10)),
    }


@pytest.fixture(scope="module")
def exported(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each zoo model in each weight form, exported once for the whole module."""
    folder = tmp_path_factory.mktemp("onnx")
    return {
        (name, form): export_onnx(model, folder / f"{name}-{form}.onnx", _input(X32), form)
        for name, model in small_models.items()
        for form in ("int2", "packed", "float")
    }


def _ternary_layers(model: torch.nn.Module) -> dict[str, QuantModule]:
    return {n: m for n, m in deployed_copy(model).named_modules() if isinstance(m, QuantModule)}


def test_int2_tensor_packs_four_per_byte_first_in_low_bits() -> None:
    # ONNX INT2 is two's complement: 1 -> 0b01, 0 -> 0b00, -1 -> 0b11.
    tensor = int2_tensor("w", torch.tensor([1, 0, -1, 1, -1], dtype=torch.int8))
    assert tensor.data_type == TensorProto.INT2 and list(tensor.dims) == [5]
    assert tensor.raw_data == bytes([0b01_11_00_01, 0b00_00_00_11])
    assert not tensor.int32_data
    assert numpy_helper.to_array(tensor).tolist() == [1, 0, -1, 1, -1]


# ResNet18 in make test; the fast tier checks every form on MobileNetV2 (depthwise, 1x1).
@pytest.mark.parametrize("name", [pytest.param("resnet18", marks=pytest.mark.slow), "mobilenetv2"])
@pytest.mark.parametrize("form", ["int2", "packed", "float"])
def test_every_form_matches_pytorch_at_every_optimization_level(
    exported: dict, name: str, form: str
) -> None:
    result = exported[name, form]
    report = verify_onnx(result.path, result.example_input, result.expected)
    names = [check.name for check in report.checks]
    assert "onnxruntime, optimizations disabled" in names
    assert "onnxruntime, all optimizations" in names
    if form == "int2":
        assert "onnxruntime, all optimizations + session.disable_quant_qdq=1" in names
    assert report.ok, [check.line() for check in report.checks]
    assert all(check.max_abs < 1e-5 for check in report.checks)
    proto = onnx.load(str(result.path))
    assert proto.opset_import[0].version == OPSET[form] == result.opset


def test_int2_file_holds_int2_codes_with_packed_raw_data(
    exported: dict, small_models: dict
) -> None:
    result = exported["resnet18", "int2"]
    proto = onnx.load(str(result.path))
    assert proto.ir_version == 13  # onnxruntime 1.31 refuses IR 14
    int2 = [t for t in proto.graph.initializer if t.data_type == TensorProto.INT2]
    layers = _ternary_layers(small_models["resnet18"])
    assert len(int2) == len(layers) == 19
    float_names = {t.name for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT}
    for name, layer in layers.items():
        codes = next(t for t in int2 if t.name == f"{name}.weight.codes")
        assert tuple(codes.dims) == layer.weight_shape
        assert len(codes.raw_data) == math.ceil(math.prod(codes.dims) / 4)
        assert not codes.int32_data
        expected = layer.decomposition().codes.numpy()
        np.testing.assert_array_equal(numpy_helper.to_array(codes), expected)
        assert f"{name}.weight" not in float_names  # the float copy is gone
    dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 19
    assert all([(a.name, a.i) for a in n.attribute] == [("axis", 0)] for n in dq)


def test_packed_file_holds_the_deployed_bytes(exported: dict, small_models: dict) -> None:
    result = exported["mobilenetv2", "packed"]
    proto = onnx.load(str(result.path))
    inits = {t.name: t for t in proto.graph.initializer}
    assert not any(t.data_type == TensorProto.INT2 for t in inits.values())
    for name, layer in _ternary_layers(small_models["mobilenetv2"]).items():
        packed = inits[f"{name}.weight.packed"]
        assert packed.data_type == TensorProto.UINT8
        np.testing.assert_array_equal(numpy_helper.to_array(packed), layer.weight_packed.numpy())
    ops = {n.op_type for n in proto.graph.node}
    assert {"BitShift", "BitwiseAnd", "Cast", "Sub", "Slice"} <= ops  # depthwise K=9 pads


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
@pytest.mark.parametrize("form", ["int2", "packed"])
def test_codes_take_at_most_2_05_bits_per_ternary_weight(
    exported: dict, small_models: dict, name: str, form: str
) -> None:
    proto = onnx.load(str(exported[name, form].path))
    inits = {t.name: t for t in proto.graph.initializer}
    layers = _ternary_layers(small_models[name])
    suffix = ".codes" if form == "int2" else ".packed"
    # Counted here from the raw initializers, independently of weight_stats.
    code_bytes = sum(len(inits[f"{n}.weight{suffix}"].raw_data) for n in layers)
    weights = sum(math.prod(layer.weight_shape) for layer in layers.values())
    bits = 8 * code_bytes / weights
    assert bits <= 2.05
    stats = weight_stats(proto)
    assert stats.ternary_weights == weights and stats.code_bytes == code_bytes
    assert stats.code_bits_per_weight == pytest.approx(bits)
    assert stats.scale_bytes > 0


def test_float_form_spends_32_bits(exported: dict) -> None:
    stats = weight_stats(exported["resnet18", "float"].path)
    assert stats.code_bits_per_weight == 32.0 and stats.scale_bytes == 0


@pytest.mark.slow
def test_resnet18_int2_file_is_at_most_a_ninth_of_fp32(tmp_path: Path) -> None:
    model = tritondsl.load_model("resnet18")  # 1000 classes: fp32 first conv and classifier
    x = _input((1, 3, 32, 32))
    int2 = export_onnx(model, tmp_path / "int2.onnx", x, "int2").path.stat().st_size
    fp32 = tritondsl.load_model("resnet18", precision="fp32")
    float_size = export_onnx(fp32, tmp_path / "fp32.onnx", x, "float").path.stat().st_size
    assert float_size > 44e6
    assert int2 <= float_size / 9, (int2, float_size)


def test_batch_axis_is_dynamic(exported: dict, small_models: dict) -> None:
    result = exported["mobilenetv2", "int2"]
    x = _input((5, 3, 32, 32), seed=3)
    session = create_session(result.path)
    got = session.run(None, {result.input_name: x.numpy()})[0]
    with torch.no_grad():
        expected = deployed_copy(small_models["mobilenetv2"])(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_export_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    model = tritondsl.load_model(ROOT / "examples" / "mixed_precision.tdsl").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", _input(X32), "int2")
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    assert layers and not any(layer.deployed for layer in layers) and model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("form", ["int2", "packed", "float"])
def test_learned_int8_fp16_and_per_tensor_layers(tmp_path: Path, form: str) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model(ROOT / "examples" / "mixed_precision.tdsl")
    result = export_onnx(model, tmp_path / "mixed.onnx", _input(X32), form)
    report = verify_onnx(result.path, result.example_input, result.expected)
    assert report.ok, [check.line() for check in report.checks]
    stored = set(result.layers.values())
    if form == "float":
        assert stored == {"float"}
        return
    assert "INT8 + DequantizeLinear" in stored and "float16 + Cast" in stored
    assert any("Where(pos, neg scales)" in kind for kind in stored)  # the Learned layer
    assert weight_stats(result.path).code_bits_per_weight <= 2.05
    proto = onnx.load(str(result.path))
    # absmean per_tensor: one scalar scale for the whole layer.
    scale = next(t for t in proto.graph.initializer if t.name == "pw.weight.scale")
    assert list(scale.dims) == []


def test_linear_on_3d_input_keeps_its_weight(tmp_path: Path) -> None:
    # Linear on [N, T, C] exports as MatMul with a transposed weight, which constant folding
    # would turn into an anonymous initializer.
    program = tritondsl.compile(
        "model Seq() {\n  input x: Tensor[N, 8, 16]\n"
        "  weights ternary(threshold=0.7, scale=per_channel)\n"
        "  fc1 = Linear(16, 32)\n  fc2 = Linear(32, 4)\n"
        "  forward(x) { return fc2(relu(fc1(x))) }\n}\n"
    )
    result = export_onnx(program.build(), tmp_path / "seq.onnx", _input((2, 8, 16)), "int2")
    assert verify_onnx(result.path, result.example_input, result.expected).ok
    assert weight_stats(result.path).int2_tensors == 2


def test_unknown_weight_form_is_refused(small_models: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int2, packed, float"):
        export_onnx(small_models["resnet18"], tmp_path / "x.onnx", _input(X32), "int4")
