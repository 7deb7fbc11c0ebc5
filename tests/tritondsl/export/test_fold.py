"""BatchNorm folding in ONNX graphs: same outputs as PyTorch, ternary codes stay ternary."""

from __future__ import annotations

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
