"""The seam from a .tdsl precision to the built layer's quantizer, for every documented spelling.

Each expected config is written out by hand (not taken from the code's defaults), and the
quantizer is also applied to a hand-computed weight, so changing a default, ignoring an
option, or building a different quantizer than the checker reports fails here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import tritondsl
from tests.conftest import ROOT
from tritondsl import runtime as rt
from tritondsl.backend.deploy import deploy, is_deployed
from tritondsl.backend.layers import QuantLinear, QuantModule
from tritondsl.backend.precision import (
    FP16,
    FP32,
    TWN,
    AbsMean,
    Int8,
    Learned,
    SparsityTarget,
    WeightPrecision,
)
from tritondsl.compiler.check import check_source
from tritondsl.export import hub

# Every precision spelling of docs/language.md's Precision section, and what it means.
SPELLINGS: dict[str, WeightPrecision] = {
    "fp32": FP32(),
    "fp16": FP16(),
    "int8": Int8(per_channel=True),
    "ternary()": TWN(threshold=0.7, per_channel=True),
    "ternary(threshold=0.7, scale=per_channel)": TWN(threshold=0.7, per_channel=True),
    "ternary(threshold=0.7, scale=per_tensor)": TWN(threshold=0.7, per_channel=False),
    "ternary(threshold=0.5)": TWN(threshold=0.5, per_channel=True),
    "ternary(method=twn)": TWN(threshold=0.7, per_channel=True),
    "ternary(method=absmean)": AbsMean(per_channel=False),
    "ternary(method=absmean, scale=per_channel)": AbsMean(per_channel=True),
    "ternary(learned=true)": Learned(threshold=0.05),
    "ternary(method=learned)": Learned(threshold=0.05),
    "ternary(learned=true, threshold=0.2)": Learned(threshold=0.2),
    "ternary(sparsity=0.5)": SparsityTarget(sparsity=0.5, per_channel=True),
    "ternary(sparsity=0.25, scale=per_tensor)": SparsityTarget(sparsity=0.25, per_channel=False),
}

# One output channel with hand-computed results per quantizer (mean |W| = 3, max |W| = 6):
# TWN 0.7: Δ = 2.1 keeps {3, -6}, α = 4.5; TWN 0.5: Δ = 1.5 keeps {2, 3, -6}, α = 11/3;
# absmean: γ = 3, round(W/3) = (0, 1, 1, -1); learned 0.05: Δ = 0.3 keeps all, both
# scales start at mean |W| = 3; learned 0.2: Δ = 1.2 keeps {2, 3, -6}, scales 11/3;
# sparsity 0.5 zeroes the two smallest, α = 4.5; sparsity 0.25 zeroes one, α = 11/3;
# int8: scale 6/127, fp16 is exact for these values.
WEIGHT = [1.0, 2.0, 3.0, -6.0]
QUANTIZED: dict[str, list[float]] = {
    "fp32": WEIGHT,
    "fp16": WEIGHT,
    "int8": [round(v * 127 / 6) * 6 / 127 for v in WEIGHT],
    "ternary()": [0.0, 0, 4.5, -4.5],
    "ternary(threshold=0.7, scale=per_channel)": [0, 0, 4.5, -4.5],
    "ternary(threshold=0.7, scale=per_tensor)": [0, 0, 4.5, -4.5],
    "ternary(threshold=0.5)": [0, 11 / 3, 11 / 3, -11 / 3],
    "ternary(method=twn)": [0, 0, 4.5, -4.5],
    "ternary(method=absmean)": [0.0, 3, 3, -3],
    "ternary(method=absmean, scale=per_channel)": [0.0, 3, 3, -3],
    "ternary(learned=true)": [3.0, 3, 3, -3],
    "ternary(method=learned)": [3.0, 3, 3, -3],
    "ternary(learned=true, threshold=0.2)": [0, 11 / 3, 11 / 3, -11 / 3],
    "ternary(sparsity=0.5)": [0, 0, 4.5, -4.5],
    "ternary(sparsity=0.25, scale=per_tensor)": [0, 11 / 3, 11 / 3, -11 / 3],
}


def _program(precision: str) -> str:
    return (
        "model Net() {\n    input x: Tensor[N, 4]\n"
        f"    fc = Linear(4, 1, bias=false) @{precision}\n"
        "    forward(x) {\n        return fc(x)\n    }\n}\n"
    )


def _built_layer(precision: str) -> nn.Module:
    return tritondsl.compile(_program(precision)).build("Net").fc


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_each_spelling_builds_the_quantizer_the_checker_reports(spelling: str) -> None:
    expected = SPELLINGS[spelling]
    (info,) = check_source(_program(spelling)).models.values()
    (fc,) = [m for m in info.modules() if m.path == "fc"]
    assert fc.precision == expected and type(fc.precision) is type(expected)
    layer = _built_layer(spelling)
    if isinstance(expected, FP32):
        assert type(layer) is nn.Linear
    else:
        assert isinstance(layer, QuantModule)
        assert layer.quantizer == expected and type(layer.quantizer) is type(expected)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_each_spelling_quantizes_a_known_weight_as_computed_by_hand(spelling: str) -> None:
    layer = _built_layer(spelling)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([WEIGHT]))
        if isinstance(layer, QuantModule) and isinstance(layer.quantizer, Learned):
            layer.load_state_dict({"weight": torch.tensor([WEIGHT])})  # scales from this weight
        got = layer(torch.eye(4)).reshape(-1)  # row i of x·Wᵀ is the quantized W[0, i]
    expected = torch.tensor(QUANTIZED[spelling])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_the_table_covers_every_spelling_in_the_language_doc() -> None:
    text = (ROOT / "docs" / "language.md").read_text()
    section = text[text.index("## Precision") : text.index("## Errors")]
    documented = set(re.findall(r"`(ternary\([^`]*\))`", section))
    documented -= {"ternary(learned=true, threshold=1.5)"}  # the documented bad example
    for spelling in documented:
        # A spelling with a `t` placeholder or `...` is a pattern, not a program.
        if "..." not in spelling:
            assert spelling in SPELLINGS, f"docs/language.md spells {spelling}: add it here"
    assert {"fp32", "fp16", "int8"} <= set(re.findall(r"`(fp32|fp16|int8)`", section))


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_describe_spells_a_precision_that_checks_back_to_itself(spelling: str) -> None:
    expected = SPELLINGS[spelling]
    (info,) = check_source(_program(expected.describe())).models.values()
    assert next(m.precision for m in info.modules() if m.path == "fc") == expected


PARAM_LAYER = (
    "layer Dense() {\n    param W: TernaryTensor[1, 4]\n"
    "    fn forward(x: Tensor) -> Tensor {\n        return ternary_matmul(x, W)\n    }\n}\n"
    "model Net() {\n    input x: Tensor[N, 4]\n    d = Dense() @PRECISION\n"
    "    forward(x) {\n        return d(x)\n    }\n}\n"
)


@pytest.mark.parametrize(("precision", "config", "expected"), [
    ("fp32", TWN(0.7), [0.0, 0, 4.5, -4.5]),  # not ternary: the default TWN
    ("int8", TWN(0.7), [0.0, 0, 4.5, -4.5]),
    ("ternary(threshold=0.5)", TWN(0.5), [0, 11 / 3, 11 / 3, -11 / 3]),
    ("ternary(method=absmean)", AbsMean(), [0.0, 3, 3, -3]),
])  # fmt: skip
def test_a_ternary_param_uses_the_precision_the_checker_gives_it(
    precision: str, config: WeightPrecision, expected: list[float]
) -> None:
    source = PARAM_LAYER.replace("PRECISION", precision)
    (info,) = check_source(source).models.values()
    (d,) = [m for m in info.modules() if m.path == "d"]
    assert d.children["W"].precision == config
    model = tritondsl.compile(source).build("Net")
    with torch.no_grad():
        model.d.W.weight.copy_(torch.tensor([WEIGHT]))
        got = model(torch.eye(4)).reshape(-1)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-6, atol=1e-6)


LOW_LEVEL = ROOT / "examples" / "low_level_layer.tdsl"


@pytest.mark.parametrize("precision", [None, "fp32", "fp16", "int8"])
def test_layer_form_runs_at_every_precision(precision: str | None) -> None:
    model = tritondsl.load_model(LOW_LEVEL, precision=precision)
    assert model(torch.randn(3, 4)).shape == (3, 2)
    layer = model.dense1.W
    assert isinstance(layer, QuantLinear) == (precision != "fp32")


def test_param_ternary_tensors_are_packed_by_deploy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model(LOW_LEVEL).eval()
    x = torch.randn(5, 4)
    with torch.no_grad():
        before = model(x)
        deployed = deploy(model)
        after = deployed(x)
    assert is_deployed(deployed)
    state = deployed.state_dict()
    assert state["dense1.W.weight_packed"].dtype == torch.uint8
    assert state["dense1.W.weight_packed"].shape == (64, 1)  # 4 trits per byte
    assert not [k for k in state if k.endswith("W.weight")]
    torch.testing.assert_close(after, before)
    original = tritondsl.load_model(LOW_LEVEL).eval()
    folder = hub.save_pretrained(original, tmp_path / "hub")
    stored = load_file(folder / "model.safetensors")
    assert stored["dense2.W.weight_packed"].dtype == torch.uint8
    assert "dense2.W.weight" not in stored
    with torch.no_grad():
        expected = deploy(copy.deepcopy(original))(x)
        torch.testing.assert_close(tritondsl.from_pretrained(folder)(x), expected)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_an_integer_input_to_a_float_model_is_refused(dtype: torch.dtype) -> None:
    model = tritondsl.load_model(LOW_LEVEL)  # cast to ints, its weights would give zeros
    with pytest.raises(TypeError, match=rf"Tiny expects 'x' to be a floating-point tensor "
                       rf"\(float32\) \(declared at .*\), got {dtype}; convert it"):
        model(torch.ones(2, 4, dtype=dtype))


def test_a_float_input_must_have_the_weights_dtype() -> None:
    model = tritondsl.load_model(LOW_LEVEL)
    with pytest.raises(TypeError, match="Tiny's weights are float32 but 'x' is float16"):
        model(torch.ones(2, 4, dtype=torch.float16))
    half = model.to(torch.bfloat16)  # a converted model takes inputs of its new dtype
    assert half(torch.ones(2, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_stochastic_depth_follows_torchvision_semantics() -> None:
    x = torch.randn(64, 3, 2, 2) + 5.0  # no zeros of its own
    layer = rt.StochasticDepth(0.25, "row")
    assert layer.eval()(x) is x  # identity in eval mode
    layer.train()
    torch.manual_seed(0)
    out = layer(x)
    kept = [bool(out[i].ne(0).all()) for i in range(64)]
    for i, keep in enumerate(kept):  # each row is dropped whole or scaled by 1 / (1 - p)
        torch.testing.assert_close(out[i], x[i] / 0.75 if keep else torch.zeros_like(x[i]))
    assert 0 < sum(kept) < 64
    torch.manual_seed(1)
    batch = rt.StochasticDepth(0.5, "batch").train()(x)
    assert torch.equal(batch, torch.zeros_like(x)) or torch.allclose(batch, x * 2)
    assert torch.equal(rt.StochasticDepth(1.0, "row").train()(x), torch.zeros_like(x))
    assert rt.StochasticDepth(0.0, "row").train()(x) is x
    with pytest.raises(ValueError, match="mode has to be either"):
        rt.StochasticDepth(0.1, "col")
    assert repr(rt.StochasticDepth(0.1, "row")) == "StochasticDepth(p=0.1, mode=row)"
