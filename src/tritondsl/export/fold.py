"""Fold BatchNormalization into the Conv / Gemm before it, in an ONNX graph; ternary stays ternary.

In eval mode ``BN(conv(x, W) + b) = conv(x, f·W) + (b − μ)·f + β`` with the per-channel
factor ``f = γ / √(σ² + ε)``. A ternary weight ``W = t · α`` (trits t, one α per channel or
one for the tensor) therefore folds into ``t · (α·f)``: the same trits with per-channel
scales. Where ``f < 0`` the channel's trits are negated and its scale made positive, so
every folded scale stays positive (a Learned layer's positive and negative scales swap in
such a channel). Int8 weights fold the same way (their codes keep their values).

``fold_batchnorm`` works on the float graph the exporter writes (``onnx.py``): a Conv or a Gemm
(``transB=1``, as ``nn.Linear`` exports) whose weight (and bias, if any) are initializers used
by that node only and whose output feeds exactly one BatchNormalization and nothing else. A
bias-free ``nn.Linear`` exports as ``MatMul(x, Transpose(W))``; on a 2-D input that pair is
first turned into the equivalent ``Gemm(x, W, transB=1)``. It rewrites the float weight and bias
initializers, rewires the BN's output to the Conv/Gemm and drops the BN node, and returns the
folded decompositions of the quantized weights it was given, so a later writer can store codes
and scales. Any other BatchNormalization (after a Conv with a second consumer, after an Add,
...) is left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from tritondsl.backend.quantizers import Decomposition

_FOLDABLE = ("Conv", "Gemm")


@dataclass(frozen=True)
class Fold:
    """One BatchNormalization folded into the node before it."""

    node: str  # the Conv / Gemm node's name (or its output name when it has none)
    batchnorm: str  # the folded BatchNormalization node's name (or output name)
    weight: str  # the weight initializer that now holds the folded weight


@dataclass(frozen=True)
class FoldResult:
    """The folds made and the folded decompositions, by weight initializer name."""

    folds: list[Fold]
    decompositions: dict[str, Decomposition]


def fold_decomposition(dec: Decomposition, factor: np.ndarray) -> Decomposition:
    """Codes and positive per-channel scales of ``dequantize(dec) · factor`` (one per row)."""
    if dec.scale is None:
        raise ValueError("a float16 weight has no scale to fold into; fold its float value")
    n = dec.codes.shape[0]
    f = torch.from_numpy(np.asarray(factor, np.float64))
    sign = torch.where(f < 0, -1, 1).to(torch.int8)
    magnitude = f.abs()

    def per_channel(scale: torch.Tensor) -> torch.Tensor:
        return scale.detach().to(torch.float64).reshape(-1).expand(n)

    codes = dec.codes * sign.view((-1,) + (1,) * (dec.codes.dim() - 1))
    pos = per_channel(dec.scale) * magnitude
    if dec.scale_neg is None:
        return Decomposition(codes, pos.to(torch.float32))
    neg = per_channel(dec.scale_neg) * magnitude
    flipped = f < 0  # t·s_pos for t > 0 becomes (−t)·s_pos: a negative trit with scale s_pos
    new_pos, new_neg = torch.where(flipped, neg, pos), torch.where(flipped, pos, neg)
    return replace(
        dec, codes=codes, scale=new_pos.to(torch.float32), scale_neg=new_neg.to(torch.float32),
        delta=None,
    )  # fmt: skip


def fold_batchnorm(
    proto: onnx.ModelProto,
    decompositions: Mapping[str, Decomposition] | None = None,
    keep: Collection[str] = (),
) -> FoldResult:
    """Fold every BatchNormalization that follows a Conv / Gemm into it, in place (see module);
    the weights named in ``keep`` (float16 ones, whose stored values would round) are left
    with their BatchNormalization."""
    graph = proto.graph
    _matmuls_to_gemm(proto)
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    given = dict(decompositions or {})
    folded: dict[str, Decomposition] = {}
    folds: list[Fold] = []
    dropped: list[onnx.NodeProto] = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        node = producers.get(bn.input[0])
        if node is None or not _foldable(node, bn, inits, uses, outputs):
            continue
        weight_name = node.input[1]
        if weight_name in keep:
            continue
        factor, shift = _bn_affine(bn, inits)
        weight = numpy_helper.to_array(inits[weight_name]).astype(np.float64)
        if weight.shape[0] != factor.shape[0]:
            continue
        bias = _bias(node, inits, weight.shape[0])
        source = folded.get(weight_name, given.get(weight_name))
        if source is not None:
            folded[weight_name] = fold_decomposition(source, factor)
            new_weight = folded[weight_name].dequantize().numpy()
        else:
            new_weight = weight * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
        _set(inits[weight_name], new_weight.astype(np.float32))
        new_bias = ((bias - _get(bn, inits, 3)) * factor + shift).astype(np.float32)
        _attach_bias(graph, node, inits, new_bias)
        node.output[0] = bn.output[0]
        dropped.append(bn)
        folds.append(Fold(node.name or node.output[0], bn.name or bn.output[0], weight_name))
    for bn in dropped:
        graph.node.remove(bn)
    _drop_unused(graph, {name for bn in dropped for name in bn.input[1:]})
    return FoldResult(folds, {**{k: v for k, v in given.items() if k not in folded}, **folded})


def _matmuls_to_gemm(proto: onnx.ModelProto) -> None:
    """``MatMul(x, Transpose(W))`` with a 2-D x, W an initializer -> ``Gemm(x, W, transB=1)``."""
    graph = proto.graph
    inits = {t.name for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {out: node for node in graph.node for out in node.output}
    ranks = _ranks(proto)
    for node in list(graph.node):
        transpose = producers.get(node.input[1]) if node.op_type == "MatMul" else None
        if transpose is None or transpose.op_type != "Transpose":
            continue
        perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"]
        if perm != [[1, 0]] or transpose.input[0] not in inits:
            continue
        if ranks.get(node.input[0]) != 2 or consumers.get(transpose.output[0]) != 1:
            continue
        gemm = onnx.helper.make_node(
            "Gemm", [node.input[0], transpose.input[0]], list(node.output), name=node.name,
            transB=1,
        )  # fmt: skip
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(index, gemm)
        graph.node.remove(transpose)


def _ranks(proto: onnx.ModelProto) -> dict[str, int]:
    """Rank of every value whose shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in values
        if v.type.tensor_type.HasField("shape")
    }


