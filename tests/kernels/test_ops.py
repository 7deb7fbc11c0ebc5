"""The public custom ops: kernel and fallback paths, fake kernels, torch.compile, lazy import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import tritondsl.kernels
from tritondsl.kernels import ternary_conv2d, ternary_linear
from tritondsl.kernels._common import conv2d_geometry
from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference

CONV_WEIGHT = (6, 2, 3, 3)  # groups=2 over 4 input channels


def _conv_call(conv_args: Callable[..., tuple], dtype: torch.dtype = torch.float32) -> tuple:
    x, packed, scale, bias = conv_args((2, 4, 7, 6), CONV_WEIGHT, dtype)
    return (x, packed, scale, bias, list(CONV_WEIGHT), [2, 1], [1, 1], [1, 2], 2)


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.triton_interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_ops_run_the_kernels_under_the_interpreter(
    linear_args: Callable[..., tuple],
    conv_args: Callable[..., tuple],
    assert_close: Callable[[torch.Tensor, torch.Tensor], None],
    dtype: torch.dtype,
) -> None:
    x, packed, scale, bias = linear_args(12, 50, 20, dtype)
    x = x.reshape(3, 4, 50)
    assert_close(
        ternary_linear(x, packed, scale, bias), ternary_linear_reference(x, packed, scale, bias)
    )
    call = _conv_call(conv_args, dtype)
    geo = conv2d_geometry(*call)
    assert_close(ternary_conv2d(*call), ternary_conv2d_reference(*call[:4], geo))


def test_conv_op_takes_ints_or_pairs(
    monkeypatch: pytest.MonkeyPatch, conv_args: Callable[..., tuple]
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, packed, scale, bias = conv_args((1, 4, 6, 6), CONV_WEIGHT, torch.float32)
    as_ints = ternary_conv2d(x, packed, scale, bias, CONV_WEIGHT, 2, 1, 1, 2)
    as_pairs = ternary_conv2d(x, packed, scale, bias, CONV_WEIGHT, (2, 2), (1, 1), (1, 1), 2)
    assert as_ints.shape == (1, 6, 3, 3)
    assert torch.equal(as_ints, as_pairs)


def test_conv_op_returns_contiguous_nchw_for_channels_last_input(
    monkeypatch: pytest.MonkeyPatch, conv_args: Callable[..., tuple]
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x, packed, scale, bias = conv_args((1, 4, 6, 6), CONV_WEIGHT, torch.float32)
    y = ternary_conv2d(
        x.to(memory_format=torch.channels_last), packed, scale, bias, CONV_WEIGHT, groups=2
    )
    assert y.is_contiguous()


def test_fake_kernels_give_shapes_and_errors(linear_args: Callable[..., tuple]) -> None:
    x, packed, scale, bias = (t.to("meta") for t in linear_args(6, 30, 8, torch.float16))
    y = ternary_linear(x.reshape(2, 3, 30), packed, scale, bias)
    assert (y.shape, y.dtype, y.device.type) == ((2, 3, 8), torch.float16, "meta")
    with pytest.raises(ValueError, match="k=31 does not match"):
        ternary_linear(x, packed, scale, bias, 31)
    xc = torch.empty(2, 4, 7, 6, device="meta")
    pc = torch.empty(6, 5, dtype=torch.uint8, device="meta")
    sc = torch.empty(6, device="meta")
    yc = ternary_conv2d(xc, pc, sc, None, CONV_WEIGHT, 2, 1, 1, 2)
    assert yc.shape == (2, 6, 4, 3)
    with pytest.raises(ValueError, match="groups=4 must be positive and divide"):
        ternary_conv2d(xc, pc, sc, None, CONV_WEIGHT, 1, 0, 1, 4)


def test_ops_raise_clear_errors(linear_args: Callable[..., tuple]) -> None:
    x, packed, scale, bias = linear_args(2, 30, 8, torch.float32)
    with pytest.raises(
        TypeError, match=r"x: expected float32, float16 or bfloat16, got torch\.float64"
    ):
        ternary_linear(x.double(), packed, scale, bias)
    with pytest.raises(ValueError, match=r"scale: expected shape \[8\] or \[1\], got \[7\]"):
        ternary_linear(x, packed, scale[:7], bias)


@pytest.mark.parametrize(
    "interpret",
    [
        pytest.param("1", marks=pytest.mark.triton_interpret, id="kernels"),
        pytest.param("0", id="fallback"),
    ],
)
def test_opcheck(
    monkeypatch: pytest.MonkeyPatch,
    linear_args: Callable[..., tuple],
    conv_args: Callable[..., tuple],
    interpret: str,
) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    x, packed, scale, bias = linear_args(3, 21, 10, torch.float32)
    torch.library.opcheck(ternary_linear, (x, packed, scale, bias))
    torch.library.opcheck(ternary_linear, (x.half(), packed, scale[:1], None), {"k": 21})
    torch.library.opcheck(ternary_conv2d, _conv_call(conv_args))


@pytest.mark.triton_interpret
@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph(
    linear_args: Callable[..., tuple],
    conv_args: Callable[..., tuple],
    backend: str,
) -> None:
    x, packed, scale, bias = linear_args(4, 54, 9, torch.float32)
    xc, pc, sc, bc, *conv_rest = _conv_call(conv_args)

    def model(x: torch.Tensor, xc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(ternary_linear(x, packed, scale, bias)) + 1
        return y, ternary_conv2d(xc, pc, sc, bc, *conv_rest).sum(dim=1)

    torch.compiler.reset()  # each backend traces afresh
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    for got, want in zip(compiled(x, xc), model(x, xc), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.slow
def test_import_is_lazy_and_cpu_falls_back_to_the_reference() -> None:
    # A fresh interpreter: importing must not load triton, and CPU calls without
    # TRITON_INTERPRET must take the reference path without loading any kernel module.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = _run_python(
        """
        import sys
        import torch
        import tritondsl.kernels as K
        from tritondsl.kernels.packing import pack
        from tritondsl.kernels._common import conv2d_geometry
        from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference

        assert not any(m.split(".")[0] == "triton" for m in sys.modules), "triton imported"
        x, packed = torch.randn(3, 10).bfloat16(), pack(torch.randint(-1, 2, (4, 10)))
        scale, bias = torch.rand(4), torch.randn(4)
        got = K.ternary_linear(x, packed, scale, bias)
        assert torch.equal(got, ternary_linear_reference(x, packed, scale, bias))
        xc, pc = torch.randn(1, 2, 5, 5), pack(torch.randint(-1, 2, (3, 18)))
        got = K.ternary_conv2d(xc, pc, scale[:3], None, [3, 2, 3, 3], 1, 1, 1, 1)
        geo = conv2d_geometry(xc, pc, scale[:3], None, [3, 2, 3, 3], 1, 1, 1, 1)
        want = ternary_conv2d_reference(xc, pc, scale[:3], None, geo)
        assert torch.equal(got, want)
        kernel_modules = [m for m in sys.modules if m.startswith("tritondsl.kernels.")]
        print(sorted(kernel_modules))
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        ['tritondsl.kernels._common', 'tritondsl.kernels.ops', 'tritondsl.kernels.packing',
         'tritondsl.kernels.reference']
    )


