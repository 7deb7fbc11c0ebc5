"""``tritondsl.onnx_session``: run a tritondsl ONNX file in onnxruntime on its fast kernels.

An ``--activations int8`` file stores ternary weights as 2-bit INT2 initializers, each read
by a ``Cast(to=INT8)`` feeding ``DequantizeLinear``. onnxruntime fuses ``DequantizeLinear`` +
Conv/Gemm + ``QuantizeLinear`` into its int8 kernels (QLinearConv, QGemm) only when the
DequantizeLinear reads an int8 constant. onnxruntime 1.31 folds the Cast at load time and
fuses (benchmarks/bench_int8.py measures a plain session beside this one); a runtime that
does not runs the float kernels. So the loader does the folding itself, in memory, before
the session is built: the file stays small (2 bits per ternary weight) and the fast path does
not depend on the runtime's constant folding. docs/export.md describes the rewrite step by
step and gives it in a few lines of plain onnx + numpy, for ports to other languages.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx
    import onnxruntime

LUT_GEMM_KEY = "mlas.use_lut_gemm"  # ORT's lookup-table kernel for 2-bit MatMulNBits
FOLD_DQ_KEY = "session.disable_quant_qdq"
INT8_FORMS = ("int8",)  # tritondsl.weights values whose files are laid out for int8 kernels


def int2_to_int8(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """The INT8 tensor holding the same values as an INT2 ``tensor`` (same name and dims)."""
    from onnx import TensorProto, numpy_helper

    count = int(np.prod(tensor.dims))
    if tensor.HasField("raw_data"):
        packed = np.frombuffer(tensor.raw_data, dtype=np.uint8)
        codes = (packed[:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
        values = codes.reshape(-1)[:count].astype(np.int8)
        values[values >= 2] -= 4  # two's complement: 0b10 is -2, 0b11 is -1
    else:
        values = numpy_helper.to_array(tensor).astype(np.int8).reshape(-1)
    if values.size != count:
        raise ValueError(f"{tensor.name}: INT2 data holds {values.size} values, dims say {count}")
    out = numpy_helper.from_array(values.reshape(tuple(tensor.dims)), tensor.name)
    assert out.data_type == TensorProto.INT8
    return out


def materialize_int8(proto: onnx.ModelProto) -> int:
    """Replace every INT2 initializer of ``proto`` by INT8, in place; return how many.

    An INT2 initializer read only by a ``Cast(to=INT8)`` (how int8 files store trits)
    becomes an INT8 initializer under the Cast's output name, and the Cast goes.
    """
    from onnx import TensorProto

    graph = proto.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    count = 0
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.INT2:
            continue
        converted = int2_to_int8(tensor)
        users = readers.get(tensor.name, [])
        if len(users) == 1 and _is_cast_to_int8(users[0]):
            converted.name = users[0].output[0]
            graph.node.remove(users[0])
        tensor.CopyFrom(converted)
        count += 1
    return count


def _is_cast_to_int8(node: onnx.NodeProto) -> bool:
    from onnx import TensorProto

    to = next((a.i for a in node.attribute if a.name == "to"), None)
    return node.op_type == "Cast" and to == TensorProto.INT8


def weight_form(proto: onnx.ModelProto) -> str | None:
    """The ``tritondsl.weights`` form recorded in the file (None for other files)."""
    from tritondsl.export.onnx_verify import WEIGHTS_KEY

    return next((p.value for p in proto.metadata_props if p.key == WEIGHTS_KEY), None)


def onnx_session(
    path: str | Path | bytes,
    sess_options: onnxruntime.SessionOptions | None = None,
    providers: list[Any] | None = None,
    threads: int | None = None,
) -> onnxruntime.InferenceSession:
    """An onnxruntime session for a tritondsl ONNX file, set up for its fast kernels.

    What it does before building the session:

    * INT2 initializers become INT8 in memory (see the module docstring), so the int8
      kernels (QLinearConv, QGemm, QLinearAdd...) run instead of float ones;
    * graph optimizations: all (``ORT_ENABLE_ALL``) when ``sess_options`` is not given;
      a given ``sess_options`` keeps its level and gets the entries below added;
    * ``mlas.use_lut_gemm=1`` when the graph has 2-bit ``MatMulNBits`` (the lookup-table
      kernel, 4-5x faster than fp32 MatMul for one row at a time);
    * for files of the int2 / packed / float forms (no int8 kernels), the
      ``session.disable_quant_qdq=1`` entry, so weight DequantizeLinear nodes are folded once
      at load time instead of running every call (1.8x slower otherwise);
    * ``threads`` sets ``intra_op_num_threads`` (default: onnxruntime's, one per core);
    * ``providers`` default to ``["CPUExecutionProvider"]``.
    """
    import onnx
    import onnxruntime as ort

    proto = onnx.load_from_string(path) if isinstance(path, bytes) else onnx.load(str(path))
    form = weight_form(proto)
    materialize_int8(proto)
    options = sess_options if sess_options is not None else ort.SessionOptions()
    if sess_options is None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    entries = {}
    if any(n.op_type == "MatMulNBits" for n in proto.graph.node):
        entries[LUT_GEMM_KEY] = "1"
    if form is not None and form not in INT8_FORMS:
        entries[FOLD_DQ_KEY] = "1"
    for key, value in entries.items():
        if not _has_entry(options, key):  # a caller's own setting wins
            options.add_session_config_entry(key, value)
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=providers or ["CPUExecutionProvider"]
    )


def _has_entry(options: onnxruntime.SessionOptions, key: str) -> bool:
    try:
        options.get_session_config_entry(key)
    except Exception:  # onnxruntime raises a plain RuntimeError-like Fail for a missing key
        return False
    return True


def optimized_graph(session_source: bytes, threads: int = 1) -> onnx.ModelProto:
    """The graph onnxruntime runs for ``session_source`` (after all its fusions), via
    ``SessionOptions.optimized_model_filepath``."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="tritondsl-ort-") as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the "hardware-specific graph" warning is expected
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        onnx_session(session_source, options)
        return onnx.load(options.optimized_model_filepath)


def check_onnxruntime(opset: int = 25, ir_version: int = 13) -> None:
    """Raise RuntimeError unless this onnxruntime runs what int8 files need (INT2
    DequantizeLinear at ``opset`` / ``ir_version``) and has its QDQ quantizer."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from tritondsl.export.onnx import int2_tensor

    trits = int2_tensor("w", torch.tensor([-1, 0, 1, 1], dtype=torch.int8))
    scale = numpy_helper.from_array(np.array(2.0, np.float32), "s")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s"], ["d"]),
         helper.make_node("Add", ["x", "d"], ["y"])],
        "probe", [x], [y], [trits, scale],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version
    )
    version = ort.__version__
    try:
        from onnxruntime.quantization import quantize_static  # noqa: F401

        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"x": np.zeros(4, np.float32)})[0]
    except Exception as error:  # any refusal means: this runtime cannot load int8 files
        raise RuntimeError(
            f"onnxruntime {version} cannot run tritondsl's int8 ONNX (INT2 DequantizeLinear, "
            f"opset {opset}, IR {ir_version}): {_first_line(error)}; upgrade onnxruntime "
            "(the tested version is in constraints.txt)"
        ) from None
    if not np.array_equal(got, np.array([-2.0, 0.0, 2.0, 2.0], np.float32)):
        raise RuntimeError(f"onnxruntime {version} decodes INT2 weights wrongly: {got.tolist()}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
