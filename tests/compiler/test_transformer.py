"""Transformer operations and layers: shape rules agree with torch; misuse is a located error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tritondsl.compiler import transformer as tf
from tritondsl.compiler.check import check_source, verify
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import EvalError, Init, Tensor
from tritondsl.transformer import merge_heads, split_heads

SPAN = Span(1, 1, 1, 2)

SDPA = [
    ((2, 4, 5, 8), (2, 4, 7, 8), (2, 4, 7, 6), {}),
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8), {"enable_gqa": True}),
    ((2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 8), {}),
    ((2, 4, 5, 8), (2, 3, 7, 8), (2, 3, 7, 8), {"enable_gqa": True}),
    ((2, 4, 5, 8), (2, 4, 7, 4), (2, 4, 7, 8), {}),
    ((5, 8), (7, 8), (7, 3), {}),
    ((3, 1, 5, 8), (1, 1, 6, 8), (1, 1, 6, 8), {}),
]


@pytest.mark.parametrize(("q", "k", "v", "kwargs"), SDPA, ids=str)
def test_attention_shape_matches_torch(q, k, v, kwargs) -> None:
    try:
        expected = tuple(F.scaled_dot_product_attention(
            torch.zeros(q), torch.zeros(k), torch.zeros(v), **kwargs).shape)
    except RuntimeError:
        expected = None
    try:
        ours = tf.scaled_dot_product_attention(
            [Tensor(q), Tensor(k), Tensor(v)], kwargs, SPAN).shape
    except EvalError:
        ours = None
    assert ours == expected


@pytest.mark.parametrize(("shape", "heads"), [((2, 5, 12), 3), ((5, 12), 4), ((2, 3, 5, 8), 2)])
def test_split_and_merge_heads_match_the_runtime(shape, heads) -> None:
    x = torch.randn(shape)
    split = tf.split_heads([Tensor(shape), heads], {}, SPAN)
    assert split.shape == tuple(split_heads(x, heads).shape)
    merged = tf.merge_heads([split], {}, SPAN)
    assert merged.shape == shape
    assert torch.equal(merge_heads(split_heads(x, heads)), x)


def test_symbolic_dimensions_flow_through_attention() -> None:
    q = tf.split_heads([Tensor(("N", "T", 64)), 4], {}, SPAN)
    assert q.shape == ("N", 4, "T", 16)
    out = tf.scaled_dot_product_attention([q, q, q], {"is_causal": True}, SPAN)
    assert tf.merge_heads([out], {}, SPAN).shape == ("N", "T", 64)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: tf.split_heads([Tensor((2, 5, 10)), 3], {}, SPAN), "10 features do not split into 3"),
    (lambda: tf.merge_heads([Tensor((5, 8))], {}, SPAN), "merge_heads expects"),
    (lambda: tf.rotary([Tensor((2, 5, 7))], {}, SPAN), "head size must be even"),
    (lambda: tf.rotary([Tensor((2, 5, 8))], {"theta": 1}, SPAN), "theta must be greater"),
    (lambda: tf.activation("relu2")([Tensor((2, 5), "int64")], {}, SPAN),
     "expects a float tensor"),
    (lambda: tf.linear([Tensor((2, 5)), Tensor((3, 4))], {}, SPAN), "x has 5 features"),
    (lambda: tf.linear([Tensor((2, 4)), Tensor((3, 4)), Tensor((4,))], {}, SPAN),
     r"bias must be \[3\]"),
    (lambda: tf.kv_cache([Tensor((2, 5, 8)), Tensor((2, 6, 8))], {}, SPAN), "same length"),
    (lambda: tf.scaled_dot_product_attention(
        [Tensor((4, 5, 8))] * 3, {"dropout_p": 1.5}, SPAN), "dropout_p must be in"),
    (lambda: tf.scaled_dot_product_attention(
        [Tensor((4, 5, 8)), Tensor((4, 6, 8)), Tensor((4, 6, 8))],
        {"attn_mask": Tensor((5, 5))}, SPAN), "cannot apply the mask to"),
    (lambda: tf.initializer("normal")([0, -1], {}, SPAN), "std must not be negative"),
    (lambda: tf.initializer("uniform")([1, 0], {}, SPAN), "below low"),
    (lambda: tf.initializer("zeros")([1], {}, SPAN), "at most 0 arguments"),
])
def test_misuse_is_a_located_error(call, message) -> None:
    with pytest.raises(EvalError, match=message) as info:
        call()
    assert info.value.span == SPAN


def test_initializers_keep_their_arguments() -> None:
    assert tf.initializer("normal")([0, 0.02], {}, SPAN) == Init("normal", 0.0, 0.02)
    assert tf.initializer("uniform")([], {"high": 3}, SPAN) == Init("uniform", 0.0, 3.0)
    assert tf.initializer("ones")([], {}, SPAN) == Init("ones")


ATTENTION_BLOCK = """
model Tiny(vocab: int = 50, dim: int = 32, heads: int = 4) {{
    input ids: Tensor[N, T, {dtype}]
    embed = Embedding(vocab, dim)
    param pos: Tensor[1, 16, dim] = normal(0, 0.02)
    norm = {norm}(dim)
    proj = Linear(dim, dim)
    out = Linear(dim, dim)
    head = TiedLinear(embed)
    forward(ids) {{
        let x = norm(embed(ids))
        let q = rotary(split_heads(proj(x), heads))
        let y = scaled_dot_product_attention(q, q, q, is_causal=true)
        return head(out(merge_heads(y)) + x)
    }}
}}
"""


@pytest.mark.parametrize("norm", ["LayerNorm", "RMSNorm"])
def test_a_small_decoder_checks_with_its_state_dict(norm: str) -> None:
    info = check_source(ATTENTION_BLOCK.format(dtype="int64", norm=norm)).models["Tiny"]
    assert info.output.shape == ("N", "T", 50)
    state = {item.name: item.shape for item in info.state_dict()}
    assert state["embed.weight"] == (50, 32)
    assert state["pos"] == (1, 16, 32)
    assert state["head.weight"] == (50, 32)
    assert ("norm.bias" in state) == (norm == "LayerNorm")
    # The tied head shares the embedding's Parameter: counted once, as torch counts it.
    assert info.num_parameters() == 50 * 32 + 16 * 32 + 32 * (2 if norm == "LayerNorm" else 1) \
        + 2 * (32 * 32 + 32)


def _error(source: str) -> str:
    with pytest.raises(CompileError) as info:
        verify(check_source(source, "t.tdsl"))
    return info.value.render()


def test_float_ids_into_an_embedding_are_refused_where_called() -> None:
    text = _error(ATTENTION_BLOCK.format(dtype="float32", norm="LayerNorm"))
    assert "t.tdsl:11:" in text
    assert "Embedding expects integer token ids, got a float32 tensor [N, T]" in text


@pytest.mark.parametrize(("body", "message"), [
    ("param p: Tensor[4, int64]", "int64 cannot be learned"),
    ("param p: Tensor[4] = 3", "a param starts from zeros(), ones()"),
    ("param p: Tensor[4] = normal(0, -1)", "std must not be negative"),
    ("e = Embedding(10, 4, padding_idx=10)", "padding_idx 10 is outside"),
    ("n = LayerNorm(4, eps=0)", "eps must be positive"),
    ("t = TiedLinear(Linear(2, 2))", "'embedding' must be an Embedding layer"),
])
def test_bad_declarations_are_located(body: str, message: str) -> None:
    source = f"model M() {{\n    input x: Tensor[N, 4]\n    {body}\n" \
             "    forward(x) {\n        return x\n    }\n}\n"
    text = _error(source)
    assert "t.tdsl:3:" in text and message in text


def test_norm_over_the_wrong_size_names_both() -> None:
    source = ("model M() {\n    input x: Tensor[N, T, 8]\n    norm = RMSNorm(6)\n"
              "    forward(x) {\n        return norm(x)\n    }\n}\n")
    assert "RMSNorm normalizes the last dimensions [6], got a float32 tensor [N, T, 8]" in \
        _error(source)


def test_heads_mismatch_without_gqa_suggests_it() -> None:
    source = ("model M() {\n    input x: Tensor[N, T, 8]\n    kv = Linear(8, 4)\n"
              "    forward(x) {\n"
              "        let q = split_heads(x, 4)\n        let k = split_heads(kv(x), 2)\n"
              "        return scaled_dot_product_attention(q, k, k)\n    }\n}\n")
    text = _error(source)
    assert "q has 4 heads but k and v have 2" in text
    assert "enable_gqa=true" in text
