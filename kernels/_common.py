"""Triton-free helpers shared by the kernel package: argument checks and the Triton switch.

Everything here imports without triton, because the plain-torch fallback, the fake
kernels ``torch.compile`` traces with and the references all run these checks. The
checks look only at shapes, dtypes and devices (never at values), so they are safe
on fake tensors and cost nothing next to a kernel launch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tritondsl.kernels.packing import check_layout, packed_cols

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Values triton.knobs accepts as true for TRITON_INTERPRET (read here without importing triton).
_TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})


def interpreting() -> bool:
    """Whether Triton kernels run through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE_WORDS


TRITON_MISSING = "the Triton kernels need triton: pip install 'tritondsl[gpu]'"


@functools.cache
def triton_installed() -> bool:
    """Whether triton can be imported (it is the ``gpu`` extra), without importing it."""
    return importlib.util.find_spec("triton") is not None


def uses_triton(x: torch.Tensor) -> bool:
    """Whether an op on ``x`` runs the Triton kernels rather than the plain-torch reference.

    Without triton, CUDA tensors take the reference (with one warning saying what to
    install) and ``TRITON_INTERPRET=1`` on CPU, which asks for the kernels, is an error.
    """
    wanted = x.device.type == "cuda" or (x.device.type == "cpu" and interpreting())
    if wanted and not triton_installed():
        if x.device.type == "cpu":
            raise ImportError(f"TRITON_INTERPRET=1: {TRITON_MISSING}")
        warnings.warn(f"{TRITON_MISSING}; using the plain-torch reference", stacklevel=2)
        return False
    return wanted


def _check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32, float16 or bfloat16, got {t.dtype}")


def _check_device(t: torch.Tensor, name: str, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the device of x), got {t.device}")


def _check_channel_vector(
    t: torch.Tensor, name: str, n: int, device: torch.device, allow_scalar: bool
) -> None:
    _check_float(t, name)
    _check_device(t, name, device)
    sizes = (1, n) if allow_scalar else (n,)
    if t.dim() != 1 or t.shape[0] not in sizes:
        wanted = f"[{n}] or [1]" if allow_scalar else f"[{n}]"
        raise ValueError(f"{name}: expected shape {wanted}, got {list(t.shape)}")


def check_epilogue(
    scale: torch.Tensor, bias: torch.Tensor | None, n: int, device: torch.device
) -> None:
    """Check a per-channel (or per-tensor) ``scale`` and optional ``bias`` for ``n`` outputs."""
    _check_channel_vector(scale, "scale", n, device, allow_scalar=True)
    if bias is not None:
        _check_channel_vector(bias, "bias", n, device, allow_scalar=False)


def check_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    k: int | None,
) -> None:
    """Raise a clear error unless the arguments describe x [..., K] times packed [N, ceil(K/4)]."""
    _check_float(x, "x")
    if x.dim() == 0:
        raise ValueError("x: expected a tensor of shape [..., K], got a scalar")
    in_features = x.shape[-1]
    if k is not None and k != in_features:
        raise ValueError(f"k={k} does not match the last dimension of x ({in_features})")
    check_layout(packed, in_features, "packed")
    _check_device(packed, "packed", x.device)
    check_epilogue(scale, bias, packed.shape[0], x.device)


