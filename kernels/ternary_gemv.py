"""Split-K ternary GEMV: y = x · unpack(W)ᵀ · scale (+ bias) for a few rows of x.

With few rows the work is bound by reading the weights, so this kernel is built to
stream the packed bytes once (2 bits per weight, 8x less than fp16) and nothing else:

* one program owns one row of x, ``BLOCK_N`` output channels and one of ``SPLIT_K``
  slices of K. The row is the fastest grid axis, so the programs that share a weight
  tile run back to back and the tile's re-reads hit L2;
* each step loads a ``[BLOCK_N, BLOCK_K / 4]`` tile of packed bytes (contiguous along K),
  spreads it into ``[BLOCK_N, BLOCK_K / 4, 4]`` codes in registers with shift/mask
  (``unpack_codes``) and applies them to x, loaded as the matching ``[BLOCK_K / 4, 4]``
  tile, with selects: ``+x`` for code 2, ``-x`` for code 0. The inner loop has no
  multiply and never materialises the weights in memory;
* accumulation is float32. ``scale`` and ``bias`` are applied once, in the epilogue;
* ``SPLIT_K`` (chosen by ``choose_split_k``, not autotuned, because the wrapper must size
  the workspace) gives small-N layers enough programs to fill the GPU. With one slice
  the epilogue is fused; otherwise each slice stores float32 partials ``[SPLIT_K, M, N]``
  and ``_splitk_reduce_kernel`` sums them (deterministically, no atomics) and applies the
  epilogue.

Rows beyond a handful re-read the weight tile once per row; ``tl.dot`` tiles
(``ternary_gemm``) win there, and ``dispatch.GEMV_MAX_M`` picks between the two.
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
    fitting_configs,
    scale_bias,
    unpack_codes,
)

# ---------------------------------------------------------------------------- configs

# Split K only while each slice keeps at least this many trits: shorter slices spend
# more on writing and re-reading partial sums than they gain in parallelism.
MIN_K_PER_SPLIT = 512
MAX_SPLIT_K = 16
# Output tile assumed when sizing SPLIT_K (the autotuned BLOCK_N is not known up front).
_NOMINAL_BLOCK_N = 64
_REDUCE_BLOCK_N = 128


# Candidates the autotuner benchmarks on a GPU (none spills registers on sm_80/sm_90).
GPU_CONFIGS = [
    triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps)
    for bn, bk, warps in (
        (16, 256, 4),
        (32, 128, 4),
        (32, 256, 4),
        (64, 128, 4),
        (64, 256, 8),
        (128, 64, 4),
        (128, 128, 8),
    )
]
# The interpreter pays ~ms of Python per program and loop step, whatever the tile size:
# one config (no benchmarking), with tiles the larger test shapes still span several
# times, which exercises the loop and the tile masks.
INTERPRETER_CONFIGS = [triton.Config({"BLOCK_N": 128, "BLOCK_K": 512})]


def prune_configs(
    configs: list[triton.Config], named_args: dict[str, Any], **_: Any
) -> list[triton.Config]:
    """Drop configs whose tiles overshoot N or the K slice (the autotuner's early pruner)."""
    split_len = triton.cdiv(named_args["K"], named_args["SPLIT_K"])
    return fitting_configs(configs, {"BLOCK_N": named_args["N"], "BLOCK_K": split_len})


# ---------------------------------------------------------------------------- kernels


@triton.autotune(
    configs=INTERPRETER_CONFIGS if interpreting() else GPU_CONFIGS,
    key=["N", "K", "SPLIT_K"],
    prune_configs_by={"early_config_prune": prune_configs},
)
@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, part_ptr,
    M, N, K, KB, stride_xm, stride_xk, stride_ym, scale_stride,
    SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Row ``program_id(0)`` of x against ``BLOCK_N`` packed rows over one K slice."""
    row = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    w_rows = w_ptr + offs_n[:, None] * KB  # row starts, hoisted out of the K loop
    x_row = x_ptr + row.to(tl.int64) * stride_xm
    offs_byte = tl.arange(0, BLOCK_K // 4)
    offs_code = tl.arange(0, 4)

    # Slices are whole BLOCK_K steps so they never overlap; trailing ones may be empty.
    k_per_split = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = split * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        kb = k0 // 4 + offs_byte  # k0 is a multiple of BLOCK_K, so of 4
        ks = 4 * kb[:, None] + offs_code[None, :]  # [BLOCK_K / 4, 4]: trit j of byte b
        x = tl.load(x_row + ks * stride_xk, mask=ks < k_hi, other=0.0).to(tl.float32)
        # Bytes past the slice but inside the row are harmless (their x is 0); bounding
        # by the row length alone keeps the mask uniform, so the loads can vectorise.
        w_mask = n_mask[:, None] & (kb < KB)[None, :]
        byte = tl.load(w_rows + kb[None, :], mask=w_mask, other=ZERO_TRITS_BYTE)
        codes = unpack_codes(byte)  # [BLOCK_N, BLOCK_K / 4, 4]
        xb = x[None, :, :]
        picked = tl.where(codes == 2, xb, tl.where(codes == 0, -xb, 0.0))
        acc += tl.sum(tl.sum(picked, axis=2), axis=1)

    if SPLIT_K == 1:
        y = scale_bias(acc, offs_n, n_mask, scale_ptr, scale_stride, bias_ptr, HAS_BIAS)
        y_ptrs = y_ptr + row.to(tl.int64) * stride_ym + offs_n
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=n_mask)
    else:
        part_ptrs = part_ptr + (split * M + row).to(tl.int64) * N + offs_n
        tl.store(part_ptrs, acc, mask=n_mask)


@triton.jit
def _splitk_reduce_kernel(
    part_ptr, scale_ptr, bias_ptr, y_ptr, M, N, stride_ym, scale_stride,
    SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Sum the SPLIT_K float32 partials of one row tile, then scale, add bias and cast."""
    row = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for split in tl.static_range(SPLIT_K):
        acc += tl.load(part_ptr + (split * M + row).to(tl.int64) * N + offs_n, mask=n_mask)
    y = scale_bias(acc, offs_n, n_mask, scale_ptr, scale_stride, bias_ptr, HAS_BIAS)
    tl.store(
        y_ptr + row.to(tl.int64) * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=n_mask
    )


# ---------------------------------------------------------------------------- wrapper


def choose_split_k(m: int, n: int, k: int, device: torch.device) -> int:
    """K slices for an [m, k] x [k, n] GEMV: enough programs for two waves, slices >= 512 trits."""
    # The interpreter (CPU) runs one program at a time: count it as a single SM.
    sms = (
        torch.cuda.get_device_properties(device).multi_processor_count
        if device.type == "cuda"
        else 1
    )
    tiles = max(1, m * triton.cdiv(n, _NOMINAL_BLOCK_N))
    wanted = triton.cdiv(2 * sms, tiles)
    return max(1, min(wanted, MAX_SPLIT_K, k // MIN_K_PER_SPLIT))


def ternary_gemv(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
    split_k: int | None = None,
) -> torch.Tensor:
    """Ternary linear through the split-K GEMV kernel (``split_k`` from ``choose_split_k``)."""
    run = prepare_linear(x, packed, scale, bias, k)
    if run.y.numel() == 0:
        return run.output()
    m, n, y = run.m, run.n, run.y
    if split_k is None:
        split_k = choose_split_k(m, n, run.k, x.device)
    elif split_k < 1:
        raise ValueError(f"split_k must be >= 1, got {split_k}")
    part = (
        torch.empty((split_k, m, n), device=x.device, dtype=torch.float32)
        if split_k > 1
        else y  # unused: with one slice the kernel writes y directly
    )

    def grid(meta: dict[str, Any]) -> tuple[int, int, int]:
        return m, triton.cdiv(n, meta["BLOCK_N"]), split_k

    _gemv_kernel[grid](
        run.x, run.packed, run.scale, run.bias, y, part,
        m, n, run.k, run.packed.shape[1], run.x.stride(0), run.x.stride(1), y.stride(0),
        run.scale_stride, split_k, run.has_bias,
    )  # fmt: skip
    if split_k > 1:
        reduce_grid = (m, triton.cdiv(n, _REDUCE_BLOCK_N))
        _splitk_reduce_kernel[reduce_grid](
            part, run.scale, run.bias, y, m, n, y.stride(0), run.scale_stride,
            split_k, run.has_bias, _REDUCE_BLOCK_N,
        )  # fmt: skip
    return run.output()
