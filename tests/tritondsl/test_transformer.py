"""The transformer runtime: rotary positions, masks, the KV cache, params, embeddings."""

from __future__ import annotations

import pytest
import torch

from tritondsl import runtime as rt
from tritondsl.transformer import KVCache, causal_mask, decoding, kv_cache, rotary


@pytest.mark.parametrize(("theta", "head_dim", "offset"), [(10000.0, 16, 0), (5e5, 8, 7)])
def test_rotary_is_transformers_rotate_half(theta: float, head_dim: int, offset: int) -> None:
    # Imported here: transformers imports triton, which must come after tests/kernels/conftest.py.
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2,
                         rope_parameters={"rope_type": "default", "rope_theta": theta})
    q = torch.randn(2, 2, 5, head_dim)
    positions = torch.arange(offset, offset + 5)[None].expand(2, -1)
    cos, sin = LlamaRotaryEmbedding(config)(q, positions)
    expected, _ = apply_rotary_pos_emb(q, q, cos, sin)
    cache = KVCache([torch.zeros(2, 2, offset, head_dim)], [torch.zeros(2, 2, offset, head_dim)])
    with decoding(cache):
        ours = rotary(q, theta)
        kv_cache(q, q)  # the model's one attention layer
    assert torch.allclose(ours, expected, atol=1e-6, rtol=1e-5)


def test_causal_mask_lines_up_with_the_last_keys() -> None:
    scores = torch.zeros(2, 5)  # two new queries after three cached keys
    masked = causal_mask(scores)
    assert torch.equal(torch.isinf(masked), torch.tensor([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]]).bool())


def test_attention_while_decoding_matches_the_full_sequence() -> None:
    q, k, v = (torch.randn(1, 2, 6, 4) for _ in range(3))
    full = rt.scaled_dot_product_attention(q, k, v, is_causal=True)
    with decoding(KVCache()):  # the last query alone, against all keys
        keys, values = kv_cache(k, v)
        last = rt.scaled_dot_product_attention(q[:, :, -1:], keys, values, is_causal=True)
    assert torch.allclose(last, full[:, :, -1:], atol=1e-6)


def test_kv_cache_refuses_keys_of_another_shape() -> None:
    cache = KVCache([torch.zeros(1, 2, 3, 4)], [torch.zeros(1, 2, 3, 4)])
    with pytest.raises(ValueError, match=r"keys for attention layer 0 have shape \[1, 2, 3, 4\]"), \
            decoding(cache):
        kv_cache(torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))
    with pytest.raises(TypeError, match="cache must be a tritondsl KVCache"), decoding([]):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize(("init", "check"), [
    (rt.zeros(), lambda p: bool((p == 0).all())),
    (rt.ones(), lambda p: bool((p == 1).all())),
    (rt.normal(0, 0.02), lambda p: abs(float(p.std()) - 0.02) < 0.002),
    (rt.uniform(-2, -1), lambda p: float(p.min()) >= -2 and float(p.max()) <= -1),
])
def test_param_initializers(init, check) -> None:
    torch.manual_seed(0)
    p = rt.parameter((64, 64), init)
    assert p.requires_grad and p.shape == (64, 64) and check(p.detach())


def test_bad_initializer_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="std must not be negative"):
        rt.normal(0, -1)


def test_linear_param_follows_the_precision() -> None:
    w = torch.randn(6, 8)
    x = torch.randn(3, 8)
    assert torch.equal(rt.linear(x, w), x @ w.T)
    ternary = rt.linear(x, w, weights=rt.ternary(method="absmean"))
    gamma = w.abs().mean()
    assert torch.allclose(ternary, x @ ((w / gamma).round().clamp(-1, 1) * gamma).T, atol=1e-5)


def test_embedding_refuses_float_ids() -> None:
    embed = rt.Embedding(10, 4, where="m.tdsl, line 3")
    with pytest.raises(TypeError, match=r"Embedding\(10, 4\) at m\.tdsl, line 3 expects integer"):
        embed(torch.zeros(2, 3))
