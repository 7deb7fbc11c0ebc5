"""ONNX language-model decoders with the KV cache as inputs and outputs, for CPU generation.

The graph of a model whose forward takes ``cache=`` (a ``KVCache``, see
``tritondsl.transformer``) with L attention layers::

    inputs   ids            int64 [batch, new]
             past.i.key     float [batch, kv_heads, past, head_dim]   for i in 0..L-1
             past.i.value   float [batch, kv_heads, past, head_dim]
    outputs  logits         float [batch, new, vocab]
             present.i.key  float [batch, kv_heads, past + new, head_dim]
             present.i.value

Prefill feeds the prompt with pasts of length 0; each decoding step feeds one token with
the presents of the step before. ``tritondsl.decoder`` in the metadata says how many layers,
their head shapes, the vocabulary, the context (the most positions the model takes) and the
linear form.

Linear forms (``linear=``): ``float`` keeps every weight float (ternary ones dequantized);
``nbits`` stores each ternary Linear as ``com.microsoft`` ``MatMulNBits`` with 2-bit weights
(``export.matmul_nbits``), which onnxruntime's lookup-table kernel runs several times faster
than an fp32 MatMul for one row (decoding) when K % 32 == 0 and N % 128 == 0.

``OnnxDecoder`` runs such a file. One row at a time is the lookup-table kernel's case, not
a prompt's: for a prefill of many tokens it uses a second session of the same file in which
every MatMulNBits became ``DynamicQuantizeMatMul`` on int8 trits, built in memory (the file
stays 2-bit), the int8 kernel measured fastest for many rows (see benchmarks/).

Each attention layer is one ``com.microsoft`` ``GroupQueryAttention`` node
(``export.onnx_attention``), in float and nbits files alike. onnxruntime runs it for any
batch with one new token or with empty pasts, but several new tokens after a past only for
batch 1: ``OnnxDecoder.run`` then runs the rows one by one.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tritondsl.backend.layers import QuantLinear, QuantModule
from tritondsl.backend.quantizers import Decomposition, quantizer_kind
from tritondsl.export.onnx import EXPORT_OPSET, _describe, _float_twin
from tritondsl.export.onnx_attention import FusedAttentionCache
from tritondsl.export.onnx_verify import OutputCheck, compare_outputs
from tritondsl.export.torch_export import deployed_copy, replace_modules, spec_info
from tritondsl.transformer import KVCache

LINEAR_FORMS = ("nbits", "float")
DECODER_KEY = "tritondsl.decoder"  # metadata: layers, kv shapes, vocab, context, linear
LUT_GEMM_KEY = "mlas.use_lut_gemm"  # onnxruntime's lookup-table kernel for 2-bit MatMulNBits
_MAX_PROTO_BYTES = 2**31 - 1
EXAMPLE_PAST, EXAMPLE_NEW = 3, 4  # lengths the tracer sees (both stay dynamic)
_WRAPPED = "model."  # _CachedDecoder.model: the prefix of every initializer's name


class DecoderExportError(ValueError):
    """The model cannot be exported as a KV-cache decoder; the message says why."""


@dataclass
class DecoderLayout:
    """What the graph's inputs look like: per attention layer (kv_heads, head_dim)."""

    kv: list[tuple[int, int]]
    vocab: int
    context: int | None
    linear: str

    def to_json(self) -> str:
        """The ``tritondsl.decoder`` metadata value."""
        return json.dumps({"layers": len(self.kv), "kv": self.kv, "vocab": self.vocab,
                           "context": self.context, "linear": self.linear})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> DecoderLayout:
        """Parse the metadata; ValueError if it is not what ``to_json`` writes."""
        try:
            data = json.loads(text)
            kv = [(int(h), int(d)) for h, d in data["kv"]]
            context = data["context"]
            layout = cls(kv, int(data["vocab"]), None if context is None else int(context),
                         str(data["linear"]))  # fmt: skip
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{DECODER_KEY} metadata is malformed: {error}") from None
        if len(kv) != int(data["layers"]) or not kv:
            raise ValueError(f"{DECODER_KEY} metadata is malformed: layers and kv differ")
        return layout


