"""Cached attention as one ``com.microsoft`` ``GroupQueryAttention`` node in a traced decoder.

Traced op by op, each decoding step of an attention layer concatenates the whole cache,
transposes all keys for ``Q·Kᵀ``, builds a causal mask and runs MatMul/Softmax/MatMul:
measured on 8-layer decoders this was more of a step's time than the ternary projections
(see benchmarks/bench_decode.py). onnxruntime's GroupQueryAttention takes the new keys and
values with the pasts (``[batch, kv_heads, capacity, head_dim]``, the first ``past_length``
positions real), writes them at ``past_length`` and attends causally (the queries are the
last positions) in one kernel, with any ratio of query heads to key/value heads. Its present
is as long as the past buffer (or the total length, if longer): bound to the very memory
of the past, it is written in place and nothing is copied. ``FusedAttentionCache`` is the
``KVCache`` an export traces with: each ``kv_cache`` + causal ``scaled_dot_product_attention``
pair becomes that node. When ``rotary`` made its queries and keys, the node rotates them
itself (``do_rotary``) by cos/sin tables the graph computes once for all layers: traced,
every layer's rotate-half was a dozen small nodes for q and again for k, a fixed cost of
each step that the ternary projections do not shrink.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tritondsl.transformer import KVCache, _causal, inverse_frequencies, rotate_half


def _written(buffer: Tensor, new: Tensor, start: int) -> Tensor:
    """A copy of ``buffer`` with ``new`` at positions ``start`` on, grown if it is too short."""
    end = start + new.shape[-2]
    grown = F.pad(buffer, (0, 0, 0, max(0, end - buffer.shape[-2])))
    grown[..., start:end, :] = new
    return grown


class _GroupQueryAttention(torch.autograd.Function):
    """``(q, k, v, past_k, past_v, past_length, cos, sin) -> (attention, present_k,
    present_v)``; q, k, v are ``[batch, heads, new, head_dim]``, as
    ``scaled_dot_product_attention`` takes them. ``rotary``: q and k are not yet rotated,
    the node rotates them by the tables ``cos``/``sin`` (``[positions, head_dim / 2]``) at
    positions from ``past_length`` on."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor,
        past_length: Tensor, cos: Tensor, sin: Tensor, scale: float | None, heads: int,
        kv_heads: int, rotary: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """What the node computes, in PyTorch (the values the tracer carries on)."""
        start = int(past_length)
        if rotary:
            end = start + q.shape[-2]
            cos, sin = (torch.cat([t[start:end], t[start:end]], dim=-1) for t in (cos, sin))
            q, k = rotate_half(q, cos, sin), rotate_half(k, cos, sin)
        keys = torch.cat([past_k[..., :start, :], k], dim=-2)
        values = torch.cat([past_v[..., :start, :], v], dim=-2)
        groups = heads // kv_heads
        mask = _causal(q.shape[-2], keys.shape[-2], q.device)
        out = F.scaled_dot_product_attention(
            q, keys.repeat_interleave(groups, dim=-3), values.repeat_interleave(groups, dim=-3),
            attn_mask=mask, scale=scale,
        )  # fmt: skip
        return out, _written(past_k, k, start), _written(past_v, v, start)

    @staticmethod
    def symbolic(
        g: Any, q: Any, k: Any, v: Any, past_k: Any, past_v: Any, past_length: Any, cos: Any,
        sin: Any, scale: float | None, heads: int, kv_heads: int, rotary: bool,
    ) -> tuple[Any, Any, Any]:  # fmt: skip
        """The node, with its inputs as it wants them: ``[batch, new, heads · head_dim]``."""

        def const(values: list[int]) -> Any:
            return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

        def packed(x: Any) -> Any:
            return g.op("Reshape", g.op("Transpose", x, perm_i=[0, 2, 1, 3]), const([0, 0, -1]))

        # The real lengths come from past_length, not the pasts' shape (a buffer's capacity).
        new = g.op("Shape", k, start_i=2, end_i=3)
        total = g.op("Cast", g.op("Add", g.op("Reshape", past_length, const([1])), new),
                     to_i=6)  # fmt: skip  (6: int32, what the node takes)
        seqlens = g.op("Expand", g.op("Sub", total, g.op("Constant", value_t=torch.tensor(
            [1], dtype=torch.int32))), g.op("Shape", q, start_i=0, end_i=1))  # fmt: skip
        tables = [cos, sin] if rotary else []
        out, present_k, present_v = g.op(
            "com.microsoft::GroupQueryAttention", packed(q), packed(k), packed(v), past_k,
            past_v, seqlens, g.op("Reshape", total, const([])), *tables, num_heads_i=heads,
            kv_num_heads_i=kv_heads, scale_f=0.0 if scale is None else scale,
            do_rotary_i=int(rotary), outputs=3,
        )  # fmt: skip
        # The exporter knows no types of a custom node's outputs; the checker wants them.
        out.setType(q.type().with_sizes([None, None, None]))
        present_k.setType(past_k.type().with_sizes([None, kv_heads, None, None]))
        present_v.setType(past_v.type().with_sizes([None, kv_heads, None, None]))
        heads_out = g.op("Reshape", out, const([0, 0, heads, -1]))
        return g.op("Transpose", heads_out, perm_i=[0, 2, 1, 3]), present_k, present_v