def _foldable(
    node: onnx.NodeProto,
    bn: onnx.NodeProto,
    inits: Mapping[str, onnx.TensorProto],
    uses: Mapping[str, int],
    outputs: set[str],
) -> bool:
    if node.op_type not in _FOLDABLE or len(node.output) != 1 or len(node.input) < 2:
        return False
    if uses.get(node.output[0], 0) != 1 or node.output[0] in outputs:
        return False
    params = [node.input[1], *node.input[2:3]]
    if any(p not in inits or uses.get(p, 0) != 1 for p in params if p):
        return False
    if any(p not in inits for p in bn.input[1:5]):
        return False
    if node.op_type == "Gemm":
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
        if not (plain and attrs.get("transB", 0) == 1 and attrs.get("transA", 0) == 0):
            return False
    return True


def _get(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], i: int) -> np.ndarray:
    return numpy_helper.to_array(inits[node.input[i]]).astype(np.float64)


def _bn_affine(
    bn: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]
) -> tuple[np.ndarray, np.ndarray]:
    """(factor γ/√(σ²+ε), shift β) of an inference-mode BatchNormalization."""
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    gamma, beta, var = _get(bn, inits, 1), _get(bn, inits, 2), _get(bn, inits, 4)
    return gamma / np.sqrt(var + eps), beta


def _bias(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto], n: int) -> np.ndarray:
    if len(node.input) > 2 and node.input[2]:
        return numpy_helper.to_array(inits[node.input[2]]).astype(np.float64).reshape(n)
    return np.zeros(n)


def _set(tensor: onnx.TensorProto, value: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))


def _attach_bias(
    graph: onnx.GraphProto,
    node: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    bias: np.ndarray,
) -> None:
    if len(node.input) > 2 and node.input[2]:
        _set(inits[node.input[2]], bias)
        return
    name = _fresh(node.input[1].removesuffix(".weight") + ".bias", inits)
    tensor = numpy_helper.from_array(bias, name)
    graph.initializer.append(tensor)
    inits[name] = graph.initializer[-1]
    while len(node.input) < 3:
        node.input.append("")
    node.input[2] = name


def _fresh(name: str, taken: Mapping[str, object]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        candidate, i = f"{name}.{i}", i + 1
    return candidate


def _drop_unused(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the initializers in ``candidates`` that nothing reads any more."""
    used = {name for node in graph.node for name in node.input}
    used |= {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used or t.name not in candidates]
    del graph.initializer[:]
    graph.initializer.extend(keep)
