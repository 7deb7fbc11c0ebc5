"""ONNX files of a deployed model, with ternary weights stored as INT2, packed uint8 or float.

How: a deployed copy of the model has every ``QuantConv2d`` / ``QuantConvTranspose2d`` /
``QuantLinear`` swapped for the plain torch layer holding its dequantized weight, which the
TorchScript exporter (``torch.onnx.export(dynamo=False)``) writes as an initializer named after the
module (``layer1.0.conv1.weight``). Each such initializer is then replaced, with the
``onnx`` API, by a compact tensor and the few nodes that rebuild the same float weight under
the same name, so the Conv / Gemm / MatMul nodes that read it are left untouched.

Weight forms (``weights=``):

* ``int2`` (opset 25, IR 13 — onnxruntime 1.31 refuses IR 14): codes as an INT2 tensor
  shaped like the weight (packed ``raw_data``: four values per byte, first in the low
  bits) -> ``DequantizeLinear`` with the per-output-channel scales (axis 0) or a scalar.
* ``packed`` (opset 18, for runtimes without INT2): the deployed ``weight_packed`` bytes
  (docs/packing.md: code = trit + 1, four per byte LSB first, rows padded) as a uint8
  ``[N, ceil(K/4)]`` tensor -> Unsqueeze, BitShift, BitwiseAnd, Reshape, Slice, Cast,
  Sub 1 -> float trits [N, K] -> Reshape to the weight's shape -> Mul by the scales
  shaped [N, 1, ...] (this order is what OpenVINO's shape inference accepts).
* ``float`` (opset 18): the dequantized float weights.

Learned (two-scale) layers keep 2-bit codes in both compact forms: the float trits t are
multiplied by ``Where(t > 0, scale_pos, scale_neg)``, exactly what the deployed layer does.
Int8 layers become an INT8 tensor -> ``DequantizeLinear`` (axis 0 or scalar), fp16 layers a
float16 tensor -> ``Cast`` to float, in both compact forms; both are plain float in ``float``.
Everything here is constant, so onnxruntime folds it once at load time (for DQ nodes only
with ``session.disable_quant_qdq=1``, see ``onnx_verify.create_session``).

BatchNorm after a Conv or a Linear is folded into it in every form (``fold.py``): the trits
stay trits (negated in a channel whose BatchNorm factor is negative), the scales become per
output channel, and the graph has one node fewer per BatchNorm for consumers that do not
fuse it themselves (onnxruntime with optimizations off, simplifiers, hand-written readers).
The exporter runs with ``TrainingMode.PRESERVE`` (its own eval-mode folding would rename
and rescale the very weights we look for) and ``fold_batchnorm`` folds the graph it wrote,
returning the folded codes and scales that the compact forms then store. Left unfolded: a
BatchNorm after a ConvTranspose2d, after a Linear on a 3-D input (a MatMul), after a
layer whose output has a second reader, and after a float16 layer (folding would round
its stored values again).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper, version_converter
from torch import Tensor, nn

from tritondsl.backend.layers import QuantModule
from tritondsl.backend.quantizers import Decomposition, quantizer_kind
from tritondsl.compiler.check import ModelInfo
from tritondsl.export.exportable import onnx_input_axes
from tritondsl.export.fold import fold_batchnorm
from tritondsl.export.hub import layer_precisions
from tritondsl.export.onnx_verify import TERNARY_KEY, WEIGHTS_KEY
from tritondsl.export.torch_export import (
    Inputs,
    as_inputs,
    deployed_copy,
    input_axes,
    replace_modules,
    run_outputs,
    spec_info,
)
from tritondsl.files import write_atomically
from tritondsl.kernels.packing import pack

WEIGHT_FORMS = ("int2", "packed", "float")
OPSET = {"int2": 25, "packed": 18, "float": 18}
INT2_IR_VERSION = 13
EXPORT_OPSET = 18  # what the TorchScript exporter writes before the rewrite
_MAX_PROTO_BYTES = 2**31 - 1
_C = "tritondsl."  # prefix of the constants shared by all layers
# metadata_props beside TERNARY_KEY and WEIGHTS_KEY (onnx_verify.py)
VERSION_KEY, MODEL_KEY = "tritondsl.version", "tritondsl.model"
SOURCE_KEY = "tritondsl.source_sha256"  # sha256 of the .tdsl text the model was built from
PRECISION_KEY = "tritondsl.precision"  # JSON: layer path -> its precision, spelled out


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote, plus the reference outputs to verify it against."""

    path: Path
    weights: str
    opset: int
    ir_version: int
    input_name: str
    example_input: np.ndarray
    expected: list[np.ndarray]
    layers: dict[str, str] = field(default_factory=dict)  # layer -> how its weight is stored
    notes: list[str] = field(default_factory=list)  # e.g. input sizes that had to be fixed
    inputs: dict[str, np.ndarray] = field(default_factory=dict)  # every input's example


