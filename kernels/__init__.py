"""Ternary linear and conv2d kernels, registered as torch custom ops ``tritondsl::*``.

The package is the bottom floor of the runtime: it owns the 2-bit packing format
(``packing.py``) that ``backend``'s layers store and the kernels decode, and imports
nothing else of tritondsl.

``ternary_linear`` and ``ternary_conv2d`` run the Triton kernels (picked in
``dispatch``) for CUDA tensors, and for CPU tensors when ``TRITON_INTERPRET=1``; other
CPU tensors take the plain-torch reference (unpack, then F.linear / F.conv2d). Both have
fake implementations, so ``torch.compile`` traces them as single graph nodes.

Importing this package registers the ops and nothing more: the kernel modules (and with
them triton) load on the first call that runs a kernel. The CPU fallback never loads
them, though torch itself imports triton (through torch._dynamo, if installed) the
first time any custom op runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tritondsl.kernels._common import check_linear, conv2d_geometry, uses_triton
from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference

__all__ = ["ternary_conv2d", "ternary_linear"]


@torch.library.custom_op("tritondsl::ternary_linear", mutates_args=())
def ternary_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """y = x · unpack(packed)ᵀ · scale (+ bias) over the last dim of x, in x's dtype."""
    if uses_triton(x):
        from tritondsl.kernels.dispatch import run_linear

        return run_linear(x, packed, scale, bias, k)
    return ternary_linear_reference(x, packed, scale, bias, k)


@ternary_linear.register_fake
def _ternary_linear_fake(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    check_linear(x, packed, scale, bias, k)
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


_CONV2D_SCHEMA = (
    "(Tensor x, Tensor packed, Tensor scale, Tensor? bias, int[] weight_shape, "
    "int[2] stride=1, int[2] padding=0, int[2] dilation=1, int groups=1) -> Tensor"
)


@torch.library.custom_op("tritondsl::ternary_conv2d", mutates_args=(), schema=_CONV2D_SCHEMA)
def ternary_conv2d(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """conv2d of NCHW x with unpack(packed) as weight_shape, · scale (+ bias); contiguous NCHW."""
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, stride, padding, dilation, groups)
    if uses_triton(x):
        from tritondsl.kernels.dispatch import run_conv2d

        return run_conv2d(x, packed, scale, bias, geo)
    # F.conv2d keeps a channels_last input's layout; the fake kernel promises contiguous.
    return ternary_conv2d_reference(x, packed, scale, bias, geo).contiguous()


@ternary_conv2d.register_fake
def _ternary_conv2d_fake(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    weight_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    geo = conv2d_geometry(x, packed, scale, bias, weight_shape, stride, padding, dilation, groups)
    return x.new_empty((geo.batch, geo.c_out, geo.h_out, geo.w_out))
