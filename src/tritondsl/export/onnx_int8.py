"""ONNX for onnxruntime's int8 kernels (W1.58A8): QDQ, BatchNorm folded, trits 2-bit on disk.

``export_int8`` writes a file in which every quantized layer runs on an integer kernel of
onnxruntime's CPU graph (QLinearConv, QGemm, MatMulInteger, MatMulNBits) and checks that it
does: it reads the graph onnxruntime optimized and raises ``Int8ExportError`` naming any
layer whose weight is still read by a float kernel (``float_layers=`` keeps chosen layers
float on purpose, and the report lists them).

1. A deployed CPU copy of the model. Its ``QuantConv2d`` / ``QuantLinear`` layers, and its
   full-precision ``Conv2d`` / ``Linear`` layers unless ``keep_fp32``, become int8 layers.
2. A float twin (each layer a plain Conv2d / Linear holding its dequantized weight; Linear
   always as a 2-D Gemm with a bias) goes through the TorchScript exporter (opset 18);
   BatchNorm is folded into the Conv / Gemm before it (``fold.py``); opset 25 (INT2).
3. Each int8 layer's integer codes and per-channel scales (``int8_weights.py``) replace its
   float weight and are handed to onnxruntime's quantizer (``quantize_static``, QDQ, uint8
   activations, int8 per-channel weights) as overrides, so the weights it writes are the
   codes themselves (checked afterwards).
4. Activation scales: a layer that quantizes its input (``input_quant``, see
   ``backend/activations.py``) gives its own scale and zero point for that tensor. Every
   other tensor the quantizer quantizes -- a layer input the model does not quantize, a conv
   output before a residual Add, a pooling input -- takes the range seen on the
   ``calibration`` batches (min/max). Without batches those tensors have no scale and the
   export stops with an error naming the layers; it finds them by quantizing twice with
   two different random batches and comparing every scale (no guessing of which tensors
   onnxruntime's quantizer touches).
5. Per-token input quantization (``ActPerToken``) is written out exactly
   (``int8_graph.per_token_linear``); ``linear="nbits"`` writes ternary Linear layers whose
   K and N fit the lookup-table kernel as 2-bit ``MatMulNBits``, others stay on QGemm.
6. Trits are stored as INT2 (``int8_graph.store_trits``); graph outputs stay float.

The file is a standard ONNX model: plain onnxruntime runs it as is (it folds the Cast of
the INT2 weights at load time), and ``tritondsl.onnx_session`` does that rewrite itself
before building the session, with the session options that matter.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper, version_converter
from torch import Tensor, nn

from tritondsl.backend.activations import activation_quantizers, calibrate, input_quantizer_of
from tritondsl.backend.deploy import add_input_quantizers
from tritondsl.backend.layers import QuantConv2d, QuantLinear, QuantModule
from tritondsl.backend.precision import A8Static
from tritondsl.backend.quantizers import Decomposition, quantizer_kind
from tritondsl.export import int8_graph as ig
from tritondsl.export import int8_quantize as iq
from tritondsl.export.exportable import onnx_input_axes
from tritondsl.export.fold import fold_batchnorm
from tritondsl.export.int8_weights import (
    DEFAULT_RATIO_TOLERANCE,
    WeightPlan,
    plan_float,
    plan_int8,
    plan_learned,
    plan_ternary,
)
from tritondsl.export.matmul_nbits import DOMAIN, lut_unsupported
from tritondsl.export.onnx import _describe, _float_twin, _input_names, _torch_to_onnx
from tritondsl.export.onnx_session import check_onnxruntime, optimized_graph
from tritondsl.export.onnx_verify import TERNARY_KEY, WEIGHTS_KEY
from tritondsl.export.torch_export import deployed_copy, input_axes, run_outputs, spec_info
from tritondsl.files import write_atomically

OPSET = 25
IR_VERSION = 13
LINEAR_KERNELS = ("int8", "nbits")
ACTIVATION_FORMS = ("float", "int8")  # to_onnx(activations=...), export --activations
LAYERS_KEY = "tritondsl.int8_layers"  # metadata: layer -> how it is stored and run
PER_TOKEN = "per_token"


class Int8ExportError(ValueError):
    """The model cannot be written for onnxruntime's int8 kernels as asked (says why)."""


@dataclass(frozen=True)
class InputScale:
    """A layer's own input quantization: ONNX QuantizeLinear's scale and zero point."""

    scale: float
    zero_point: int
    signed: bool


