"""Tests for backend/deploy.py: whole-model deploy, atomic loading, measured memory."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import tritondsl
from tritondsl.backend.deploy import deploy, deployed_bytes, is_deployed
from tritondsl.backend.layers import QuantConv2d, QuantLinear, QuantModule
from tritondsl.backend.precision import (
    FP16,
    TWN,
    AbsMean,
    Int8,
    Learned,
    QuantizerConfig,
    SparsityTarget,
)
from tritondsl.kernels.packing import INVALID_CODE

from .test_layers import IMAGE, quant_resnet


def test_package_level_deploy_is_this_function() -> None:
    assert tritondsl.deploy is deploy


@pytest.mark.parametrize("cache", ["none", "int8", "float"])
def test_deploy_converts_every_layer_in_place(cache: str) -> None:
    model = quant_resnet(TWN())
    expected = model(IMAGE)
    assert not is_deployed(model)
    assert deploy(model, weight_cache=cache) is model
    layers = [m for m in model.modules() if isinstance(m, QuantModule)]
    assert len(layers) == 4 and all(layer.deployed for layer in layers)
    assert all(layer.weight_cache == cache for layer in layers)
    assert is_deployed(model)
    assert torch.equal(model(IMAGE), expected)
    assert all((layer.weight_cache_bytes() > 0) == (cache != "none") for layer in layers)


@pytest.mark.parametrize("layer_type", [QuantLinear, QuantConv2d], ids=lambda t: t.__name__)
def test_trained_learned_scales_survive_deploy(layer_type: type[QuantModule]) -> None:
    torch.manual_seed(0)
    layer = (QuantLinear(8, 4, quantizer=Learned()) if layer_type is QuantLinear
             else QuantConv2d(8, 4, 1, quantizer=Learned()))  # fmt: skip
    x = torch.randn(16, 8) if layer_type is QuantLinear else torch.randn(16, 8, 1, 1)
    target = torch.randn_like(layer(x)) * 3
    start = [layer.weight_scale_pos.item(), layer.weight_scale_neg.item()]
    optimizer = torch.optim.SGD([layer.weight_scale_pos, layer.weight_scale_neg], lr=0.05)
    for _ in range(20):  # train the scales only: codes stay, the scales move
        optimizer.zero_grad()
        nn.functional.mse_loss(layer(x), target).backward()
        optimizer.step()
    trained = [layer.weight_scale_pos.detach().clone(), layer.weight_scale_neg.detach().clone()]
    assert all(abs(t.item() - s) > 0.05 for t, s in zip(trained, start, strict=True))
    with torch.no_grad():
        expected = layer(x)
    deploy(layer)
    assert torch.equal(layer.weight_scale_pos, trained[0])
    assert torch.equal(layer.weight_scale_neg, trained[1])
    with torch.no_grad():
        assert torch.equal(layer(x), expected)


def test_is_deployed_needs_all_quant_layers() -> None:
    model = quant_resnet(TWN())
    model.fc.deploy_()
    assert not is_deployed(model)
    assert not is_deployed(nn.Sequential(nn.Linear(2, 2)))
    assert deploy(nn.Sequential(nn.Linear(2, 2))) is not None


def test_deploy_twice_keeps_model_working() -> None:
    model = deploy(quant_resnet(TWN()))
    expected = model(IMAGE)
    state = model.state_dict()
    deploy(model)
    model.load_state_dict(state)
    assert torch.equal(model(IMAGE), expected)


@pytest.mark.parametrize(
    ("key", "corrupt", "message"),
    [
        pytest.param(
            "layer4.0.conv2.weight_packed",
            lambda p: p.clone().index_fill_(0, torch.tensor([0]), INVALID_CODE),
            r"layer4\.0\.conv2\.weight_packed: contains the invalid trit code 0b11",
            id="code-0b11",
        ),
        pytest.param(
            "layer4.0.conv2.weight_packed",
            lambda p: p[:, :-2],
            r"layer4\.0\.conv2\.weight_packed: K=36 needs 9 bytes per row, got 7",
            id="packed-length",
        ),
        pytest.param(
            "fc.weight_scale",
            lambda s: s.repeat(2),
            r"fc\.weight_scale: expected shape \(10,\), got \(20,\)",
            id="scale-shape",
        ),
    ],
)
def test_bad_checkpoint_leaves_whole_model_untouched(key: str, corrupt, message: str) -> None:
    model = deploy(quant_resnet(TWN(), seed=1))
    state = deploy(quant_resnet(TWN(), seed=2)).state_dict()
    state[key] = corrupt(state[key])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(state)
    # conv1 precedes the bad tensor in load order, so only the root check keeps it intact.
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_training_checkpoint_into_deployed_model_is_explained() -> None:
    model = deploy(quant_resnet(TWN()))
    with pytest.raises(ValueError, match=r"^conv1\.weight: does not fit a deployed layer"):
        model.load_state_dict(quant_resnet(TWN()).state_dict())


def expected_storage_bytes(config: QuantizerConfig, n: int, k: int) -> int:
    """Hand formula for one deployed layer's weight storage."""
    groups = n if getattr(config, "per_channel", False) else 1
    table = {
        Int8: n * k + 4 * groups,
        FP16: 2 * n * k,
        Learned: math.ceil(k / 4) * n + 2 * 4,
    }
    return table.get(type(config), math.ceil(k / 4) * n + 4 * groups)


