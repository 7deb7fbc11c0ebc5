"""ONNX files as other tools read them: symbolic sizes, metadata, OpenVINO, onnxslim."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import tritondsl
from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_verify import create_session
from tritondsl.export.torch_export import deployed_copy

from .test_hub import MIXED, randomize_norms

# Every zoo model exported in every form and read by other tools: make test, not the fast tier.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

MODELS = ("resnet18", "mobilenetv2", "mixed_precision")
FORMS = ("int2", "packed", "float")
OTHER_SIZE = (3, 3, 48, 40)  # not the example's batch, height or width
DECLARED = {"resnet18": ["batch", 3, "H", "W"], "mobilenetv2": ["batch", 3, "H", "W"],
            "mixed_precision": ["batch", 3, 32, 32]}  # fmt: skip


def _other(name: str, seed: int) -> torch.Tensor:
    """Another input the model takes: other sizes where the .tdsl leaves them symbolic."""
    return _x(OTHER_SIZE if "H" in DECLARED[name] else (3, 3, 32, 32), seed)


def _x(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """The zoo models (10 classes) and the mixed-precision example, with trained-like norms."""
    torch.manual_seed(0)
    built = {name: tritondsl.load_model(name, num_classes=10) for name in MODELS[:2]}
    built["mixed_precision"] = randomize_norms(tritondsl.load_model(MIXED))
    return built


@pytest.fixture(scope="module")
def files(models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every model in every weight form, exported once from a 32x32 example."""
    folder = tmp_path_factory.mktemp("consumers")
    return {
        (name, form): export_onnx(model, folder / f"{name}-{form}.onnx", _x((2, 3, 32, 32)),
                                  form).path
        for name, model in models.items()
        for form in FORMS
    }  # fmt: skip


def _expected(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return deployed_copy(model)(x).numpy()


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_symbolic_sizes_stay_symbolic(models: dict, files: dict, name: str, form: str) -> None:
    proto = onnx.load(str(files[name, form]))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == DECLARED[name]
    session = create_session(files[name, form])
    x = _other(name, seed=1)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, _expected(models[name], x), rtol=1e-4, atol=1e-5)


def test_name_doc_string_and_metadata_describe_the_model(files: dict) -> None:
    proto = onnx.load(str(files["mixed_precision", "packed"]))
    assert proto.graph.name == "MixedNet"
    assert proto.doc_string == (
        "MixedNet from mixed_precision.tdsl, exported by tritondsl "
        f"{tritondsl.__version__} with packed weights"
    )
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["tritondsl.version"] == tritondsl.__version__
    assert meta["tritondsl.model"] == "MixedNet"
    assert meta["tritondsl.source_sha256"] == hashlib.sha256(MIXED.read_bytes()).hexdigest()
    precisions = json.loads(meta["tritondsl.precision"])
    assert precisions["stem.0"] == "fp16" and precisions["head"].startswith("int8")
    assert precisions["down"].startswith("ternary(") and "learned" in precisions["down"]
    assert meta["tritondsl.weights"] == "packed"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", MODELS)
def test_the_checker_and_strict_shape_inference_accept_every_file(
    files: dict, name: str, form: str
) -> None:
    proto = onnx.load(str(files[name, form]))
    onnx.checker.check_model(proto, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    out = inferred.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in out] == ["batch", 10]


@pytest.mark.parametrize("form", ["packed", "float"])
@pytest.mark.parametrize("name", MODELS)
def test_openvino_compiles_and_matches(models: dict, files: dict, name: str, form: str) -> None:
    ov = pytest.importorskip("openvino")
    # Exact float arithmetic, to compare with PyTorch: by default OpenVINO computes in bf16
    # on CPUs with bf16 units and quantizes the activations of int8-weight FullyConnected
    # layers on the fly (errors near 1e-3 either way; docs/ecosystem.md).
    exact = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    compiled = ov.Core().compile_model(str(files[name, form]), "CPU", exact)
    for x in (_x((2, 3, 32, 32)), _other(name, seed=2)):
        got = compiled(x.numpy())[0]
        np.testing.assert_allclose(got, _expected(models[name], x), rtol=1e-4, atol=1e-5)


def test_openvino_does_not_read_int2(files: dict) -> None:
    ov = pytest.importorskip("openvino")
    # A limit of OpenVINO's ONNX reader (docs/ecosystem.md): use --weights packed for it.
    with pytest.raises(RuntimeError, match=r"Unsupported (data )?type"):  # 2024.0: "data type"
        ov.Core().compile_model(str(files["mobilenetv2", "int2"]), "CPU")


def test_onnxslim_unfolds_packed_weights_back_to_float(models: dict, files: dict) -> None:
    onnxslim = pytest.importorskip("onnxslim")
    slim = onnxslim.slim(onnx.load(str(files["resnet18", "packed"])))
    kinds = {t.data_type for t in slim.graph.initializer if len(t.dims) > 1}
    assert onnx.TensorProto.UINT8 not in kinds  # the unpacking was constant-folded away
    assert slim.ByteSize() > 5 * files["resnet18", "packed"].stat().st_size
    session = create_session(slim.SerializeToString())
    x = _x((2, 3, 32, 32))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, _expected(models["resnet18"], x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_export_keeps_symbolic_sizes_dynamic(models: dict, tmp_path: Path) -> None:
    from tritondsl.export.torch_export import export_pt2

    # From a 32x32 example torch.export would bound H and W by 32 (the last feature map is
    # 1x1 there and specialises); a 64x64 example leaves them free.
    result = export_pt2(models["mobilenetv2"], tmp_path / "m.pt2", _x((1, 3, 64, 64)))
    assert result.ok
    loaded = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = _x((3, 3, 96, 80), seed=3)
    with torch.no_grad():
        got = loaded(x).numpy()
    np.testing.assert_allclose(got, _expected(models["mobilenetv2"], x), rtol=1e-4, atol=1e-5)
