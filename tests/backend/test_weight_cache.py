"""The weight cache: eval-mode and deployed layers reuse their quantized weight, and every way
of changing the tensors it came from makes the next forward use the new weight."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from tritondsl.backend.deploy import deploy
from tritondsl.backend.layers import QuantConv2d, QuantLinear, QuantModule
from tritondsl.backend.quantizers import (
    FP16,
    TWN,
    AbsMean,
    Int8,
    Learned,
    QuantizerConfig,
    fake_quantize,
)

CONFIGS = [TWN(), AbsMean(), Learned(), Int8(), FP16()]
IDS = ["twn", "absmean", "learned", "int8", "fp16"]


def _fresh_weight(layer: QuantModule) -> torch.Tensor:
    """The quantized weight computed from scratch, bypassing every cache."""
    with torch.no_grad():
        if layer.deployed:
            return layer.decomposition().dequantize()
        return fake_quantize(layer.quantizer, layer.weight, layer._learned_scales())


def _entry(layer: QuantModule) -> object:
    """Identity of what the cache holds now (a new object after every rebuild)."""
    cache = layer._cache
    return cache._codes if cache._codes is not None else cache._float


def _forward(layer: QuantModule, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return layer(x)


def _conv(config: QuantizerConfig) -> QuantConv2d:
    torch.manual_seed(0)
    return QuantConv2d(4, 6, 3, padding=1, quantizer=config).eval()


X = torch.randn(2, 4, 7, 7, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_eval_mode_reuses_the_quantized_weight(config: QuantizerConfig) -> None:
    layer = _conv(config)
    first = _forward(layer, X)
    entry = _entry(layer)
    assert entry is not None
    second = _forward(layer, X)
    assert _entry(layer) is entry  # not quantized again
    assert torch.equal(first, second)
    assert torch.equal(layer.quantized_weight(), _fresh_weight(layer))


def test_int8_cache_is_a_quarter_of_the_float_weight() -> None:
    layer = _conv(TWN())
    _forward(layer, X)
    n = layer.weight.numel()
    assert layer.weight_cache_bytes() == n + 4 * 6  # int8 trits + one fp32 scale per channel
    layer.weight_cache = "float"
    _forward(layer, X)
    assert layer.weight_cache_bytes() == 4 * n


def test_training_mode_never_caches_and_keeps_the_gradient() -> None:
    layer = _conv(Learned()).train()
    out = layer(X)
    assert layer.weight_cache_bytes() == 0
    out.square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert layer.weight_scale_pos.grad is not None


def test_eval_mode_with_grad_enabled_still_reaches_the_latent_weight() -> None:
    layer = _conv(TWN())
    _forward(layer, X)  # a cache exists
    layer(X).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def _step(layer: QuantModule) -> None:
    """One SGD step taken while the layer stays in eval mode."""
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(X).square().sum().backward()
    optimizer.step()


def _load_other(layer: QuantModule) -> None:
    other = copy.deepcopy(layer)
    with torch.no_grad():
        for p in other.parameters():
            p.copy_(torch.randn_like(p))
    layer.load_state_dict(other.state_dict())


def _new_parameter(layer: QuantModule) -> None:
    layer.weight = nn.Parameter(torch.randn_like(layer.weight))


def _assign_data(layer: QuantModule) -> None:
    layer.weight.data = torch.randn_like(layer.weight)


def _in_place(layer: QuantModule) -> None:
    with torch.no_grad():
        layer.weight.mul_(-1)


def _to_double(layer: QuantModule) -> None:
    layer.double()


def _train_then_eval(layer: QuantModule) -> None:
    layer.train()
    with torch.no_grad():
        layer.weight.data = layer.weight.data.flip(0)
    layer.eval()


def _learned_scale(layer: QuantModule) -> None:
    with torch.no_grad():
        layer.weight_scale_pos.mul_(3)


def _new_quantizer(layer: QuantModule) -> None:
    layer.quantizer = TWN(threshold=0.2)


CHANGES = {
    "optimizer step": _step,
    "load_state_dict": _load_other,
    "new Parameter": _new_parameter,
    ".data =": _assign_data,
    "in-place update": _in_place,
    ".double()": _to_double,
    "train(), change, eval()": _train_then_eval,
    "quantizer replaced": _new_quantizer,
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_eval_cache_follows_every_change(change) -> None:
    layer = _conv(TWN())
    before = _forward(layer, X)
    change(layer)
    x = X.to(layer.weight.dtype)
    after = _forward(layer, x)
    expected = layer._conv_forward(x, _fresh_weight(layer), layer.bias)
    assert torch.equal(after, expected)
    assert not torch.equal(after.to(before.dtype), before)


def test_learned_scale_change_is_seen() -> None:
    layer = _conv(Learned())
    before = _forward(layer, X)
    _learned_scale(layer)
    after = _forward(layer, X)
    assert torch.equal(after, layer._conv_forward(X, _fresh_weight(layer), layer.bias))
    assert not torch.equal(after, before)


def test_data_writes_in_place_need_clear_weight_cache() -> None:
    # Documented limit: writes through .data do not bump the version counter.
    layer = _conv(TWN())
    before = _forward(layer, X)
    layer.weight.data.mul_(-1)
    assert torch.equal(_forward(layer, X), before)
    layer.clear_weight_cache()
    assert torch.equal(_forward(layer, X), layer._conv_forward(X, _fresh_weight(layer), layer.bias))


@pytest.mark.parametrize("mode", ["int8", "float"])
def test_deployed_cache_follows_load_state_dict_and_to(mode: str) -> None:
    source, target = _conv(TWN()), _conv(TWN())
    with torch.no_grad():
        source.weight.mul_(-1)
    deploy(source, weight_cache=mode)
    deploy(target, weight_cache=mode)
    _forward(target, X)
    target.load_state_dict(source.state_dict())
    assert torch.equal(_forward(target, X), _forward(source, X))
    target.double()
    assert _entry(target) is None
    out = _forward(target, X.double())
    assert out.dtype == torch.float64
    assert torch.allclose(out, _forward(source, X).double(), atol=1e-5)


def test_copies_and_pickles_start_with_an_empty_cache() -> None:
    model = nn.Sequential(_conv(TWN()), nn.Flatten(), QuantLinear(6 * 49, 3).eval()).eval()
    expected = _forward(model, X)
    clone = copy.deepcopy(model)
    assert all(_entry(m) is None for m in clone.modules() if isinstance(m, QuantModule))
    assert torch.equal(_forward(clone, X), expected)
    restored = pickle.loads(pickle.dumps(model))
    assert torch.equal(_forward(restored, X), expected)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    assert not any("cache" in key for key in model.state_dict())


def test_torch_export_of_a_deployed_model_holds_no_cache_constant() -> None:
    layer = deploy(_conv(TWN()))
    _forward(layer, X)  # the cache is full when export traces
    program = torch.export.export(layer, (X,))
    # Only the 256-entry unpack table is a constant; no weight-sized tensor was lifted.
    assert all(c.numel() == 256 * 4 for c in program.constants.values())
    assert set(program.state_dict) == {"weight_packed", "weight_scale", "bias"}
    assert torch.equal(program.module()(X), _forward(layer, X))