@dataclass
class Int8Export:
    """What ``export_int8`` wrote and what it needs to be verified against."""

    path: Path
    input_name: str
    example_input: np.ndarray
    layers: dict[str, str]  # layer -> how its weight is stored and which kernel runs it
    float_layers: dict[str, str]  # layer -> why it stays float
    calibration_batches: int
    reference: nn.Module  # the deployed PyTorch model the file stands for
    notes: list[str] = field(default_factory=list)


@dataclass
class _Layer:
    name: str
    module: nn.Module
    weight: str = ""  # initializer name in the graph
    node: onnx.NodeProto | None = None
    plan: WeightPlan | None = None
    input: InputScale | str | None = None
    kernel: str = "int8"  # "int8", "per_token", "nbits" or "float"
    why_float: str | None = None


def input_scale_of(layer: nn.Module) -> InputScale | str | None:
    """A layer's own input quantization: its scale, ``"per_token"``, or None (none / unset)."""
    quant = input_quantizer_of(layer)
    if quant is None:
        return None
    if quant.per_token:
        return PER_TOKEN
    if not quant.is_calibrated:
        return None
    return InputScale(float(quant.scale), int(quant.zero_point), bool(quant.config.signed))


def calibrate_reference(
    model: nn.Module, names: Sequence[str], batches: Sequence[Tensor]
) -> list[str]:
    """Give the layers ``names`` that lack a calibrated input scale an ``A8Static`` one set
    from ``batches`` (``backend.activations.calibrate``); trained scales stay as they are.
    Returns the layers calibrated."""
    layers = dict(model.named_modules())
    todo = [n for n in names if input_scale_of(layers[n]) is None]
    if not todo or not batches:
        return []
    fresh = [n for n in todo if input_quantizer_of(layers[n]) is None]
    add_input_quantizers(model, A8Static(), fresh)
    kept = {
        name: ({k: v.clone() for k, v in q.state_dict().items()}, q.observed)
        for name, q in activation_quantizers(model)
        if q.is_calibrated
    }
    calibrate(model, batches)
    quantizers = dict(activation_quantizers(model))
    with torch.no_grad():
        for name, (state, observed) in kept.items():
            quantizers[name].load_state_dict(state)
            quantizers[name].observed = observed
    for quant in quantizers.values():
        quant.freeze_()
    return todo


class _GemmLinear(nn.Module):
    """A Linear the exporter writes as one 2-D Gemm with a bias (other ranks reshape)."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        zeros = torch.zeros(weight.shape[0])
        self.bias = nn.Parameter((zeros if bias is None else bias.detach()).clone(), False)

    def forward(self, x: Tensor) -> Tensor:
        """``x Wᵀ + b`` over the last dimension."""
        if x.dim() == 2:
            return F.linear(x, self.weight, self.bias)
        out = F.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def _is_layer(module: nn.Module) -> bool:
    return isinstance(module, QuantModule | nn.Conv2d | nn.Linear)


def _layers(model: nn.Module, keep_fp32: bool, float_layers: Sequence[str]) -> list[_Layer]:
    found = {name: m for name, m in model.named_modules() if name and _is_layer(m)}
    unknown = sorted(set(float_layers) - set(found))
    if unknown:
        raise Int8ExportError(
            f"no Conv2d/Linear layer named {', '.join(unknown)}; layers: {', '.join(found)}"
        )
    layers = []
    for name, module in found.items():
        layer = _Layer(name, module, input=input_scale_of(module))
        if isinstance(module, QuantModule) and not isinstance(module, QuantConv2d | QuantLinear):
            layer.why_float = f"no int8 ONNX form for {type(module).__name__}"
        elif name in float_layers:
            layer.why_float = "kept float (float_layers)"
        elif keep_fp32 and not isinstance(module, QuantModule):
            layer.why_float = "full-precision layer kept float (keep_fp32)"
        layers.append(layer)
    return layers


def _twin(layer: _Layer) -> nn.Module:
    m = layer.module
    weight = m.decomposition().dequantize() if isinstance(m, QuantModule) else m.weight
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):  # a ConvTranspose2d stays float
        return _float_twin(m, weight)
    return _GemmLinear(weight, m.bias)


def _float_graph(
    model: nn.Module, layers: list[_Layer], example: Tensor, tolerance: float
) -> onnx.ModelProto:
    """The folded float graph at opset 25; fills each layer's weight name, node and plan."""
    twin = _swap(model, {layer.name: _twin(layer) for layer in layers}).eval()
    outputs = len(run_outputs(twin, example))
    # the same refusals (a located error) and fixed sizes as the float export
    axes, _ = onnx_input_axes(model, (example,), [input_axes(spec_info(model))])
    proto = _torch_to_onnx(twin, example, _input_names(model, 1), outputs, axes)
    decompositions = {}
    for layer in layers:
        layer.weight = f"{layer.name}.weight"
        m = layer.module
        if isinstance(m, QuantModule) and quantizer_kind(m.quantizer) != "fp16":
            decompositions[layer.weight] = m.decomposition()
    folded = fold_batchnorm(proto, decompositions).decompositions
    proto = version_converter.convert_version(proto, OPSET)
    inits = {t.name: t for t in proto.graph.initializer}
    for layer in layers:
        layer.node = next((n for n in proto.graph.node if n.input[1:2] == [layer.weight]), None)
        if layer.node is None:
            layer.why_float = layer.why_float or "not used by forward"
            continue
        if layer.why_float is None:
            weight = numpy_helper.to_array(inits[layer.weight])
            plan = _plan(layer.module, folded.get(layer.weight), weight, tolerance)
            if isinstance(plan, str):
                layer.why_float = plan
            else:
                layer.plan = plan
                inits[layer.weight].CopyFrom(numpy_helper.from_array(plan.weight(), layer.weight))
    return proto


