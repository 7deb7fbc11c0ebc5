"""Implicit-GEMM ternary conv2d: stride, padding, dilation and groups (depthwise included).

Each group of a grouped convolution is a GEMM: rows are output pixels
(M = batch · h_out · w_out), columns the group's output channels (N = out / groups) and
the reduction runs over K = (in / groups) · kh · kw in ``weight.reshape(out, -1)`` order,
i.e. ``k = (c · kh + r) · kw + s``, which is exactly how the weight rows were packed.
The kernel never builds the im2col matrix:

* the grid is (pixel tiles, channel tiles, groups); each program decodes its pixels'
  (batch, oh, ow) once, then per K step turns the ``BLOCK_K`` indices into (c, r, s)
  with divisions by the compile-time kernel size and gathers the input tile straight
  from NCHW memory, padding (and the K tail) read as zeros through the load mask;
* a ``[BLOCK_N, BLOCK_K / 4]`` tile of packed bytes is decoded in registers (shift/mask
  in ``unpack_codes``) into the weight tile that ``tl.dot`` takes transposed, float32
  accumulation; ``scale`` and ``bias`` are applied once in the epilogue, stored NCHW.

Depthwise layers (one channel per group) use one column of each 16-wide ``tl.dot`` tile.
That, and whether unpacking once to fp16 + cuDNN beats this kernel on a GPU at all, is for
``benchmarks/bench_kernels.py`` to decide: until measured, CUDA inputs run this kernel.
1x1 stride-1 ungrouped convolutions go through the matmul kernels instead (``dispatch``).
Plain-torch reference: ``reference.ternary_conv2d_reference``.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from tritondsl.kernels._common import Conv2dGeometry, epilogue_args, interpreting
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


# Candidates the autotuner benchmarks on a GPU: none spills registers on sm_80/sm_90 in
# any dtype (128x128 tiles did, holding the per-element gather addresses).
GPU_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)
    for bm, bn, bk, warps, stages in (
        (64, 16, 32, 4, 3),
        (128, 16, 32, 8, 3),
        (64, 32, 32, 4, 3),
        (64, 64, 32, 4, 3),
        (128, 64, 32, 8, 3),
        (64, 128, 32, 8, 3),
    )
]
# The interpreter pays ~ms of Python per program and loop step: one config (no
# benchmarking), small enough that the test shapes span several tiles each way.
INTERPRETER_CONFIGS = [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 32})]


def prune_configs(
    configs: list[triton.Config], named_args: dict[str, Any], **_: Any
) -> list[triton.Config]:
    """Drop configs whose tiles overshoot the pixels, channels or K of a group."""
    pixels = named_args["BATCH"] * named_args["H_OUT"] * named_args["W_OUT"]
    sizes = {"BLOCK_M": pixels, "BLOCK_N": named_args["N_G"], "BLOCK_K": named_args["K_G"]}
    return fitting_configs(configs, sizes)


# ---------------------------------------------------------------------------- kernel


@triton.autotune(
    configs=INTERPRETER_CONFIGS if interpreting() else GPU_CONFIGS,
    key=["M_BUCKET", "N_G", "K_G", "KH", "KW"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def _conv2d_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr,
    BATCH, C_IN_G, H, W, H_OUT, W_OUT, N_G, K_G, KB,
    stride_xb, stride_xc, stride_xh, stride_xw,
    stride_yb, stride_yc, stride_yh, stride_yw,
    scale_stride, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    M_BUCKET,  # autotune key only: retune per power-of-two pixel count
    KH: tl.constexpr, KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_DTYPE: tl.constexpr, X_PIECES: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Pixels ``program_id(0)`` x channels ``program_id(1)`` of group ``program_id(2)``."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)

    # Output pixel -> (batch, oh, ow) and the input corner its window starts at.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < BATCH * H_OUT * W_OUT
    batch = offs_m // (H_OUT * W_OUT)
    pixel = offs_m % (H_OUT * W_OUT)
    oh = pixel // W_OUT
    ow = pixel % W_OUT
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    x_base = x_ptr + batch.to(tl.int64) * stride_xb + (group * C_IN_G).to(tl.int64) * stride_xc

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N_G
    out_ch = group * N_G + offs_n
    w_rows = w_ptr + out_ch[:, None] * KB  # row starts, hoisted out of the K loop
    offs_byte = tl.arange(0, BLOCK_K // 4)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K_G, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K_G
        # k = (c * KH + r) * KW + s; KH and KW are constexpr, so these are cheap.
        c = offs_k // (KH * KW)
        r = (offs_k // KW) % KH
        s = offs_k % KW
        ih = ih0[:, None] + (r * DIL_H)[None, :]
        iw = iw0[:, None] + (s * DIL_W)[None, :]
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_ptrs = x_base[:, None] + c[None, :] * stride_xc + ih * stride_xh + iw * stride_xw
        x_mask = m_mask[:, None] & k_mask[None, :] & inside
        x = tl.load(x_ptrs, mask=x_mask, other=0.0)
        kb = k0 // 4 + offs_byte
        w_mask = n_mask[:, None] & (kb < KB)[None, :]  # x is 0 past K: only memory matters
        byte = tl.load(w_rows + kb[None, :], mask=w_mask, other=ZERO_TRITS_BYTE)
        trits = tl.reshape(unpack_codes(byte) - 1, (BLOCK_N, BLOCK_K))
        acc = dot_trits(x, tl.trans(trits), acc, DOT_DTYPE, X_PIECES, PRECISION)

    y = scale_bias(acc, out_ch, n_mask, scale_ptr, scale_stride, bias_ptr, HAS_BIAS)
    y_ptrs = (
        y_ptr
        + (batch.to(tl.int64) * stride_yb + oh * stride_yh + ow * stride_yw)[:, None]
        + out_ch[None, :] * stride_yc
    )
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


# ---------------------------------------------------------------------------- wrapper


def ternary_conv2d_igemm(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    geo: Conv2dGeometry,
) -> torch.Tensor:
    """Ternary conv2d of NCHW ``x`` through the implicit-GEMM kernel; NCHW out, in x's dtype.

    ``geo`` is ``conv2d_geometry`` of these arguments (it checks them).
    """
    geo.require(x, packed)  # the kernel trusts these sizes with raw pointers
    y = torch.empty((geo.batch, geo.c_out, geo.h_out, geo.w_out), device=x.device, dtype=x.dtype)
    if y.numel() == 0:
        return y
    packed = packed.contiguous()
    scale, bias_arg, scale_stride = epilogue_args(scale, bias)
    pixels = geo.batch * geo.h_out * geo.w_out

    def grid(meta: dict[str, Any]) -> tuple[int, int, int]:
        return (
            triton.cdiv(pixels, meta["BLOCK_M"]),
            triton.cdiv(geo.n_group, meta["BLOCK_N"]),
            geo.groups,
        )

    _conv2d_kernel[grid](
        x, packed, scale, bias_arg, y,
        geo.batch, geo.c_in // geo.groups, geo.height, geo.width, geo.h_out, geo.w_out,
        geo.n_group, geo.k_group, packed.shape[1],
        *x.stride(), *y.stride(),
        scale_stride, *geo.stride, *geo.padding, *geo.dilation,
        bucket(pixels), geo.kh, geo.kw,
        bias is not None, **dot_config(x.dtype),
    )  # fmt: skip
    return y