@pytest.mark.parametrize(
    "config",
    [TWN(), TWN(per_channel=False), AbsMean(), Learned(), SparsityTarget(), Int8(), FP16()],
    ids=repr,
)
@pytest.mark.parametrize(
    ("layer", "n", "k"),
    [
        pytest.param(lambda q: QuantLinear(127, 6, quantizer=q), 6, 127, id="linear-K127"),
        pytest.param(lambda q: QuantLinear(5, 3, quantizer=q), 3, 5, id="linear-K5"),
        pytest.param(lambda q: QuantConv2d(8, 4, 3, groups=2, quantizer=q), 4, 36, id="conv-K36"),
    ],
)
def test_deployed_bytes_match_actual_tensors_and_formula(
    config: QuantizerConfig, layer, n: int, k: int
) -> None:
    module = layer(config)
    deploy(module)
    measured = sum(
        t.numel() * t.element_size() for name, t in module.state_dict().items() if name != "bias"
    )
    assert deployed_bytes(module) == measured == expected_storage_bytes(config, n, k)
    assert deployed_bytes(nn.Sequential(module, copy.deepcopy(module))) == 2 * measured


@pytest.mark.parametrize(
    ("config", "n", "k"),
    [
        pytest.param(AbsMean(), 64, 64, id="per-tensor-K64"),
        pytest.param(TWN(per_channel=False), 16, 300, id="per-tensor-K300"),
        pytest.param(TWN(), 8, 640, id="per-channel-K640"),
        pytest.param(SparsityTarget(), 4, 2048, id="per-channel-K2048"),
    ],
)
def test_ternary_storage_is_at_most_2_05_bits_per_weight(
    config: QuantizerConfig, n: int, k: int
) -> None:
    # Per-channel fp32 scales add 32/K bits and row padding up to 6/K bits, so the bound
    # needs K >= 640 per channel; per tensor it holds from K = 64 (K divisible by 4).
    module = deploy(QuantLinear(k, n, bias=False, quantizer=config))
    bits = 8 * deployed_bytes(module) / (n * k)
    assert bits <= 2.05
    assert module.weight_packed.numel() * module.weight_packed.element_size() == n * -(-k // 4)


def test_deployed_bytes_rejects_training_layers() -> None:
    with pytest.raises(ValueError, match="conv1 is not deployed"):
        deployed_bytes(quant_resnet(TWN()))