def _swap(model: nn.Module, twins: dict[str, nn.Module]) -> nn.Module:
    out = copy.deepcopy(model)
    for name, twin in twins.items():
        parent, _, leaf = name.rpartition(".")
        setattr(out.get_submodule(parent), leaf, twin)
    return out


def _plan(
    module: nn.Module, dec: Decomposition | None, weight: np.ndarray, tolerance: float
) -> WeightPlan | str:
    """Codes and scales for one layer (``int8_weights.py``), or why it stays float."""
    if not isinstance(module, QuantModule):
        return plan_float(weight, "fp32")
    kind = quantizer_kind(module.quantizer)
    if kind == "fp16" or dec is None:
        return plan_float(weight, kind)
    if kind == "int8":
        return plan_int8(dec)
    if dec.scale_neg is not None:
        return plan_learned(dec, tolerance)
    return plan_ternary(dec)


def _kernel(layer: _Layer, linear: str, notes: list[str]) -> str:
    """Which integer path a planned layer takes: int8 (QDQ), per_token or nbits."""
    linear_layer = isinstance(layer.module, nn.Linear)
    if layer.input == PER_TOKEN:
        return PER_TOKEN
    if linear == "nbits" and linear_layer and layer.plan is not None and layer.plan.trits:
        n, k = layer.plan.codes.shape
        reason = lut_unsupported(k, n)
        if reason is None:
            return "nbits"
        notes.append(f"{layer.name}: no MatMulNBits lookup table ({reason}); int8 QGemm instead")
    return "int8"


def _overrides(layers: list[_Layer], notes: list[str]) -> dict[str, list[dict[str, object]]]:
    """The quantizer overrides: per-channel weight scales, the model's own input scales."""
    from onnxruntime.quantization import QuantType

    out: dict[str, list[dict[str, object]]] = {}
    owner: dict[str, str] = {}
    for layer in layers:
        if layer.kernel != "int8":
            continue
        assert layer.plan is not None and layer.node is not None
        out[layer.weight] = [
            {"scale": np.float32(s), "zero_point": np.int8(0), "axis": 0} for s in layer.plan.scale
        ]
        spec = layer.input
        if not isinstance(spec, InputScale):
            continue
        tensor = layer.node.input[0]
        zp = np.array(spec.zero_point, np.int8 if spec.signed else np.uint8)
        wanted = {
            "scale": np.array(spec.scale, np.float32),
            "zero_point": zp,
            "quant_type": QuantType.QInt8 if spec.signed else QuantType.QUInt8,
        }
        if tensor in out:
            have = out[tensor][0]
            if (float(have["scale"]), int(have["zero_point"])) != (spec.scale, spec.zero_point):
                notes.append(
                    f"{layer.name}: shares its input with {owner[tensor]}, whose input scale "
                    f"{float(have['scale']):.6g} (zero point {have['zero_point']}) it uses "
                    f"instead of its own {spec.scale:.6g} ({spec.zero_point})"
                )
            continue
        out[tensor], owner[tensor] = [wanted], layer.name
    return out


