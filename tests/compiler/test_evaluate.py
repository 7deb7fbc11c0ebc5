"""Compile-time semantics, observed through small programs."""

from __future__ import annotations

import pytest

from tritondsl.compiler.check import check_source
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.values import Tensor


def _model(body: str, forward: str = "return x", inputs: str = "Tensor[N, 4]"):
    source = f"model M() {{\n  input x: {inputs}\n{body}\n  forward(x) {{ {forward} }}\n}}\n"
    (info,) = check_source(source).models.values()
    return info


def _error(source: str) -> list[str]:
    with pytest.raises(CompileError) as info:
        check_source(source)
    return [d.message for d in info.value.diagnostics]


def test_let_arithmetic_and_python_scoping() -> None:
    info = _model(
        "  let a = 7 // 2 + 2 ** 3 - 10 % 4\n  let b = a * 1.5\n"
        "  for i in range(3) { let a = a + i }\n  lin = Linear(4, a)",
        "return lin(x)",
    )
    assert info.root.env["a"] == 9 + 0 + 1 + 2  # the loop rebinds the block's 'a', as in Python
    assert info.root.env["b"] == 13.5
    assert info.output == Tensor(("N", 12))


def test_if_elif_else_pick_one_branch() -> None:
    body = (
        "  let k = 2\n  if k == 1 { a = Linear(4, 1) } elif k == 2 { a = Linear(4, 2) }"
        " else { a = Linear(4, 3) }"
    )
    assert _model(body, "return a(x)").output == Tensor(("N", 2))


def test_conditional_expression_evaluates_only_the_taken_branch() -> None:
    body = "  let use = false\n  if use { extra = Linear(4, 4) }"
    assert _model(body, "return extra(x) if use else x").output == Tensor(("N", 4))


def test_boolean_operators_short_circuit() -> None:
    info = _model(
        "  let t = [1]\n  let ok = len(t) > 5 and t[5] == 1\n  let also = len(t) == 1 or t[9] == 0"
    )
    assert info.root.env["ok"] is False and info.root.env["also"] is True


def test_for_over_table_rows_unpacks() -> None:
    body = "  seq = Sequential {\n    for a, b in [[4, 8], [8, 2]] { Linear(a, b) }\n  }"
    info = _model(body, "return seq(x)")
    assert list(info.root.children["seq"].children) == ["0", "1"]
    assert info.output == Tensor(("N", 2))


def test_named_sequential_children_keep_their_names() -> None:
    info = _model(
        "  seq = Sequential {\n    fc = Linear(4, 4)\n    act = ReLU()\n  }", "return seq(x)"
    )
    assert [i.name for i in info.state_dict()] == ["seq.fc.weight", "seq.fc.bias"]


def test_indexing_a_sequential_and_reading_layer_arguments() -> None:
    body = "  seq = Sequential(Linear(4, 6), Linear(6, 3))\n  let width = seq[-1].out_features"
    info = _model(body, "return seq[0](x)")
    assert info.root.env["width"] == 3
    assert info.output == Tensor(("N", 6))


def test_block_arguments_are_type_checked_against_declarations() -> None:
    source = (
        "block B(c: int, sizes: tuple[int, int] = (1, 2)) {\n  lin = Linear(c, c)\n"
        "  forward(x) { return lin(x) }\n}\n"
        "model M() {\n  input x: Tensor[N, 4]\n  b = B(4.0)\n  d = B(4, (1, 2, 3))\n"
        "  forward(x) { return b(x) }\n}\n"
    )
    assert _error(source) == [
        "argument 'c' of B must be an int, got 4.0",
        "argument 'sizes' of B must have 2 items, got 3",
    ]


def test_errors_inside_a_block_forward_name_the_call_site() -> None:
    source = (
        "block B() {\n  lin = Linear(8, 2)\n  forward(x) { return lin(x) }\n}\n"
        "model M() {\n  input x: Tensor[N, 4]\n  b = B()\n  forward(x) { return b(x) }\n}\n"
    )
    with pytest.raises(CompileError) as info:
        check_source(source)
    (diag,) = info.value.diagnostics
    assert diag.message == "Linear expects 8 input features, got 4 (input shape [N, 4])"
    assert diag.span.line == 3
    assert [(text, span.line) for text, span in diag.notes] == [("in B.forward, called here", 8)]


def test_runaway_compile_time_loops_are_stopped() -> None:
    source = (
        "model M() {\n  input x: Tensor[N, 4]\n  for i in range(100000) {\n"
        "    for j in range(100000) { let k = i }\n  }\n  forward(x) { return x }\n}\n"
    )
    assert _error(source) == ["compile-time evaluation takes more than 200,000 steps"]


TOO_LARGE = "number is too large (integers are limited to 256 bits)"


@pytest.mark.parametrize("expr", ["10 ** 60 * 10 ** 60", "2 ** 256", "(2 ** 255) * 2",
                                  "3 ** 10 ** 9", "1" + "0" * 78, "9" * 5_000,
                                  "7 ** 1000000000000"])
def test_integers_wider_than_256_bits_are_refused(expr: str) -> None:
    # The documented limit is the real one: literals and results alike, any exponent.
    source = f"model M() {{\n  input x: Tensor[N]\n  let a = {expr}\n"
    source += "  forward(x) { return x }\n}\n"
    assert _error(source) == [TOO_LARGE]


@pytest.mark.parametrize("expr", ["2 ** 255", "2 ** 200 - 1", "-(2 ** 255)", "1" + "0" * 76,
                                  "(-1) ** (2 ** 250)", "2 ** -300"])
def test_integers_up_to_256_bits_are_values(expr: str) -> None:
    info = _model(f"  let a = {expr}\n")
    assert info.root.env["a"] == eval(expr)  # the same arithmetic as Python's


def test_a_layer_cannot_be_used_twice() -> None:
    source = (
        "model M() {\n  input x: Tensor[N, 4]\n  let shared = Linear(4, 4)\n"
        "  a = shared\n  b = shared\n  forward(x) { return b(a(x)) }\n}\n"
    )
    assert _error(source) == ["this Linear is already part of the model"]


def test_ternary_tensor_constant_is_checked_and_kept() -> None:
    source = (
        "layer L() {\n  let W: TernaryTensor[2, 3] = [[1, 0, -1], [0, 1, 1]]\n"
        "  fn forward(x: Tensor[float16]) -> Tensor[float16] { return ternary_matmul(x, W) }\n"
        "}\nmodel M() {\n  input x: Tensor[N, 3]\n  l = L()\n  forward(x) { return l(x) }\n}\n"
    )
    (info,) = check_source(source).models.values()
    (item,) = info.state_dict()
    assert (item.name, item.shape, item.dtype, item.learnable) == ("l.W", (2, 3), "int8", False)
    assert info.root.children["l"].children["W"].values == (1, 0, -1, 0, 1, 1)
    assert info.output == Tensor(("N", 2))
