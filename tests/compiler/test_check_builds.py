"""What checks, builds: random valid programs build and run with exactly the inferred shapes.

The programs come from ``program_strategies.programs()`` (read its docstring to add a
layer or an operation). For each one: ``check`` accepts it, the generated module builds,
a forward on a random input returns the inferred shape, the predicted state_dict is the
real one, and the symbolic shapes (inputs with ``H``/``W``) evaluate to the concrete ones.
Reading a layer's argument (``conv.kernel_size``) gives what torch's attribute holds.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tritondsl
from tests.compiler.program_strategies import LAYER_CASES, OP_CASES, Gen, Program, programs
from tritondsl.compiler.check import check_source, verify
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.functions import FORWARD_OPS
from tritondsl.compiler.layers import LAYERS, read_argument
from tritondsl.compiler.values import EvalError, Tensor

BATCH = 2


def test_every_layer_and_operation_is_generated() -> None:
    assert set(LAYERS) <= set(LAYER_CASES), "add the new layer to program_strategies"
    assert set(FORWARD_OPS) <= set(OP_CASES), "add the new operation to program_strategies"


def _concrete(shape: tuple, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(BATCH if d == "N" else _evaluate(d, sizes) for d in shape)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv}  # fmt: skip


def _evaluate(dim: int | str, sizes: dict[str, int]) -> int:
    """A symbolic dimension such as ``(H + 1) // 2 + 1`` at concrete sizes (batch = BATCH)."""
    if isinstance(dim, int):
        return dim

    def visit(node: ast.AST) -> Any:
        match node:
            case ast.Constant(value=int(value)):
                return value
            case ast.Name(id="N"):
                return BATCH
            case ast.Name(id=name):
                return sizes[name]
            case ast.BinOp(left=left, op=op, right=right):
                return _OPS[type(op)](visit(left), visit(right))
            case ast.Call(func=ast.Name(id="ceil"), args=[arg]):
                return math.ceil(visit(arg))
            case ast.Call(func=ast.Name(id="min"), args=args):
                return min(visit(a) for a in args)
        raise AssertionError(f"unexpected symbolic dimension {dim!r}")

    return int(visit(ast.parse(dim, mode="eval").body))


def _shapes(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.shape
    return tuple(_shapes(o) for o in output)


def _torch_shapes(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    return tuple(_torch_shapes(o) for o in output)


def _map(fn: Any, shapes: Any) -> Any:
    if shapes and isinstance(shapes[0], tuple):
        return tuple(_map(fn, s) for s in shapes)
    return fn(shapes)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_checked_programs_build_with_the_inferred_shapes(program: Program) -> None:
    """check passes => the module builds => forward gives exactly the inferred shape."""
    try:
        checked = check_source(program.source, "generated.tdsl", sizes=program.sizes)
        symbolic = check_source(program.source, "generated.tdsl")
    except CompileError as error:
        pytest.fail(f"a valid program was refused:\n{error.render()}\n\n{program.source}")
    verify(checked)
    info = checked.models[program.model]
    expected = _map(lambda s: _concrete(s, {}), _shapes(info.output))
    # Symbolic inference (no sizes given) agrees with the concrete one.
    general = _shapes(symbolic.models[program.model].output)
    assert _map(lambda s: _concrete(s, program.sizes), general) == expected, program.source
    torch.manual_seed(0)
    model = tritondsl.compile(program.source).build(program.model)
    shape = program.input_shape(BATCH)
    ids = torch.randint(0, max(program.tokens, 1), shape)
    out = model(ids if program.tokens else torch.randn(shape))
    assert _torch_shapes(out) == expected, program.source
    predicted = {i.name: i.shape for i in info.state_dict()}
    fp32 = tritondsl.compile(program.source, precision="fp32").build(program.model)
    assert {k: tuple(v.shape) for k, v in fp32.state_dict().items()} == predicted, program.source


@st.composite
def single_layers(draw: st.DrawFn) -> tuple[str, str]:
    """A program with one built-in layer ``m``, and the layer's name."""
    g = Gen(draw)
    name = draw(st.sampled_from(sorted(LAYER_CASES)))
    shape = draw(st.sampled_from([(3, 8, 8), (6,), (4, 5)]))
    with g.statement() as lets:
        layer = LAYER_CASES[name](g, shape, False)
    assume(layer is not None)
    assert layer is not None
    body = "\n".join([*lets, f"input x: Tensor[N, {', '.join(map(str, shape))}]",
                      f"m = {layer.text}", "forward(x) {", "    return m(x)", "}"])  # fmt: skip
    return name, "model Net() {\n" + "\n".join("    " + line for line in body.split("\n")) + "\n}\n"


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(single_layers())
def test_layer_arguments_read_back_as_torch_has_them(case: tuple[str, str]) -> None:
    """``m.arg`` in a program is what ``self.m.arg`` gives the generated module."""
    name, source = case
    info = check_source(source).models["Net"]
    (module,) = [m for m in info.modules() if m.path == "m"]
    built = tritondsl.compile(source).build("Net").m
    for arg in LAYERS[name].signature:
        try:
            value = read_argument(LAYERS[name], module.args, arg.name, module.span)
        except EvalError:  # refused: torch holds a tensor there
            assert isinstance(getattr(built, arg.name), torch.Tensor | None), (name, arg.name)
            continue
        got = getattr(built, arg.name)
        assert _plain(got) == _plain(value), (name, arg.name, source)


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value
