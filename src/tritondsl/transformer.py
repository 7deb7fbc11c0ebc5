"""What generated transformer code calls: attention, rotary positions, the KV cache.

Incremental decoding: a model whose program calls ``kv_cache`` or ``rotary`` takes
``cache=`` in its forward. A ``KVCache`` holds, for each ``kv_cache`` call of one forward
(in call order, one per attention layer), the keys and values of every token seen so far,
shaped ``[N, kv_heads, tokens, head_dim]``. Prefill with the prompt, then feed one token at a
time with the same cache::

    cache = KVCache()
    logits = model(prompt_ids, cache=cache)          # prompt_ids: [N, T]
    logits = model(next_ids, cache=cache)            # next_ids:   [N, 1]

The cache is plain tensors in and out, so a decoder exports to ONNX with the past keys and
values as inputs and the present ones as outputs: build a cache from the inputs, run the
model, return ``cache.keys`` and ``cache.values`` (``export.onnx_attention`` subclasses it
for buffers of fixed capacity, whose real length is an input: ``offset`` then is a tensor).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KVCache:
    """Keys and values of the tokens seen so far, one pair per ``kv_cache`` call."""

    def __init__(self, keys: Sequence[Tensor] = (), values: Sequence[Tensor] = ()) -> None:
        if len(keys) != len(values):
            raise ValueError(f"a KV cache needs as many values as keys, got {len(keys)} and "
                             f"{len(values)}")
        self.keys, self.values = list(keys), list(values)
        self.context: int | None = None  # the smallest rotary context a forward declared
        # Tokens cached before the current forward (the first new position); a traced
        # subclass sets a 0-d int64 tensor, its graph's input.
        self.offset: int | Tensor = 0
        self.slot = 0  # the next kv_cache call's index within the current forward
        # This forward's rotary (cos, sin) by (tokens, head_dim, theta, dtype, device): every
        # layer's queries and keys rotate alike, so a traced graph computes them once.
        self.angles: dict[tuple[object, ...], tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        """How many tokens the cache holds."""
        return int(self.keys[0].shape[-2]) if self.keys else 0

    def begin(self) -> None:
        """Start a forward: new tokens take positions after the cached ones."""
        self.offset = self.keys[0].shape[-2] if self.keys else 0
        self.slot = 0
        self.angles = {}

    def finish(self) -> None:
        """End a forward: a cache from another model (other layer count) is refused."""
        if self.keys and self.slot != len(self.keys):
            raise ValueError(
                f"the KV cache holds {len(self.keys)} attention layers, but the model has "
                f"{self.slot}; use a cache made by this model"
            )

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append this forward's keys and values to the next slot; return all of them."""
        i, self.slot = self.slot, self.slot + 1
        if i == len(self.keys):
            if self.offset:
                raise ValueError(
                    f"the KV cache holds {len(self.keys)} attention layers, but the model has "
                    f"more; use a cache made by this model"
                )
            self.keys.append(k)
            self.values.append(v)
            return k, v
        past_k, past_v = self.keys[i], self.values[i]
        for name, past, new in (("keys", past_k, k), ("values", past_v, v)):
            if past.dim() != new.dim() or past.shape[:-2] != new.shape[:-2] or (
                past.shape[-1] != new.shape[-1]
            ):
                raise ValueError(
                    f"the KV cache's {name} for attention layer {i} have shape "
                    f"{list(past.shape)}, which does not fit new {name} of shape "
                    f"{list(new.shape)} (batch, heads and head size must match)"
                )
        self.keys[i] = torch.cat([past_k, k], dim=-2)
        self.values[i] = torch.cat([past_v, v], dim=-2)
        return self.keys[i], self.values[i]

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor, theta: float) -> Tensor:
        """``x`` rotated by ``rotary``'s angles (``theta``: their base); an exporter's subclass
        remembers the unrotated ``x``, for an attention that rotates it itself."""
        return rotate_half(x, cos, sin)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor | None:
        """Causal attention of ``q`` over what ``update`` returned, as one fused operation, or
        None so that PyTorch computes it (an exporter's subclass fuses it; this one never)."""
        return None


_ACTIVE: list[KVCache | None] = []  # the caches of the forwards running now (innermost last)


@contextmanager
def decoding(cache: KVCache | None) -> Iterator[None]:
    """Run a model's forward with ``cache`` (None: no cache, positions start at 0)."""
    if cache is not None and not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a tritondsl KVCache, got {type(cache).__name__}")
    if cache is not None:
        cache.begin()
    _ACTIVE.append(cache)
    try:
        yield
        if cache is not None:
            cache.finish()
    finally:
        _ACTIVE.pop()


def _cache() -> KVCache | None:
    return _ACTIVE[-1] if _ACTIVE else None


