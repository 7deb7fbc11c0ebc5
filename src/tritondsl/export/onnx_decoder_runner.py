"""Running exported KV-cache decoders (``export.onnx_decoder``) in onnxruntime on CPU.

One row at a time is the 2-bit lookup-table kernel's case, not a prompt's: for a prefill of
many tokens ``OnnxDecoder`` uses a second session of the same file in which every
MatMulNBits became ``DynamicQuantizeMatMul`` on int8 trits, built in memory (the file stays
2-bit), the int8 kernel measured fastest for many rows (see benchmarks/).

The cache lives in buffers of fixed capacity that ``OnnxDecoder`` allocates once (the
model's context; without one it starts smaller and doubles, one copy each time). Both
sessions have each layer's past and present bound (IOBinding) to the same buffer, so
onnxruntime's GroupQueryAttention writes the new keys and values in place at
``past_length`` and copies nothing: fed and returned as arrays, each step copied the whole
cache twice (into the node's fresh present, then into new numpy arrays), a cost of every
layer and every step that grows with the context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tritondsl.export.onnx_decoder import (
    DECODER_KEY,
    LUT_GEMM_KEY,
    DecoderLayout,
    input_names,
    output_names,
)
from tritondsl.export.onnx_verify import OutputCheck, compare_outputs
from tritondsl.generation import GenerationError
from tritondsl.transformer import KVCache

FIRST_CAPACITY = 256  # positions a decoder without a context starts with, doubled when full


def _session(model: Any, threads: int | None, lut: bool) -> Any:
    """An onnxruntime CPU session of ``model``: a path (any size) or a proto (under 2 GB)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # "hardware-specific graph" notes are expected
    if threads is not None:
        options.intra_op_num_threads = threads
    if lut:
        options.add_session_config_entry(LUT_GEMM_KEY, "1")
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