@pytest.mark.slow
def test_the_folder_imported_as_plain_kernels_reuses_the_registered_ops() -> None:
    # With the repository root on sys.path, transformers probes Hugging Face's `kernels` by
    # importing it and gets this folder: registering the ops a second time used to make
    # torch free the first registration's operators (the next conv2d call segfaulted).
    root = str(Path(tritondsl.kernels.__file__).parents[1])
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = _run_python(
        f"""
        import sys
        sys.path.insert(0, {root!r})
        import torch
        import tritondsl.kernels as K
        from tritondsl.kernels.packing import pack
        import kernels
        assert kernels.ternary_conv2d is K.ternary_conv2d
        x, packed = torch.randn(1, 2, 5, 5), pack(torch.randint(-1, 2, (3, 18)))
        for _ in range(3):
            y = K.ternary_conv2d(x, packed, torch.ones(3), None, [3, 2, 3, 3], [2, 1], 1, 1, 1)
        print(list(y.shape))
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1, 3, 3, 5]"


_GPU_SCRIPT = """
import torch
from tritondsl.kernels.packing import pack
from tritondsl.kernels import dispatch, ternary_conv2d, ternary_linear
from tritondsl.kernels._common import conv2d_geometry
from tritondsl.kernels.reference import ternary_conv2d_reference, ternary_linear_reference

torch.manual_seed(0)
torch.set_float32_matmul_precision("highest")
tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for m in (1, 5, 17, 300, dispatch.DENSE_MIN_M):
        for k, n in ((300, 65), (4096, 1024)):
            x = torch.randn(m, k).div(k**0.5).to(dtype)
            packed = pack(torch.randint(-1, 2, (n, k)))
            scale, bias = torch.rand(n) + 0.5, torch.randn(n)
            want = ternary_linear_reference(x, packed, scale, bias)
            got = ternary_linear(*(t.cuda() for t in (x, packed, scale, bias))).cpu()
            torch.testing.assert_close(got, want, atol=tol[dtype], rtol=tol[dtype])
    for xs, ws, stride, pad, dil, groups in (
        ((2, 16, 15, 13), (32, 16, 3, 3), 1, 1, 1, 1),
        ((2, 32, 14, 14), (32, 1, 3, 3), 2, 1, 1, 32),
        ((1, 24, 9, 11), (48, 6, 5, 3), (2, 1), 2, (1, 2), 4),
        ((2, 64, 8, 8), (40, 64, 1, 1), 1, 0, 1, 1),
    ):
        x = torch.randn(xs).to(dtype)
        k = ws[1] * ws[2] * ws[3]
        packed = pack(torch.randint(-1, 2, (ws[0], k)))
        scale, bias = (torch.rand(ws[0]) + 0.5) / k**0.5, torch.randn(ws[0])
        args = (ws, stride, pad, dil, groups)
        want = ternary_conv2d_reference(
            x, packed, scale, bias, conv2d_geometry(x, packed, scale, bias, *args)
        )
        got = ternary_conv2d(*(t.cuda() for t in (x, packed, scale, bias)), *args).cpu()
        torch.testing.assert_close(got, want, atol=tol[dtype], rtol=tol[dtype])
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_gpu() -> None:
    # A fresh interpreter without TRITON_INTERPRET, so the kernels are compiled for real.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = _run_python(_GPU_SCRIPT, env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")
