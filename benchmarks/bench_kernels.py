"""Ternary kernels against torch's dense layers, side by side, as speedups.

    python benchmarks/bench_kernels.py [--quick] [--device cpu|cuda] [--no-conv]

Speedup = baseline time / ternary time, so above 1 the ternary path is faster.

GPU: ``ternary_linear`` (whatever ``dispatch`` picks) against fp16 ``F.linear`` (a cuBLAS
matmul) with dense weights, both timed with ``triton.testing.do_bench`` (median). The GEMV, GEMM
and dense-fallback paths are also timed on their own, which is what the thresholds
``dispatch.GEMV_MAX_M`` and ``dispatch.DENSE_MIN_M`` should be set from. The conv table
sets ``ternary_conv2d`` (implicit GEMM) against cuDNN on dense fp16 weights, plus the
alternative of unpacking per call and running cuDNN: the numbers that decide whether
the implicit-GEMM kernel should stay the CUDA path.

CPU: the ternary path is the plain-torch reference (unpack, then fp32 F.linear /
F.conv2d) against fp32 F.linear / F.conv2d on dense weights, median wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from tritondsl.kernels import ternary_conv2d, ternary_linear
from tritondsl.kernels._common import conv2d_geometry
from tritondsl.kernels.packing import pack, unpack
from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference

ROWS = (1, 16, 128, 4096)
SIZES = (4096, 8192)
QUICK_ROWS = (1, 16, 128)
QUICK_SIZES = (512, 1024)
# (name, x shape NCHW, weight shape, stride, padding, groups)
CONVS = (
    ("3x3", (32, 64, 56, 56), (64, 64, 3, 3), 1, 1, 1),
    ("3x3/2", (32, 128, 56, 56), (256, 128, 3, 3), 2, 1, 1),
    ("depthwise 3x3", (32, 256, 28, 28), (256, 1, 3, 3), 1, 1, 256),
    ("1x1", (32, 256, 28, 28), (512, 256, 1, 1), 1, 0, 1),
)
QUICK_CONVS = (
    ("3x3", (2, 16, 28, 28), (32, 16, 3, 3), 1, 1, 1),
    ("depthwise 3x3", (2, 32, 28, 28), (32, 1, 3, 3), 1, 1, 32),
    ("1x1", (2, 32, 28, 28), (64, 32, 1, 1), 1, 0, 1),
)
# The GEMV runs one program per row: past this many rows it is not worth timing.
GEMV_TIMING_MAX_ROWS = 16


def time_ms(fn: Callable[[], object], device: torch.device, budget_s: float = 1.0) -> float:
    """Median milliseconds per call of ``fn``: do_bench on CUDA, wall-clock repeats on CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, return_mode="median"))
    fn()  # warm-up (allocator, lazy imports)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 100):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.4f}"


