"""Tests for backend/layers.py: torch-compatible state, deploy_, loading checks, STE check."""

from __future__ import annotations

import functools
import math
import re
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from tritondsl.backend.layers import (
    LEARNED_SCALE_NAMES,
    QuantConv2d,
    QuantConvTranspose2d,
    QuantLinear,
    QuantModule,
    TernaryConv2d,
    TernaryLinear,
)
from tritondsl.backend.precision import (
    FP16,
    TWN,
    AbsMean,
    Int8,
    Learned,
    QuantizerConfig,
    SparsityTarget,
)
from tritondsl.backend.quantizers import (
    decompose,
)
from tritondsl.kernels.packing import INVALID_CODE, PackingError, pack, unpack

from .test_quantizers import ALL

STORAGE = {"ternary": "weight_packed", "int8": "weight_int8", "fp16": "weight_fp16"}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class Block(nn.Module):
    """A torchvision BasicBlock in miniature (one grouped conv to exercise K order)."""

    def __init__(self, conv: Callable[..., nn.Module], ch: int) -> None:
        super().__init__()
        self.conv1 = conv(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = conv(ch, ch, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    """Key names follow torchvision's ResNet (conv1, layer4.0.conv1, fc)."""

    def __init__(
        self,
        conv: Callable[..., nn.Module] = nn.Conv2d,
        linear: Callable[..., nn.Module] = nn.Linear,
    ) -> None:
        super().__init__()
        self.conv1 = conv(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer4 = nn.Sequential(Block(conv, 8))
        self.fc = linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def quant_resnet(quantizer: QuantizerConfig, seed: int = 0) -> TinyResNet:
    """TinyResNet made of Quant layers, in eval mode, with seeded init."""
    torch.manual_seed(seed)
    model = TinyResNet(
        functools.partial(QuantConv2d, quantizer=quantizer),
        functools.partial(QuantLinear, quantizer=quantizer),
    )
    return model.eval()


IMAGE = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))

# (id, constructor taking a quantizer, input shape)
LAYERS: list[tuple[str, Callable[[QuantizerConfig], QuantModule], tuple[int, ...]]] = [
    ("linear-K127", lambda q: QuantLinear(127, 6, quantizer=q), (3, 127)),
    ("linear-3d-nobias", lambda q: QuantLinear(64, 5, bias=False, quantizer=q), (2, 4, 64)),
    (
        "conv-grouped-strided-dilated",
        lambda q: QuantConv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2, quantizer=q),
        (2, 4, 9, 9),
    ),
    (
        "conv-same-reflect",
        lambda q: QuantConv2d(
            4, 6, (3, 2), padding="same", padding_mode="reflect", bias=False, quantizer=q
        ),
        (1, 4, 7, 6),
    ),
    ("conv-1x1", lambda q: QuantConv2d(5, 3, 1, quantizer=q), (2, 5, 4, 4)),
    (
        "deconv-grouped-strided",
        lambda q: QuantConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                       groups=2, dilation=1, quantizer=q),
        (2, 4, 5, 7),
    ),
    ("deconv-2x2-nobias", lambda q: QuantConvTranspose2d(6, 3, 2, 2, bias=False, quantizer=q),
     (1, 6, 3, 3)),
]
LAYER_PARAMS = [pytest.param(make, shape, id=name) for name, make, shape in LAYERS]
CONFIG_PARAMS = [pytest.param(q, id=repr(q)) for q in ALL]


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize(
    ("quant", "plain"),
    [
        pytest.param(
            lambda q: QuantLinear(7, 3, quantizer=q), lambda: nn.Linear(7, 3), id="linear"
        ),
        pytest.param(
            lambda q: QuantConv2d(4, 6, (3, 2), 2, 1, 1, 2, False, quantizer=q),
            lambda: nn.Conv2d(4, 6, (3, 2), 2, 1, 1, 2, False),
            id="conv-positional-args",
        ),
        pytest.param(
            lambda q: QuantConvTranspose2d(4, 6, (3, 2), 2, 1, 1, 2, False, 2, quantizer=q),
            lambda: nn.ConvTranspose2d(4, 6, (3, 2), 2, 1, 1, 2, False, 2),
            id="deconv-positional-args",
        ),
    ],
)
def test_training_state_mirrors_torch_layer(config: QuantizerConfig, quant, plain) -> None:
    ours, theirs = quant(config), plain()
    expected = {k: v.shape for k, v in theirs.state_dict().items()}
    if isinstance(config, Learned):
        expected.update(dict.fromkeys(LEARNED_SCALE_NAMES, torch.Size([1])))
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    assert ours.weight.dtype == torch.float32


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_float_checkpoint_loads_strict(config: QuantizerConfig) -> None:
    checkpoint = TinyResNet().state_dict()
    model = quant_resnet(config, seed=1)
    model.load_state_dict(checkpoint, strict=True)
    assert torch.equal(model.layer4[0].conv2.weight, checkpoint["layer4.0.conv2.weight"])
    assert torch.equal(model.fc.bias, checkpoint["fc.bias"])
    if isinstance(config, Learned):
        # Scales missing from a float checkpoint start from the checkpoint's weights.
        expected = decompose(config, checkpoint["fc.weight"]).scales
        assert [model.fc.weight_scale_pos, model.fc.weight_scale_neg] == list(expected)


