"""Tiled ternary GEMM: y = x · unpack(W)ᵀ · scale (+ bias) for many rows of x, on tensor cores.

Once x has more than a handful of rows, every weight tile is reused by many rows and the
GEMV's per-row selects run out of arithmetic; this kernel feeds tensor cores instead:

* programs own ``[BLOCK_M, BLOCK_N]`` output tiles, visited in groups of ``GROUP_M``
  row tiles so a group's programs share weight tiles while they are still in L2;
* per K step, the x tile is loaded as is, and a ``[BLOCK_N, BLOCK_K / 4]`` tile of packed
  bytes is decoded in registers (shift/mask in ``unpack_codes``, then ``code - 1`` in the
  dot dtype; trits are exact in fp16/bf16/fp32) into the ``[BLOCK_N, BLOCK_K]`` weight
  tile that ``tl.dot`` takes transposed. Weights travel from memory at 2 bits each and
  are never materialised;
* ``tl.dot`` accumulates in float32; ``scale`` and ``bias`` are applied once, in the
  epilogue, and the tile is stored in x's dtype.

Float32 inputs use TF32 when ``torch.get_float32_matmul_precision()`` allows it, as
``torch.matmul`` does, and otherwise three exact bfloat16 pieces (``dot_trits``). For
large M a dense cuBLAS GEMM on weights unpacked once is faster still: see
``dispatch.DENSE_MIN_M``.
Plain-torch reference: ``reference.ternary_linear_reference``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from tritondsl.kernels._common import interpreting, prepare_linear
from tritondsl.kernels._triton_common import (
    ZERO_TRITS_BYTE,
    bucket,
    dot_config,
    dot_trits,
    fitting_configs,
    scale_bias,
    unpack_codes,
)

# ---------------------------------------------------------------------------- configs


# Candidates the autotuner benchmarks on a GPU. fp16/bf16 fit in registers on sm_90 (on
# sm_80 all but 128x256); float32 x (three bf16 dots per step) spills in several, mostly
# on sm_80, and the autotuner passes those over as slow.
GPU_CONFIGS = [
    triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
        num_warps=warps,
        num_stages=stages,
    )
    for bm, bn, bk, warps, stages in (
        (16, 64, 128, 4, 4),
        (16, 128, 128, 4, 4),
        (32, 64, 128, 4, 4),
        (32, 128, 64, 4, 4),
        (64, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (128, 64, 64, 4, 4),
        (128, 128, 64, 8, 3),
        (128, 256, 64, 8, 3),
    )
]
# The interpreter pays ~ms of Python per program and loop step, whatever the tile size:
# one config (no benchmarking) with tiles that the larger test shapes still span several
# times (and two groups of row tiles at M = 64).
INTERPRETER_CONFIGS = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 256, "GROUP_M": 2})]


def prune_configs(
    configs: list[triton.Config], named_args: dict[str, Any], **_: Any
) -> list[triton.Config]:
    """Drop configs whose tiles overshoot M, N or K (the autotuner's early pruner)."""
    sizes = {"BLOCK_M": named_args["M"], "BLOCK_N": named_args["N"], "BLOCK_K": named_args["K"]}
    return fitting_configs(configs, sizes)


# ---------------------------------------------------------------------------- kernel


@triton.autotune(
    configs=INTERPRETER_CONFIGS if interpreting() else GPU_CONFIGS,
    key=["M_BUCKET", "N", "K"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def _gemm_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr,
    M, N, K, KB, stride_xm, stride_xk, stride_ym, scale_stride,
    M_BUCKET,  # autotune key only: retune per power-of-two M, not per M
    HAS_BIAS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, X_PIECES: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """One [BLOCK_M, BLOCK_N] tile of y, swizzled in groups of GROUP_M row tiles."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    x_rows = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm
    w_rows = w_ptr + offs_n[:, None] * KB  # row starts, hoisted out of the K loop
    offs_byte = tl.arange(0, BLOCK_K // 4)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x_mask = m_mask[:, None] & (offs_k < K)[None, :]
        x = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=x_mask, other=0.0)
        kb = k0 // 4 + offs_byte
        w_mask = n_mask[:, None] & (kb < KB)[None, :]  # x is 0 past K: only memory matters
        byte = tl.load(w_rows + kb[None, :], mask=w_mask, other=ZERO_TRITS_BYTE)
        trits = tl.reshape(unpack_codes(byte) - 1, (BLOCK_N, BLOCK_K))
        acc = dot_trits(x, tl.trans(trits), acc, DOT_DTYPE, X_PIECES, PRECISION)

    y = scale_bias(acc, offs_n, n_mask, scale_ptr, scale_stride, bias_ptr, HAS_BIAS)
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


# ---------------------------------------------------------------------------- wrapper


def ternary_gemm(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """Ternary linear through the tiled ``tl.dot`` GEMM kernel (meant for many rows of x)."""
    run = prepare_linear(x, packed, scale, bias, k)
    if run.y.numel() == 0:
        return run.output()

    def grid(meta: dict[str, Any]) -> tuple[int]:
        return (triton.cdiv(run.m, meta["BLOCK_M"]) * triton.cdiv(run.n, meta["BLOCK_N"]),)

    _gemm_kernel[grid](
        run.x, run.packed, run.scale, run.bias, run.y,
        run.m, run.n, run.k, run.packed.shape[1], run.x.stride(0), run.x.stride(1),
        run.y.stride(0), run.scale_stride, bucket(run.m), run.has_bias, **dot_config(x.dtype),
    )  # fmt: skip
    return run.output()
