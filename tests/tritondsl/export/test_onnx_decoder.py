"""ONNX decoders with the KV cache as inputs/outputs: layout, forms, agreement, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import tritondsl
from tritondsl.export.onnx_decoder import (
    DECODER_KEY,
    DecoderExportError,
    DecoderLayout,
    OnnxDecoder,
    export_decoder,
    int8_prefill_graph,
    verify_decoder,
)
from tritondsl.generation import TorchDecoder, greedy_agreement
from tritondsl.transformer import KVCache

# Grouped-query attention (4 query heads share 2 key/value heads), widths where the 2-bit
# lookup-table kernel applies (N % 128 == 0) next to ones where it does not (k/v: N = 64).
SHAPE = {"vocab": 256, "dim": 128, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 256,
         "context": 48}  # fmt: skip


@pytest.fixture(scope="module")
def ternary() -> torch.nn.Module:
    torch.manual_seed(0)
    return tritondsl.load_model("bitnet_b158", **SHAPE).eval()


@pytest.fixture(scope="module")
def nbits(ternary: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("decoder") / "nbits.onnx"
    exported = export_decoder(ternary, path, "nbits")
    assert exported.ok, [c.line() for c in exported.checks]
    return path


def test_the_graph_takes_and_returns_the_cache(nbits: Path) -> None:
    proto = onnx.load(str(nbits))
    names = [i.name for i in proto.graph.input]
    assert names == ["ids", "past.0.key", "past.0.value", "past.1.key", "past.1.value"]
    assert [o.name for o in proto.graph.output] == [
        "logits", "present.0.key", "present.0.value", "present.1.key", "present.1.value"]
    past = proto.graph.input[1].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in past] == ["batch", 2, "past", 32]
    layout = DecoderLayout.from_json(
        next(p.value for p in proto.metadata_props if p.key == DECODER_KEY))
    assert layout == DecoderLayout([(2, 32), (2, 32)], 256, 48, "nbits")


def test_ternary_linears_become_matmulnbits(ternary: torch.nn.Module, tmp_path: Path) -> None:
    exported = export_decoder(ternary, tmp_path / "d.onnx", "nbits")
    layers = exported.layers
    assert layers["model.layers.0.mlp.up_proj"] == "MatMulNBits (lookup table)"
    assert layers["model.layers.0.self_attn.k_proj"] == (
        "MatMulNBits (N=64 is not a multiple of 128)")
    assert "lm_head" not in layers or layers["lm_head"] == "float"  # @fp32 stays float
    nodes = [n for n in onnx.load(str(tmp_path / "d.onnx")).graph.node]
    assert sum(n.op_type == "MatMulNBits" for n in nodes) == 14  # 7 projections x 2 layers
    # Each ternary weight is 2 bits in the file: no float copy of it is left.
    inits = {t.name for t in onnx.load(str(tmp_path / "d.onnx")).graph.initializer}
    assert not any(name.endswith("up_proj.weight") for name in inits)


def test_each_attention_layer_is_one_fused_node(nbits: Path) -> None:
    nodes = onnx.load(str(nbits)).graph.node
    fused = [n for n in nodes if n.op_type == "GroupQueryAttention"]
    assert [(n.domain, n.output[1]) for n in fused] == [
        ("com.microsoft", "present.0.key"), ("com.microsoft", "present.1.key")]
    heads = {a.name: a.i for a in fused[0].attribute}
    assert (heads["num_heads"], heads["kv_num_heads"]) == (4, 2)
    # Nothing of the unfused attention is left: no softmax, no concatenated cache.
    assert not any(n.op_type == "Softmax" for n in nodes)


def test_float_decoder_equals_pytorch(ternary: torch.nn.Module, tmp_path: Path) -> None:
    exported = export_decoder(ternary, tmp_path / "f.onnx", "float")
    assert all(c.rel < 1e-5 for c in exported.checks), [c.line() for c in exported.checks]
    assert set(exported.layers.values()) == {"float"}


def test_nbits_decoder_picks_the_same_greedy_tokens(ternary: torch.nn.Module, nbits: Path
                                                    ) -> None:  # fmt: skip
    # Random weights give nearly flat logits, the hardest case for a kernel that quantizes
    # activations: near ties may part, so the bound is 80% here (the goal of 99% is for a
    # trained model).
    agree, total = greedy_agreement(TorchDecoder(ternary), OnnxDecoder(nbits, threads=1),
                                    [3, 1, 4, 1, 5], 40)  # fmt: skip
    assert total == 40 and agree >= 32, agree


def test_the_prefill_graph_runs_int8_kernels(nbits: Path, ternary: torch.nn.Module) -> None:
    proto = int8_prefill_graph(onnx.load(str(nbits)))
    ops = {n.op_type for n in proto.graph.node}
    assert "DynamicQuantizeMatMul" in ops and "MatMulNBits" not in ops
    weight = next(t for t in proto.graph.initializer if t.name.endswith("up_proj.int8"))
    trits = onnx.numpy_helper.to_array(weight)
    # The same trits as the model's: [K, N] int8 in {-1, 0, 1}.
    codes = ternary.model.layers[0].mlp.up_proj.decomposition().codes
    assert np.array_equal(trits, codes.to(torch.int8).numpy().T)


def test_batches_and_positions_follow_the_cache(nbits: Path, ternary: torch.nn.Module) -> None:
    decoder = OnnxDecoder(nbits, threads=1)
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    empty = [np.zeros((2, 2, 0, 32), np.float32) for _ in range(4)]
    logits, presents = decoder.run(ids[:, :6].numpy(), empty)
    assert logits.shape == (2, 6, 256) and presents[0].shape == (2, 2, 6, 32)
    logits, presents = decoder.run(ids[:, 6:].numpy(), presents)
    with torch.no_grad():
        expected = ternary(ids)[:, 6:]
    assert presents[3].shape == (2, 2, 9, 32)
    assert np.abs(logits - expected.numpy()).max() < 0.05 * np.abs(expected.numpy()).max()


def test_verify_compares_prefill_and_steps(nbits: Path, ternary: torch.nn.Module) -> None:
    checks = verify_decoder(ternary, nbits, prompt=4, steps=2)
    assert [c.name for c in checks] == ["prefill", "step 1", "step 2"] and all(c.ok for c in checks)
    other = tritondsl.load_model("bitnet_b158", **SHAPE).eval()  # other random weights
    assert not all(c.ok for c in verify_decoder(other, nbits, prompt=4, steps=2))


def test_models_without_a_cache_and_plain_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DecoderExportError, match="takes no KV cache"):
        export_decoder(tritondsl.load_model("ternary_mlp"), tmp_path / "m.onnx")
    graph = onnx.helper.make_graph([], "g", [], [])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not a tritondsl decoder"):
        OnnxDecoder(tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="metadata is malformed"):
        DecoderLayout.from_json('{"layers": 2, "kv": [[2, 32]], "vocab": 3, "context": null, '
                                '"linear": "float"}')  # fmt: skip
    with pytest.raises(ValueError, match="linear must be one of nbits, float"):
        export_decoder(tritondsl.load_model("ternary_mlp"), tmp_path / "x.onnx", "int4")


def test_the_torch_cache_api_is_what_the_graph_wraps(ternary: torch.nn.Module) -> None:
    cache = KVCache()
    with torch.no_grad():
        ternary(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    assert len(cache) == 3 and len(cache.keys) == 2 and cache.context == 48
