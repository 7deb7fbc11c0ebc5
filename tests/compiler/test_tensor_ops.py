"""Forward tensor operations: the checker's shape equals what the generated code computes."""

from __future__ import annotations

import pytest
import torch

import tritondsl
from tritondsl.compiler.check import check_source
from tritondsl.compiler.diagnostics import CompileError


def _program(expr: str, shape: tuple[int | str, ...], lets: str = "") -> str:
    dims = ", ".join(map(str, shape))
    return (f"model M() {{\n    input x: Tensor[{dims}]\n{lets}    forward(x) {{\n"
            f"        return {expr}\n    }}\n}}\n")


CASES = [
    ("mean(x, dim=[2, 3], keepdim=true)", (2, 3, 5, 7)),
    ("mean(x)", (2, 3, 5)),
    ("sum(x, 1)", (2, 3, 5)),
    ("amax(x, dim=-1, keepdim=true)", (2, 3, 5)),
    ("sqrt(exp(x) ** 2) + x ** 3 - 2 ** x", (2, 3)),
    ("x ** x", (4, 1, 3)),
    ("transpose(x, 1, -1)", (2, 3, 5)),
    ("permute(x, 0, 2, 3, 1)", (2, 3, 5, 7)),
    ("permute(x, [2, 0, 1])", (2, 3, 5)),
    ("x[:, :2]", (4, 6, 3)),
    ("x[1:, 1:5:2, -2:]", (4, 6, 3)),
    ("x[0, :, 1]", (4, 6, 3)),
    ("x[:, -1]", (4, 6, 3)),
    ("chunk(x, 3, dim=1)[2]", (2, 7, 3)),
    ("chunk(x, 4, 1)[1]", (2, 5)),
    ("split(x, 3, dim=1)[2]", (2, 7)),
    ("split(x, [1, 4, 2], dim=-1)[1]", (2, 7)),
    ("reshape(reshape(x, -1, 8, 1, 1), -1, 4, 8)", (3, 4, 8)),
    ("reshape(x, x.shape[0], x.shape[1] * x.shape[2])", (3, 4, 8)),
    ("reshape(x, [x.shape[0], -1])", (3, 4, 8)),
    ("softmax(x, dim=1) + log_softmax(x, -1)", (2, 5)),
    ("tanh(x) + silu(x) + hardswish(x) + hardsigmoid(x) + mish(x)", (2, 5)),
    ("leaky_relu(x, negative_slope=0.2) + elu(x, alpha=0.5) + leaky_relu(x)", (2, 5)),
    ("interpolate(x, scale_factor=2)", (1, 2, 3, 5)),
    ("interpolate(x, scale_factor=1.5, mode=\"bilinear\", align_corners=false)", (1, 2, 3, 5)),
    ("interpolate(x, size=[4, 9], mode=\"bicubic\")", (1, 2, 3, 5)),
    ("interpolate(x, size=6, mode=\"nearest-exact\")", (1, 2, 3, 5)),
    ("adaptive_max_pool2d(x, [2, 3])", (1, 2, 7, 5)),
    ("x * [1, 2][1] / 3", (2, 2)),
]


@pytest.mark.parametrize(("expr", "shape"), CASES, ids=[c[0] for c in CASES])
def test_inferred_shape_is_what_torch_computes(expr: str, shape: tuple[int, ...]) -> None:
    source = _program(expr, shape)
    (info,) = check_source(source).models.values()
    out = tritondsl.compile(source).build()(torch.randn(shape))
    assert tuple(out.shape) == info.output.shape


SYMBOLIC = [
    ("reshape(x, N, C, H * W)", ("N", "C", "H", "W"), ("N", "C", "H * W")),
    ("reshape(x, N, -1)", ("N", 4, "H", "W"), ("N", "H * W * 4")),
    ("reshape(x, -1, 4, x.shape[2])", ("N", 4, "H"), ("N", 4, "H")),
    ("reshape(reshape(x, -1, 8, 1, 1), -1, 4, 8)", ("N", 4, 8), ("N", 4, 8)),
    ("mean(x, dim=[2, 3])", ("N", 3, "H", "W"), ("N", 3)),
    ("x[:, :, 1:, :2]", ("N", 3, "H", "W"), ("N", 3, "H - 1", 2)),
    ("transpose(reshape(x, N, C, H * W), 1, 2)", ("N", "C", "H", "W"), ("N", "H * W", "C")),
    ("interpolate(x, scale_factor=2)", ("N", 3, "H", "W"), ("N", 3, "H * 2", "W * 2")),
]


