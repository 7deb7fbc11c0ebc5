"""Activation precision in the language: resolution, state prediction, check => build."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tritondsl
from tritondsl.backend.activations import input_quantizer_of
from tritondsl.backend.precision import A8LSQ, A32, A8PerToken, A8Static
from tritondsl.compiler.check import ModelInfo, check_source
from tritondsl.compiler.codegen import generate
from tritondsl.compiler.diagnostics import CompileError

MIXED = """
block Inner(c: int) {
    activations a8(signed=true)
    conv = Conv2d(c, c, 3, padding=1)
    forward(x) {
        return relu(conv(x))
    }
}
block Plain(c: int) {
    conv = Conv2d(c, c, 1)
    forward(x) {
        return conv(x)
    }
}
model Net(act: activation = a8(method=lsq)) {
    input x: Tensor[N, 4, 6, 6]
    weights ternary()
    activations int8
    stem = Conv2d(4, 8, 3, padding=1) @fp32 @a8(percentile=99.9)
    own = Inner(8)
    forced = Inner(8) @a8(momentum=0.5)
    inherit = Plain(8)
    param_act = Plain(8) @act
    off = Sequential(Conv2d(8, 8, 1), ReLU()) @a32
    head = Linear(8, 3) @fp32 @a8(method=per_token)
    activations = Linear(3, 3) @fp32
    forward(x) {
        let y = off(param_act(inherit(forced(own(stem(x))))))
        return activations(head(flatten(adaptive_avg_pool2d(y, 1), 1)))
    }
}
"""
EXPECTED = {
    "stem": A8Static(percentile=99.9),
    "own.conv": A8Static(signed=True),  # the block's own statement beats the inherited one
    "forced.conv": A8Static(momentum=0.5),  # the use-site '@' beats the block's statement
    "inherit.conv": A8Static(),  # `activations int8` reads as a8
    "param_act.conv": A8LSQ(),
    "off.0": A32(),
    "head": A8PerToken(),
    "activations": A8Static(),  # a member may be called 'activations'
}


def layer_activations(info: ModelInfo) -> dict[str, object]:
    return {m.path: m.activation for m in info.modules() if m.activation is not None}


def test_nearest_setting_wins_and_aliases_read_as_activation_precisions() -> None:
    info = check_source(MIXED).models["Net"]
    assert layer_activations(info) == EXPECTED
    weights = {m.path: m.precision.describe() for m in info.modules() if m.precision}
    assert weights["activations"] == "fp32" and weights["head"] == "fp32"


def built_activations(model: nn.Module) -> dict[str, object]:
    """Each layer's input-quantizer config as built (A32 for a float input)."""
    out: dict[str, object] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            quantizer = input_quantizer_of(module)
            out[name] = A32() if quantizer is None else quantizer.config
    return out


def test_the_built_model_has_exactly_the_checked_quantizers_and_state() -> None:
    info = check_source(MIXED).models["Net"]
    model = tritondsl.compile(MIXED).build()
    assert built_activations(model) == EXPECTED
    x = torch.randn(2, 4, 6, 6)
    assert model(x).shape == (2, 3)
    predicted = [(i.name, i.shape, i.dtype) for i in info.state_dict()]
    actual = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in
              model.state_dict().items()]  # fmt: skip
    assert predicted == actual
    # The LSQ scale is a learnable parameter and counted as one.
    assert info.num_parameters() == sum(p.numel() for p in model.parameters())
    assert dict(model.named_parameters())["param_act.conv.input_quant.scale"].shape == ()


DYNAMIC = """
model Dyn(deep: bool = true) {
    input x: Tensor[N, 8]
    let p = a8(signed=true) if deep else fp16
    let q = int8
    a = Linear(8, 8) @p
    b = Linear(8, 8) @q
    c = Sequential {
        for r in [a32, a8(method=lsq)] {
            Linear(8, 8) @r
        }
    }
    forward(x) {
        return c(b(a(x)))
    }
}
"""


@pytest.mark.parametrize("deep", [True, False])
def test_precisions_computed_at_compile_time_route_to_their_family(deep: bool) -> None:
    args = {"Dyn": {"deep": deep}}
    info = check_source(DYNAMIC, args=args).models["Dyn"]
    model = tritondsl.compile(DYNAMIC).build(deep=deep)
    assert built_activations(model) == layer_activations(info)
    assert layer_activations(info) == {
        "a": A8Static(signed=True) if deep else A32(),
        "b": A32(),
        "c.0": A32(),
        "c.1": A8LSQ(),
    }
    assert type(model.a).__name__ == ("ActQuantLinear" if deep else "QuantLinear")
    kinds = {m.path: m.precision.describe() for m in info.modules() if m.precision}
    assert kinds["a"] == ("fp32" if deep else "fp16") and kinds["b"] == "int8"
    assert model(torch.randn(3, 8)).shape == (3, 8)


