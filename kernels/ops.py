"""The custom ops ``tritondsl::ternary_linear`` and ``tritondsl::ternary_conv2d``.

They live here, not in the package's ``__init__``, so that registering them happens once per
process: the repository root on sys.path (pytest, ``python -m`` in a checkout) also makes
the folder importable as plain ``kernels`` (the name of Hugging Face's kernels package, which
transformers probes by importing it). That import runs ``__init__`` a second time, and it
then re-exports these objects by their absolute name instead of registering the ops again,
whose failure would make torch free the operators the first copy still calls (a segfault on
the next call).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tritondsl.kernels._common import check_linear, conv2d_geometry, uses_triton
from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference


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
