"""Tests for backend/activations.py: ONNX-exact 8-bit input quantization, STE, observers."""

from __future__ import annotations

import math
import socket
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tritondsl.backend.activations import (
    ActivationQuantizer,
    activation_quantizers,
    batch_range,
    calibrate,
    input_quantizer_of,
    scale_from_range,
)
from tritondsl.backend.deploy import add_input_quantizers, deploy
from tritondsl.backend.layers import ActQuantConv2d, ActQuantLinear, QuantConv2d, QuantLinear
from tritondsl.backend.precision import A8LSQ, A8PerToken, A8Static, ActivationConfig
from tritondsl.backend.quantizers import TWN

ODD_SHAPES = [(1,), (7,), (3, 5), (2, 3, 17), (2, 3, 5, 7)]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def observed(config: ActivationConfig, *batches: Tensor) -> ActivationQuantizer:
    """A quantizer that saw ``batches`` in training mode, then switched to eval."""
    quantizer = ActivationQuantizer(config)
    for batch in batches:
        quantizer(batch)
    return quantizer.eval()


def with_ties(shape: tuple[int, ...], scale: float, zero_point: int) -> Tensor:
    """Random values plus exact halfway points k + 0.5 (odd and even k) and saturating ones."""
    x = torch.randn(shape) * 200 * scale
    flat = x.view(-1)
    ties = (torch.arange(-300, 300, dtype=torch.float32) + 0.5 - zero_point) * scale
    n = min(flat.numel(), ties.numel())
    flat[:n] = ties[torch.randperm(ties.numel())[:n]]
    return x


def ort_qdq(x: Tensor, scale: float, zero_point: int, signed: bool) -> tuple[np.ndarray, ...]:
    """ONNX Runtime's QuantizeLinear codes and QuantizeLinear -> DequantizeLinear values."""
    zp_type = TensorProto.INT8 if signed else TensorProto.UINT8
    zp_np = np.array(zero_point, dtype=np.int8 if signed else np.uint8)
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [
            helper.make_tensor_value_info("q", zp_type, list(x.shape)),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape)),
        ],
        [
            numpy_helper.from_array(np.array(scale, dtype=np.float32), "s"),
            numpy_helper.from_array(zp_np, "zp"),
        ],
    )
    return tuple(run_graph(graph, x))


