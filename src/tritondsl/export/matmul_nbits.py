"""Ternary Linear layers as ``com.microsoft`` ``MatMulNBits`` with 2-bit weights.

onnxruntime's ``MatMulNBits`` computes ``Y = A · Bᵀ`` with B stored ``bits`` per weight in
blocks of ``block_size`` along K, each block with its own scale and zero point:
``B[n, k] = (code - zero_point) · scale``. A ternary weight fits exactly in 2 bits:
``code = trit + 1`` with zero point 1, and every block of a row gets that row's scale.
With the session entry ``mlas.use_lut_gemm=1`` (``onnx_session`` sets it) onnxruntime runs
its lookup-table kernel, which measured 0.19-0.24x the time of an fp32 MatMul for one row
(M = 1: decoding) on this CPU; it quantizes the activations itself (relative error about
0.01). The kernel needs K % 32 == 0 and N % 128 == 0 (``lut_unsupported``); other shapes,
and M >= 16, are better served by the int8 path (QGemm).

Layouts (onnxruntime's contrib op spec): B uint8 ``[N, K/block, block/4]``, four codes a
byte, the first in the low bits; scales float32 ``[N · K/block]``; zero points uint8
``[N, ceil((K/block)/4)]``, also four per byte. K is padded to whole blocks with code 1
(weight 0). Files with MatMulNBits need ``ir_version`` <= 13 for onnxruntime 1.31.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

BITS = 2
BLOCK_SIZE = 32
LUT_K_MULTIPLE = 32
LUT_N_MULTIPLE = 128
DOMAIN = "com.microsoft"
ACCURACY_LEVEL = 4  # int8 compute where no LUT kernel applies (onnxruntime's fastest)


def lut_unsupported(k: int, n: int) -> str | None:
    """Why the lookup-table kernel cannot take a K x N weight, or None when it can."""
    reasons = []
    if k % LUT_K_MULTIPLE:
        reasons.append(f"K={k} is not a multiple of {LUT_K_MULTIPLE}")
    if n % LUT_N_MULTIPLE:
        reasons.append(f"N={n} is not a multiple of {LUT_N_MULTIPLE}")
    return "; ".join(reasons) or None


def _pack4(codes: np.ndarray) -> np.ndarray:
    """uint8 codes (< 4) along the last axis -> bytes of four, first code in the low bits."""
    pad = (-codes.shape[-1]) % 4
    if pad:
        filler = np.ones((*codes.shape[:-1], pad), np.uint8)  # code 1 = weight 0 / zero point 1
        codes = np.concatenate([codes, filler], axis=-1)
    quads = codes.reshape(*codes.shape[:-1], -1, 4).astype(np.uint8)
    return quads[..., 0] | quads[..., 1] << 2 | quads[..., 2] << 4 | quads[..., 3] << 6


def matmul_nbits(
    name: str,
    a: str,
    y: str,
    trits: np.ndarray,
    scale: np.ndarray | float,
    block_size: int = BLOCK_SIZE,
    accuracy_level: int = ACCURACY_LEVEL,
) -> tuple[NodeProto, list[TensorProto]]:
    """A MatMulNBits node ``y = a · (trits · scale)ᵀ`` and its initializers (named ``name.*``).

    ``trits`` int8 [N, K] in {-1, 0, 1}; ``scale`` one per row [N] or one for all;
    ``accuracy_level`` 0 computes in fp32, 4 with int8 activations (onnxruntime's levels).
    """
    trits = np.asarray(trits)
    if trits.ndim != 2 or not np.isin(trits, (-1, 0, 1)).all():
        raise ValueError(f"{name}: MatMulNBits takes a 2-D ternary weight, got {trits.shape}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"{name}: block_size must be a power of two >= 16, got {block_size}")
    n, k = trits.shape
    blocks = math.ceil(k / block_size)
    codes = np.ones((n, blocks * block_size), np.uint8)
    codes[:, :k] = (trits + 1).astype(np.uint8)
    packed = _pack4(codes.reshape(n, blocks, block_size))  # [N, blocks, block/4]
    rows = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (n,))
    scales = np.repeat(rows, blocks).astype(np.float32)
    zero_points = _pack4(np.ones((n, blocks), np.uint8))
    inits = [
        numpy_helper.from_array(packed, f"{name}.B"),
        numpy_helper.from_array(scales, f"{name}.scales"),
        numpy_helper.from_array(zero_points, f"{name}.zero_points"),
    ]
    node = helper.make_node(
        "MatMulNBits",
        [a, *(t.name for t in inits)],
        [y],
        name=name,
        domain=DOMAIN,
        K=k,
        N=n,
        bits=BITS,
        block_size=block_size,
        accuracy_level=accuracy_level,
    )
    return node, inits