def _ternary_layer(
    out_features: int, in_features: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random packed weights, scale and bias, plus the equal dense weight for the baseline."""
    packed = pack(torch.randint(-1, 2, (out_features, in_features), dtype=torch.int8)).to(device)
    scale = torch.rand(out_features, device=device) + 0.5
    bias = torch.randn(out_features, device=device)
    dense = (unpack(packed, in_features, torch.float32) * scale[:, None]).to(dtype)
    return packed, scale, bias, dense


def bench_linear(device: torch.device, rows: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    """Print the matmul table: ternary path vs dense torch.matmul for each (M, K = N)."""
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    base_name = "fp16 mm" if cuda else "fp32 mm"
    print(f"\nlinear  y[M, N] = x[M, K] · Wᵀ  ({device.type}, x {dtype}, K = N)")
    header = f"{'M':>6} {'K=N':>6} {'path':>9} {'ternary ms':>11} {base_name + ' ms':>11} "
    header += f"{'speedup':>8} {'gemv ms':>9} {'gemm ms':>9} {'dense ms':>9}"
    print(header)
    for size in sizes:
        packed, scale, bias, dense = _ternary_layer(size, size, dtype, device)
        for m in rows:
            x = torch.randn(m, size, device=device, dtype=dtype)
            base = time_ms(partial(F.linear, x, dense, bias.to(dtype)), device)
            per_kernel: dict[str, float | None] = {"gemv": None, "gemm": None, "dense": None}
            if cuda:
                from tritondsl.kernels import dispatch  # imports triton: CUDA runs only

                path = dispatch.matmul_path(m, device)
                ternary = time_ms(partial(ternary_linear, x, packed, scale, bias), device)
                kernels = {
                    "gemv": dispatch.ternary_gemv,
                    "gemm": dispatch.ternary_gemm,
                    "dense": dispatch.dense_matmul,
                }
                for name, kernel in kernels.items():
                    if name != "gemv" or m <= GEMV_TIMING_MAX_ROWS:
                        per_kernel[name] = time_ms(partial(kernel, x, packed, scale, bias), device)
            else:
                path = "reference"
                ternary = time_ms(partial(ternary_linear_reference, x, packed, scale, bias), device)
            print(
                f"{m:>6} {size:>6} {path:>9} {_fmt(ternary):>11} {_fmt(base):>11} "
                f"{base / ternary:>7.2f}x {_fmt(per_kernel['gemv']):>9} "
                f"{_fmt(per_kernel['gemm']):>9} {_fmt(per_kernel['dense']):>9}"
            )


def _unpack_then_conv(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    weight_shape: tuple[int, int, int, int],
    stride: int,
    padding: int,
    groups: int,
) -> torch.Tensor:
    """The alternative CUDA conv path: unpack to x's dtype on every call, then cuDNN."""
    k = weight_shape[1] * weight_shape[2] * weight_shape[3]
    weight = unpack(packed, k, x.dtype).mul_(scale.to(x.dtype)[:, None]).reshape(weight_shape)
    return F.conv2d(x, weight, bias.to(x.dtype), stride, padding, 1, groups)


def bench_conv(device: torch.device, convs: tuple) -> None:
    """Print the conv table: ternary conv vs cuDNN (or CPU) conv on dense weights."""
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    print(f"\nconv2d  ({device.type}, x {dtype}, NCHW)")
    print(
        f"{'layer':>14} {'x shape':>20} {'ternary ms':>11} {'dense ms':>10} {'speedup':>8} "
        f"{'unpack+dense ms':>16}"
    )
    for name, x_shape, weight_shape, stride, padding, groups in convs:
        c_out, c_in_group, kh, kw = weight_shape
        packed, scale, bias, dense = _ternary_layer(c_out, c_in_group * kh * kw, dtype, device)
        x = torch.randn(x_shape, device=device, dtype=dtype)
        conv = (weight_shape, stride, padding, 1, groups)
        if cuda:
            ternary = time_ms(partial(ternary_conv2d, x, packed, scale, bias, *conv), device)
        else:
            geo = conv2d_geometry(x, packed, scale, bias, *conv)
            ternary = time_ms(
                partial(ternary_conv2d_reference, x, packed, scale, bias, geo), device
            )
        dense_conv = partial(
            F.conv2d, x, dense.reshape(weight_shape), bias.to(dtype), stride, padding, 1, groups
        )
        base = time_ms(dense_conv, device)
        alternative = None
        if cuda:
            alternative = time_ms(
                partial(
                    _unpack_then_conv, x, packed, scale, bias, weight_shape, stride, padding, groups
                ),
                device,
            )
        print(
            f"{name:>14} {tuple(x_shape)!s:>20} {_fmt(ternary):>11} {_fmt(base):>10} "
            f"{base / ternary:>7.2f}x {_fmt(alternative):>16}"
        )


def main() -> None:
    """Parse the command line and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a quick CPU check)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--no-conv", action="store_true", help="skip the conv2d table")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the baseline gets cuDNN's best algorithm
    torch.manual_seed(0)
    bench_linear(device, QUICK_ROWS if args.quick else ROWS, QUICK_SIZES if args.quick else SIZES)
    if not args.no_conv:
        bench_conv(device, QUICK_CONVS if args.quick else CONVS)


if __name__ == "__main__":
    main()