def run_graph(graph: onnx.GraphProto, x: Tensor) -> list[np.ndarray]:
    """Run a one-input graph on ONNX Runtime's CPU provider (opset 19, IR 9)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.numpy()})


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=str)
def test_codes_and_values_equal_onnxruntime_qdq(shape: tuple[int, ...], signed: bool) -> None:
    quantizer = observed(A8Static(signed=signed), torch.randn(64) * 3 + (0 if signed else 1))
    scale, zero_point = float(quantizer.scale), int(quantizer.zero_point)
    assert zero_point != 0 or signed
    x = with_ties(shape, scale, zero_point)
    codes, values = ort_qdq(x, scale, zero_point, signed)
    ours = quantizer.quantize(x)
    assert ours.dtype == (torch.int8 if signed else torch.uint8)
    assert np.array_equal(ours.numpy(), codes)
    assert np.array_equal(quantizer(x).numpy(), values)


def test_ties_round_half_to_even_like_onnx() -> None:
    quantizer = observed(A8Static(signed=True), torch.tensor([-127.0, 127.0]))
    assert float(quantizer.scale) == 1.0
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, 300.0, -129.0])
    expected = [0, 2, 2, 0, -2, 126, 127, 127, -128]
    assert quantizer.quantize(x).tolist() == expected
    assert ort_qdq(x, 1.0, 0, signed=True)[0].tolist() == expected


def test_scales_with_a_power_of_two_make_exact_ties_in_both_dtypes() -> None:
    # scale 2**-4 divides exactly, so each k + 0.5 is a real tie for both implementations.
    for signed, zero_point in ((True, 0), (False, 37)):
        x = with_ties((5, 9, 3), 2**-4, zero_point)
        codes, values = ort_qdq(x, 2**-4, zero_point, signed)
        quantizer = ActivationQuantizer(A8Static(signed=signed)).eval()
        quantizer.load_state_dict(
            {
                "scale": torch.tensor(2**-4),
                "zero_point": torch.tensor(zero_point, dtype=torch.int8 if signed else torch.uint8),
                "range_min": torch.tensor(-1.0),
                "range_max": torch.tensor(1.0),
                "num_batches_observed": torch.tensor(1),
            }
        )
        assert np.array_equal(quantizer.quantize(x).numpy(), codes)
        assert np.array_equal(quantizer(x).numpy(), values)


@pytest.mark.parametrize("shape", [(1, 5), (7, 33), (4, 1)], ids=str)
def test_per_token_equals_onnx_per_axis_quantize(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape) * torch.logspace(-2, 2, shape[0])[:, None]
    quantizer = ActivationQuantizer(A8PerToken())
    scale = (x.abs().amax(dim=1) / 127).numpy()
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], axis=0),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], axis=0),
        ],
        "per_token",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(n, t, list(shape)) for n, t in (("q", 3), ("y", 1))],
        [
            numpy_helper.from_array(scale, "s"),
            numpy_helper.from_array(np.zeros(shape[0], np.int8), "zp"),
        ],
    )
    codes, values = run_graph(graph, x)
    assert np.array_equal(quantizer.quantize(x).numpy(), codes)
    assert np.array_equal(quantizer(x).detach().numpy(), values)
    assert quantizer.state_dict() == {}


def test_per_token_gradient_is_identity_and_zero_tokens_stay_zero() -> None:
    x = torch.randn(3, 4, 8, requires_grad=True)
    quantizer = ActivationQuantizer(A8PerToken())
    (quantizer(x) * torch.arange(8.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(8.0).expand(3, 4, 8))
    assert torch.equal(quantizer(torch.zeros(2, 5)), torch.zeros(2, 5))


def test_static_gradient_passes_inside_and_stops_where_saturated() -> None:
    quantizer = observed(A8Static(signed=True), torch.tensor([-1.27, 1.27]))
    x = torch.tensor([0.3, -0.7, 5.0, -5.0, 1.27], requires_grad=True)
    quantizer(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]


def test_static_observer_tracks_an_ema_in_training_and_freezes_in_eval() -> None:
    quantizer = ActivationQuantizer(A8Static(momentum=0.25))
    quantizer(torch.tensor([0.0, 4.0]))
    quantizer(torch.tensor([0.0, 8.0]))
    assert float(quantizer.range_max) == 5.0  # 4 + 0.25 * (8 - 4)
    assert float(quantizer.scale) == pytest.approx(5.0 / 255)
    assert int(quantizer.zero_point) == 0 and int(quantizer.num_batches_observed) == 2
    quantizer.eval()
    quantizer(torch.tensor([0.0, 100.0]))
    assert float(quantizer.range_max) == 5.0


def test_unsigned_zero_point_places_zero_exactly() -> None:
    quantizer = observed(A8Static(), torch.tensor([-1.0, 3.0]))
    scale, zp = float(quantizer.scale), int(quantizer.zero_point)
    assert (scale, zp) == (pytest.approx(4.0 / 255), round(1.0 / (4.0 / 255)))
    assert float(quantizer(torch.zeros(1))) == 0.0


@pytest.mark.parametrize("signed", [False, True])
def test_percentile_observer_clips_outliers(signed: bool) -> None:
    x = torch.randn(100_000)
    x[:5] = 1000.0
    lo, hi = batch_range(x, 99.9, signed)
    reference = x.abs() if signed else x
    expected = float(torch.quantile(reference[:16_000_000], 0.999, interpolation="higher"))
    assert hi == pytest.approx(expected, rel=1e-3) and hi < 5
    assert lo == (-hi if signed else pytest.approx(float(torch.quantile(x, 0.001)), rel=1e-2))
    quantizer = observed(A8Static(percentile=99.9, signed=signed), x)
    assert float(quantizer.scale) < 10 / 127


def test_range_to_scale_rules() -> None:
    assert scale_from_range(-2.0, 1.0, signed=True) == (2.0 / 127, 0)
    assert scale_from_range(0.5, 2.0, signed=False) == (2.0 / 255, 0)  # the range includes 0
    scale, zp = scale_from_range(-3.0, -1.0, signed=False)
    assert (scale, zp) == (3.0 / 255, 255)
    assert scale_from_range(0.0, 0.0, signed=False)[0] > 0  # constant input: no division by 0


def test_training_skips_batches_without_a_range_and_calibration_refuses_them() -> None:
    quantizer = observed(A8Static(), torch.tensor([0.0, 2.55])).train()
    quantizer(torch.tensor([1.0, math.nan]))  # a diverged step leaves the range alone
    assert quantizer(torch.zeros(0, 3)).shape == (0, 3)
    assert float(quantizer.range_max) == pytest.approx(2.55)
    assert int(quantizer.num_batches_observed) == 1
    model = nn.Sequential(QuantLinear(2, 2, input_quantizer=A8Static()))
    with pytest.raises(ValueError, match="NaN or infinite"):
        calibrate(model, [torch.tensor([[1.0, math.inf]])])
    with pytest.raises(ValueError, match="empty"):
        batch_range(torch.zeros(0), None, signed=False)


def test_unobserved_quantizer_passes_input_through() -> None:
    quantizer = ActivationQuantizer(A8Static()).eval()
    x = torch.randn(4)
    assert not quantizer.is_calibrated and torch.equal(quantizer(x), x)
    with pytest.raises(ValueError, match="calibrate first"):
        quantizer.quantize(x)


def lsq_expected_grad(x: Tensor, scale: float, qmin: int, qmax: int) -> float:
    """LSQ's d(loss)/d(scale) for loss = sum(q(x)), zero point 0, written out by hand."""
    total = 0.0
    for v in x.tolist():
        r = v / scale
        total += qmin if r < qmin else qmax if r > qmax else round(r) - r
    return total / math.sqrt(x.numel() * qmax)


