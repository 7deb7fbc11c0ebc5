"""BatchNorm folding in ONNX graphs: same outputs as PyTorch, ternary codes stay ternary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from tritondsl.backend.layers import QuantConv2d, QuantLinear, QuantModule
from tritondsl.backend.quantizers import TWN, AbsMean, Int8, Learned
from tritondsl.export.fold import FoldResult, fold_batchnorm, fold_decomposition
from tritondsl.export.onnx import _torch_to_onnx
from tritondsl.export.onnx_verify import create_session


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters far from identity, some gammas negative."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.1)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


def _float_graph(model: nn.Module, x: torch.Tensor) -> tuple[onnx.ModelProto, dict]:
    """The model with quantized weights dequantized, as float ONNX, and its decompositions."""
    decs = {
        f"{name}.weight": m.decomposition()
        for name, m in model.named_modules()
        if isinstance(m, QuantModule)
    }
    twin = _dequantized_twin(model)
    return _torch_to_onnx(twin, x, "x", 1), decs


def _dequantized_twin(model: nn.Module) -> nn.Module:
    """A copy whose quantized layers are plain layers holding the quantized weight."""
    import copy

    from tritondsl.export.onnx import _float_twin
    from tritondsl.export.torch_export import replace_modules

    return replace_modules(copy.deepcopy(model), lambda m: _float_twin(m, m.quantized_weight()))


def _fold(
    model: nn.Module, x: torch.Tensor
) -> tuple[onnx.ModelProto, dict, FoldResult, np.ndarray]:
    """Export ``model`` as float ONNX, fold it, and return PyTorch's output beside."""
    proto, decs = _float_graph(model, x)
    with torch.no_grad():
        expected = model(x).numpy()
    return proto, decs, fold_batchnorm(proto, decs), expected


def _run(proto: onnx.ModelProto, x: torch.Tensor) -> np.ndarray:
    session = create_session(proto.SerializeToString(), optimize=False)
    return session.run(None, {"x": x.numpy()})[0]


@pytest.mark.parametrize(
    "quantizer",
    [TWN(), AbsMean(per_channel=False), Learned(), Int8(per_channel=False)],
    ids=["twn", "absmean-per-tensor", "learned", "int8"],
)
def test_conv_bn_folds_and_keeps_codes(quantizer: object) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        QuantConv2d(3, 8, 3, padding=1, bias=True, quantizer=quantizer),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 1, bias=False),
        nn.BatchNorm2d(6),
    ).eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 9, 7)
    proto, decs, result, expected = _fold(model, x)
    ops = [n.op_type for n in proto.graph.node]
    assert "BatchNormalization" not in ops
    assert {f.weight for f in result.folds} == {"0.weight", "3.weight"}
    np.testing.assert_allclose(_run(proto, x), expected, rtol=1e-4, atol=1e-4)
    before, after = decs["0.weight"], result.decompositions["0.weight"]
    # Same codes up to a per-channel sign; scales per channel and positive.
    assert torch.equal(after.codes.abs(), before.codes.abs())
    assert after.scale is not None and after.scale.shape == (8,)
    assert bool((after.scale >= 0).all())
    if after.scale_neg is not None:
        assert bool((after.scale_neg >= 0).all())
    gamma = model[1].weight.detach()
    flipped = gamma < 0
    assert torch.equal(after.codes[flipped], -before.codes[flipped])
    assert torch.equal(after.codes[~flipped], before.codes[~flipped])
    # The float initializer left in the graph is exactly the folded decomposition.
    weight = next(t for t in proto.graph.initializer if t.name == "0.weight")
    assert np.array_equal(numpy_helper.to_array(weight), after.dequantize().numpy())


def test_learned_scales_swap_where_gamma_is_negative() -> None:
    from tritondsl.backend.quantizers import Decomposition

    codes = torch.tensor([[1, -1, 0], [1, -1, 0]], dtype=torch.int8)
    dec = Decomposition(codes, torch.tensor([2.0]), torch.tensor([0.5]))
    folded = fold_decomposition(dec, np.array([3.0, -3.0]))
    assert torch.allclose(folded.dequantize(), dec.dequantize() * torch.tensor([[3.0], [-3.0]]))
    assert folded.scale is not None and folded.scale_neg is not None
    assert folded.scale.tolist() == [6.0, 1.5] and folded.scale_neg.tolist() == [1.5, 6.0]


def test_linear_bn1d_folds() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(QuantLinear(12, 5, bias=False), nn.BatchNorm1d(5)).eval()
    _randomise_bn(model, seed=3)
    x = torch.randn(4, 12)
    proto, _, result, expected = _fold(model, x)
    assert [n.op_type for n in proto.graph.node] == ["Gemm"]
    assert len(result.folds) == 1
    np.testing.assert_allclose(_run(proto, x), expected, rtol=1e-4, atol=1e-4)