def int8_prefill_graph(proto: Any) -> Any:
    """A copy of ``proto`` in which each 2-bit MatMulNBits with one scale per row is a
    ``DynamicQuantizeMatMul`` on int8 trits (onnxruntime's int8 kernel, for many rows)."""
    from onnx import helper, numpy_helper

    copy = type(proto)()
    copy.CopyFrom(proto)
    graph = copy.graph
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "MatMulNBits" or node.domain != "com.microsoft":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        n, k = int(attrs["N"]), int(attrs["K"])
        packed = numpy_helper.to_array(inits[node.input[1]])
        scales = numpy_helper.to_array(inits[node.input[2]]).reshape(n, -1)
        if attrs.get("bits") != 2 or not np.all(scales == scales[:, :1]):
            continue  # not one of ours: leave it to MatMulNBits
        codes = (packed[..., None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
        trits = codes.reshape(n, -1)[:, :k].astype(np.int8) - 1
        name = node.name or node.output[0]
        tensors = [
            numpy_helper.from_array(np.ascontiguousarray(trits.T), f"{name}.int8"),
            numpy_helper.from_array(scales[:, 0].astype(np.float32), f"{name}.int8_scale"),
            numpy_helper.from_array(np.zeros(n, np.int8), f"{name}.int8_zero"),
        ]
        graph.initializer.extend(tensors)
        replacement = helper.make_node(
            "DynamicQuantizeMatMul", [node.input[0], *(t.name for t in tensors)],
            list(node.output), name=name, domain="com.microsoft",
        )  # fmt: skip
        node.CopyFrom(replacement)
    used = {i for node in graph.node for i in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return copy


class OnnxDecoder:
    """A ``generation.Decoder`` over an exported decoder file in onnxruntime: ``cache`` holds
    per layer the key then the value buffer, ``[1, kv_heads, capacity, head_dim]``, of which
    the first ``len(self)`` positions are the cache (``capacity``: the context if the model
    has one, else ``capacity=`` positions to start with)."""

    def __init__(self, path: str | Path, threads: int | None = None,
                 capacity: int = FIRST_CAPACITY) -> None:  # fmt: skip
        import onnx

        proto = onnx.load(str(path))
        props = {p.key: p.value for p in proto.metadata_props}
        if DECODER_KEY not in props:
            raise ValueError(f"{path}: not a tritondsl decoder (no {DECODER_KEY} metadata); "
                             "export it with export_decoder")  # fmt: skip
        self.layout = DecoderLayout.from_json(props[DECODER_KEY])
        self.vocab_size, self.context = self.layout.vocab, self.layout.context
        layers = len(self.layout.kv)
        self.inputs, self.outputs = input_names(layers), output_names(layers)
        nbits = any(n.op_type == "MatMulNBits" for n in proto.graph.node)
        self.step_session = _session(Path(path), threads, lut=nbits)
        self.prefill_session = (_session(int8_prefill_graph(proto), threads, lut=False)
                                if nbits else self.step_session)  # fmt: skip
        # What the bindings read and write in place: the token of a step, its logits, the
        # cached length, and (``cache``) each layer's key and value buffers.
        self._token = np.zeros((1, 1), np.int64)
        self._logits = np.zeros((1, 1, self.vocab_size), np.float32)
        self._past_length = np.zeros((), np.int64)
        self.length = 0
        self.cache: list[np.ndarray] = []
        self._allocate(self.context or capacity)

    @property
    def capacity(self) -> int:
        """Positions the cache buffers hold."""
        return int(self.cache[0].shape[2])

    def _allocate(self, capacity: int) -> None:
        """New buffers of ``capacity`` positions (the ``length`` cached ones copied over),
        bound as past and present of both sessions."""
        from onnxruntime import OrtValue

        held = self.cache
        self.cache = [np.zeros((1, heads, capacity, dim), np.float32)
                      for heads, dim in self.layout.kv for _ in "kv"]  # fmt: skip
        for buffer, old in zip(self.cache, held, strict=False):  # held: none at the start
            buffer[:, :, : self.length] = old[:, :, : self.length]
        values = [OrtValue.ortvalue_from_numpy(buffer) for buffer in self.cache]
        self._step, self._prefill = (session.io_binding() for session in
                                     (self.step_session, self.prefill_session))  # fmt: skip
        for binding in (self._step, self._prefill):
            binding.bind_ortvalue_input(self.inputs[1], OrtValue.ortvalue_from_numpy(
                self._past_length))  # fmt: skip
            for past, present, value in zip(self.inputs[2:], self.outputs[1:], values,
                                            strict=True):  # fmt: skip
                binding.bind_ortvalue_input(past, value)
                binding.bind_ortvalue_output(present, value)
        self._step.bind_ortvalue_input("ids", OrtValue.ortvalue_from_numpy(self._token))
        self._step.bind_ortvalue_output("logits", OrtValue.ortvalue_from_numpy(self._logits))

    def _reserve(self, new: int) -> None:
        """Room for ``new`` more tokens: buffers twice as long, or an error past the context."""
        needed = self.length + new
        if needed <= self.capacity:
            return
        if self.context is not None:
            raise GenerationError(f"{needed} tokens do not fit the model's context of "
                                  f"{self.context}; shorten the prompt")  # fmt: skip
        capacity = self.capacity
        while capacity < needed:
            capacity *= 2
        self._allocate(capacity)

    def run(self, ids: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward of ``ids [batch, new]`` after ``past`` (``[batch, kv_heads, length,
        head_dim]``, all of it real), by plain ``session.run``: logits and the presents
        (onnxruntime copies the pasts into them; ``prefill`` and ``step`` copy nothing)."""
        if ids.shape[0] > 1 and ids.shape[1] > 1 and past[0].shape[2]:
            # GroupQueryAttention takes several new tokens after a past for one row only
            # (onnxruntime refuses more); rows are independent, so they run one by one.
            rows = [self.run(ids[i : i + 1], [p[i : i + 1] for p in past])
                    for i in range(ids.shape[0])]  # fmt: skip
            presents = zip(*(p for _, p in rows), strict=True)
            return np.concatenate([r[0] for r in rows]), [np.concatenate(p) for p in presents]
        session = self.step_session if ids.shape[1] == 1 else self.prefill_session
        feed = {"ids": ids.astype(np.int64), self.inputs[1]: np.array(past[0].shape[2], np.int64),
                **dict(zip(self.inputs[2:], past, strict=True))}  # fmt: skip
        logits, *presents = session.run(self.outputs, feed)
        return logits, presents

    def prefill(self, ids: list[int] | tuple[int, ...]) -> Tensor:
        """Start over with ``ids``; the logits after the last one."""
        from onnxruntime import OrtValue

        self.length = 0
        self._reserve(len(ids))
        tokens = np.array([list(ids)], np.int64)
        logits = np.zeros((1, len(ids), self.vocab_size), np.float32)
        self._prefill.bind_cpu_input("ids", tokens)
        self._prefill.bind_ortvalue_output("logits", OrtValue.ortvalue_from_numpy(logits))
        self._past_length[()] = 0
        self.prefill_session.run_with_iobinding(self._prefill)
        self.length = len(ids)
        return torch.from_numpy(logits[0, -1].copy())

    def step(self, token: int) -> Tensor:
        """Append ``token``; the logits after it."""
        self._reserve(1)
        self._token[0, 0] = token
        self._past_length[()] = self.length
        self.step_session.run_with_iobinding(self._step)
        self.length += 1
        return torch.from_numpy(self._logits[0, -1].copy())

    def __len__(self) -> int:
        """Tokens held in the cache."""
        return self.length


def verify_decoder(model: nn.Module, path: str | Path, prompt: int = 5, steps: int = 3,
                   seed: int = 0) -> list[OutputCheck]:  # fmt: skip
    """Prefill ``prompt`` random tokens, then ``steps`` single tokens, in PyTorch and in the
    file; the logits of each forward compared. The 2-bit kernels quantize activations their
    own way, and a float file computes in float what ``model`` rounds to 8 bits, so those
    are held to a 5% relative error; a float file of a float-activation model to 1e-4."""
    decoder = OnnxDecoder(path, threads=1)
    int8_inputs = any(getattr(m, "input_quant", None) is not None for m in model.modules())
    loose = decoder.layout.linear == "nbits" or int8_inputs
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, decoder.vocab_size, (1, prompt + steps), generator=generator)
    cache = KVCache()
    checks = []
    with torch.no_grad():
        for start, end in [(0, prompt), *((p, p + 1) for p in range(prompt, prompt + steps))]:
            expected = model(ids[:, start:end], cache=cache)
            got = (decoder.prefill(ids[0, :end].tolist()) if start == 0
                   else decoder.step(int(ids[0, start])))  # fmt: skip
            name = "prefill" if start == 0 else f"step {start - prompt + 1}"
            checks.append(compare_outputs(name, [got], [expected[0, -1]], 1e-4 if not loose
                                          else 1e-3, 0.05 if loose else 1e-4))  # fmt: skip
    return checks