def test_lsq_gradient_reaches_the_scale_as_the_paper_defines() -> None:
    quantizer = ActivationQuantizer(A8LSQ(signed=True))
    quantizer(torch.tensor([-1.27, 1.27]))  # first batch: scale = 0.01
    assert isinstance(quantizer.scale, nn.Parameter)
    x = torch.tensor([0.004, 0.016, -0.333, 2.0, -5.0, 0.5])
    quantizer(x).sum().backward()
    expected = lsq_expected_grad(x, float(quantizer.scale.detach()), -128, 127)
    # The module divides in float32, the hand computation in float64.
    assert float(quantizer.scale.grad) == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_lsq_learns_its_scale_and_stops_observing() -> None:
    layer = QuantLinear(16, 4, quantizer=TWN(), input_quantizer=A8LSQ())
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    data = torch.rand(64, 16) * 4
    layer(data)
    initial = float(layer.input_quant.scale.detach())
    assert initial == pytest.approx(float(data.max()) / 255, rel=1e-6)
    for _ in range(5):
        optimizer.zero_grad()
        # A loss that rewards clipping less: the learned step size must grow.
        (-(layer.input_quant(data * 3)).sum()).backward()
        optimizer.step()
    assert float(layer.input_quant.scale.detach()) > initial
    assert int(layer.input_quant.num_batches_observed) == 1


