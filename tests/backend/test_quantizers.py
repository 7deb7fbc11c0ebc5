"""Tests for backend/quantizers.py: hand-computed formulas, STE gradients, sparsity targets."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

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
    fake_quantize,
    is_ternary,
    quantizer_kind,
)

TERNARY = [
    TWN(),
    TWN(per_channel=False),
    AbsMean(),
    AbsMean(per_channel=True),
    Learned(),
    SparsityTarget(),
    SparsityTarget(sparsity=0.3, per_channel=False),
]
ALL = [*TERNARY, Int8(), Int8(per_channel=False), FP16()]


def t(rows: list[list[float]]) -> torch.Tensor:
    """Small fp32 matrix."""
    return torch.tensor(rows, dtype=torch.float32)


def random_weight(seed: int = 0, shape: tuple[int, ...] = (8, 3, 3, 3)) -> torch.Tensor:
    """Seeded Gaussian conv-shaped weight."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# Hand-computed expectations. Each case: config, weight, codes, scale, Δ (None if n/a).
HAND_CASES = [
    pytest.param(
        # E|W| = 2.8/4 = 0.7, Δ = 0.7·0.7 = 0.49, kept 0.5, 0.9, 1.3 -> α = 2.7/3 = 0.9
        TWN(per_channel=False), t([[0.1, -0.5], [0.9, -1.3]]),
        [[0, -1], [1, -1]], [0.9], [[0.49]], id="twn-per-tensor",
    ),
    pytest.param(
        # row 0: E = 0.45, Δ = 0.315, kept 0.4, 1.2 -> α = 0.8
        # row 1: E = 1.0, Δ = 0.7, kept 2.0, 1.0 -> α = 1.5
        TWN(), t([[0.2, -0.4, 1.2, 0.0], [-2.0, 1.0, 0.5, 0.5]]),
        [[0, -1, 1, 0], [-1, 1, 0, 0]], [0.8, 1.5], [[0.315], [0.7]], id="twn-per-channel",
    ),
    pytest.param(
        # E = 1.0, Δ = 0.5; |W| = 0.5 is not > Δ, so it is zeroed -> α = (2 + 1)/2
        TWN(threshold=0.5), t([[-2.0, 1.0, 0.5, -0.5]]),
        [[-1, 1, 0, 0]], [1.5], [[0.5]], id="twn-strict-threshold",
    ),
    pytest.param(
        # γ = 6.5/4 = 1.625; W/γ = 0.06, 0.25, 1.23, 2.46 -> 0, 0, 1, clamp(2) = 1
        AbsMean(), t([[0.1, 0.4], [2.0, 4.0]]),
        [[0, 0], [1, 1]], [1.625], None, id="absmean-per-tensor",
    ),
    pytest.param(
        # row 0: γ = 0.25, W/γ = 0.4, 1.6 -> 0, 1; row 1: γ = 3, W/γ = 0.67, 1.33 -> 1, 1
        AbsMean(per_channel=True), t([[0.1, 0.4], [2.0, 4.0]]),
        [[0, 1], [1, 1]], [0.25, 3.0], None, id="absmean-per-channel",
    ),
    pytest.param(
        # max|W| = 1, Δ = 0.05, kept 1.0 and 0.5 -> both scales start at α = 0.75
        Learned(), t([[0.04, -1.0], [0.5, -0.02]]),
        [[0, -1], [1, 0]], [0.75], [[0.05]], id="learned-init",
    ),
    pytest.param(
        # row 0 zeroes 0.1, 0.2 (Δ = 0.2), α = (0.4+0.3)/2; row 1 zeroes 0.5, 1 -> α = 2.5
        SparsityTarget(), t([[0.1, -0.4, 0.3, -0.2], [1.0, 2.0, -3.0, 0.5]]),
        [[0, -1, 1, 0], [0, 1, -1, 0]], [0.35, 2.5], [[0.2], [1.0]], id="sparsity-per-channel",
    ),
    pytest.param(
        # 25 % of 8 weights = 2 zeroed (0.1, 0.2); α = (0.4+0.3+1+2+3+0.5)/6 = 1.2
        SparsityTarget(sparsity=0.25, per_channel=False),
        t([[0.1, -0.4, 0.3, -0.2], [1.0, 2.0, -3.0, 0.5]]),
        [[0, -1, 1, 0], [1, 1, -1, 1]], [1.2], [[0.2]], id="sparsity-per-tensor",
    ),
    pytest.param(
        # row 0: s = 1.27/127 = 0.01 -> 50, -127; an all-zero row keeps scale 0, codes 0
        Int8(), t([[0.5, -1.27], [0.0, 0.0]]),
        [[50, -127], [0, 0]], [0.01, 0.0], None, id="int8-per-channel",
    ),
    pytest.param(
        # s = 0.01: 0.254/s = 25.4 -> 25, 0.508/s = 50.8 -> 51
        Int8(per_channel=False), t([[1.27, -0.254], [0.0, 0.508]]),
        [[127, -25], [0, 51]], [0.01], None, id="int8-per-tensor",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("config", "weight", "codes", "scale", "delta"), HAND_CASES)
def test_decomposition_matches_hand_computed_formula(
    config: QuantizerConfig,
    weight: torch.Tensor,
    codes: list[list[int]],
    scale: list[float],
    delta: list[list[float]] | None,
) -> None:
    dec = decompose(config, weight)
    assert dec.codes.dtype == torch.int8
    assert dec.codes.tolist() == codes
    assert dec.scale is not None
    assert_close(dec.scale, torch.tensor(scale))
    if delta is not None:
        assert dec.delta is not None
        assert_close(dec.delta, torch.tensor(delta))
    if isinstance(config, Learned):
        assert dec.scale_neg is not None
        assert_close(dec.scale_neg, torch.tensor(scale))
    # Training's forward value: the codes times the hand-computed scale of their row.
    expected = [[c * scale[i % len(scale)] for c in row] for i, row in enumerate(codes)]
    assert_close(fake_quantize(config, weight), t(expected), rtol=1e-6, atol=1e-7)


def test_learned_scales_dequantize_separately() -> None:
    weight = t([[0.04, -1.0], [0.5, -0.02]])
    dec = decompose(Learned(), weight, (torch.tensor([2.0]), torch.tensor([3.0])))
    assert dec.dequantize().tolist() == [[0.0, -3.0], [2.0, 0.0]]


def test_fp16_rounds_through_half() -> None:
    weight = t([[1 / 3, 70000.0 / 7]])
    # 1/3 -> nearest float16 0.333251953125; 10000 is exactly representable.
    assert fake_quantize(FP16(), weight).tolist() == [[0.333251953125, 10000.0]]


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_absmean_guards_all_zero_weight(per_channel: bool) -> None:
    weight = torch.zeros(3, 4)
    weight[0] = torch.tensor([0.5, -0.5, 0.1, 0.0])
    for w in (weight, torch.zeros(3, 4)):
        dec = decompose(AbsMean(per_channel=per_channel), w)
        assert torch.isfinite(dec.dequantize()).all()
    assert decompose(AbsMean(per_channel=True), weight).codes[1:].eq(0).all()


@pytest.mark.parametrize("config", TERNARY, ids=repr)
def test_exactly_three_values_per_scale_group(config: QuantizerConfig) -> None:
    weight = random_weight()
    scales = (torch.tensor([0.7]), torch.tensor([1.3])) if isinstance(config, Learned) else None
    dequantized = decompose(config, weight, scales).dequantize()
    per_channel = getattr(config, "per_channel", False)
    groups = dequantized.reshape(weight.shape[0] if per_channel else 1, -1)
    for group in groups:
        values = torch.unique(group)
        assert len(values) == 3
        assert values[1] == 0
        assert values[0] < 0 < values[2]
        if scales is None:
            assert values[0] == -values[2]
        else:
            assert values.tolist() == pytest.approx([-1.3, 0.0, 0.7])


@pytest.mark.parametrize("config", ALL, ids=repr)
def test_fake_quantize_passes_the_gradient_straight_through(config: QuantizerConfig) -> None:
    weight = random_weight(1).requires_grad_()
    upstream = random_weight(2)
    (fake_quantize(config, weight) * upstream).sum().backward()
    assert weight.grad is not None
    assert torch.equal(weight.grad, upstream)


def test_learned_gradient_reaches_weight_and_both_scales() -> None:
    # codes (0, -1; 1, 0) as in the learned-init case: W_q = (0, -neg; pos, 0).
    weight = t([[0.04, -1.0], [0.5, -0.02]]).requires_grad_()
    pos = torch.tensor([0.5], requires_grad=True)
    neg = torch.tensor([0.8], requires_grad=True)
    upstream = t([[1.0, 2.0], [3.0, 4.0]])
    quantized = fake_quantize(Learned(), weight, (pos, neg))
    assert quantized.tolist() == [[0.0, -0.800000011920929], [0.5, 0.0]]
    (quantized * upstream).sum().backward()
    assert weight.grad is not None and torch.equal(weight.grad, upstream)
    # d/dpos = upstream where the code is +1 (3); d/dneg = -(upstream where it is -1) = -2.
    assert (pos.grad.tolist(), neg.grad.tolist()) == ([3.0], [-2.0])  # type: ignore[union-attr]


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.33, 0.5, 0.9], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("k", [7, 10, 64], ids=lambda k: f"K{k}")
def test_sparsity_target_met_within_one_weight(sparsity: float, per_channel: bool, k: int) -> None:
    weight = random_weight(k, (5, k))
    codes = decompose(SparsityTarget(sparsity, per_channel), weight).codes
    groups = codes.reshape(5 if per_channel else 1, -1)
    for group in groups:
        zeros = int((group == 0).sum())
        assert abs(zeros - sparsity * group.numel()) <= 1


def test_sparsity_target_ties_do_not_overshoot() -> None:
    weight = torch.full((1, 10), 0.5)
    codes = decompose(SparsityTarget(sparsity=0.3), weight).codes
    assert int((codes == 0).sum()) == 3


@pytest.mark.parametrize(
    ("config", "kind"),
    [(TWN(), "ternary"), (AbsMean(), "ternary"), (Learned(), "ternary"),
     (SparsityTarget(), "ternary"), (Int8(), "int8"), (FP16(), "fp16")],
    ids=repr,
)  # fmt: skip
def test_registry_kind(config: QuantizerConfig, kind: str) -> None:
    assert quantizer_kind(config) == kind
    assert is_ternary(config) == (kind == "ternary")


def test_unregistered_config_is_rejected() -> None:
    with pytest.raises(TypeError, match="unknown quantizer"):
        decompose("TWN", torch.ones(2, 2))  # type: ignore[arg-type]