def test_files_without_activation_precisions_generate_as_before() -> None:
    source = "model M() {\n input x: Tensor[N, 4]\n fc = Linear(4, 2)\n" \
             " forward(x) {\n return fc(x)\n }\n}\n"  # fmt: skip
    code = generate(check_source(source))
    assert "activations" not in code and "rt.Linear(4, 2, weights=weights)" in code


def test_the_precision_override_leaves_activation_precisions_alone() -> None:
    code = generate(check_source(MIXED), precision="fp16")
    assert "activations=rt.A8Static(signed=False, percentile=99.9, momentum=0.1)" in code
    assert "weights=rt.FP16()" in code and "rt.TWN" not in code


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("fc = Linear(8, 2) @a8(method=lsq, momentum=0.5)",
         "a8(): 'momentum' applies to method=static only"),
        ("fc = Linear(8, 2) @a8(method=per_token, signed=false)",
         "a8(): method=per_token is always int8; drop 'signed'"),
        ("fc = Linear(8, 2) @a8(method=absmean)",
         "a8(): method must be one of static, lsq, per_token, got absmean"),
        ("fc = Linear(8, 2) @a8(bits=4)", "a8(): unexpected keyword argument 'bits'"),
        ("fc = Linear(8, 2) @a8(signed=1)", "a8(): signed must be true or false, got 1"),
        ("fc = Linear(8, 2) @a8(momentum=0)", "a8(): momentum must be in (0, 1], got 0"),
        ("fc = Linear(8, 2) @a8(3)", "a8() takes keyword arguments only"),
        ("fc = Linear(8, 2) @a8 @a32", "Linear already has activation precision a8"),
    ],
)  # fmt: skip
def test_bad_activation_options_are_located_errors(line: str, message: str) -> None:
    source = f"model M() {{\n    input x: Tensor[N, 8]\n    {line}\n" \
             "    forward(x) {\n        return fc(x)\n    }\n}\n"  # fmt: skip
    with pytest.raises(CompileError) as caught:
        check_source(source)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.message == message
    assert diagnostic.span is not None and diagnostic.span.line == 3


def test_a_per_token_default_reaches_linears_and_rejects_convs_once() -> None:
    source = """
block B() {
    conv = Conv2d(3, 3, 1)
    forward(x) {
        return conv(x)
    }
}
model M() {
    input x: Tensor[N, 3, 4, 4]
    activations a8(method=per_token)
    one = B()
    two = B()
    fc = Linear(3, 2)
    forward(x) {
        return fc(flatten(adaptive_avg_pool2d(two(one(x)), 1), 1))
    }
}
"""
    with pytest.raises(CompileError) as caught:
        check_source(source)
    (diagnostic,) = caught.value.diagnostics  # the same conv twice is one error
    assert diagnostic.span is not None and (diagnostic.span.line, diagnostic.span.column) == (3, 12)
    fixed = source.replace("    conv = Conv2d(3, 3, 1)", "    conv = Conv2d(3, 3, 1) @a8")
    info = check_source(fixed).models["M"]
    assert layer_activations(info) == {"one.conv": A8Static(), "two.conv": A8Static(),
                                       "fc": A8PerToken()}  # fmt: skip


def test_conv_transpose_takes_an_activation_precision_with_float_or_ternary_weights() -> None:
    source = """model Up() {
    input x: Tensor[N, 3, 8, 8]
    up = ConvTranspose2d(3, 4, 2, stride=2) @a8
    up2 = ConvTranspose2d(4, 4, 2, stride=2) @ternary() @a8(method=lsq)
    forward(x) { return up2(up(x)) }
}"""
    model = tritondsl.compile(source).build("Up").train()
    assert isinstance(input_quantizer_of(model.up).config, A8Static)  # fp32 weights
    assert isinstance(input_quantizer_of(model.up2).config, A8LSQ)
    x = torch.randn(2, 3, 8, 8)
    y = model(x)
    assert y.shape == (2, 4, 32, 32)
    y.sum().backward()
    assert model.up.weight.grad is not None and model.up2.input_quant.scale.grad is not None
    # Eval mode: the first layer's input is the 8-bit grid of its frozen range.
    model.eval()
    quant = input_quantizer_of(model.up)
    expected = nn.functional.conv_transpose2d(quant(x), model.up.weight, model.up.bias, 2)
    assert torch.equal(model.up(x), expected)