def kv_cache(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The keys and values of all tokens so far: the cached ones then ``k``/``v``."""
    cache = _cache()
    return (k, v) if cache is None else cache.update(k, v)


def _causal(q_len: int, k_len: int, device: torch.device) -> Tensor:
    # Queries are the last q_len of k_len positions (bottom-right aligned), so one new token
    # sees every cached key; for q_len == k_len this is the usual lower triangle. Built from
    # aranges, not tril(k_len - q_len): a traced graph (ONNX) keeps both lengths dynamic.
    queries = torch.arange(q_len, device=device) + (k_len - q_len)
    return torch.arange(k_len, device=device)[None, :] <= queries[:, None]


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention``; while decoding, causal masks line up with the cache."""
    cache = _cache()
    if is_causal and attn_mask is None and not dropout_p and cache is not None:
        fused = cache.attend(q, k, v, scale)
        if fused is not None:
            return fused
    if is_causal and cache is not None:
        causal = _causal(q.shape[-2], k.shape[-2], q.device)
        if attn_mask is None:
            attn_mask = causal
        elif attn_mask.dtype == torch.bool:
            attn_mask = attn_mask & causal
        else:
            attn_mask = attn_mask.masked_fill(~causal, float("-inf"))
        is_causal = False
    if enable_gqa and torch.jit.is_tracing() and k.shape[-3] != q.shape[-3]:
        # The TorchScript ONNX exporter has no grouped-query attention: repeat each key and
        # value head for its group of query heads, which is what enable_gqa computes.
        groups = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    if torch.jit.is_tracing():
        enable_gqa = False
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
        enable_gqa=enable_gqa,
    )


def causal_mask(scores: Tensor) -> Tensor:
    """-inf where a query would attend to a later key (``scores``: ``[..., T, S]``)."""
    keep = _causal(scores.shape[-2], scores.shape[-1], scores.device)
    return scores.masked_fill(~keep, float("-inf"))


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[..., T, heads * d]`` -> ``[..., heads, T, d]``."""
    # reshape, not unflatten: a traced unflatten fixes T, so an ONNX graph would too.
    return x.reshape(*x.shape[:-1], heads, -1).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """``[..., heads, T, d]`` -> ``[..., T, heads * d]``."""
    return x.transpose(-3, -2).flatten(-2)


def relu2(x: Tensor) -> Tensor:
    """Squared ReLU (BitNet b1.58's ``hidden_act: relu2``)."""
    return F.relu(x).square()


def rotary(x: Tensor, theta: float = 10000.0, context: int = 0, where: str = "") -> Tensor:
    """Rotary position embedding of ``x: [..., T, head_dim]``, Llama's rotate-half convention.

    Positions continue after the tokens in the KV cache; ``context`` > 0 refuses positions at
    or past it (``where`` names the .tdsl line for that message).
    """
    cache = _cache()
    offset = cache.offset if cache is not None else 0
    if cache is not None and context:  # so a decoding loop knows where to stop
        cache.context = context if cache.context is None else min(cache.context, context)
    length, dim = x.shape[-2], x.shape[-1]
    # A tensor offset is a traced graph's input: the runner of that graph checks it.
    if (
        context
        and isinstance(offset, int)
        and not torch.compiler.is_compiling()
        and offset + length > context
    ):
        raise ValueError(
            f"{offset + length} positions do not fit the context of {context} tokens "
            f"(rotary(..., context={context}) at {where}); shorten the prompt"
        )
    # int(): traced, sizes are 0-d tensors, equal ones distinct objects (a decoding forward
    # only: compiled training keeps its sizes symbolic).
    key = (int(length), int(dim), theta, x.dtype, x.device) if cache is not None else ()
    cos_sin = cache.angles.get(key) if cache is not None else None
    if cos_sin is None:
        # Computed as transformers' LlamaRotaryEmbedding does, in float32, then cast.
        positions = torch.arange(length, device=x.device).float() + offset
        freqs = positions[:, None] * inverse_frequencies(dim, theta, x.device)[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        cos_sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        if cache is not None:
            cache.angles[key] = cos_sin
    return rotate_half(x, *cos_sin) if cache is None else cache.rotate(x, *cos_sin, theta)


def inverse_frequencies(dim: int | Tensor, theta: float, device: torch.device) -> Tensor:
    """Rotary's angle per position of each of the ``dim / 2`` pairs, in float32."""
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    return 1.0 / (theta**exponent)


def rotate_half(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x · cos + rotate_half(x) · sin``: Llama's rotary convention (``cos``/``sin``:
    ``[T, head_dim]``, each half the same angles)."""
    dim = x.shape[-1]
    first, second = x[..., : dim // 2], x[..., dim // 2 :]
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class Embedding(nn.Embedding):
    """``nn.Embedding`` whose out-of-range token ids get an error naming the .tdsl line."""

    def __init__(self, *args: object, where: str = "", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.where = where

    def forward(self, ids: Tensor) -> Tensor:
        """Look the ids up, after checking they are integers inside the vocabulary."""
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(
                f"Embedding({self.num_embeddings}, {self.embedding_dim}) at {self.where} "
                f"expects integer token ids, got {ids.dtype}"
            )
        if ids.numel() and not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise ValueError(
                    f"token id {bad} is out of range: Embedding({self.num_embeddings}, "
                    f"{self.embedding_dim}) at {self.where} takes ids 0 to "
                    f"{self.num_embeddings - 1}"
                )
        return super().forward(ids)


class TiedLinear(nn.Module):
    """A bias-free output layer that shares its weight with an ``Embedding`` (weight tying)."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.weight = embedding.weight  # the same Parameter: trained and stored once

    def forward(self, x: Tensor) -> Tensor:
        """``x · Eᵀ``: scores over the embedding's vocabulary."""
        return F.linear(x, self.weight)
