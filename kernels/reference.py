"""Plain-torch references for the ternary kernels: the definition every kernel is tested against.

They unpack the weights with ``kernels.packing.unpack`` (the packing spec) and compute in
float32, so they are exact up to summation order. They also serve as the CPU path when
Triton is not in use, which is why they live in this triton-free module rather than in
the kernel files (triton is only installed on Linux x86-64; see pyproject.toml).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritondsl.kernels._common import Conv2dGeometry, check_linear
from tritondsl.kernels.packing import unpack


def ternary_linear_reference(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    k: int | None = None,
) -> torch.Tensor:
    """y = x · unpack(packed)ᵀ · scale (+ bias), computed in float32 and returned in x's dtype."""
    check_linear(x, packed, scale, bias, k)
    weight = unpack(packed, x.shape[-1], torch.float32)
    y = F.linear(x.float(), weight) * scale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def ternary_conv2d_reference(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    geo: Conv2dGeometry,
) -> torch.Tensor:
    """conv2d(x, unpack(packed) as geo's weight) · scale (+ bias) in float32, in x's dtype.

    ``geo`` is ``conv2d_geometry`` of these arguments (it checks them).
    """
    weight = unpack(packed, geo.k_group, torch.float32).reshape(
        geo.c_out, geo.c_in // geo.groups, geo.kh, geo.kw
    )
    y = F.conv2d(x.float(), weight, None, geo.stride, geo.padding, geo.dilation, geo.groups)
    y = y * scale.float().reshape(-1, 1, 1)
    if bias is not None:
        y = y + bias.float().reshape(-1, 1, 1)
    return y.to(x.dtype)
