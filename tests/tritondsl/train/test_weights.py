"""Pretrained weights: every readable form, key matching, and files that must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import tritondsl
from tests.conftest import ROOT
from tests.tritondsl.train.conftest import tiny
from tritondsl.backend.layers import QuantModule
from tritondsl.export.hub import save_pretrained
from tritondsl.train import CheckpointError, Trainer
from tritondsl.train import weights as tw


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every float tensor drawn anew (so a load that copies nothing cannot pass)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return model


@pytest.fixture(scope="module")
def fp32_resnet() -> dict[str, torch.Tensor]:
    """The state_dict of the zoo ResNet18 built in fp32 (torchvision's layout), randomized."""
    model = _randomized(tritondsl.load_model("resnet18", precision="fp32", num_classes=10))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    mine = model.state_dict()
    assert mine.keys() == state.keys()
    for key, tensor in state.items():
        assert torch.equal(mine[key], tensor), key


def test_torchvision_layout_loads_strictly_into_the_ternary_zoo_model() -> None:
    # The published torchvision ResNet18 layout, key for key and shape for shape.
    layout = json.loads((ROOT / "tests" / "data" / "torchvision_resnet18.json").read_text())
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    state = {k: torch.rand(shape).to(dtypes[d]) for k, shape, d in layout["state_dict"]}
    model = tritondsl.load_model("resnet18")
    report = tw.load_into(model, tw.Weights(Path("torchvision.pth"), state))
    assert len(report.loaded) == layout["num_state_dict_entries"] == len(state)
    assert not (report.missing or report.unexpected or report.reshaped)
    _same(model, state)
    assert any(isinstance(m, QuantModule) for m in model.modules())  # latent weights of QAT


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_fp32_checkpoint_files_load(
    tmp_path: Path, fp32_resnet: dict[str, torch.Tensor], suffix: str
) -> None:
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(fp32_resnet, path)
    else:
        torch.save(fp32_resnet, path)
    model = tritondsl.load_model("resnet18", num_classes=10)
    report = tw.load_into(model, tw.read(path))
    _same(model, fp32_resnet)
    assert report.line() == f"loaded {len(fp32_resnet)} tensors from {path}"


def test_wrapped_and_prefixed_state_dicts_are_unwrapped(
    tmp_path: Path, fp32_resnet: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "ddp.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in fp32_resnet.items()}},
               path)  # fmt: skip
    weights = tw.read(path)
    assert weights.notes == ["took the state_dict under key 'state_dict'",
                             "dropped the key prefix 'module.'"]  # fmt: skip
    assert weights.tensors.keys() == fp32_resnet.keys()


class _RunsCode:
    """Unpickling this would create a file: the test that nothing in a .pth runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickles_that_are_not_plain_state_dicts_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.ones(2, 2), "payload": _RunsCode(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"refused: it holds a Python object \(io\.open\)"
                       r".*nothing in it ran"):  # fmt: skip
        tw.read(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the control: an unrestricted load runs the payload
    assert marker.exists()

    whole = tmp_path / "model.pth"
    torch.save(nn.Linear(2, 2), whole)
    with pytest.raises(CheckpointError, match="refused: it holds a Python object"):
        tw.read(whole)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), scripted)
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        tw.read(scripted)
    mixed = tmp_path / "mixed.pth"
    torch.save({"w": torch.ones(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match=r"non-tensor values \(int\), not a state_dict"):
        tw.read(mixed)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="refused"):
        tw.read(garbage)
    truncated = tmp_path / "truncated.safetensors"
    save_file({"w": torch.ones(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        tw.read(truncated)
    with pytest.raises(CheckpointError, match=r"unknown weights format '\.onnx'"):
        (tmp_path / "m.onnx").write_bytes(b"x")
        tw.read(tmp_path / "m.onnx")
    with pytest.raises(CheckpointError, match="no such file"):
        tw.read(tmp_path / "absent.pth")
    nan = tmp_path / "nan.safetensors"
    save_file({"w": torch.tensor([1.0, float("nan")])}, nan)
    with pytest.raises(CheckpointError, match="'w' holds NaN or Inf"):
        tw.read(nan)


def test_strict_mismatch_lists_every_kind_and_suggests_reinit(
    fp32_resnet: dict[str, torch.Tensor],
) -> None:
    state = dict(fp32_resnet)
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = torch.ones(1)
    big = tritondsl.load_model("resnet18")  # 1000 classes; the file has 10
    model_state = {k: v.clone() for k, v in big.state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        tw.load_into(big, tw.Weights(Path("w.pth"), state))
    message = str(caught.value)
    assert "1 missing: layer1.0.bn1.running_var" in message
    assert "1 unexpected: extra.weight" in message
    assert "2 reshaped: fc.bias: file [10], model [1000], fc.weight: file [10, 512]" in message
    assert "--reinit fc" in message and "--no-init-strict" in message
    _same(big, model_state)  # refused before anything was copied

    report = tw.load_into(big, tw.Weights(Path("w.pth"), state), strict=False)
    assert report.missing == ["layer1.0.bn1.running_var"]
    assert report.unexpected == ["extra.weight"]
    assert report.reshaped == ["fc.bias: file [10], model [1000]",
                               "fc.weight: file [10, 512], model [1000, 512]"]  # fmt: skip
    assert len(report.loaded) == len(state) - 3
    assert torch.equal(big.state_dict()["conv1.weight"], state["conv1.weight"])
    assert torch.equal(big.state_dict()["fc.weight"], model_state["fc.weight"])

    fresh = tritondsl.load_model("resnet18")
    before = fresh.fc.weight.detach().clone()
    report = tw.load_into(fresh, tw.Weights(Path("w.pth"), fp32_resnet), reinit=["fc"])
    assert report.reinitialized == ["fc.bias", "fc.weight"] and not report.missing
    assert torch.equal(fresh.fc.weight, before)
    with pytest.raises(CheckpointError, match="--reinit 'head': the model has no module"):
        tw.load_into(fresh, tw.Weights(Path("w.pth"), fp32_resnet), reinit=["head"])


def test_hub_checkpoint_and_save_pretrained_folders(tmp_path: Path) -> None:
    ternary = _randomized(tritondsl.load_model(str(ROOT / "examples" / "ternary_mlp.tdsl"),
                                               hidden=[16]))  # fmt: skip
    save_pretrained(ternary, tmp_path / "hub")
    fresh = tritondsl.load_model(str(ROOT / "examples" / "ternary_mlp.tdsl"), hidden=[16])
    weights = tw.read(tmp_path / "hub")
    tw.load_into(fresh, weights)
    # The latent weights start at the stored ternary weights; quantized again, they give
    # the same trits (the scale is re-derived by the quantizer).
    original, loaded = ternary.layers[0], fresh.layers[0]
    assert torch.equal(loaded.weight, original.decomposition().dequantize())
    assert torch.equal(loaded.decomposition().codes, original.decomposition().codes)
    assert torch.equal(fresh.out.weight, ternary.out.weight)

    Trainer(tiny(tmp_path / "run", epochs=1)).fit()
    from_run = tw.read(tmp_path / "run")
    assert from_run.path == tmp_path / "run" / "checkpoints" / "best" / "model.safetensors"

    plain = tmp_path / "plain"
    plain.mkdir()
    save_file({"a": torch.ones(2)}, plain / "shard-1.safetensors")
    save_file({"b": torch.ones(3)}, plain / "shard-2.safetensors")
    index = {"weight_map": {"a": "shard-1.safetensors", "b": "shard-2.safetensors"}}
    (plain / "model.safetensors.index.json").write_text(json.dumps(index))
    assert set(tw.read(plain).tensors) == {"a", "b"}
    index["weight_map"]["b"] = "../outside.safetensors"
    (plain / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"shard '\.\./outside\.safetensors' is not a file"):
        tw.read(plain)
    with pytest.raises(CheckpointError, match="not a Hub, checkpoint or save_pretrained"):
        tw.read(tmp_path)


def test_learned_scales_come_from_the_fp32_weights() -> None:
    source = """
model Learned() {
    input x: Tensor[N, 8]
    fc = Linear(8, 4) @ternary(learned=true)
    forward(x) { return fc(x) }
}
"""
    fp32 = _randomized(tritondsl.compile(source, "fp32").build())
    state = {k: v.clone() for k, v in fp32.state_dict().items()}
    model = tritondsl.compile(source).build()
    assert {"fc.weight_scale_pos", "fc.weight_scale_neg"} <= model.state_dict().keys()
    report = tw.load_into(model, tw.Weights(Path("fp32.pth"), state))  # strict
    assert report.loaded == ["fc.bias", "fc.weight"] and not report.missing
    derived = model.fc.decomposition()
    expected = derived.codes.abs().bool()
    # Both scales start at the mean |W| of the weights that stay non-zero (TWN's alpha).
    alpha = state["fc.weight"].abs()[expected].mean()
    assert torch.allclose(model.fc.weight_scale_pos, alpha) and torch.equal(
        model.fc.weight_scale_pos, model.fc.weight_scale_neg)  # fmt: skip