def test_layers_hold_the_quantizer_and_deploy_keeps_it_frozen() -> None:
    model = nn.Sequential(
        ActQuantConv2d(3, 4, 3, padding=1, input_quantizer=A8Static()),
        nn.ReLU(),
        QuantConv2d(4, 4, 3, quantizer=TWN(), input_quantizer=A8LSQ()),
        nn.Flatten(),
        QuantLinear(4 * 5 * 5, 6, quantizer=TWN(), input_quantizer=A8Static(signed=True)),
        ActQuantLinear(6, 2, input_quantizer=A8PerToken()),
    )
    x = torch.randn(2, 3, 7, 7)
    model(x)
    model.eval()
    expected = model(x)
    assert [n for n, _ in activation_quantizers(model)] == [
        f"{i}.input_quant" for i in (0, 2, 4, 5)
    ]
    assert input_quantizer_of(model[1]) is None
    deploy(model)
    assert torch.equal(model(x), expected)
    assert "scale" in model[2].input_quant._buffers
    model.train()
    model(x * 100)
    assert torch.equal(model.eval()(x), expected)
    assert {k for k in model.state_dict() if ".input_quant." in k} >= {
        "0.input_quant.scale",
        "2.input_quant.zero_point",
        "4.input_quant.num_batches_observed",
    }


def test_per_token_is_for_linear_only() -> None:
    with pytest.raises(ValueError, match="for Linear layers"):
        QuantConv2d(3, 4, 3, input_quantizer=A8PerToken())


def small_model() -> nn.Sequential:
    return nn.Sequential(
        QuantConv2d(1, 4, 3, quantizer=TWN(), input_quantizer=A8Static()),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        QuantLinear(4 * 4 * 4, 3, quantizer=TWN(), input_quantizer=A8Static(percentile=99.0)),
    )


def test_state_travels_through_safetensors(tmp_path) -> None:
    model = small_model()
    x = torch.randn(8, 1, 6, 6)
    model(x)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = small_model()
    fresh.load_state_dict(load_file(str(path)))
    assert torch.equal(fresh.eval()(x), model.eval()(x))
    assert fresh[0].input_quant.zero_point.dtype == torch.uint8


def test_checkpoint_without_activation_state_loads_strictly_uncalibrated() -> None:
    trained = small_model()
    trained(torch.randn(2, 1, 6, 6))
    state = {k: v for k, v in trained.state_dict().items() if ".input_quant." not in k}
    fresh = small_model()
    fresh.load_state_dict(state)
    assert not any(q.is_calibrated for _, q in activation_quantizers(fresh))
    partial = {**state, "0.input_quant.scale": torch.tensor(0.1)}
    with pytest.raises(RuntimeError, match="Missing key"):
        small_model().load_state_dict(partial)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("0.input_quant.zero_point", torch.tensor(3, dtype=torch.int8), "expected dtype"),
        ("0.input_quant.scale", torch.tensor(-1.0), "positive finite"),
        ("0.input_quant.scale", torch.tensor(math.inf), "positive finite"),
        ("4.input_quant.range_min", torch.zeros(2), "expected shape"),
    ],
)
def test_bad_activation_state_fails_and_a_deployed_model_keeps_its_state(
    key: str, value: Tensor, message: str
) -> None:
    model = small_model()
    model(torch.randn(2, 1, 6, 6))
    deploy(model.eval())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = {**before, key: value}
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(bad)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_signed_zero_point_must_be_zero() -> None:
    quantizer = observed(A8Static(signed=True), torch.randn(5))
    state = {**quantizer.state_dict(), "zero_point": torch.tensor(4, dtype=torch.int8)}
    with pytest.raises(ValueError, match="must be 0"):
        quantizer.load_state_dict(state)


def test_calibrate_sets_the_mean_range_in_eval_mode_and_counts_batches() -> None:
    model = small_model().train()
    batches = [(torch.rand(4, 1, 6, 6) * (i + 1), torch.zeros(4)) for i in range(5)]
    running_mean = model[1].running_mean.clone()
    assert calibrate(model, batches, max_batches=3) == 3
    assert model.training and model[1].training  # modes restored
    assert torch.equal(model[1].running_mean, running_mean)  # BN ran in eval mode
    maxima = [float(b[0].max()) for b in batches[:3]]
    assert float(model[0].input_quant.range_max) == pytest.approx(sum(maxima) / 3, rel=1e-6)
    assert int(model[0].input_quant.num_batches_observed) == 3
    assert calibrate(model, (b[0] for b in batches)) == 5