@dataclass
class DecoderExport:
    """What ``export_decoder`` wrote: the file, its layout, how each Linear is stored."""

    path: Path
    layout: DecoderLayout
    layers: dict[str, str] = field(default_factory=dict)
    checks: list[OutputCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check against PyTorch passed."""
        return all(check.ok for check in self.checks)


def input_names(layers: int) -> list[str]:
    """``ids`` then ``past.i.key``, ``past.i.value`` for every layer."""
    return ["ids", *(f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value"))]


def output_names(layers: int) -> list[str]:
    """``logits`` then ``present.i.key``, ``present.i.value`` for every layer."""
    return ["logits", *(f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value"))]


class _RMSNorm(nn.Module):
    """``nn.RMSNorm`` in operations the TorchScript exporter knows (it has no aten::rms_norm
    below opset 23); onnxruntime fuses the pattern into its SimplifiedLayerNormalization."""

    def __init__(self, norm: nn.RMSNorm) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps
        self.dims = tuple(range(-len(norm.normalized_shape), 0))

    def forward(self, x: Tensor) -> Tensor:
        """``x / sqrt(mean(x²) + eps) · weight``, as ``F.rms_norm`` computes it."""
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        y = x * torch.rsqrt(x.pow(2).mean(self.dims, keepdim=True) + eps)
        return y if self.weight is None else y * self.weight


class _CachedDecoder(nn.Module):
    """``(ids, *pasts) -> (logits, *presents)`` around a model that takes ``cache=``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        """One forward with the cache built from ``past``; the presents after it."""
        cache = FusedAttentionCache(list(past[0::2]), list(past[1::2]))
        logits = self.model(ids, cache=cache)
        presents = [t for pair in zip(cache.keys, cache.values, strict=True) for t in pair]
        return (logits, *presents)


def probe_layout(model: nn.Module, linear: str) -> DecoderLayout:
    """Run two tokens through ``model`` with a cache: its layers' head shapes, vocab, context."""
    cache = KVCache()
    try:
        with torch.no_grad():
            output = model(torch.zeros(1, 2, dtype=torch.long), cache=cache)
    except TypeError as error:
        raise DecoderExportError(
            f"the model's forward takes no KV cache ({error}); a decoder export needs a "
            "language model whose .tdsl forward calls kv_cache"
        ) from None
    if not (isinstance(output, Tensor) and output.dim() == 3) or not cache.keys:
        raise DecoderExportError(
            "a decoder export needs a language model: token ids [N, T] in, logits "
            "[N, T, vocab] out, and kv_cache calls in its attention"
        )
    kv = [(int(k.shape[1]), int(k.shape[3])) for k in cache.keys]
    return DecoderLayout(kv, int(output.shape[-1]), cache.context, linear)


def export_decoder(
    model: nn.Module, path: str | Path, linear: str = "nbits", verify: bool = True
) -> DecoderExport:
    """Deploy a copy of ``model`` and write it to ``path`` as a KV-cache decoder (``verify``:
    then compare a prefill and a few steps in onnxruntime with PyTorch)."""
    if linear not in LINEAR_FORMS:
        raise ValueError(f"linear must be one of {', '.join(LINEAR_FORMS)}, got {linear!r}")
    import onnx

    path = Path(path)
    deployed = deployed_copy(model)
    layout = probe_layout(deployed, linear)
    layers = {name: m for name, m in deployed.named_modules() if isinstance(m, QuantModule)}
    decompositions = {name: layer.decomposition() for name, layer in layers.items()}
    twin_of = {id(layer): decompositions[name].dequantize() for name, layer in layers.items()}
    float_model = replace_modules(deployed, lambda m: _float_twin(m, twin_of.pop(id(m))))
    _swap_rms_norms(float_model)
    proto = _trace(_CachedDecoder(float_model.eval()), layout)
    stored = {name: "float" for name in layers}
    if linear == "nbits":
        stored.update(_to_nbits(proto, layers, decompositions))
    _describe(proto, deployed, spec_info(deployed), linear)
    props = {p.key: p.value for p in proto.metadata_props}
    props[DECODER_KEY] = layout.to_json()
    onnx.helper.set_model_props(proto, props)
    _save(proto, path)
    export = DecoderExport(path, layout, stored)
    if verify:
        export.checks = verify_decoder(deployed, path)
    return export


def _swap_rms_norms(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.RMSNorm):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, _RMSNorm(module))


