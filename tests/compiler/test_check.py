"""The pipeline on real programs: zoo models match torchvision, examples check, precisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DATA, EXAMPLES, ROOT, ZOO
from tritondsl.backend.precision import FP16, FP32, TWN, AbsMean, Int8, Learned, SparsityTarget
from tritondsl.compiler.check import check_file, check_source, verify
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.values import Tensor

REFERENCES = {
    "resnet18.tdsl": "torchvision_resnet18.json",
    "resnet50.tdsl": "torchvision_resnet50.json",
    "vgg11_bn.tdsl": "torchvision_vgg11_bn.json",
    "mobilenetv2.tdsl": "torchvision_mobilenet_v2.json",
    "mobilenet_v3_small.tdsl": "torchvision_mobilenet_v3_small.json",
    "mobilenet_v3_large.tdsl": "torchvision_mobilenet_v3_large.json",
    "efficientnet_b0.tdsl": "torchvision_efficientnet_b0.json",
}


def _model(path: Path, **args: object):
    checked = check_file(path, {"MobileNetV2": args} if args else None)
    verify(checked)
    (info,) = checked.models.values()
    return info


@pytest.mark.parametrize("path", ZOO + EXAMPLES, ids=lambda p: p.name)
def test_every_shipped_program_checks(path: Path) -> None:
    checked = check_file(path)
    verify(checked)
    assert checked.models, f"{path.name} defines no model"
    for info in checked.models.values():
        assert isinstance(info.output, Tensor)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_zoo_state_dict_matches_torchvision(name: str) -> None:
    reference = json.loads((DATA / REFERENCES[name]).read_text())
    info = _model(ROOT / "models" / name)
    predicted = [[i.name, list(i.shape), i.dtype] for i in info.state_dict()]
    assert predicted == reference["state_dict"]
    assert info.num_parameters() == reference["num_parameters"]
    assert len(predicted) == reference["num_state_dict_entries"]
    _, classes = reference["output_shape"]
    assert info.output.shape == ("N", classes)


def test_zoo_models_stay_short() -> None:
    for path in ZOO:
        lines = [
            ln
            for ln in path.read_text().splitlines()
            if ln.strip() and not ln.strip().startswith("#")
        ]
        # MobileNetV3-Large's 15-row settings table is the longest part of any of them.
        assert len(lines) <= 75, f"{path.name} has {len(lines)} non-comment lines"


@pytest.mark.parametrize("width", [0.5, 0.75, 1.0, 1.4])
def test_mobilenet_width_mult_rounds_channels_to_8(width: float) -> None:
    info = _model(ROOT / "models" / "mobilenetv2.tdsl", width_mult=width)
    convs = [m for m in info.modules() if m.kind == "Conv2d"]
    assert all(m.args["out_channels"] % 8 == 0 for m in convs)
    stem = convs[0].args["out_channels"]
    assert stem == max(8, int(32 * width + 4) // 8 * 8)
    last = info.state_dict()[-2]  # classifier.1.weight
    assert last.name == "classifier.1.weight"
    assert last.shape[1] == (1280 if width <= 1.0 else int(1280 * width + 4) // 8 * 8)


def test_width_mult_changes_parameter_count_monotonically() -> None:
    counts = [
        _model(ROOT / "models" / "mobilenetv2.tdsl", width_mult=w).num_parameters()
        for w in (0.5, 1.0, 1.4)
    ]
    assert counts[0] < counts[1] == 3_504_872 < counts[2]


def test_resnet_precisions_keep_stem_and_classifier_full_precision() -> None:
    info = _model(ROOT / "models" / "resnet18.tdsl")
    precisions = {m.path: m.precision for m in info.modules() if m.precision}
    assert precisions["conv1"] == FP32()
    assert precisions["fc"] == FP32()
    ternary = [p for p, d in precisions.items() if d.kind == "ternary"]
    assert len(ternary) == 19  # 16 3x3 convs + 3 downsample 1x1 convs
    assert precisions["layer2.0.downsample.0"] == TWN(threshold=0.7, per_channel=True)


def test_mixed_precision_example_resolves_each_layer() -> None:
    (info,) = check_file(ROOT / "examples" / "mixed_precision.tdsl").models.values()
    got = {m.path: m.precision for m in info.modules() if m.precision}
    assert got == {
        "stem.0": FP16(),
        "res.conv1": SparsityTarget(sparsity=0.5, per_channel=True),
        "res.conv2": SparsityTarget(sparsity=0.5, per_channel=True),
        "down": Learned(threshold=0.05),
        "dw": TWN(threshold=0.7, per_channel=True),
        "pw": AbsMean(per_channel=False),
        "head": Int8(per_channel=True),
    }


def test_layer_shapes_are_recorded_per_module() -> None:
    (info,) = check_file(
        ROOT / "models" / "resnet18.tdsl", sizes={"H": 224, "W": 224}
    ).models.values()
    by_path = {m.path: m for m in info.modules()}
    assert by_path["conv1"].out_shapes == [Tensor(("N", 64, 112, 112))]
    assert by_path["layer4"].out_shapes == [Tensor(("N", 512, 7, 7))]
    assert by_path["layer2.0.downsample"].out_shapes == [Tensor(("N", 128, 28, 28))]
    assert by_path["layer2.0.downsample.0"].out_shapes == [Tensor(("N", 128, 28, 28))]


def test_symbolic_zoo_sizes_stay_symbolic_until_bound() -> None:
    info = _model(ROOT / "models" / "resnet18.tdsl")
    by_path = {m.path: m for m in info.modules()}
    assert by_path["conv1"].out_shapes == [
        Tensor(("N", 64, "(H - 1) // 2 + 1", "(W - 1) // 2 + 1"))
    ]
    assert info.output == Tensor(("N", 1000))


def test_model_arguments_override_defaults() -> None:
    checked = check_file(ROOT / "models" / "mobilenetv2.tdsl", {"MobileNetV2": {"num_classes": 10}})
    assert checked.models["MobileNetV2"].output == Tensor(("N", 10))


def test_arguments_for_unknown_model_are_an_error() -> None:
    with pytest.raises(CompileError, match="no model named 'Nope'"):
        check_file(ROOT / "models" / "resnet18.tdsl", {"Nope": {}})


def test_symbolic_spatial_sizes_propagate() -> None:
    source = """
    model M() {
        input x: Tensor[N, 3, H, W]
        conv = Conv2d(3, 8, 3, padding=1)
        down = Conv2d(8, 8, 3, stride=2)
        forward(x) { return down(conv(x)) }
    }
    """
    (info,) = check_source(source).models.values()
    assert info.output == Tensor(("N", 8, "(H - 3) // 2 + 1", "(W - 3) // 2 + 1"))


def test_all_errors_of_a_file_are_reported() -> None:
    source = (
        "model M() {\n  input x: Tensor[N, 3]\n  a = Lineer(3, 4)\n  b = Linear(3, 4, biass=true)\n"
        "  forward(x) { return a(x) }\n}\n"
    )
    with pytest.raises(CompileError) as info:
        check_source(source)
    messages = [d.message for d in info.value.diagnostics]
    assert messages == ["unknown name 'Lineer'", "Linear has no parameter 'biass'"]


def test_reserved_module_attributes_cover_torchs() -> None:
    from torch import nn

    from tritondsl.compiler.resolve import MODULE_ATTRIBUTES

    for module in (nn.Module(), nn.Sequential()):
        public = {name for name in (*dir(module), *vars(module)) if not name.startswith("_")}
        assert public <= MODULE_ATTRIBUTES, sorted(public - MODULE_ATTRIBUTES)


NAME_PLACES = {
    "member": "    NAME = Linear(4, 4)\n",
    "let": "    let NAME = 4\n",
    "for target": "    s = Sequential {\n        for NAME in range(2) {\n            ReLU()\n"
                  "        }\n    }\n",
    "Sequential item": "    s = Sequential {\n        NAME = ReLU()\n    }\n",
    "param tensor": "    param NAME: TernaryTensor[4, 4]\n",
}


@pytest.mark.parametrize("name", ["training", "parameters", "state_dict", "eval", "to", "cuda",
                                  "_modules", "_x", "append", "tdsl_spec"])
@pytest.mark.parametrize("place", NAME_PLACES, ids=NAME_PLACES)
def test_module_attribute_names_are_refused_where_bound(name: str, place: str) -> None:
    body = NAME_PLACES[place].replace("NAME", name)
    forward = "    forward(x) {\n        return relu(x)\n    }\n}\n"
    source = f"model Net() {{\n    input x: Tensor[N, 4]\n{body}{forward}"
    with pytest.raises(CompileError) as info:
        check_source(source)
    [diag] = info.value.diagnostics
    line = 3 + next(i for i, text in enumerate(body.split("\n")) if name in text)
    assert diag.span is not None and diag.span.line == line
    assert f"'{name}'" in diag.message
    assert ("torch.nn.Module" in diag.message) != name.startswith("_")


def test_a_block_parameter_named_like_a_module_attribute_is_refused() -> None:
    source = """block B(training: bool = true) {
    fc = Linear(4, 4)
    forward(x) {
        return fc(x) if training else x
    }
}
model Net() {
    input x: Tensor[N, 4]
    b = B()
    forward(x) {
        return b(x)
    }
}
"""
    with pytest.raises(CompileError, match=r"'training' is an attribute of torch\.nn\.Module"):
        check_source(source)


SIZE_LIMITS = {
    "Linear(64, 2 ** 64)": "Linear: 'out_features' is 18446744073709551616, above the limit",
    "Conv2d(3, 2 ** 64, 3)": "Conv2d: 'out_channels' is 18446744073709551616, above the limit",
    "Linear(64, " + "1" * 77 + ")": "above the limit of 2,147,483,647",
    "Linear(2 ** 20, 2 ** 20)": "its weight would have 1,099,511,627,776 elements",
    "Conv2d(64, 64, 2 ** 18)": "its weight would have",
    "MaxPool2d(2, stride=2 ** 40)": "'stride' is 1099511627776, above the limit",
}


@pytest.mark.parametrize("layer", SIZE_LIMITS, ids=SIZE_LIMITS)
def test_layer_sizes_torch_cannot_build_are_located_errors(layer: str) -> None:
    source = (f"model Net() {{\n    input x: Tensor[N, 64, 8, 8]\n    big = {layer}\n"
              "    forward(x) {\n        return x\n    }\n}\n")  # fmt: skip
    with pytest.raises(CompileError) as info:
        check_source(source)
    [diag] = info.value.diagnostics
    assert SIZE_LIMITS[layer] in diag.message
    assert diag.span is not None and (diag.span.line, diag.span.column) == (3, 11)


@pytest.mark.parametrize(("decl", "forward", "message"), [
    ("Tensor[N, 2 ** 40]", "x", "a tensor dimension of 1,099,511,627,776 is above the limit"),
    ("Tensor[N, 64, 8, 8]", "interpolate(x, scale_factor=100000)",
     "interpolate(): the output shape [N, 64, 800000, 800000] has 40,960,000,000,000 elements"),
    ("Tensor[N, 8]", "cat([x] * 2000, 1)", None),
])  # fmt: skip
def test_tensor_sizes_are_bounded(decl: str, forward: str, message: str | None) -> None:
    source = (f"model Net() {{\n    input x: {decl}\n    forward(x) {{\n"
              f"        return {forward}\n    }}\n}}\n")  # fmt: skip
    if message is None:
        assert check_source(source).models["Net"].output.shape == ("N", 16000)
        return
    with pytest.raises(CompileError) as info:
        check_source(source)
    [diag] = info.value.diagnostics
    assert message in diag.message and diag.span is not None