def int2_tensor(name: str, values: Tensor) -> TensorProto:
    """An INT2 initializer with packed raw_data (ONNX: 4 per byte, first in the low bits)."""
    # numpy, single-threaded: torch's elementwise ops are slower on these sizes here.
    two_bits = values.detach().cpu().numpy().reshape(-1).astype(np.uint8) & 3  # -1 -> 0b11
    padded = np.zeros(4 * math.ceil(two_bits.size / 4), dtype=np.uint8)
    padded[: two_bits.size] = two_bits
    quads = padded.reshape(-1, 4)
    packed = quads[:, 0] | quads[:, 1] << 2 | quads[:, 2] << 4 | quads[:, 3] << 6
    tensor = TensorProto(name=name, data_type=TensorProto.INT2, dims=list(values.shape))
    tensor.raw_data = packed.tobytes()
    return tensor


def _array(name: str, value: Tensor | np.ndarray) -> TensorProto:
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else value
    return numpy_helper.from_array(np.array(array, order="C"), name)  # keeps 0-d arrays 0-d


def _float_twin(layer: nn.Module, weight: Tensor) -> nn.Module:
    """A plain Conv2d / ConvTranspose2d / Linear like ``layer`` computing with ``weight``
    (e.g. its dequantized weight)."""
    twin: nn.Module
    if isinstance(layer, nn.Conv2d):
        twin = nn.utils.skip_init(  # skip_init: no random init to overwrite
            nn.Conv2d,
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.bias is not None,
            layer.padding_mode,
        )
    elif isinstance(layer, nn.ConvTranspose2d):
        twin = nn.utils.skip_init(
            nn.ConvTranspose2d,
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.output_padding,
            layer.groups,
            layer.bias is not None,
            layer.dilation,
        )
    else:
        shape = weight.shape
        twin = nn.utils.skip_init(nn.Linear, shape[1], shape[0], layer.bias is not None)
    twin.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if layer.bias is not None:
        twin.bias = nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
    return twin


def _input_names(model: nn.Module, count: int) -> list[str]:
    params = list(inspect.signature(model.forward).parameters)
    return params[:count] if len(params) >= count else [f"input{i}" for i in range(count)]


