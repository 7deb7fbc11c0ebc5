"""Built-in layer specs agree with torch.nn: state_dict entries and output shapes."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
from torch import nn

from tritondsl import runtime as rt
from tritondsl.compiler.layers import LAYERS, bind
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import EvalError, Tensor

SPAN = Span(1, 1, 1, 2)

CONV_CASES = [
    dict(in_channels=c, out_channels=o, kernel_size=k, stride=s, padding=p, dilation=d,
         groups=g, bias=b)
    for (c, o, g), k, s, p, d, b in itertools.product(
        [(4, 8, 1), (6, 9, 3), (8, 8, 8)], [1, 3, (3, 5)], [1, 2], [0, 1, (2, 1)], [1, 2],
        [True, False])
]
DECONV_CASES = [
    dict(in_channels=c, out_channels=o, kernel_size=k, stride=s, padding=p, output_padding=op,
         groups=g, bias=b, dilation=d)
    for (c, o, g), k, (s, op), p, d, b in itertools.product(
        [(4, 6, 1), (6, 9, 3)], [2, (3, 1)], [(1, 0), (2, 0), (2, 1), (3, (2, 1))], [0, 1],
        [1, 2], [True, False])
]
CASES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    *[("Conv2d", a, (2, a["in_channels"], 17, 12)) for a in CONV_CASES],
    ("Linear", dict(in_features=7, out_features=3), (5, 7)),
    ("Linear", dict(in_features=7, out_features=3, bias=False), (2, 4, 7)),
    ("BatchNorm2d", dict(num_features=6), (2, 6, 5, 5)),
    ("BatchNorm2d", dict(num_features=6, affine=False), (2, 6, 5, 5)),
    ("BatchNorm2d", dict(num_features=6, track_running_stats=False), (2, 6, 5, 5)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1), (1, 3, 15, 16)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True), (1, 3, 15, 16)),
    ("MaxPool2d", dict(kernel_size=2, dilation=2), (1, 3, 9, 9)),
    ("AvgPool2d", dict(kernel_size=(2, 3), stride=1), (1, 3, 7, 8)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (1, 3, 10, 11)),
    ("AdaptiveAvgPool2d", dict(output_size=(2, 3)), (2, 4, 9, 9)),
    ("Flatten", dict(), (2, 3, 4, 5)),
    ("Flatten", dict(start_dim=2, end_dim=3), (2, 3, 4, 5)),
    ("ReLU", dict(), (2, 3)),
    ("ReLU6", dict(inplace=True), (2, 3)),
    ("GELU", dict(approximate="tanh"), (2, 3)),
    ("Dropout", dict(p=0.2), (2, 3)),
    ("Identity", dict(), (2, 3)),
    *[("ConvTranspose2d", a, (2, a["in_channels"], 5, 7)) for a in DECONV_CASES],
    ("AdaptiveMaxPool2d", dict(output_size=(2, 3)), (2, 4, 9, 7)),
    ("AdaptiveMaxPool2d", dict(output_size=1), (4, 9, 7)),
    ("Upsample", dict(scale_factor=2), (1, 2, 3, 5)),
    ("Upsample", dict(scale_factor=(1.5, 0.5), mode="bilinear", align_corners=True), (1, 2, 3, 5)),
    ("Upsample", dict(size=(4, 9), mode="bicubic"), (1, 2, 3, 5)),
    ("Upsample", dict(size=6, mode="area"), (1, 2, 3, 5)),
    ("Tanh", dict(), (2, 3)),
    ("Sigmoid", dict(), (2, 3)),
    ("SiLU", dict(inplace=True), (2, 3)),
    ("Hardswish", dict(), (2, 3)),
    ("Hardsigmoid", dict(), (2, 3)),
    ("Mish", dict(), (2, 3)),
    ("LeakyReLU", dict(negative_slope=0.2), (2, 3)),
    ("ELU", dict(alpha=0.3, inplace=True), (2, 3)),
    ("Softmax", dict(dim=1), (2, 3, 4)),
    ("LogSoftmax", dict(dim=-1), (2, 3, 4)),
    ("Dropout2d", dict(p=0.3), (2, 3, 4, 4)),
    ("StochasticDepth", dict(p=0.2, mode="row"), (2, 3, 4, 4)),
    ("StochasticDepth", dict(p=1.0, mode="batch"), (2, 3)),
]


def _id(case: tuple[str, dict[str, Any], tuple[int, ...]]) -> str:
    name, args, shape = case
    return f"{name}-" + "-".join(f"{k}{v}" for k, v in args.items()) + f"-in{list(shape)}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_spec_matches_torch(case: tuple[str, dict[str, Any], tuple[int, ...]]) -> None:
    name, args, shape = case
    spec = LAYERS[name]
    bound = bind(spec, [], dict(args), SPAN)
    module = (getattr(nn, name, None) or getattr(rt, name))(**args).eval()
    expected_state = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
                      for k, v in module.state_dict().items()}
    assert {e.name: (e.shape, e.dtype) for e in spec.state(bound)} == expected_state
    learnable = {k for k, _ in module.named_parameters()}
    assert {e.name for e in spec.state(bound) if e.learnable} == learnable
    with torch.no_grad():
        out = module(torch.zeros(shape))
    assert spec.shape(bound, Tensor(shape), SPAN).shape == tuple(out.shape)


@pytest.mark.parametrize(("name", "args", "shape", "message"), [
    ("Conv2d", dict(in_channels=3, out_channels=8, kernel_size=3), (1, 4, 8, 8),
     "Conv2d expects 3 input channels, got 4 (input shape [1, 4, 8, 8])"),
    ("Conv2d", dict(in_channels=3, out_channels=8, kernel_size=5), (1, 3, 4, 4),
     "too small for kernel 5"),
    ("Conv2d", dict(in_channels=3, out_channels=8, kernel_size=3), (3, 8),
     "Conv2d expects a 4-D input [N, C, H, W], got shape [3, 8]"),
    ("Linear", dict(in_features=7, out_features=3), (2, 8),
     "Linear expects 7 input features, got 8 (input shape [2, 8])"),
    ("BatchNorm2d", dict(num_features=6), (2, 5, 3, 3), "BatchNorm2d expects 6 channels, got 5"),
    ("MaxPool2d", dict(kernel_size=2, padding=2), (1, 1, 8, 8), "at most half the kernel"),
    ("ConvTranspose2d", dict(in_channels=3, out_channels=8, kernel_size=2), (1, 4, 8, 8),
     "ConvTranspose2d expects 3 input channels, got 4"),
    ("ConvTranspose2d", dict(in_channels=3, out_channels=8, kernel_size=1, padding=1),
     (1, 3, 1, 1), "ConvTranspose2d: input of shape [1, 3, 1, 1] gives an empty output"),
    ("Upsample", dict(scale_factor=0.1), (1, 1, 4, 4), "scales to an empty output"),
    ("Softmax", dict(dim=2), (2, 3), "Softmax: dimension 2 is out of range for a 2-D tensor"),
], ids=["conv-channels", "conv-too-small", "conv-rank", "linear", "bn", "pool-padding",
        "deconv-channels", "deconv-empty", "upsample-empty", "softmax-dim"])
def test_shape_errors_name_the_shapes(name: str, args: dict[str, Any], shape: tuple[int, ...],
                                      message: str) -> None:
    spec = LAYERS[name]
    with pytest.raises(EvalError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)").replace("]", r"\]")):
        spec.shape(bind(spec, [], args, SPAN), Tensor(shape), SPAN)
    # torch agrees that these inputs are invalid
    with pytest.raises((RuntimeError, ValueError, IndexError)):
        getattr(nn, name)(**args)(torch.zeros(shape))


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ([3, 8], {}, "Conv2d is missing its argument 'kernel_size'"),
    ([3, 8, 3], {"groups": 2}, r"in_channels \(3\) must be divisible by groups \(2\)"),
    ([3, 8, 3], {"stride": 0}, "'stride' must be a positive int or a pair of them, got 0"),
    ([3, 8, 3], {"bias": 1}, "'bias' must be true or false, got 1"),
    ([3, 8, 3, 1, 0, 1, 1, True, 9], {}, "at most 8 arguments, got 9"),
    ([3, 8, 3], {"in_channels": 3}, "got two values for 'in_channels'"),
], ids=["missing", "groups", "stride", "bias-type", "too-many", "twice"])
def test_bind_rejects_bad_arguments(args: list[Any], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(EvalError, match=message):
        bind(LAYERS["Conv2d"], args, kwargs, SPAN)


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("ConvTranspose2d", dict(in_channels=2, out_channels=2, kernel_size=3, stride=2,
                             output_padding=2), "output_padding 2 must be smaller than the stride"),
    ("ConvTranspose2d", dict(in_channels=4, out_channels=6, kernel_size=3, groups=4),
     r"out_channels \(6\) must be divisible by groups \(4\)"),
    ("Upsample", dict(), "give either size or scale_factor"),
    ("Upsample", dict(size=2, scale_factor=2), "give either size or scale_factor"),
    ("Upsample", dict(size=2, align_corners=True), "align_corners applies to bilinear"),
    ("Upsample", dict(size=2, mode="trilinear"), "mode must be one of"),
    ("Upsample", dict(scale_factor=-1), "a positive number or a pair of them, got -1"),
    ("StochasticDepth", dict(p=0.2, mode="col"), "mode must be one of 'row', 'batch'"),
    ("StochasticDepth", dict(p=1.2, mode="row"), "p must be between 0 and 1"),
    ("Softmax", dict(), "Softmax is missing its argument 'dim'"),
    ("AdaptiveMaxPool2d", dict(output_size=2, return_indices=True),
     r"AdaptiveMaxPool2d\(return_indices=true\) returns a pair of tensors"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_new_layers_reject_what_torch_rejects(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(EvalError, match=message):
        bind(LAYERS[name], [], kwargs, SPAN)