class _Branch(nn.Module):
    """A conv whose output feeds BatchNorm and a second consumer: not foldable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_bn_after_a_shared_output_is_left_alone() -> None:
    model = _Branch().eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 5, 5)
    proto, _, result, expected = _fold(model, x)
    assert result.folds == []
    assert "BatchNormalization" in [n.op_type for n in proto.graph.node]
    np.testing.assert_allclose(_run(proto, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_zoo_resnet18_folds_every_batchnorm() -> None:
    import tritondsl

    torch.manual_seed(0)
    model = tritondsl.load_model("resnet18", num_classes=10).eval()
    _randomise_bn(model)
    x = torch.randn(1, 3, 32, 32)
    proto, decs, result, expected = _fold(model, x)
    assert "BatchNormalization" not in [n.op_type for n in proto.graph.node]
    assert len(result.folds) == 20  # the stem, 16 block convs and 3 downsample convs
    assert set(result.decompositions) == set(decs)
    got = _run(proto, x)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def test_matmul_on_3d_input_stays_a_matmul() -> None:
    model = nn.Sequential(QuantLinear(6, 4, bias=False)).eval()
    x = torch.randn(2, 3, 6)
    proto, _, result, expected = _fold(model, x)
    assert result.folds == []
    assert "MatMul" in [n.op_type for n in proto.graph.node]
    np.testing.assert_allclose(_run(proto, x), expected, rtol=1e-5, atol=1e-5)


FOLDED_NET = """
model FoldNet(num_classes: int = 6) {
    input x: Tensor[N, 3, 12, 12]
    weights ternary(scale=per_channel)
    c1 = Conv2d(3, 8, 3, padding=1, bias=false)
    b1 = BatchNorm2d(8)
    c2 = Conv2d(8, 8, 3, padding=1) @ternary(learned=true)
    b2 = BatchNorm2d(8)
    c3 = Conv2d(8, 8, 1, bias=false) @ternary(method=absmean, scale=per_tensor)
    b3 = BatchNorm2d(8)
    c4 = Conv2d(8, 8, 3, padding=1, bias=false) @fp16
    b4 = BatchNorm2d(8)
    pool = AdaptiveAvgPool2d(1)
    fc = Linear(8, num_classes, bias=false) @int8
    forward(x) {
        let y = relu(b2(c2(relu(b1(c1(x))))))
        let z = relu(b4(c4(relu(b3(c3(y))))))
        return fc(flatten(pool(z), 1))
    }
}
"""


@pytest.mark.parametrize("form", ["int2", "packed", "float"])
def test_export_onnx_folds_batchnorm_in_every_form(form: str, tmp_path: Path) -> None:
    import tritondsl
    from tritondsl.export.onnx import export_onnx
    from tritondsl.export.onnx_verify import verify_onnx, weight_stats
    from tritondsl.export.torch_export import deployed_copy

    torch.manual_seed(0)
    model = tritondsl.compile(FOLDED_NET).build().eval()
    _randomise_bn(model, seed=5)  # some gammas negative: those channels' trits negate
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    result = export_onnx(model, tmp_path / f"fold-{form}.onnx", x, form)
    proto = onnx.load(str(result.path))
    # Every BatchNorm folds but the fp16 layer's (its stored half values would round again).
    bns = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert [n.input[0] for n in bns] == ["/c4/Conv_output_0"]
    report = verify_onnx(result.path, result.example_input, result.expected)
    assert report.ok, [check.line() for check in report.checks]
    inits = {t.name: t for t in proto.graph.initializer}
    layers = dict(deployed_copy(model).named_modules())
    if form == "float":
        return
    assert weight_stats(proto).ternary_weights == sum(
        math.prod(layers[n].weight_shape) for n in ("c1", "c2", "c3")
    )
    for name in ("c1", "c3"):  # the same trits up to a sign per output channel
        stored = layers[name].decomposition().codes
        codes = inits[f"{name}.weight.codes" if form == "int2" else f"{name}.weight.packed"]
        if form == "int2":
            folded = torch.from_numpy(numpy_helper.to_array(codes).astype(np.int8))
        else:
            from tritondsl.kernels.packing import unpack

            raw = torch.from_numpy(numpy_helper.to_array(codes))
            folded = unpack(raw, layers[name].reduction_size).reshape(stored.shape)
        gamma = model.get_submodule({"c1": "b1", "c3": "b3"}[name]).weight.detach()
        sign = torch.where(gamma < 0, -1, 1).to(torch.int8).view(-1, 1, 1, 1)
        assert torch.equal(folded, stored * sign) and bool((gamma < 0).any())
    # Per-tensor and two-scale layers now carry one (positive) scale per output channel.
    scale = numpy_helper.to_array(inits["c3.weight.scale"])
    assert scale.size == 8 and bool((scale > 0).all())
    pos = numpy_helper.to_array(inits["c2.weight.scale_pos"])
    assert pos.shape == (8, 1, 1, 1) and bool((pos > 0).all())
