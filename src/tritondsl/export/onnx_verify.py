"""Check an exported ONNX file: run it in onnxruntime, compare with PyTorch, count its bits.

``verify_onnx`` runs the file with graph optimizations disabled and with all of them
enabled, and, when the file has ``DequantizeLinear`` nodes, once more with the session
option ``session.disable_quant_qdq=1`` (see ``create_session``): three different kernel
paths must all agree with the deployed PyTorch model.

``weight_stats`` reads the sizes from the file's own initializers: the bytes of every
ternary code tensor (INT2, packed uint8 or float, as the file stores them) and, separately,
of their scales. Which initializers hold ternary codes, and how many weights a packed uint8
tensor stands for, is recorded by the exporter in the model's ``metadata_props`` under
``tritondsl.ternary`` (an INT2 tensor's count is also checked against its own dims).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnxruntime

TERNARY_KEY = "tritondsl.ternary"  # metadata: weight name -> {"codes", "scales", "count"}
WEIGHTS_KEY = "tritondsl.weights"  # metadata: the weight form (int2, packed, float)
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class OutputCheck:
    """One comparison of a runtime's outputs with the reference outputs."""

    name: str
    max_abs: float  # max |got - expected| over all outputs
    rel: float  # max_abs / max |expected|
    ok: bool

    def line(self) -> str:
        """``name: max abs err 1.2e-07, rel 3.4e-07 ok``."""
        verdict = "ok" if self.ok else "FAILED"
        return f"{self.name}: max abs err {self.max_abs:.3g}, rel {self.rel:.3g} {verdict}"


def compare_outputs(
    name: str, got: list[Any], expected: list[Any], atol: float, rtol: float
) -> OutputCheck:
    """Max abs / relative error; ok when max_abs <= atol + rtol · max |expected|."""
    got_np = [np.asarray(g.detach().cpu() if hasattr(g, "detach") else g) for g in got]
    exp_np = [np.asarray(e.detach().cpu() if hasattr(e, "detach") else e) for e in expected]
    if len(got_np) != len(exp_np) or any(
        g.shape != e.shape for g, e in zip(got_np, exp_np, strict=False)
    ):
        shapes = [g.shape for g in got_np], [e.shape for e in exp_np]
        return OutputCheck(
            f"{name} (output shapes {shapes[0]} != {shapes[1]})", math.inf, math.inf, False
        )
    # np.max propagates NaN (Python's max would not), so a NaN output fails the check.
    diffs = [np.abs(g.astype(np.float64) - e) for g, e in zip(got_np, exp_np, strict=True)]
    max_abs = float(np.max([d.max(initial=0.0) for d in diffs], initial=0.0))
    scale = float(np.max([np.abs(e).max(initial=0.0) for e in exp_np], initial=0.0))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    ok = bool(max_abs <= atol + rtol * scale)
    return OutputCheck(name, max_abs, rel, ok)


def create_session(
    path: str | Path | bytes,
    optimize: bool = True,
    fold_weight_dequantize: bool = True,
    threads: int | None = None,
    save_optimized: str | Path | None = None,
) -> onnxruntime.InferenceSession:
    """A CPU onnxruntime session; by default fully optimized with DQ on weights folded."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if fold_weight_dequantize:
        # By default onnxruntime keeps DequantizeLinear nodes (reserved for its quantized
        # kernels) and dequantizes every weight on every run: ResNet18 int2 ran 1.8x slower
        # than fp32. With this option DQ on constant weights is folded once at load time.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
    if save_optimized is not None:  # the graph onnxruntime actually runs, for inspection
        options.optimized_model_filepath = str(save_optimized)
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class WeightStats:
    """Bytes the file spends on ternary weights, read from its initializers."""

    ternary_weights: int  # number of ternary weights
    code_bytes: int  # bytes of the tensors holding their codes (INT2, packed uint8 or float)
    scale_bytes: int  # bytes of their scales, reported separately
    int2_tensors: int  # how many of the code tensors are INT2 with packed raw_data
    weights: str  # the form recorded by the exporter

    @property
    def code_bits_per_weight(self) -> float:
        """Bits of code per ternary weight (scales not included)."""
        return 8 * self.code_bytes / self.ternary_weights if self.ternary_weights else 0.0


def stored_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes a TensorProto's data occupies in the file (raw_data or its typed field)."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    fields = {
        "float_data": 4,
        "int32_data": 4,
        "int64_data": 8,
        "double_data": 8,
        "uint64_data": 8,
    }
    return sum(len(getattr(tensor, name)) * size for name, size in fields.items())


def weight_stats(model: onnx.ModelProto | str | Path) -> WeightStats:
    """Ternary code and scale bytes of an exported file (see the module docstring)."""
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    meta = {p.key: p.value for p in proto.metadata_props}
    if TERNARY_KEY not in meta:
        raise ValueError(f"no {TERNARY_KEY} metadata: not a file written by tritondsl export")
    layout: dict[str, dict[str, Any]] = json.loads(meta[TERNARY_KEY])
    inits = {t.name: t for t in proto.graph.initializer}
    count = code_bytes = scale_bytes = int2 = 0
    for weight, entry in layout.items():
        codes = inits.get(entry["codes"])
        if codes is None:
            raise ValueError(f"{weight}: code initializer {entry['codes']!r} is missing")
        if codes.data_type == onnx.TensorProto.INT2:
            if math.prod(codes.dims) != entry["count"]:
                raise ValueError(f"{weight}: INT2 dims {list(codes.dims)} != {entry['count']}")
            int2 += codes.HasField("raw_data")
        count += entry["count"]
        code_bytes += stored_bytes(codes)
        scale_bytes += sum(stored_bytes(inits[name]) for name in entry["scales"])
    return WeightStats(count, code_bytes, scale_bytes, int2, meta.get(WEIGHTS_KEY, "?"))


@dataclass(frozen=True)
class VerifyReport:
    """onnxruntime against PyTorch at each optimization setting."""

    checks: list[OutputCheck]
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        """Whether every session matched within tolerance."""
        return bool(self.checks) and all(check.ok for check in self.checks)


def has_dequantize(path: str | Path) -> bool:
    """Whether the file's graph has DequantizeLinear nodes."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return any(node.op_type == "DequantizeLinear" for node in proto.graph.node)


def verify_onnx(
    path: str | Path,
    example_input: np.ndarray | dict[str, np.ndarray],
    expected: list[np.ndarray],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> VerifyReport:
    """Run ``path`` in onnxruntime (optimizations off / all on / DQ folded) vs ``expected``."""
    settings = [
        ("onnxruntime, optimizations disabled", False, False),
        ("onnxruntime, all optimizations", True, False),
    ]
    if has_dequantize(path):
        settings.append(
            ("onnxruntime, all optimizations + session.disable_quant_qdq=1", True, True)
        )
    from tritondsl.progress import task

    checks = []
    with task("checking in onnxruntime", total=len(settings)) as advance:
        for name, optimize, fold in settings:
            session = create_session(path, optimize=optimize, fold_weight_dequantize=fold)
            feed = (example_input if isinstance(example_input, dict)
                    else {session.get_inputs()[0].name: example_input})  # fmt: skip
            got = session.run(None, feed)
            checks.append(compare_outputs(name, got, expected, atol, rtol))
            advance(1)
    return VerifyReport(checks, atol, rtol)
