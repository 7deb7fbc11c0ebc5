"""Driving onnxruntime's static QDQ quantizer for ``onnx_int8.py``.

``quantize`` runs ``onnxruntime.quantization.quantize_static`` (QDQ, uint8 activations,
int8 per-channel weights) with the overrides ``onnx_int8`` computes: each layer's weight
scales and the model's own input scales. Calibration is onnxruntime's MinMax over the given
batches, one batch per pass (its strided mode), so memory does not grow with the data.
``data_dependent`` finds the tensors whose scale the model does not determine: it quantizes
twice with two different random batches and returns every tensor whose scale changed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

# Ops the quantizer may quantize besides the layers: what keeps int8 flowing between them.
QUANTIZED_OPS = [
    "Conv", "Gemm", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Relu",
    "Clip", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Resize",
]  # fmt: skip
Overrides = dict[str, list[dict[str, object]]]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of input batches, with the
    ``set_range`` its strided calibration uses (one batch at a time: bounded memory)."""

    def __init__(self, name: str, batches: Sequence[Tensor]) -> None:
        self.name, self.batches = name, batches
        self.set_range(0, len(batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Read batches ``start_index`` to ``end_index`` (exclusive) next."""
        self.position, self.end = start_index, end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as a feed dict, or None at the end of the range."""
        if self.position >= self.end:
            return None
        batch = self.batches[self.position]
        self.position += 1
        return {self.name: batch.detach().cpu().float().numpy()}


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime's quantizer logs advice through the root logger on every call."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize(
    proto: onnx.ModelProto,
    batches: Sequence[Tensor],
    input_name: str,
    overrides: Overrides,
    exclude: list[str],
) -> onnx.ModelProto:
    """onnxruntime's static QDQ quantizer on ``proto`` (u8 activations, s8 weights)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(input_name, batches)
    with tempfile.TemporaryDirectory(prefix="tritondsl-int8-") as folder, _quiet_quantizer():
        out = Path(folder) / "qdq.onnx"
        quantize_static(
            copy.deepcopy(proto), out, reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "TensorQuantOverrides": copy.deepcopy(overrides),
                "QDQDisableWeightAdjustForInt32Bias": True,
                "CalibStridedMinMax": 1,  # one batch per pass: memory stays bounded
            },
        )  # fmt: skip
        return onnx.load(str(out))


def _activation_scales(proto: onnx.ModelProto) -> dict[str, float]:
    """Scale of every activation QuantizeLinear, by the tensor it quantizes, except those
    that only quantize a graph output (outputs stay float: ``int8_graph.float_outputs``)."""
    inits = {t.name: t for t in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    to_output = {n.input[0] for n in proto.graph.node if set(n.output) & outputs}
    return {
        n.input[0]: float(numpy_helper.to_array(inits[n.input[1]]).reshape(-1)[0])
        for n in proto.graph.node
        if n.op_type == "QuantizeLinear" and n.input[1] in inits and n.output[0] not in to_output
    }


def data_dependent(
    proto: onnx.ModelProto,
    example: Tensor,
    input_name: str,
    overrides: Overrides,
    exclude: list[str],
) -> list[str]:
    """Tensors whose scale depends on the data: they differ between two random batches."""
    runs = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        batch = torch.randn(example.shape, generator=generator)
        runs.append(_activation_scales(quantize(proto, [batch], input_name, overrides, exclude)))
    return sorted(t for t in runs[0] if not math.isclose(runs[0][t], runs[1].get(t, math.nan)))


# One-input ops that commute with quantizing at one scale: Q(op(x)) == op(Q(x)).
_SAME_SCALE_OPS = frozenset(
    {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
)


def propagate(proto: onnx.ModelProto, overrides: Overrides) -> Overrides:
    """``overrides`` plus the same scale upstream of each activation, through ops that
    commute with it (pooling by max, reshapes) and through Relu when the zero point is
    uint8 0 (quantizing then saturates exactly as Relu does). onnxruntime's quantizer gives
    such an op's output its input's scale, so the scale must be set where the chain starts."""
    inits = {t.name for t in proto.graph.initializer}
    producers = {out: node for node in proto.graph.node for out in node.output}
    out = dict(overrides)
    for tensor, spec in overrides.items():
        if tensor in inits:
            continue
        entry = spec[0]
        relu_ok = entry.get("quant_type") is not None and int(entry["zero_point"]) == 0
        relu_ok = relu_ok and np.asarray(entry["zero_point"]).dtype == np.uint8
        current = tensor
        while (node := producers.get(current)) is not None:
            passes = node.op_type in _SAME_SCALE_OPS or (node.op_type == "Relu" and relu_ok)
            if not passes or node.input[0] in out:
                break
            out[node.input[0]] = spec
            current = node.input[0]
    return out
