"""Triton pieces shared by the ternary kernels: trit decoding, the epilogue, config pruning.

Trit ``k`` of a packed row lives in byte ``k >> 2`` at bit offset ``2 * (k & 3)`` with
code = trit + 1 (see ``kernels/packing.py``). Kernels load ``[rows, BLOCK_K // 4]`` byte
tiles, each byte once and contiguous along K, and ``unpack_codes`` spreads every byte
into its four codes in registers with one shift and one mask each.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from tritondsl.kernels._common import interpreting

# Smallest tile edge tl.dot accepts on GPUs; configs below it are never generated.
MIN_DOT_BLOCK = 16
# bfloat16 pieces that hold a float32 exactly enough (3 x 8 = 24 mantissa bits).
FP32_PIECES = 3

_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


# A byte of four 0b01 codes: four zero trits. Masked-off weight loads read it.
ZERO_TRITS_BYTE = tl.constexpr(0b01010101)


@triton.jit
def unpack_codes(byte):
    """[R, B] packed bytes -> [R, B, 4] codes (trit + 1): code j of a byte is bits 2j, 2j+1.

    Reshaping the result to [R, 4 * B] puts trit ``4 * b + j`` at column ``4 * b + j``.
    """
    j = tl.arange(0, 4)
    return (byte.to(tl.int32)[:, :, None] >> (2 * j)[None, None, :]) & 0b11


@triton.jit
def scale_bias(acc, offs_n, n_mask, scale_ptr, scale_stride, bias_ptr, HAS_BIAS: tl.constexpr):
    """``acc · scale[n] (+ bias[n])`` in float32; ``acc`` is [..., BLOCK_N] sums over K."""
    scale = tl.load(scale_ptr + offs_n * scale_stride, mask=n_mask, other=0.0)
    out = acc * scale.to(tl.float32)
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
    return out


@triton.jit
def dot_trits(
    x, trits, acc, DOT_DTYPE: tl.constexpr, X_PIECES: tl.constexpr, PRECISION: tl.constexpr
):
    """``acc + x · trits`` on tensor cores, float32 accumulation; ``trits`` is [K, N] of -1/0/+1.

    Trits are exact in every float type, so only x can lose bits. With ``X_PIECES == 1``
    x is cast to ``DOT_DTYPE`` (a no-op for fp16/bf16 x). Float32 x at full precision
    is split into ``X_PIECES`` bfloat16 pieces (three hold all 24 mantissa bits) whose
    products with the trits are exact: float32-grade results at bf16 tensor-core speed,
    where an IEEE float32 ``tl.dot`` would fall back to slow, register-hungry FMAs.
    """
    w = trits.to(DOT_DTYPE)
    if X_PIECES == 1:
        acc = tl.dot(x.to(DOT_DTYPE), w, acc, input_precision=PRECISION)
    else:
        rest = x.to(tl.float32)
        for _ in tl.static_range(X_PIECES):
            piece = rest.to(tl.bfloat16)
            acc = tl.dot(piece.to(DOT_DTYPE), w, acc, input_precision=PRECISION)
            rest -= piece.to(tl.float32)
    return acc


def dot_config(dtype: torch.dtype) -> dict[str, Any]:
    """``dot_trits`` constants for x of ``dtype``: DOT_DTYPE, X_PIECES and PRECISION.

    Float32 x takes TF32 when ``torch.get_float32_matmul_precision()`` allows it (as
    ``torch.matmul`` does), else three bfloat16 pieces. The interpreter stores bfloat16
    as raw uint16 and multiplies those bits in tl.dot, so there bfloat16 operands are
    widened to float32: the same products, exactly (the pieces are still cut).
    """
    dot_dtype = _TL_DTYPES[dtype]
    pieces, precision = 1, "ieee"
    if dtype == torch.float32:
        if torch.get_float32_matmul_precision() == "highest":
            dot_dtype, pieces = tl.bfloat16, FP32_PIECES
        else:
            precision = "tf32"
    if dot_dtype == tl.bfloat16 and interpreting():
        dot_dtype = tl.float32
    return {"DOT_DTYPE": dot_dtype, "X_PIECES": pieces, "PRECISION": precision}


def fitting_configs(configs: list[triton.Config], sizes: dict[str, int]) -> list[triton.Config]:
    """Configs whose blocks do not overshoot the problem: ``BLOCK <= next_pow2(size)``.

    ``sizes`` maps a block name to the problem extent it tiles. Never empty: when nothing
    fits, the config with the smallest tiles is kept.
    """
    limits = {
        name: max(MIN_DOT_BLOCK, triton.next_power_of_2(size)) for name, size in sizes.items()
    }
    fit = [c for c in configs if all(c.kwargs[name] <= lim for name, lim in limits.items())]
    return fit or [min(configs, key=lambda c: math.prod(c.kwargs[name] for name in sizes))]


def bucket(m: int) -> int:
    """Power-of-two bucket of a row count, the autotune key that stands in for M."""
    return triton.next_power_of_2(max(m, 1))
