"""ONNX language-model decoders with the KV cache as inputs and outputs, for CPU generation.

The graph of a model whose forward takes ``cache=`` (a ``KVCache``, see
``tritondsl.transformer``) with L attention layers::

    inputs   ids            int64 [batch, new]
             past_length    int64 []                                      tokens cached
             past.i.key     float [batch, kv_heads, capacity, head_dim]   for i in 0..L-1
             past.i.value   float [batch, kv_heads, capacity, head_dim]
    outputs  logits         float [batch, new, vocab]
             present.i.key  float [batch, kv_heads, present, head_dim]
             present.i.value

The pasts are buffers whose first ``past_length`` positions hold the cache (the same length
for every row); rotary positions and attention take the length from ``past_length``, never
from the buffers' shape. A present is its past with the new keys or values written at
``past_length``: as long as the buffer (``present = max(capacity, past_length + new)``).
Bound to the same memory as its past (``export.onnx_decoder_runner``), it is written in
place; fed plain arrays (capacity = past_length), each present is a new, longer array.
Prefill feeds the prompt with ``past_length`` 0; each decoding step one token.
``tritondsl.decoder`` in the metadata says how many layers, their head shapes, the
vocabulary, the context (the most positions the model takes) and the linear form.

Linear forms (``linear=``): ``float`` keeps every weight float (ternary ones dequantized);
``nbits`` stores each ternary Linear as ``com.microsoft`` ``MatMulNBits`` with 2-bit weights
(``export.matmul_nbits``), which onnxruntime's lookup-table kernel runs several times faster
than an fp32 MatMul for one row (decoding) when K % 32 == 0 and N % 128 == 0.
``export.onnx_decoder_runner.OnnxDecoder`` runs such a file.

Each attention layer is one ``com.microsoft`` ``GroupQueryAttention`` node
(``export.onnx_attention``), in float and nbits files alike. onnxruntime runs it for any
batch with one new token or with ``past_length`` 0, but several new tokens after a past
only for batch 1: ``OnnxDecoder.run`` then runs the rows one by one.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tritondsl.backend.layers import QuantLinear, QuantModule
from tritondsl.backend.quantizers import Decomposition, quantizer_kind
from tritondsl.export.onnx import EXPORT_OPSET, _describe, _float_twin
from tritondsl.export.onnx_attention import FusedAttentionCache
from tritondsl.export.onnx_verify import OutputCheck
from tritondsl.export.torch_export import deployed_copy, replace_modules, spec_info
from tritondsl.transformer import KVCache

LINEAR_FORMS = ("nbits", "float")
DECODER_KEY = "tritondsl.decoder"  # metadata: layers, kv shapes, vocab, context, linear
LUT_GEMM_KEY = "mlas.use_lut_gemm"  # onnxruntime's lookup-table kernel for 2-bit MatMulNBits
_MAX_PROTO_BYTES = 2**31 - 1
# Lengths the tracer sees (all stay dynamic): cached tokens, new ones, buffer positions.
EXAMPLE_PAST, EXAMPLE_NEW, EXAMPLE_CAPACITY = 3, 4, 8
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
    """``ids``, ``past_length``, then ``past.i.key``, ``past.i.value`` for every layer."""
    pasts = (f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value"))
    return ["ids", "past_length", *pasts]


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
    """``(ids, past_length, *pasts) -> (logits, *presents)`` around a model that takes
    ``cache=``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: Tensor, past_length: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        """One forward with the cache built from ``past``; the presents after it."""
        cache = FusedAttentionCache(list(past[0::2]), list(past[1::2]), past_length)
        logits = self.model(ids, cache=cache)
        if cache.unfused():
            # A buffer's positions after past_length are stale: only the fused node, which
            # reads past_length, may read the cache.
            raise DecoderExportError(
                f"attention layer(s) {cache.unfused()} use the KV cache other than as "
                "scaled_dot_product_attention(q, keys, values, is_causal=True) of what "
                "kv_cache returned; a decoder export needs that form"
            )
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
        from tritondsl.export.onnx_decoder_runner import verify_decoder

        # ``deployed`` now computes with the float twins it was traced from: compare the
        # file with the model itself, deployed afresh.
        export.checks = verify_decoder(deployed_copy(model), path)
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
    past_length = torch.tensor(EXAMPLE_PAST)
    past = [torch.zeros(1, heads, EXAMPLE_CAPACITY, dim) for heads, dim in layout.kv
            for _ in "kv"]  # fmt: skip
    inputs, outputs = input_names(layers), output_names(layers)
    axes = {"ids": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
    axes.update({name: {0: "batch", 2: "capacity"} for name in inputs[2:]})
    axes.update({name: {0: "batch", 2: "present"} for name in outputs[1:]})
    with tempfile.TemporaryDirectory(prefix="tritondsl-decoder-") as folder, \
            warnings.catch_warnings():  # fmt: skip
        # A file, not a buffer: over 2 GB the exporter writes the weights beside it.
        traced = Path(folder) / "traced.onnx"
        # Shape comparisons in the input checks become constants of the trace, as meant.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            wrapper, (ids, past_length, *past), str(traced), dynamo=False,
            opset_version=EXPORT_OPSET, input_names=inputs, output_names=outputs, dynamic_axes=axes,
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