def _describe_tensor(tensor: str, layers: list[_Layer], proto: onnx.ModelProto) -> str:
    for layer in layers:
        if layer.node is not None and layer.node.input[0] == tensor:
            return f"the input of {layer.name}"
    producer = next((n for n in proto.graph.node if tensor in n.output), None)
    for layer in layers:
        if layer.node is not None and producer is not None and layer.node.name == producer.name:
            return f"the output of {layer.name}"
    if producer is None:
        return f"the model input {tensor!r}"
    return f"the output of {producer.op_type} {producer.name or tensor}"


def declared_input(model: nn.Module, example: Tensor) -> list[int | str]:
    """The model's input shape, symbolic sizes as names (the example's shape otherwise)."""
    info = spec_info(model)
    inputs = list(info.inputs.values()) if info is not None else []
    if len(inputs) == 1:
        return list(inputs[0].shape)
    return ["N", *example.shape[1:]]


def _check_batches(batches: Sequence[Tensor], declared: list[int | str]) -> None:
    shown = "[" + ", ".join(map(str, declared)) + "]"
    for i, batch in enumerate(batches):
        if not isinstance(batch, Tensor):
            raise Int8ExportError(
                f"calibration batch {i} is a {type(batch).__name__}, not a tensor"
            )
        if not batch.dtype.is_floating_point:
            raise Int8ExportError(
                f"calibration batch {i} has dtype {batch.dtype}; the model takes floating point"
            )
        fits = batch.dim() == len(declared) and all(
            isinstance(d, str) or d == n for d, n in zip(declared, batch.shape, strict=True)
        )
        if not fits or not len(batch):
            raise Int8ExportError(
                f"calibration batch {i} has shape {list(batch.shape)}; the model takes {shown}"
            )
        if not bool(torch.isfinite(batch).all()):
            raise Int8ExportError(f"calibration batch {i} holds NaN or infinite values")


def export_int8(
    model: nn.Module,
    path: str | Path,
    example_input: Tensor,
    calibration: Sequence[Tensor] | None = None,
    *,
    keep_fp32: bool = False,
    float_layers: Sequence[str] = (),
    linear: str = "int8",
    ratio_tolerance: float = DEFAULT_RATIO_TOLERANCE,
) -> Int8Export:
    """Write ``model`` for onnxruntime's int8 kernels (see the module docstring)."""
    if linear not in LINEAR_KERNELS:
        raise ValueError(f"linear must be one of {', '.join(LINEAR_KERNELS)}, got {linear!r}")
    check_onnxruntime(OPSET, IR_VERSION)
    path = Path(path)
    example = example_input.detach().cpu()
    batches = list(calibration or [])
    if calibration is not None and not batches:
        raise Int8ExportError("no calibration batches: the data is empty")
    _check_batches(batches, declared_input(model, example))
    reference = deployed_copy(model)
    input_name = _input_names(reference, 1)[0]
    notes: list[str] = []
    layers = _layers(reference, keep_fp32, float_layers)
    wanted = [layer.name for layer in layers if layer.why_float is None]
    calibrated = calibrate_reference(reference, wanted, batches)
    if calibrated:
        notes.append(
            f"calibrated the input scale of {len(calibrated)} layer(s) on {len(batches)} "
            "batch(es) (A8Static: mean of the batch min/max); the model's own scales kept"
        )
    layers = _layers(reference, keep_fp32, float_layers)  # modules changed: collect again
    proto = _float_graph(reference, layers, example, ratio_tolerance)
    for layer in layers:
        layer.kernel = "float" if layer.plan is None else _kernel(layer, linear, notes)
    overrides = iq.propagate(proto, _overrides(layers, notes))
    exclude = [layer.node.name for layer in layers if layer.node and layer.kernel != "int8"]
    if not batches:
        missing = iq.data_dependent(proto, example, input_name, overrides, exclude)
        if missing:
            where = "; ".join(_describe_tensor(t, layers, proto) for t in missing)
            raise Int8ExportError(
                f"the model has no activation scale for {len(missing)} tensor(s) that "
                f"onnxruntime's int8 kernels need ({where}); give calibration data "
                "(tritondsl export --calibrate DATA) or train with activation quantization"
            )
        batches = [example]
    quantized = iq.quantize(proto, batches, input_name, overrides, exclude)
    g = ig.Graph(quantized)
    layout, described, weights = _rewrite(g, layers)
    ig.float_outputs(g)
    _finish(quantized, layout, described, reference)
    data = quantized.SerializeToString()
    _check_kernels(data, layers, weights)
    write_atomically(path, data)
    kept = {layer.name: layer.why_float or "" for layer in layers if layer.kernel == "float"}
    return Int8Export(
        path, input_name, example.numpy(), described, kept,
        len(batches) if calibration is not None else 0, reference, notes,
    )  # fmt: skip