@pytest.mark.parametrize(("expr", "shape", "expected"), SYMBOLIC, ids=[c[0] for c in SYMBOLIC])
def test_symbolic_sizes_flow_through_and_build(expr: str, shape: tuple, expected: tuple) -> None:
    source = _program(expr, shape)
    (info,) = check_source(source).models.values()
    assert info.output.shape == expected
    concrete = {"N": 2, "C": 3, "H": 5, "W": 6}
    sized = tuple(concrete.get(d, d) for d in shape)
    (bound,) = check_source(source, sizes=concrete).models.values()
    out = tritondsl.compile(source).build()(torch.randn(sized))
    assert tuple(out.shape) == bound.output.shape


ERRORS = [
    ("mean(x, dim=3)", (2, 3), "mean: dimension 3 is out of range for a 2-D tensor"),
    ("mean(x, dim=[1, -1])", (2, 3), "mean: dimension [1, -1] repeats an axis"),
    ("permute(x, 0, 1)", (2, 3, 4), "permute: [0, 1] has 2 axes, the tensor [2, 3, 4] has 3"),
    ("x[:, :, 0]", (2, 3), "too many indices (3) for the tensor [2, 3]"),
    ("x[5]", (2, 3), "index 5 is out of range for dimension 0 of [2, 3]"),
    ("x[::-1]", (2, 3), "a tensor slice needs a positive step"),
    ("split(x, [1, 1], dim=1)", (2, 3),
     "split: sizes [1, 1] add up to 2, dimension 1 of [2, 3] has 3"),
    ("chunk(x, 2, dim=1)", ("N", "C"), "chunk needs a known size along dimension 1, got C"),
    ("reshape(x, -1, 3)", ("N", 4), "reshape: cannot view [N, 4] as [-1, 3]"),
    ("reshape(x, 4, 2)", ("N", 8), "reshape: [N, 8] has N * 8 elements, [4, 2] has 8"),
    ("interpolate(x)", (1, 2, 3, 3), "interpolate(): give either size or scale_factor"),
    ("interpolate(x, size=2, align_corners=true)", (1, 2, 3, 3),
     "interpolate(): align_corners applies to bilinear and bicubic modes only"),
    ("interpolate(x, size=2, mode=\"linear\")", (1, 2, 3, 3),
     "interpolate(): mode must be one of 'nearest', 'nearest-exact', 'bilinear', 'bicubic', "
     "'area', got 'linear'"),
    ("softmax(x)", (2, 3), "softmax() is missing its argument 'dim'"),
    ("relu(x, 1)", (2, 3), "relu() takes 1 argument, got 2"),
    ("x.size", (2, 3), "a tensor has no attribute 'size'"),
    ("reshape(x, H / 2, -1)", ("N", "H"), "cannot divide size and int"),
    ("x[0:1.5]", (2, 3), "slice bounds must be ints"),
]


@pytest.mark.parametrize(("expr", "shape", "message"), ERRORS, ids=[c[0] for c in ERRORS])
def test_bad_operations_are_located_errors(expr: str, shape: tuple, message: str) -> None:
    with pytest.raises(CompileError) as info:
        check_source(_program(expr, shape))
    (diag,) = info.value.diagnostics
    assert diag.message == message
    assert diag.span is not None and diag.span.line == 4


def test_sizes_cannot_steer_compile_time_code() -> None:
    with pytest.raises(CompileError, match="cannot be compared at compile time"):
        check_source(_program("x if x.shape[0] > 2 else x", ("N", 3)))


def test_compile_time_ceil_floor_and_repeated_lists() -> None:
    lets = ("    let strides = [1] * 2 + [2] * floor(2.9)\n"
            "    let width = ceil(10 / 4)\n"
            "    body = Sequential {\n"
            "        for s in strides {\n"
            "            Conv2d(width, width, 3, stride=s, padding=1)\n"
            "        }\n"
            "    }\n")
    source = _program("body(x)", ("N", 3, 16, 16), lets)
    (info,) = check_source(source).models.values()
    assert info.output.shape == ("N", 3, 4, 4)
    assert tritondsl.compile(source).build()(torch.randn(1, 3, 16, 16)).shape == (1, 3, 4, 4)
    with pytest.raises(CompileError, match="a list of 200000 items is too large"):
        check_source(_program("x", (2,), "    let big = [0, 0] * 100000\n"))