def epilogue_args(
    scale: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """What a kernel's epilogue takes: contiguous scale, a bias pointer, the scale stride.

    Without a bias the scale stands in for the pointer (kernels never read it when
    ``HAS_BIAS`` is False); the stride is 0 for one per-tensor scale, else 1.
    """
    scale = scale.contiguous()
    bias_arg = scale if bias is None else bias.contiguous()
    return scale, bias_arg, 0 if scale.numel() == 1 else 1


@dataclass(frozen=True)
class LinearLaunch:
    """The shared set-up of a ternary linear kernel launch (GEMM and GEMV wrappers)."""

    x: torch.Tensor  # [M, K], a view of the caller's x
    packed: torch.Tensor  # contiguous [N, ceil(K / 4)]
    scale: torch.Tensor
    bias: torch.Tensor  # a pointer argument; read only when has_bias
    scale_stride: int
    has_bias: bool
    y: torch.Tensor  # [M, N], x's dtype, to be filled
    out_shape: tuple[int, ...]  # x's leading dimensions, then N

    @property
    def m(self) -> int:
        """Rows of x (every leading dimension flattened)."""
        return self.x.shape[0]

    @property
    def n(self) -> int:
        """Output features."""
        return self.y.shape[1]

    @property
    def k(self) -> int:
        """Input features (the reduction length)."""
        return self.x.shape[1]

    def output(self) -> torch.Tensor:
        """``y`` shaped like the caller's x with its last dimension replaced by N."""
        return self.y.reshape(self.out_shape)


def prepare_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    k: int | None,
) -> LinearLaunch:
    """Check a ternary linear call and lay out its kernel arguments and output."""
    check_linear(x, packed, scale, bias, k)
    x2 = x.reshape(-1, x.shape[-1])
    n = packed.shape[0]
    y = torch.empty((x2.shape[0], n), device=x.device, dtype=x.dtype)
    scale, bias_arg, scale_stride = epilogue_args(scale, bias)
    return LinearLaunch(
        x2, packed.contiguous(), scale, bias_arg, scale_stride, bias is not None, y,
        (*x.shape[:-1], n),
    )  # fmt: skip


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``(v, v)`` for an int, the two entries of a length-2 sequence, else a ValueError."""
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"{name}: expected an int or two ints, got {list(value)}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class Conv2dGeometry:
    """Sizes of a grouped 2-D convolution over NCHW input, seen as one GEMM per group."""

    batch: int
    c_in: int
    height: int
    width: int
    c_out: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    h_out: int
    w_out: int

    @property
    def k_group(self) -> int:
        """Reduction length of one output channel: (c_in / groups) · kh · kw."""
        return self.c_in // self.groups * self.kh * self.kw

    @property
    def n_group(self) -> int:
        """Output channels per group."""
        return self.c_out // self.groups

    def require(self, x: torch.Tensor, packed: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` and ``packed`` have the sizes this geometry is for."""
        if tuple(x.shape) != (self.batch, self.c_in, self.height, self.width):
            raise ValueError(f"x: shape {list(x.shape)} does not match the conv geometry {self}")
        if tuple(packed.shape) != (self.c_out, packed_cols(self.k_group)):
            raise ValueError(f"packed: shape {list(packed.shape)} does not match {self}")

    @property
    def is_pointwise(self) -> bool:
        """True for a 1×1, stride-1, unpadded, ungrouped conv: a plain matmul over pixels."""
        return (
            (self.kh, self.kw) == (1, 1)
            and self.stride == (1, 1)
            and self.padding == (0, 0)
            and self.groups == 1
        )


def conv2d_geometry(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    weight_shape: Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
) -> Conv2dGeometry:
    """Check a ternary conv2d call (clear errors) and return its geometry."""
    _check_float(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x: expected an NCHW tensor [B, C, H, W], got shape {list(x.shape)}")
    if len(weight_shape) != 4:
        raise ValueError(
            f"weight_shape: expected [out, in/groups, kh, kw], got {list(weight_shape)}"
        )
    c_out, c_in_group, kh, kw = (int(s) for s in weight_shape)
    batch, c_in, height, width = x.shape
    stride_, padding_, dilation_ = (
        pair(stride, "stride"),
        pair(padding, "padding"),
        pair(dilation, "dilation"),
    )
    if groups < 1 or c_out % groups:
        raise ValueError(f"groups={groups} must be positive and divide out_channels={c_out}")
    if c_in_group * groups != c_in:
        raise ValueError(
            f"x has {c_in} channels but weight_shape {list(weight_shape)} with groups={groups} "
            f"expects {c_in_group * groups}"
        )
    if min(stride_) < 1 or min(dilation_) < 1 or min(padding_) < 0:
        raise ValueError(
            f"stride and dilation must be >= 1 and padding >= 0, got stride={stride_}, "
            f"padding={padding_}, dilation={dilation_}"
        )
    h_out = (height + 2 * padding_[0] - dilation_[0] * (kh - 1) - 1) // stride_[0] + 1
    w_out = (width + 2 * padding_[1] - dilation_[1] * (kw - 1) - 1) // stride_[1] + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"kernel {kh}x{kw} (dilation {dilation_}) does not fit input {height}x{width} "
            f"padded by {padding_}"
        )
    k_group = c_in_group * kh * kw
    check_layout(packed, k_group, "packed")
    if packed.shape[0] != c_out:
        raise ValueError(
            f"packed: expected [{c_out}, {packed_cols(k_group)}] for weight_shape "
            f"{list(weight_shape)}, got {list(packed.shape)}"
        )
    _check_device(packed, "packed", x.device)
    check_epilogue(scale, bias, c_out, x.device)
    return Conv2dGeometry(
        batch, c_in, height, width, c_out, kh, kw,
        stride_, padding_, dilation_, groups, h_out, w_out,
    )  # fmt: skip