class FusedAttentionCache(KVCache):
    """A ``KVCache`` for tracing over fixed-capacity buffers, ``past_length`` positions of
    them real: each layer's causal attention over it is one node, rotary positions start at
    ``past_length``."""

    def __init__(self, keys: list[Tensor], values: list[Tensor], past_length: Tensor) -> None:
        super().__init__(keys, values)
        self.past_length = past_length
        self._pending: list[tuple[int, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]] = []
        self._rotations: list[tuple[Tensor, Tensor, float]] = []  # rotated, unrotated, theta
        self._tables: dict[tuple[float, int], tuple[Tensor, Tensor]] = {}

    def begin(self) -> None:
        """Start a forward: new tokens take positions from ``past_length`` on."""
        super().begin()
        self.offset = self.past_length

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor, theta: float) -> Tensor:
        """Rotate as ``KVCache`` does, remembering the unrotated ``x`` for ``attend``."""
        rotated = super().rotate(x, cos, sin, theta)
        self._rotations.append((rotated, x, theta))
        return rotated

    def _unrotated(self, t: Tensor) -> tuple[Tensor, float] | None:
        return next(((x, theta) for rotated, x, theta in self._rotations if rotated is t), None)

    def _rotary_tables(self, theta: float, dim: int, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos and sin of ``rotary``'s angles at positions 0 to ``positions`` - 1, ``[positions,
        dim / 2]``: the tables GroupQueryAttention rotates by (one pair for all layers)."""
        if (theta, dim) not in self._tables:
            freqs = torch.arange(positions).float()[:, None] * inverse_frequencies(
                dim, theta, positions.device)[None, :]  # fmt: skip
            self._tables[theta, dim] = freqs.cos(), freqs.sin()
        return self._tables[theta, dim]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append as ``KVCache`` does, remembering the pasts for ``attend``."""
        i = self.slot
        if i >= len(self.keys):  # no pasts (a first forward): nothing to fuse with
            return super().update(k, v)
        past_k, past_v = self.keys[i], self.values[i]
        keys, values = super().update(k, v)
        self._pending.append((i, past_k, past_v, k, v, keys, values))
        return keys, values

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor | None:
        """The fused node when ``k``/``v`` are a layer's cache as ``update`` returned it."""
        for entry in self._pending:
            i, past_k, past_v, new_k, new_v, keys, values = entry
            if keys is k and values is v:
                self._pending.remove(entry)
                heads, kv_heads, dim = int(q.shape[-3]), int(k.shape[-3]), int(q.shape[-1])
                raw_q, raw_k = self._unrotated(q), self._unrotated(new_k)
                # The node rotates q and k itself (rotate-half, positions from past_length)
                # when rotary made both with one theta; its tables need head_dim % 16 == 0.
                rotary = False
                if raw_q and raw_k and raw_q[1] == raw_k[1] and dim % 16 == 0:
                    total = self.past_length + raw_k[0].shape[-2]  # not new_k: it stays dead
                    cos, sin = self._rotary_tables(raw_q[1], dim, total)
                    q, new_k, rotary = raw_q[0], raw_k[0], True
                else:
                    cos = sin = q.new_zeros(0)  # no tables: the node does not read them
                out, self.keys[i], self.values[i] = _GroupQueryAttention.apply(
                    q, new_k, new_v, past_k, past_v, self.past_length, cos, sin, scale,
                    heads, kv_heads, rotary,
                )  # fmt: skip
                return out
        return None

    def unfused(self) -> list[int]:
        """The attention layers whose cache was not read by one fused attention."""
        return [entry[0] for entry in self._pending]
