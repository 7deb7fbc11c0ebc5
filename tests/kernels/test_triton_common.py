"""Shared Triton pieces: config pruning, the dot set-up per dtype, the fp32 TF32 branch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import torch
import triton
import triton.language as tl

from tritondsl.kernels import ternary_conv2d_igemm, ternary_gemm, ternary_gemv
from tritondsl.kernels._triton_common import (
    FP32_PIECES,
    MIN_DOT_BLOCK,
    bucket,
    dot_config,
    fitting_configs,
)
from tritondsl.kernels.reference import ternary_linear_reference

CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}) for m, n in ((16, 32), (64, 64), (128, 256))]


@pytest.fixture
def matmul_precision() -> Iterator[Callable[[str], None]]:
    """Set torch's float32 matmul precision for one test, restoring it afterwards."""
    saved = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(saved)


def _blocks(configs: list) -> list[tuple[int, int]]:
    return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs]


def test_fitting_configs_drops_tiles_larger_than_the_problem() -> None:
    assert _blocks(fitting_configs(CONFIGS, {"BLOCK_M": 40, "BLOCK_N": 300})) == [
        (16, 32),
        (64, 64),
    ]
    # Below the smallest tl.dot tile, the 16-wide configs still fit.
    assert _blocks(fitting_configs(CONFIGS, {"BLOCK_M": 1, "BLOCK_N": 32})) == [(16, 32)]


def test_fitting_configs_never_returns_nothing() -> None:
    big_only = CONFIGS[1:]
    assert _blocks(fitting_configs(big_only, {"BLOCK_M": 1, "BLOCK_N": 1})) == [(64, 64)]


@pytest.mark.parametrize(
    "module", [ternary_gemv, ternary_gemm, ternary_conv2d_igemm], ids=lambda m: m.__name__
)
def test_gpu_configs_are_valid_tiles(module: object) -> None:
    # Every tile edge a power of two >= 16 (tl.arange and tl.dot need it; the byte tiles
    # are BLOCK_K / 4 wide), and the interpreter's single config likewise.
    for config in [*module.GPU_CONFIGS, *module.INTERPRETER_CONFIGS]:
        blocks = [v for name, v in config.kwargs.items() if name.startswith("BLOCK_")]
        assert all(v >= MIN_DOT_BLOCK and v & (v - 1) == 0 for v in blocks), config


def test_bucket() -> None:
    assert [bucket(m) for m in (0, 1, 3, 16, 17, 4096)] == [1, 1, 4, 16, 32, 4096]


def test_dot_config_per_dtype(matmul_precision: Callable[[str], None]) -> None:
    # Under the interpreter bfloat16 operands are widened to float32 (see dot_config).
    assert dot_config(torch.float16) == {
        "DOT_DTYPE": tl.float16,
        "X_PIECES": 1,
        "PRECISION": "ieee",
    }
    assert dot_config(torch.bfloat16)["DOT_DTYPE"] == tl.float32
    matmul_precision("highest")
    assert dot_config(torch.float32)["X_PIECES"] == FP32_PIECES
    matmul_precision("high")
    assert dot_config(torch.float32) == {
        "DOT_DTYPE": tl.float32,
        "X_PIECES": 1,
        "PRECISION": "tf32",
    }


@pytest.mark.triton_interpret
@pytest.mark.parametrize("precision", ["highest", "high"], ids=["bf16-pieces", "tf32"])
def test_fp32_dot_paths_match_reference(
    matmul_precision: Callable[[str], None],
    linear_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    precision: str,
) -> None:
    # randn x uses all 24 mantissa bits: keeping only the top bf16 piece would be off by
    # ~2^-9 relative, far outside the float32 tolerance.
    x, packed, scale, bias = linear_args(20, 70, 24, torch.float32)
    matmul_precision(precision)
    assert_close(
        ternary_gemm.ternary_gemm(x, packed, scale, bias),
        ternary_linear_reference(x, packed, scale, bias),
    )


_COMPILE_SCRIPT = """
import sys
import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tritondsl.kernels import ternary_conv2d_igemm, ternary_gemm, ternary_gemv
from tritondsl.kernels._triton_common import dot_config

POINTERS = {"w_ptr": "*u8", "scale_ptr": "*fp32", "bias_ptr": "*fp32", "part_ptr": "*fp32"}
TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def compile_for(kernel, arch, dtype, constants, config=None):
    fn = kernel if isinstance(kernel, triton.runtime.JITFunction) else kernel.fn  # autotuned
    if config is not None:
        constants = {**constants, **config.kwargs}
    signature = {
        p.name: "constexpr" if p.is_constexpr else
        POINTERS.get(p.name, f"*{TYPES[dtype]}") if p.name.endswith("_ptr") else "i32"
        for p in fn.params
    }
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages} if config else {}
    source = ASTSource(fn, signature=signature, constexprs=constants)
    triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


for arch, dtypes in ((90, (torch.float16, torch.bfloat16, torch.float32)), (80, (torch.bfloat16,))):
    for dtype in dtypes:
        dot = dot_config(dtype)
        for kernel, constants in (
            (ternary_gemv._gemv_kernel, {"SPLIT_K": 1, "HAS_BIAS": True}),
            (ternary_gemm._gemm_kernel, {"HAS_BIAS": True, **dot}),
            (ternary_conv2d_igemm._conv2d_kernel, {"KH": 3, "KW": 2, "HAS_BIAS": True, **dot}),
        ):
            compile_for(kernel, arch, dtype, constants, kernel.configs[-1])
        reduce = {"SPLIT_K": 3, "HAS_BIAS": True, "BLOCK_N": ternary_gemv._REDUCE_BLOCK_N}
        compile_for(ternary_gemv._splitk_reduce_kernel, arch, dtype, reduce)
print("ok")
"""


@pytest.mark.slow
def test_kernels_compile_for_nvidia_gpus() -> None:
    # Code generation down to cubin (triton ships ptxas) needs no GPU, and it catches what
    # the interpreter lets through: tl.dot shape and dtype rules, layouts, resource limits.
    # A fresh process without TRITON_INTERPRET, so that triton.jit compiles for real.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "ok"
