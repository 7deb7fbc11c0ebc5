"""Graph surgery on the QDQ model onnxruntime's quantizer wrote (see ``onnx_int8.py``).

* ``store_trits``: an int8 weight whose values are all trits becomes an INT2 initializer
  (2 bits a weight on disk) plus ``Cast(to=INT8)`` under the int8 tensor's old name, so the
  ``DequantizeLinear`` that reads it is unchanged. onnxruntime constant-folds the Cast at
  load time (and ``onnx_session`` replaces it by an INT8 initializer before that), after
  which its QDQ fusions see an int8 initializer and pick QLinearConv / QGemm.
* ``per_token_linear``: a Gemm whose input is quantized per token (BitNet b1.58's dynamic
  absmax, int8) becomes that quantization written out in ONNX ops -- ``max(max|x|, 1e-5)
  / 127`` over the row, ``Round`` (half to even), ``Clip`` to [-128, 127] -- shifted to uint8
  with zero point 128 for ``MatMulInteger`` (u8 x s8, the fast pair on x86), then the int32
  sums times (row scale · channel scale) plus the bias. Exactly the integers PyTorch's
  ``fake_quantize_per_token`` produces: per token, not per tensor.
* ``nbits_linear``: a Gemm with a ternary weight becomes ``MatMulNBits`` (+ bias Add).
* ``float_input``: a layer kept float reads its input before quantization.
* ``float_outputs``: graph outputs are not quantized (the quantizer adds Q/DQ after the
  classifier; the logits keep full precision instead).
* ``int8_consumers``: which kernel reads each weight in the graph onnxruntime optimized.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from tritondsl.export.matmul_nbits import matmul_nbits
from tritondsl.export.onnx import int2_tensor

# Kernels onnxruntime runs in integer arithmetic; a weight read by anything else is float.
INT8_KERNELS = frozenset(
    {
        "QLinearConv",
        "QGemm",
        "QLinearMatMul",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
        "ConvInteger",
    }
)
PER_TOKEN_FLOOR = 1e-5  # BitNet's floor on max|x| (activations.per_token_scale)


class Graph:
    """An editable view of a model's graph: initializers by name, producers, fresh nodes."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        self.graph = proto.graph
        self.inits = {t.name: t for t in self.graph.initializer}

    def producer(self, name: str) -> onnx.NodeProto | None:
        """The node writing ``name``."""
        return next((n for n in self.graph.node if name in n.output), None)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        """The nodes reading ``name``."""
        return [n for n in self.graph.node if name in n.input]

    def add_init(self, tensor: TensorProto) -> str:
        """Add an initializer (replacing one of the same name)."""
        if tensor.name in self.inits:
            self.graph.initializer.remove(self.inits[tensor.name])
        self.graph.initializer.append(tensor)
        self.inits[tensor.name] = self.graph.initializer[-1]
        return tensor.name

    def array(self, name: str) -> np.ndarray:
        """An initializer's values."""
        return numpy_helper.to_array(self.inits[name])

    def replace_node(self, old: onnx.NodeProto, new: Iterable[onnx.NodeProto]) -> None:
        """Put ``new`` where ``old`` was (keeps the graph topologically sorted)."""
        nodes = list(self.graph.node)
        index = nodes.index(old)
        nodes[index : index + 1] = list(new)
        del self.graph.node[:]
        self.graph.node.extend(nodes)

    def prune(self) -> None:
        """Drop initializers nothing reads."""
        used = {i for n in self.graph.node for i in n.input} | {o.name for o in self.graph.output}
        keep = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        self.inits = {t.name: t for t in self.graph.initializer}