def _torch_to_onnx(
    model: nn.Module,
    example: Tensor | tuple[Tensor, ...],
    input_name: str | list[str],
    outputs: int,
    axes: dict[int, str] | list[dict[int, str]] | None = None,
) -> onnx.ModelProto:
    """Trace ``model`` to ONNX; ``axes``: each input's dynamic axes (default: the batch)."""
    names = ["output"] if outputs == 1 else [f"output{i}" for i in range(outputs)]
    inputs = (example,) if isinstance(example, Tensor) else tuple(example)
    input_names = [input_name] if isinstance(input_name, str) else input_name
    all_axes = [{0: "batch"}] * len(inputs) if axes is None else [axes] if isinstance(
        axes, dict) else axes  # fmt: skip
    dynamic = dict(zip(input_names, all_axes, strict=True))
    dynamic.update({name: {0: "batch"} for name in names})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is deprecated (its warning is left visible: pyproject.toml pins
        # the torch range it is tested with); the input check's shape comparisons become
        # constants of the trace, as intended, so tracer warnings say nothing new.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            inputs,
            buffer,
            dynamo=False,
            opset_version=EXPORT_OPSET,
            input_names=input_names,
            output_names=names,
            dynamic_axes=dynamic,
            # PRESERVE on an eval model: eval-mode BatchNorm, but no Conv+BN folding.
            training=torch.onnx.TrainingMode.PRESERVE,
            # Folding would also turn a Linear's transposed weight (3-D input -> MatMul)
            # into a new anonymous initializer; onnxruntime folds constants at load anyway.
            do_constant_folding=False,
            # Initializers as inputs: the exporter then never merges equal-valued weights,
            # so every layer's weight keeps its own name (they are removed from inputs below).
            keep_initializers_as_inputs=True,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    initializers = {t.name for t in proto.graph.initializer}
    real_inputs = [i for i in proto.graph.input if i.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(real_inputs)
    return proto


class _Rewriter:
    """Replaces float weight initializers by compact tensors plus decoding nodes."""

    def __init__(self, proto: onnx.ModelProto, weights: str) -> None:
        self.proto, self.weights = proto, weights
        self.inits = {t.name: t for t in proto.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.layout: dict[str, dict[str, object]] = {}
        self.constants: set[str] = set()

    def add(self, tensor: TensorProto) -> str:
        self.proto.graph.initializer.append(tensor)
        return tensor.name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def constant(self, name: str, value: np.ndarray) -> str:
        """A constant shared by all layers, added once."""
        if _C + name not in self.constants:
            self.constants.add(_C + name)
            self.add(_array(_C + name, value))
        return _C + name

    def replace(self, wname: str, layer: QuantModule, dec: Decomposition) -> str:
        """Swap initializer ``wname`` for the compact form; return a description."""
        init = self.inits.get(wname)
        if init is None:
            # Neither constant folding nor deduplication runs (see _torch_to_onnx), so a
            # missing weight is one the traced forward never used: nothing to store.
            return "unused by forward, not in the file"
        kind = quantizer_kind(layer.quantizer)
        shape = tuple(init.dims)
        if tuple(layer.weight_shape) != shape:
            raise RuntimeError(f"{wname}: initializer shape {shape} != {layer.weight_shape}")
        if kind == "ternary":
            self.layout[wname] = {"count": math.prod(shape), "codes": wname, "scales": []}
        if self.weights == "float":
            return "float"
        self.proto.graph.initializer.remove(init)
        if kind == "fp16":
            self.node(
                "Cast", [self.add(_array(wname + ".fp16", dec.codes))], wname, to=TensorProto.FLOAT
            )
            return "float16 + Cast"
        if kind == "int8":
            codes = self.add(_array(wname + ".int8", dec.codes.to(torch.int8)))
            self._dequantize(wname, codes, dec.scale)
            return "INT8 + DequantizeLinear"
        if self.weights == "int2":
            return self._int2(wname, dec)
        return self._packed(wname, layer, dec)

    def _dequantize(self, wname: str, codes: str, scale: Tensor | None) -> str:
        """DequantizeLinear(codes, scale) -> ``wname``: per output channel, or one scalar."""
        assert scale is not None
        per_tensor = scale.numel() == 1
        scale_name = self.add(_array(wname + ".scale", scale.reshape(()) if per_tensor else scale))
        axis = {} if per_tensor else {"axis": 0}
        self.node("DequantizeLinear", [codes, scale_name], wname, **axis)
        return scale_name

    def _two_scales(self, wname: str, trits: str, dec: Decomposition, out: str) -> str:
        """Where(t > 0, scale_pos, scale_neg) · t -> ``out``: the Learned quantizer's weight."""
        assert dec.scale is not None and dec.scale_neg is not None
        # One pair for the tensor, or (after BatchNorm folding) one per output channel.
        shape = (-1,) + (1,) * (dec.codes.dim() - 1) if dec.scale.numel() > 1 else ()
        pos = self.add(_array(wname + ".scale_pos", dec.scale.reshape(shape)))
        neg = self.add(_array(wname + ".scale_neg", dec.scale_neg.reshape(shape)))
        zero = self.constant("zero", np.array(0.0, np.float32))
        positive = self.node("Greater", [trits, zero], wname + ".positive")
        scales = self.node("Where", [positive, pos, neg], wname + ".scales")
        self.layout[wname]["scales"] = [pos, neg]
        return self.node("Mul", [trits, scales], out)

    def _int2(self, wname: str, dec: Decomposition) -> str:
        codes = self.add(int2_tensor(wname + ".codes", dec.codes))
        self.layout[wname]["codes"] = codes
        if dec.scale_neg is None:
            self.layout[wname]["scales"] = [self._dequantize(wname, codes, dec.scale)]
            return "INT2 + DequantizeLinear"
        one = self.constant("one", np.array(1.0, np.float32))
        trits = self.node("DequantizeLinear", [codes, one], wname + ".trits")
        self._two_scales(wname, trits, dec, wname)
        return "INT2 + DequantizeLinear + Where(pos, neg scales)"

    def _packed(self, wname: str, layer: QuantModule, dec: Decomposition) -> str:
        # Packed from the codes (BatchNorm folding may have negated some channels' trits).
        n, k, shape = dec.codes.shape[0], layer.reduction_size, list(layer.weight_shape)
        packed_buffer = pack(dec.codes.reshape(n, k))
        packed = self.add(_array(wname + ".packed", packed_buffer))
        self.layout[wname]["codes"] = packed
        expanded = self.node(
            "Unsqueeze",
            [packed, self.constant("last_axis", np.array([2], np.int64))],
            wname + ".bytes",
        )
        shifted = self.node(
            "BitShift",
            [expanded, self.constant("shifts", np.array([0, 2, 4, 6], np.uint8))],
            wname + ".shifted",
            direction="RIGHT",
        )
        codes = self.node(
            "BitwiseAnd",
            [shifted, self.constant("mask", np.array(3, np.uint8))],
            wname + ".code_bits",
        )
        rows = self.node(
            "Reshape", [codes, self.constant("rows", np.array([0, -1], np.int64))], wname + ".rows"
        )
        if k != 4 * packed_buffer.shape[1]:
            # Drop each row's padding codes (docs/packing.md pads rows to whole bytes).
            ends = self.add(_array(wname + ".k", np.array([k], np.int64)))
            starts = self.constant("start", np.array([0], np.int64))
            axes = self.constant("axis1", np.array([1], np.int64))
            rows = self.node("Slice", [rows, starts, ends, axes], wname + ".codes")
        as_float = self.node("Cast", [rows], wname + ".codes_f", to=TensorProto.FLOAT)
        one = self.constant("one", np.array(1.0, np.float32))
        trits = self.node("Sub", [as_float, one], wname + ".trits_rows")  # code = trit + 1
        if len(shape) != 2:
            # Trits take the weight's shape before the scales multiply them (scales shaped
            # [N, 1, 1, 1]): OpenVINO's shape inference refuses the [N, K] · [N, 1] order.
            target = self.add(_array(wname + ".shape", np.array(shape, np.int64)))
            trits = self.node("Reshape", [trits, target], wname + ".trits")
        if dec.scale_neg is not None:
            self._two_scales(wname, trits, dec, wname)
        else:
            assert dec.scale is not None
            per_channel = [n] + [1] * (len(shape) - 1)
            one_scale = dec.scale.numel() == 1
            scale = dec.scale.reshape(()) if one_scale else dec.scale.reshape(per_channel)
            scale_name = self.add(_array(wname + ".scale", scale))
            self.layout[wname]["scales"] = [scale_name]
            self.node("Mul", [trits, scale_name], wname)
        return "packed uint8 + BitShift/BitwiseAnd unpack" + (
            " + Where(pos, neg scales)" if dec.scale_neg is not None else ""
        )

    def finish(self) -> None:
        # Decoding nodes read initializers only; placing them first keeps the graph sorted.
        nodes = [*self.nodes, *self.proto.graph.node]
        del self.proto.graph.node[:]
        self.proto.graph.node.extend(nodes)
        helper.set_model_props(
            self.proto, {TERNARY_KEY: json.dumps(self.layout), WEIGHTS_KEY: self.weights}
        )


def export_onnx(
    model: nn.Module, path: str | Path, example_input: Inputs, weights: str = "int2"
) -> OnnxExport:
    """Deploy a copy of ``model`` and write it to ``path`` as ONNX with a dynamic batch axis
    (``example_input``: a tensor, or one per input of a model with several)."""
    if weights not in WEIGHT_FORMS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_FORMS)}, got {weights!r}")
    path = Path(path)
    example = as_inputs(example_input)
    info = spec_info(model)
    # Before anything is traced: refuse what the exporter cannot write, with a located error.
    declared = [input_axes(info, i) for i in range(len(example))]
    axes, notes = onnx_input_axes(model, example, declared)
    deployed = deployed_copy(model)
    expected = run_outputs(deployed, example)
    layers = {name: m for name, m in deployed.named_modules() if isinstance(m, QuantModule)}
    decompositions = {name: layer.decomposition() for name, layer in layers.items()}
    input_names = _input_names(deployed, len(example))
    weights_of = {id(layer): decompositions[name].dequantize() for name, layer in layers.items()}
    float_model = replace_modules(deployed, lambda m: _float_twin(m, weights_of[id(m)])).eval()
    proto = _torch_to_onnx(float_model, example, input_names, len(expected), axes)
    given = {f"{name}.weight": dec for name, dec in decompositions.items()}
    fp16 = {w for w, dec in given.items() if dec.scale is None}
    folded = fold_batchnorm(proto, {w: d for w, d in given.items() if w not in fp16}, fp16)
    decompositions = {name: folded.decompositions.get(f"{name}.weight", dec)
                      for name, dec in decompositions.items()}  # fmt: skip
    if OPSET[weights] != EXPORT_OPSET:
        # The converter's adapters carry ops whose meaning changed between opsets; it runs
        # before the rewrite because it does not know INT2 tensors.
        proto = version_converter.convert_version(proto, OPSET[weights])
    rewriter = _Rewriter(proto, weights)
    stored = {
        name: rewriter.replace(f"{name}.weight", layer, decompositions[name])
        for name, layer in layers.items()
    }
    rewriter.finish()
    if weights == "int2":
        proto.ir_version = INT2_IR_VERSION
    _describe(proto, deployed, info, weights)
    if proto.ByteSize() > _MAX_PROTO_BYTES:
        raise ValueError("model is larger than 2 GB, which a single ONNX protobuf cannot hold")
    # full_check runs strict shape inference too: a file other tools would refuse fails here.
    onnx.checker.check_model(proto, full_check=True)
    write_atomically(path, proto.SerializeToString())
    return OnnxExport(
        path,
        weights,
        OPSET[weights],
        proto.ir_version,
        input_names[0],
        example[0].numpy(),
        [e.detach().numpy() for e in expected],
        stored,
        notes,
        {name: x.numpy() for name, x in zip(input_names, example, strict=True)},
    )


def _describe(
    proto: onnx.ModelProto, model: nn.Module, info: ModelInfo | None, weights: str
) -> None:
    """Producer, graph name, doc_string and metadata_props a reader can rely on."""
    version = _version()
    proto.producer_name, proto.producer_version = "tritondsl", version
    spec = getattr(model, "tdsl_spec", None)
    name = spec.model if spec is not None else type(model).__name__
    proto.graph.name = name
    where = f" from {Path(spec.path).name}" if spec is not None else ""
    proto.doc_string = f"{name}{where}, exported by tritondsl {version} with {weights} weights"
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({VERSION_KEY: version, MODEL_KEY: name})
    if spec is not None and info is not None:
        props[SOURCE_KEY] = hashlib.sha256(spec.source.encode()).hexdigest()
        props[PRECISION_KEY] = json.dumps(layer_precisions(info, spec.precision))
    helper.set_model_props(proto, props)


def _version() -> str:
    from tritondsl import __version__

    return __version__