@pytest.mark.parametrize("cls", [TernaryLinear, TernaryConv2d], ids=lambda c: c.__name__)
@pytest.mark.parametrize("config", [Int8(), FP16()], ids=repr)
def test_ternary_layers_reject_non_ternary_quantizers(cls, config: QuantizerConfig) -> None:
    message = rf"{cls.__name__} needs a ternary quantizer.*{re.escape(repr(config))}"
    with pytest.raises(TypeError, match=message):
        cls(4, 4, 1, quantizer=config) if cls is TernaryConv2d else cls(4, 4, quantizer=config)


@pytest.mark.parametrize("config", [TWN(), AbsMean(), Learned(), SparsityTarget()], ids=repr)
def test_ternary_layers_accept_ternary_quantizers(config: QuantizerConfig) -> None:
    assert TernaryLinear(4, 4, quantizer=config).quantizer == config
    assert TernaryConv2d(4, 4, 3, quantizer=config).quantizer == config
    assert TernaryLinear(4, 4).quantizer == TWN()


def test_unknown_quantizer_is_rejected() -> None:
    with pytest.raises(TypeError, match="unknown quantizer"):
        QuantLinear(4, 4, quantizer="twn")  # type: ignore[arg-type]


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize(("make", "shape"), LAYER_PARAMS)
def test_deploy_replaces_latent_weight_by_buffers(config: QuantizerConfig, make, shape) -> None:
    layer = make(config)
    n, k = layer.weight.shape[0], math.prod(layer.weight.shape[1:])
    weight_shape = tuple(layer.weight.shape)
    assert layer.deploy_() is layer
    state = layer.state_dict()
    assert "weight" not in state and not hasattr(layer, "weight")
    assert [name for name, _ in layer.named_parameters()] == (["bias"] if "bias" in state else [])
    kind = {Int8: "int8", FP16: "fp16"}.get(type(config), "ternary")
    stored = state[STORAGE[kind]]
    if kind == "ternary":
        assert stored.dtype == torch.uint8 and tuple(stored.shape) == (n, -(-k // 4))
    else:
        assert stored.dtype == {"int8": torch.int8, "fp16": torch.float16}[kind]
        assert tuple(stored.shape) == weight_shape
    scale_names = {"weight_scale", *LEARNED_SCALE_NAMES} & state.keys()
    if isinstance(config, Learned):
        assert scale_names == set(LEARNED_SCALE_NAMES)
    elif kind == "fp16":
        assert not scale_names
    else:
        groups = n if getattr(config, "per_channel", False) else 1
        assert scale_names == {"weight_scale"}
        assert state["weight_scale"].dtype == torch.float32
        assert tuple(state["weight_scale"].shape) == (groups,)


@pytest.mark.parametrize("cache", ["none", "int8", "float"])
@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize(("make", "shape"), LAYER_PARAMS)
def test_deployed_output_equals_training_eval_output(
    config: QuantizerConfig, make, shape: tuple[int, ...], cache: str
) -> None:
    layer = make(config).eval()
    x = torch.randn(shape)
    expected = layer(x)
    layer.deploy_(weight_cache=cache)
    assert_close(layer(x), expected, rtol=1e-5, atol=0)
    assert (layer.weight_cache_bytes() > 0) == (cache != "none")


def test_conv_packs_along_flattened_weight_rows() -> None:
    layer = QuantConv2d(6, 9, (3, 2), groups=3, quantizer=TWN())
    codes = decompose(TWN(), layer.weight.detach()).codes
    layer.deploy_()
    k = 2 * 3 * 2  # in/groups · kh · kw
    assert torch.equal(layer.weight_packed, pack(codes.reshape(9, k)))
    assert torch.equal(unpack(layer.weight_packed, k).reshape(9, 2, 3, 2), codes)


def test_deploy_is_idempotent_and_updates_cache_setting() -> None:
    layer = QuantLinear(8, 4).deploy_()
    packed = layer.weight_packed.clone()
    layer.deploy_(weight_cache="float")
    layer(torch.randn(2, 8))
    assert torch.equal(layer.weight_packed, packed) and layer.weight_cache_bytes() == 4 * 32
    layer.deploy_(weight_cache="none")
    layer(torch.randn(2, 8))
    assert layer.weight_cache_bytes() == 0
    with pytest.raises(ValueError, match="weight cache must be one of int8, float, none"):
        layer.deploy_(weight_cache="fp32")


@pytest.mark.parametrize("config", CONFIG_PARAMS)
@pytest.mark.parametrize("deployed", [False, True], ids=["training", "deployed"])
def test_state_dict_round_trip(config: QuantizerConfig, deployed: bool) -> None:
    source, target = quant_resnet(config, seed=1), quant_resnet(config, seed=2)
    for layer in (m for model in (source, target) for m in model.modules()):
        if deployed and isinstance(layer, QuantModule):
            layer.deploy_()
    target.load_state_dict(source.state_dict(), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert torch.equal(target(IMAGE), source(IMAGE))


def deployed_resnet_state() -> tuple[TinyResNet, dict[str, Tensor]]:
    """A layer-by-layer deployed TWN model (no root hook) and a state_dict from another seed."""
    model, other = quant_resnet(TWN(), seed=1), quant_resnet(TWN(), seed=2)
    for layer in (m for net in (model, other) for m in net.modules()):
        if isinstance(layer, QuantModule):
            layer.deploy_()
    return model, {k: v.clone() for k, v in other.state_dict().items()}


def with_code_0b11(packed: Tensor) -> Tensor:
    """Copy of ``packed`` whose last row's first code is the invalid 0b11."""
    bad = packed.clone()
    bad[-1, 0] |= INVALID_CODE
    return bad


BAD_STATES = [
    pytest.param(
        "layer4.0.conv1.weight_packed", with_code_0b11, PackingError,
        r"layer4\.0\.conv1\.weight_packed: contains the invalid trit code 0b11", id="code-0b11",
    ),
    pytest.param(
        "layer4.0.conv1.weight_packed", lambda p: p[:, :-1], PackingError,
        r"layer4\.0\.conv1\.weight_packed: K=72 needs 18 bytes per row, got 17",
        id="packed-too-short",
    ),
    pytest.param(
        "layer4.0.conv1.weight_packed", lambda p: p[:-1], ValueError,
        r"layer4\.0\.conv1\.weight_packed: expected shape \(8, 18\), got \(7, 18\)",
        id="packed-missing-row",
    ),
    pytest.param(
        "layer4.0.conv1.weight_packed", lambda p: p.to(torch.int32), PackingError,
        r"layer4\.0\.conv1\.weight_packed: expected dtype uint8", id="packed-wrong-dtype",
    ),
    pytest.param(
        "fc.weight_scale", lambda s: s[:3], ValueError,
        r"fc\.weight_scale: expected shape \(10,\), got \(3,\)", id="scale-shape",
    ),
    pytest.param(
        "fc.bias", lambda b: b[:5], ValueError,
        r"fc\.bias: expected shape \(10,\), got \(5,\)", id="bias-shape",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("key", "corrupt", "error", "message"), BAD_STATES)
def test_bad_deployed_state_raises_naming_tensor_and_leaves_layer_untouched(
    key: str, corrupt: Callable[[Tensor], Tensor], error: type[Exception], message: str
) -> None:
    model, state = deployed_resnet_state()
    state[key] = corrupt(state[key])
    layer_prefix = key.rsplit(".", 1)[0] + "."
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(layer_prefix)}
    with pytest.raises(error, match=message):
        model.load_state_dict(state)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_int8_codes_with_wrong_dtype_are_rejected() -> None:
    layer = QuantLinear(4, 3, quantizer=Int8()).deploy_()
    state = layer.state_dict()
    state["weight_int8"] = state["weight_int8"].to(torch.int32)
    with pytest.raises(ValueError, match=r"weight_int8: expected dtype torch\.int8"):
        layer.load_state_dict(state)


def test_mode_mismatch_is_explained() -> None:
    training_state = QuantLinear(4, 3).state_dict()
    deployed = QuantLinear(4, 3).deploy_()
    with pytest.raises(ValueError, match=r"weight: does not fit a deployed layer.*before deploy"):
        deployed.load_state_dict(training_state)
    with pytest.raises(ValueError, match=r"weight_packed: does not fit a training-mode layer"):
        QuantLinear(4, 3).load_state_dict(deployed.state_dict())


def test_cache_follows_loaded_state() -> None:
    model, state = deployed_resnet_state()
    reference, _ = deployed_resnet_state()
    reference.load_state_dict(state)
    for layer in model.modules():
        if isinstance(layer, QuantModule):
            layer.deploy_(weight_cache="float")
    model(IMAGE)  # fills the caches from the first weights
    model.load_state_dict(state)
    assert not any("cache" in key for key in model.state_dict())
    assert torch.equal(model(IMAGE), reference(IMAGE))


@pytest.mark.parametrize("config", CONFIG_PARAMS)
def test_gradient_reaches_every_latent_weight(config: QuantizerConfig) -> None:
    model = quant_resnet(config).train()
    layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantModule)}
    assert set(layers) == {"conv1", "layer4.0.conv1", "layer4.0.conv2", "fc"}
    # A random projection of the output: out.sum() through BatchNorm has no gradient.
    probe = torch.randn(model(IMAGE).shape, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((model(IMAGE) * probe).sum(), [m.weight for m in layers.values()])
    assert all(bool(g.abs().sum() > 0) and bool(torch.isfinite(g).all()) for g in grads)


def test_extra_repr_names_quantizer_and_mode() -> None:
    layer = TernaryConv2d(3, 4, 3, quantizer=AbsMean())
    assert "quantizer=AbsMean(per_channel=False), deployed=False" in repr(layer)
    assert "deployed=True" in repr(layer.deploy_())


@pytest.mark.slow
def test_import_and_cpu_forward_never_load_triton() -> None:
    # The layers use the packing format (tritondsl.kernels.packing) but never the Triton
    # kernels themselves on CPU.
    code = (
        "import sys, torch, tritondsl\n"
        "from tritondsl.backend.layers import QuantLinear\n"
        "model = tritondsl.deploy(torch.nn.Sequential(QuantLinear(8, 4)))\n"
        "model(torch.randn(2, 8))\n"
        "kernels = ('dispatch', 'ternary_gemm', 'ternary_gemv', 'ternary_conv2d_igemm')\n"
        "names = ['triton', *(f'tritondsl.kernels.{k}' for k in kernels)]\n"
        "loaded = [m for m in names if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert not torch.cuda.is_initialized()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("config", [TWN(), AbsMean()], ids=repr)
def test_cuda_kernel_path_matches_cpu(config: QuantizerConfig) -> None:
    model = quant_resnet(config)
    for layer in model.modules():
        if isinstance(layer, QuantModule):
            layer.deploy_()
    expected = model(IMAGE)
    got = model.cuda()(IMAGE.cuda())
    assert "tritondsl.kernels" in sys.modules
    assert_close(got.cpu(), expected, rtol=1e-3, atol=1e-3)


def test_transposed_conv_computes_torchs_layer_with_the_quantized_weight() -> None:
    torch.manual_seed(3)
    ours = QuantConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0),
                                output_padding=(1, 2), groups=2, dilation=(1, 2), quantizer=TWN())
    plain = nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                               groups=2, dilation=(1, 2))
    plain.load_state_dict({"weight": ours.quantized_weight().detach(), "bias": ours.bias})
    x = torch.randn(2, 4, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), plain(x))
        assert torch.equal(ours(x, output_size=[10, 14]), plain(x, output_size=[10, 14]))
