"""Every example in docs/language.md is checked: `tdsl` blocks pass, `tdsl-error` blocks fail."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT
from tritondsl.compiler.check import check_source, verify
from tritondsl.compiler.diagnostics import CompileError

DOC = ROOT / "docs" / "language.md"
BLOCK = re.compile(r"^```(tdsl(?:-error)?)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXAMPLES = [(m.group(1), m.group(2), DOC.read_text().count("\n", 0, m.start()) + 2)
            for m in BLOCK.finditer(DOC.read_text())]


def test_the_doc_has_examples_of_both_kinds() -> None:
    kinds = [kind for kind, _, _ in EXAMPLES]
    assert kinds.count("tdsl") >= 8 and kinds.count("tdsl-error") >= 3


@pytest.mark.parametrize(("kind", "source", "line"), EXAMPLES,
                         ids=[f"{k}-line{line}" for k, _, line in EXAMPLES])
def test_doc_example(kind: str, source: str, line: int) -> None:
    if kind == "tdsl":
        verify(check_source(source, f"language.md:{line}"))
        return
    expected = re.findall(r"# error: (.*)$", source, re.MULTILINE)
    assert expected, "a tdsl-error example must say which error it shows"
    with pytest.raises(CompileError) as info:
        check_source(source, f"language.md:{line}")
    got = [(d.span.line if d.span else 0, d.message) for d in info.value.diagnostics]
    wanted = [(source.count("\n", 0, m.start()) + 1, m.group(1).strip())
              for m in re.finditer(r"# error: (.*)$", source, re.MULTILINE)]
    assert got == wanted


def test_documented_output_line_is_what_check_prints() -> None:
    from tritondsl.compiler.report import describe_models

    first = EXAMPLES[0][1]
    (line,) = describe_models(check_source(first))
    assert f"`{line}`" in DOC.read_text()


def test_documented_symbolic_output_is_what_check_infers() -> None:
    source = next(src for _, src, _ in EXAMPLES if "model AnySize" in src)
    (info,) = check_source(source).models.values()
    shape = "[" + ", ".join(map(str, info.output.shape)) + "]"
    assert f"`{shape}`" in DOC.read_text()


@pytest.mark.parametrize(("source", "line"), [(s, line) for k, s, line in EXAMPLES if k == "tdsl"],
                         ids=[f"line{line}" for k, _, line in EXAMPLES if k == "tdsl"])
def test_doc_example_builds_with_the_inferred_shapes(source: str, line: int) -> None:
    import torch

    import tritondsl

    sizes = {"N": 2, "H": 5, "W": 6, "T": 7}
    program = tritondsl.compile(source)
    for name, info in check_source(source, sizes=sizes).models.items():
        inputs = [  # token ids 0 and 1 are inside any vocabulary
            torch.randint(0, 2, shape) if t.dtype.startswith("int") else torch.randn(shape)
            for t in info.inputs.values()
            for shape in [[sizes.get(d, d) for d in t.shape]]
        ]
        out = program.build(name)(*inputs)
        assert tuple(out.shape) == tuple(sizes.get(d, d) for d in info.output.shape)