def weight_dequantize(g: Graph, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The DequantizeLinear feeding ``node``'s weight (input 1), if the quantizer added one."""
    dq = g.producer(node.input[1])
    return dq if dq is not None and dq.op_type == "DequantizeLinear" else None


def store_trits(g: Graph, dq: onnx.NodeProto, trits: np.ndarray) -> tuple[str, str]:
    """Store the int8 tensor ``dq`` reads as INT2 + Cast; return (INT2 name, scale name)."""
    name = dq.input[0]
    stored = g.array(name)
    if not np.array_equal(stored, trits):
        raise RuntimeError(f"{name}: the quantizer wrote weights that are not the layer's trits")
    g.graph.initializer.remove(g.inits.pop(name))
    codes = g.add_init(int2_tensor(name + ".int2", torch.from_numpy(trits.astype(np.int8))))
    cast = helper.make_node("Cast", [codes], [name], name=name + ".cast", to=TensorProto.INT8)
    g.replace_node(dq, [cast, dq])
    return codes, dq.input[1]


def per_token_linear(
    g: Graph, gemm: onnx.NodeProto, codes: np.ndarray, scale: np.ndarray, trits: bool
) -> tuple[str, str]:
    """Replace a float Gemm(x, W, b) by per-token int8 x (see module); return the names of
    the weight codes and scales."""
    x, bias = gemm.input[0], gemm.input[2]
    p = gemm.name or gemm.output[0]

    def const(suffix: str, value: np.ndarray) -> str:
        return g.add_init(numpy_helper.from_array(value, f"{p}.{suffix}"))

    b_name = f"{p}.weight_t"
    if trits:
        b_codes = g.add_init(int2_tensor(b_name + ".int2", torch.from_numpy(codes.T.copy())))
        cast = [helper.make_node("Cast", [b_codes], [b_name], name=b_name, to=TensorProto.INT8)]
    else:
        b_codes = g.add_init(numpy_helper.from_array(codes.T.copy(), b_name))
        cast = []
    n = f"{p}.pt"
    nodes = [
        *cast,
        helper.make_node("Abs", [x], [n + ".abs"]),
        helper.make_node(
            "ReduceMax",
            [n + ".abs", const("axes", np.array([-1], np.int64))],
            [n + ".amax"],
            keepdims=1,
        ),
        helper.make_node(
            "Max", [n + ".amax", const("floor", np.float32(PER_TOKEN_FLOOR))], [n + ".amax_floor"]
        ),
        helper.make_node("Div", [n + ".amax_floor", const("qmax", np.float32(127))], [n + ".s"]),
        helper.make_node("Div", [x, n + ".s"], [n + ".ratio"]),
        helper.make_node("Round", [n + ".ratio"], [n + ".round"]),
        helper.make_node(
            "Clip",
            [n + ".round", const("lo", np.float32(-128)), const("hi", np.float32(127))],
            [n + ".q"],
        ),
        helper.make_node("Add", [n + ".q", const("shift", np.float32(128))], [n + ".q128"]),
        helper.make_node("Cast", [n + ".q128"], [n + ".u8"], to=TensorProto.UINT8),
        helper.make_node(
            "MatMulInteger", [n + ".u8", b_name, const("zp", np.uint8(128))], [n + ".acc"]
        ),
        helper.make_node("Cast", [n + ".acc"], [n + ".accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [n + ".accf", n + ".s"], [n + ".rows"]),
        helper.make_node(
            "Mul", [n + ".rows", const("scale", scale.astype(np.float32))], [n + ".y"]
        ),
        helper.make_node("Add", [n + ".y", bias], list(gemm.output)),
    ]
    for i, node in enumerate(nodes):
        node.name = node.name or f"{n}.{i}"
    g.replace_node(gemm, nodes)  # the float weight initializer is pruned later
    return b_codes, f"{p}.scale"


def nbits_linear(
    g: Graph, gemm: onnx.NodeProto, trits: np.ndarray, scale: np.ndarray
) -> tuple[str, str]:
    """Replace a float Gemm(x, W, b) by MatMulNBits + Add; return the codes' and scales' names."""
    p = gemm.name or gemm.output[0]
    node, inits = matmul_nbits(f"{p}.nbits", gemm.input[0], f"{p}.nbits_out", trits, scale)
    for tensor in inits:
        g.add_init(tensor)
    add = helper.make_node(
        "Add", [f"{p}.nbits_out", gemm.input[2]], list(gemm.output), name=f"{p}.bias"
    )
    g.replace_node(gemm, [node, add])
    return inits[0].name, inits[1].name


def float_input(g: Graph, node: onnx.NodeProto) -> None:
    """A layer kept float reads the float tensor, not its Q -> DQ copy: onnxruntime would
    otherwise quantize the float weight itself (its WeightBiasQuantization pass)."""
    dq = g.producer(node.input[0])
    q = g.producer(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
    if q is not None and q.op_type == "QuantizeLinear":
        node.input[0] = q.input[0]


def float_outputs(g: Graph) -> None:
    """Graph outputs come straight from the op before the quantizer's Q -> DQ pair."""
    for output in g.graph.output:
        dq = g.producer(output.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = g.producer(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(g.consumers(q.output[0])) != 1:
            continue
        source = g.producer(q.input[0])
        if source is None or len(g.consumers(q.input[0])) != 1:
            continue
        source.output[list(source.output).index(q.input[0])] = output.name
        g.graph.node.remove(dq)
        g.graph.node.remove(q)
    g.prune()


def int8_consumers(optimized: onnx.ModelProto, weights: Iterable[str]) -> dict[str, list[str]]:
    """For each weight tensor name, the op types that read it in an optimized graph."""
    readers: dict[str, list[str]] = {name: [] for name in weights}
    for node in optimized.graph.node:
        for name in node.input:
            if name in readers:
                readers[name].append(node.op_type)
    return readers