def test_calibrate_failures_change_nothing() -> None:
    model = small_model()
    model(torch.randn(2, 1, 6, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="no calibration batches"):
        calibrate(model, [])
    with pytest.raises(RuntimeError):
        calibrate(model, [torch.randn(2, 1, 6, 6), torch.randn(2, 3, 6, 6)])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(q.is_calibrated and not q.calibrating for _, q in activation_quantizers(model))
    with pytest.raises(ValueError, match="no static or learned"):
        calibrate(nn.Sequential(QuantLinear(2, 2)), [torch.randn(1, 2)])
    with pytest.raises(ValueError, match="max_batches"):
        calibrate(model, [torch.randn(2, 1, 6, 6)], max_batches=0)


def test_calibrate_names_quantizers_the_data_never_reached() -> None:
    class Skips(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = QuantLinear(3, 3, input_quantizer=A8Static())
            self.unused = QuantLinear(3, 3, input_quantizer=A8Static())

        def forward(self, x: Tensor) -> Tensor:
            return self.used(x)

    with pytest.raises(ValueError, match=r"never reached: unused\.input_quant"):
        calibrate(Skips(), [torch.randn(2, 3)])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize(
    "config", [A8Static(), A8LSQ(signed=True), A8PerToken()], ids=lambda c: c.method
)
def test_eval_quantizer_scripts_to_the_same_function(config: ActivationConfig) -> None:
    quantizer = observed(config, torch.randn(6, 8) * 2)
    x = torch.randn(3, 8) * 3
    assert torch.equal(torch.jit.script(quantizer)(x), quantizer(x))


def test_unknown_configs_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown activation config"):
        ActivationQuantizer(TWN())  # type: ignore[arg-type]



def test_add_input_quantizers_to_a_float_trained_model_then_calibrate() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False),
        nn.ReLU(),
        QuantConv2d(4, 4, 3, quantizer=TWN()),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).eval()
    x = torch.randn(5, 1, 6, 6)
    before = model(x)
    keys = set(model.state_dict())
    assert add_input_quantizers(model, A8Static()) == ["0", "2", "4"]
    assert isinstance(model[0], ActQuantConv2d) and isinstance(model[4], ActQuantLinear)
    assert not model[0].training  # the twin keeps the layer's mode
    assert torch.equal(model(x), before)  # unobserved: still the float function
    assert {k for k in model.state_dict() if ".input_quant." not in k} == keys
    assert calibrate(model, [x]) == 1
    assert not torch.equal(model(x), before)
    assert add_input_quantizers(model, A8Static()) == []  # each layer keeps its quantizer


def test_add_input_quantizers_checks_names_before_changing_anything() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="to: 0, 1, nope"):
        add_input_quantizers(model, A8PerToken(), names=["0", "1", "2", "nope"])
    assert type(model[2]) is nn.Linear
    assert add_input_quantizers(model, A8PerToken()) == ["2"]  # per token: Linear only


def _lsq_worker(rank: int, port: int, results: Any) -> None:
    """One gloo process: an LSQ quantizer's first batch differs per rank."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        quantizer = ActivationQuantizer(A8LSQ())
        quantizer(torch.tensor([-1.0 - rank, 2.0 + 3 * rank]))
        results[rank] = (float(quantizer.scale.detach()), int(quantizer.zero_point))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_lsq_starts_from_the_same_scale_in_every_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    results = mp.get_context("fork").Manager().dict()
    mp.start_processes(_lsq_worker, args=(port, results), nprocs=2, start_method="fork")
    expected = scale_from_range(-2.0, 5.0, signed=False)
    assert results[0] == results[1] == (pytest.approx(expected[0]), expected[1])