def _rewrite(
    g: ig.Graph, layers: list[_Layer]
) -> tuple[dict[str, dict[str, object]], dict[str, str], dict[str, str]]:
    """Post-process the quantizer's graph; return the 2-bit layout (for ``weight_stats``),
    each layer's description, and the tensor each layer's integer kernel must read."""
    layout: dict[str, dict[str, object]] = {}
    described: dict[str, str] = {}
    reads: dict[str, str] = {}
    nodes = {n.name: n for n in g.graph.node}
    for layer in layers:
        if layer.kernel == "float":
            described[layer.name] = f"float ({layer.why_float})"
            if layer.node is not None and layer.node.name in nodes:
                ig.float_input(g, nodes[layer.node.name])
            continue
        assert layer.plan is not None and layer.node is not None
        node = nodes.get(layer.node.name)
        if node is None:
            raise RuntimeError(f"{layer.name}: the quantizer dropped node {layer.node.name}")
        codes, scales, reads[layer.name], described[layer.name] = _rewrite_layer(g, layer, node)
        if layer.plan.trits:
            layout[layer.weight] = {
                "count": layer.plan.codes.size,
                "codes": codes,
                "scales": scales,
            }
    g.prune()
    return layout, described, reads


def _rewrite_layer(
    g: ig.Graph, layer: _Layer, node: onnx.NodeProto
) -> tuple[str, list[str], str, str]:
    """(codes tensor, scale tensors, tensor the kernel reads, description) of one layer."""
    plan = layer.plan
    assert plan is not None
    if layer.kernel == PER_TOKEN:
        codes, scale = ig.per_token_linear(g, node, plan.codes, plan.scale, plan.trits)
        return codes, [scale], codes.removesuffix(".int2"), f"{plan.how}; per-token MatMulInteger"
    if layer.kernel == "nbits":
        codes, scale = ig.nbits_linear(g, node, plan.codes, plan.scale)
        return codes, [scale], codes, "ternary trits, 2-bit MatMulNBits (lookup-table kernel)"
    dq = ig.weight_dequantize(g, node)
    if dq is None:
        raise RuntimeError(f"{layer.name}: the quantizer left its weight float")
    read = dq.input[0]
    if plan.trits:
        codes, scale = ig.store_trits(g, dq, plan.codes)
    elif np.array_equal(g.array(read), plan.codes):
        codes, scale = read, dq.input[1]
    else:
        raise RuntimeError(f"{layer.name}: the quantizer wrote other int8 codes")
    kernel = "QLinearConv" if node.op_type == "Conv" else "QGemm"
    return codes, [scale], read, f"{plan.how}; {kernel}"


def _finish(
    proto: onnx.ModelProto,
    layout: dict[str, dict[str, object]],
    described: dict[str, str],
    model: nn.Module,
) -> None:
    proto.ir_version = IR_VERSION
    domains = {o.domain for o in proto.opset_import}
    if any(n.domain == DOMAIN for n in proto.graph.node) and DOMAIN not in domains:
        proto.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    onnx.helper.set_model_props(
        proto,
        {TERNARY_KEY: json.dumps(layout), WEIGHTS_KEY: "int8", LAYERS_KEY: json.dumps(described)},
    )
    _describe(proto, model, spec_info(model), "int8")
    onnx.checker.check_model(proto)


def _check_kernels(data: bytes, layers: list[_Layer], weights: dict[str, str]) -> None:
    """Raise Int8ExportError naming every layer onnxruntime would run on a float kernel."""
    optimized = optimized_graph(data)
    readers = ig.int8_consumers(optimized, weights.values())
    floats = []
    for layer in layers:
        name = weights.get(layer.name)
        if name is None:
            continue
        ops = readers.get(name, [])
        if not ops or any(op not in ig.INT8_KERNELS for op in ops):
            floats.append(f"{layer.name} ({', '.join(ops) or 'weight folded away'})")
    if floats:
        raise Int8ExportError(
            "onnxruntime would run these layers on float kernels: "
            f"{'; '.join(floats)}; keep them float on purpose with float_layers "
            "(--float-layer NAME)"
        )