def _trace(wrapper: nn.Module, layout: DecoderLayout) -> Any:
    import onnx

    layers = len(layout.kv)
    ids = torch.zeros(1, EXAMPLE_NEW, dtype=torch.long)
    past = [torch.zeros(1, heads, EXAMPLE_PAST, dim) for heads, dim in layout.kv for _ in "kv"]
    inputs, outputs = input_names(layers), output_names(layers)
    axes = {"ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
    axes.update({name: {0: "batch", 2: "past"} for name in inputs[1:]})
    axes.update({name: {0: "batch", 2: "total"} for name in outputs[1:]})
    with tempfile.TemporaryDirectory(prefix="tritondsl-decoder-") as folder, \
            warnings.catch_warnings():  # fmt: skip
        # A file, not a buffer: over 2 GB the exporter writes the weights beside it.
        traced = Path(folder) / "traced.onnx"
        # Shape comparisons in the input checks become constants of the trace, as meant.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (ids, *past), str(traced), dynamo=False, opset_version=EXPORT_OPSET,
            input_names=inputs, output_names=outputs, dynamic_axes=axes,
            do_constant_folding=False,
            # As in export.onnx: no merging of equal weights, each keeps its module's name.
            keep_initializers_as_inputs=True,
        )  # fmt: skip
        proto = onnx.load(str(traced))
    initializers = {t.name for t in proto.graph.initializer}
    real = [i for i in proto.graph.input if i.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(real)
    return proto


def _to_nbits(
    proto: Any, layers: dict[str, QuantModule], decompositions: dict[str, Decomposition]
) -> dict[str, str]:
    """Each ternary Linear's Transpose(W) -> MatMul becomes one MatMulNBits node."""
    from onnx import helper

    from tritondsl.export.matmul_nbits import DOMAIN, lut_unsupported, matmul_nbits

    graph = proto.graph
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    inits = {t.name: t for t in graph.initializer}
    stored = {}
    for name, layer in layers.items():
        dec = decompositions[name]
        if not isinstance(layer, QuantLinear) or quantizer_kind(layer.quantizer) != "ternary":
            continue
        if dec.scale_neg is not None:
            stored[name] = "float (two scales per layer have no MatMulNBits form)"
            continue
        weight = f"{_WRAPPED}{name}.weight"
        transposes = readers.get(weight, [])
        matmuls = [r for t in transposes for r in readers.get(t.output[0], [])]
        if not (len(transposes) == 1 and transposes[0].op_type == "Transpose"
                and len(matmuls) == 1 and matmuls[0].op_type == "MatMul"
                and matmuls[0].input[1] == transposes[0].output[0]):  # fmt: skip
            stored[name] = "float (not a MatMul in the graph)"
            continue
        matmul = matmuls[0]
        trits = dec.codes.to(torch.int8).reshape(layer.weight_shape[0], -1).numpy()
        assert dec.scale is not None
        node, tensors = matmul_nbits(name, matmul.input[0], matmul.output[0], trits,
                                     dec.scale.detach().float().reshape(-1).numpy())  # fmt: skip
        matmul.CopyFrom(node)  # in place: the graph stays topologically sorted
        graph.node.remove(transposes[0])
        graph.initializer.remove(inits[weight])
        graph.initializer.extend(tensors)
        n, k = trits.shape
        why = lut_unsupported(k, n)
        stored[name] = "MatMulNBits (lookup table)" if why is None else f"MatMulNBits ({why})"
    nbits = any(s.startswith("MatMulNBits") for s in stored.values())
    if nbits and all(o.domain != DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return stored


def _save(proto: Any, path: Path) -> None:
    import onnx

    from tritondsl.files import open_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    # ByteSize itself fails over 2 GB: the tensors' bytes say which way to save.
    if sum(len(t.raw_data) for t in proto.graph.initializer) < _MAX_PROTO_BYTES // 2:
        onnx.checker.check_model(proto, full_check=True)
        with open_atomically(path) as file:
            file.write(proto.SerializeToString())
        return
    # Over 2 GB (float weights of billion-parameter models): tensors go to PATH.data.
    data = path.name + ".data"
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data)  # fmt: skip
    onnx.checker.check_model(str(path), full_check=True)


# -- running ------------------------------------------------------------------------------


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
    """A ``generation.Decoder`` over an exported decoder file in onnxruntime."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
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
        self.past: list[np.ndarray] = self._empty()

    def _empty(self) -> list[np.ndarray]:
        return [np.zeros((1, heads, 0, dim), np.float32) for heads, dim in self.layout.kv
                for _ in "kv"]  # fmt: skip

    def run(self, ids: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward of ``ids [batch, new]`` after ``past``: logits and the presents."""
        if ids.shape[0] > 1 and ids.shape[1] > 1 and past[0].shape[2]:
            # GroupQueryAttention takes several new tokens after a past for one row only
            # (onnxruntime refuses more); rows are independent, so they run one by one.
            rows = [self.run(ids[i : i + 1], [p[i : i + 1] for p in past])
                    for i in range(ids.shape[0])]  # fmt: skip
            presents = zip(*(p for _, p in rows), strict=True)
            return np.concatenate([r[0] for r in rows]), [np.concatenate(p) for p in presents]
        session = self.step_session if ids.shape[1] == 1 else self.prefill_session
        feed = {"ids": ids.astype(np.int64), **dict(zip(self.inputs[1:], past, strict=True))}
        logits, *presents = session.run(self.outputs, feed)
        return logits, presents

    def prefill(self, ids: list[int] | tuple[int, ...]) -> Tensor:
        """Start over with ``ids``; the logits after the last one."""
        logits, self.past = self.run(np.array([list(ids)], np.int64), self._empty())
        return torch.from_numpy(logits[0, -1].copy())

    def step(self, token: int) -> Tensor:
        """Append ``token``; the logits after it."""
        logits, self.past = self.run(np.array([[token]], np.int64), self.past)
        return torch.from_numpy(logits[0, -1].copy())

    def __len__(self) -> int:
        """Tokens held in the cache."""
        return int(self.past[0].shape[2])


def verify_decoder(model: nn.Module, path: str | Path, prompt: int = 5, steps: int = 3,
                   seed: int = 0) -> list[OutputCheck]:  # fmt: skip
    """Prefill ``prompt`` random tokens, then ``steps`` single tokens, in PyTorch and in the
    file; the logits of each forward compared (the 2-bit kernels quantize activations, so
    an nbits file is held to a 5% relative error, a float one to 1e-4)."""
    decoder = OnnxDecoder(path, threads=1)
    loose = decoder.layout.linear == "nbits"
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
