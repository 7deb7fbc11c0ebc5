"""Which kernel runs a ternary linear or conv2d, chosen from the problem shape.

Matmul, by the number of rows M of x (all leading dimensions flattened):

* ``M <= GEMV_MAX_M``: split-K GEMV (``ternary_gemv``). Few rows means weight-bandwidth
  bound, where 2-bit weights pay off most and ``tl.dot``'s 16-row tiles would idle.
* ``M >= DENSE_MIN_M`` on CUDA: unpack the weights once to x's dtype and call cuBLAS
  (``dense_matmul``). Many rows make the GEMM compute-bound: every weight byte is reused
  M times, so the 8x smaller weight traffic no longer matters, while decoding trits in
  the inner loop costs issue slots cuBLAS's tensor-core kernels spend on math. One
  unpack of the [N, K] weights is amortised over the M rows.
* otherwise the tiled ``tl.dot`` GEMM (``ternary_gemm``).

Under the interpreter (CPU tensors) the dense path is never taken: those calls exist to
test the Triton kernels. Both thresholds are first guesses for an H100-class GPU and
should be set from ``benchmarks/bench_kernels.py`` runs on the target hardware.

Conv2d: a 1x1, stride-1, unpadded, ungrouped convolution is a matmul over pixels and
goes through the matmul path above; every other convolution runs the implicit-GEMM
kernel (``ternary_conv2d_igemm``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from tritondsl.kernels._common import Conv2dGeometry, check_linear
from tritondsl.kernels.packing import unpack
from tritondsl.kernels.ternary_conv2d_igemm import ternary_conv2d_igemm
from tritondsl.kernels.ternary_gemm import ternary_gemm
from tritondsl.kernels.ternary_gemv import ternary_gemv

# Rows of x up to which the split-K GEMV runs (see above; to be set from benchmarks).
GEMV_MAX_M = 8
# Rows of x from which CUDA inputs take the dense cuBLAS path (likewise).
DENSE_MIN_M = 1024

MatmulPath = Literal["gemv", "gemm", "dense"]


def matmul_path(m: int, device: torch.device) -> MatmulPath:
    """The kernel ``run_linear`` uses for ``m`` rows of x on ``device``."""
    if m <= GEMV_MAX_M:
        return "gemv"
    if m >= DENSE_MIN_M and device.type == "cuda":
        return "dense"
    return "gemm"


def dense_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """Ternary linear as one dense GEMM in x's dtype: unpack, fold the scale in, F.linear.

    The weights are unpacked once per call, which the many rows of x amortise. Folding
    the scale into them keeps this a single cuBLAS call (bias in its epilogue); the cost
    is rounding ``trit · scale`` to x's dtype once per weight.
    """
    check_linear(x, packed, scale, bias, k)
    weight = unpack(packed, x.shape[-1], x.dtype).mul_(scale.to(x.dtype)[:, None])
    return F.linear(x, weight, None if bias is None else bias.to(x.dtype))


def run_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """Ternary linear through the kernel ``matmul_path`` picks for x's row count."""
    rows = math.prod(x.shape[:-1])  # the kernels check the arguments
    kernel = {"gemv": ternary_gemv, "gemm": ternary_gemm, "dense": dense_matmul}
    return kernel[matmul_path(rows, x.device)](x, packed, scale, bias, k)


def run_conv2d(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    geo: Conv2dGeometry,
) -> torch.Tensor:
    """Ternary conv2d: pointwise convs through the matmul path, the rest by implicit GEMM."""
    if not geo.is_pointwise:
        return ternary_conv2d_igemm(x, packed, scale, bias, geo)
    # NHWC rows, one per pixel (a view when x is already channels_last).
    rows = x.permute(0, 2, 3, 1).reshape(-1, geo.c_in)
    y = run_linear(rows, packed, scale, bias)
    return y.reshape(geo.batch, geo.height, geo.width, geo.c_out).permute(0, 3, 1, 2).contiguous()
