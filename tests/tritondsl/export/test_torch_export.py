"""TorchScript and torch.export files reload and match the deployed model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import tritondsl
from tritondsl.backend.layers import (
    ActQuantConv2d,
    ActQuantLinear,
    QuantConv2d,
    QuantLinear,
    QuantModule,
)
from tritondsl.backend.precision import A8LSQ, A8PerToken, A8Static
from tritondsl.export.torch_export import (
    ScriptableConv2d,
    ScriptableLinear,
    deployed_copy,
    export_pt2,
    export_torchscript,
    unpack_trits,
)
from tritondsl.kernels.packing import pack, unpack

X32 = (2, 3, 32, 32)
# The tests load and script TorchScript themselves; torch 2.13 deprecates it upstream.

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _input(shape: tuple[int, ...]) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("k", [1, 4, 9, 13])
def test_unpack_trits_matches_the_packing_spec(k: int) -> None:
    trits = torch.randint(-1, 2, (5, k), generator=torch.Generator().manual_seed(k))
    packed = pack(trits)
    expected = unpack(packed, k).float()
    assert torch.equal(unpack_trits(packed, k), expected)
    assert torch.equal(torch.jit.script(unpack_trits)(packed, k), expected)


def test_scriptable_twins_decode_every_storage_kind(mixed: nn.Module) -> None:
    deployed = deployed_copy(mixed)
    layers = {n: m for n, m in deployed.named_modules() if isinstance(m, QuantModule)}
    kinds = set()
    for name, layer in layers.items():
        twin = ScriptableConv2d(layer) if isinstance(layer, QuantConv2d) else None
        if isinstance(layer, QuantLinear):
            twin = ScriptableLinear(layer)
        assert twin is not None
        assert torch.equal(twin._weight(), layer.decomposition().dequantize()), name
        # Same state_dict as the deployed layer: a scripted model loads deployed checkpoints.
        assert twin.state_dict().keys() == layer.state_dict().keys(), name
        kinds.add(twin.kind)
    assert kinds == {0, 1, 2, 3}  # TWN/AbsMean, Learned, int8, fp16 all present


@pytest.mark.slow
def test_torchscript_scripts_mobilenetv2_and_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model("mobilenetv2", num_classes=10)
    result = export_torchscript(model, tmp_path / "m.pt", _input(X32))
    assert result.method == "script" and result.fallback_reason is None
    assert result.ok and len(result.checks) == 2, [c.line() for c in result.checks]
    assert all(check.max_abs == 0 for check in result.checks)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    state = loaded.state_dict()
    # The file keeps the 2-bit codes, not float weights.
    assert state["features.1.conv.0.0.weight_packed"].dtype == torch.uint8
    assert not any(key.endswith(".weight") and "features.1.conv.0.0" in key for key in state)


def test_torchscript_resnet18_reloads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model("resnet18", num_classes=10)
    result = export_torchscript(model, tmp_path / "r.pt", _input((1, 3, 32, 32)))
    assert result.ok, [c.line() for c in result.checks]
    assert [c.name.split(" [")[0] for c in result.checks] == [
        "reloaded, example input",
        "reloaded, other batch",
    ]
    # ResNet18's generated BasicBlock reads self.downsample only when it exists, which
    # TorchScript rejects; when that is fixed in codegen, scripting takes over.
    assert result.method in ("script", "trace")
    assert (result.fallback_reason is not None) == (result.method == "trace")


class _NotScriptable(nn.Module):
    """A forward TorchScript cannot compile (``**kwargs``), around a quantized layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = QuantLinear(6, 3)

    def forward(self, x: Tensor, **kwargs: Tensor) -> Tensor:
        return self.fc(x)


def test_torchscript_falls_back_to_trace_and_says_why(tmp_path: Path) -> None:
    result = export_torchscript(_NotScriptable(), tmp_path / "n.pt", _input((4, 6)))
    assert result.method == "trace"
    assert result.fallback_reason and "variable number of arguments" in result.fallback_reason
    assert result.ok


def test_scripted_models_skip_the_input_check_eager_models_keep_it(
    mixed: nn.Module, tmp_path: Path
) -> None:
    # runtime.check_input is compiled as a no-op under torch.jit.script (see its comment).
    result = export_torchscript(mixed, tmp_path / "m.pt", _input(X32))
    assert result.method == "script" and result.ok
    small = torch.randn(1, 3, 16, 16)
    assert torch.jit.load(str(result.path))(small).shape == (1, 10)
    with pytest.raises(ValueError, match=r"expects 'x' of shape \[N, 3, 32, 32\]"):
        mixed(small)


def test_pt2_reloads_with_a_dynamic_batch(mixed: nn.Module, tmp_path: Path) -> None:
    # A batch-1 example: torch.export would specialise that dimension; it must stay dynamic.
    result = export_pt2(mixed, tmp_path / "m.pt2", _input((1, 3, 32, 32)))
    assert result.method == "torch.export"
    assert result.ok and len(result.checks) == 2, [c.line() for c in result.checks]
    program = torch.export.load(str(tmp_path / "m.pt2"))
    assert program.module()(torch.randn(7, 3, 32, 32)).shape == (7, 10)
    assert any(
        buffer.dtype == torch.uint8 for buffer in program.state_dict.values()
    )  # packed codes kept


@pytest.mark.slow
def test_activation_quantizers_survive_script_and_pt2(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        ActQuantConv2d(3, 4, 3, padding=1, input_quantizer=A8Static()),
        nn.ReLU(),
        QuantConv2d(4, 4, 3, input_quantizer=A8LSQ()),
        nn.Flatten(),
        QuantLinear(4 * 5 * 5, 6, input_quantizer=A8Static(signed=True)),
        ActQuantLinear(6, 2, input_quantizer=A8PerToken()),
    )
    example = _input((2, 3, 7, 7))
    model(example)  # one training batch sets the static and LSQ scales
    scripted = export_torchscript(model, tmp_path / "a.pt", example)
    assert scripted.method == "script" and scripted.ok
    assert all(check.max_abs == 0 for check in scripted.checks)
    state = torch.jit.load(str(scripted.path)).state_dict()
    assert state["2.input_quant.zero_point"].dtype == torch.uint8
    assert export_pt2(model, tmp_path / "a.pt2", example).ok


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_pt2_zoo_models_reload_and_match(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model(name, num_classes=10)
    result = export_pt2(model, tmp_path / f"{name}.pt2", _input(X32))
    assert result.ok, [c.line() for c in result.checks]
    assert all(check.max_abs <= 1e-5 for check in result.checks)
