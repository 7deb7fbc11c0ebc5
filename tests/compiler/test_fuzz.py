"""Mutated valid programs never make the front end raise anything but CompileError."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLES, ZOO
from tritondsl.compiler.check import check_source, verify
from tritondsl.compiler.diagnostics import CompileError

SEEDS = [p.read_text() for p in [*ZOO, *EXAMPLES]]
TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+\.\d*|\d+|\*\*|//|[=!<>]=|\S")
VOCABULARY = [
    "block", "model", "layer", "let", "if", "elif", "else", "for", "in", "forward", "fn",
    "return", "input", "weights", "param", "Sequential", "true", "false", "and", "or", "not",
    "{", "}", "(", ")", "[", "]", ",", ":", ";", "=", "==", "@", "+", "-", "*", "/", "//", "**",
    "\n", "#", "/*", '"', "0", "1", "-1", "2", "3", "1000000", "10**9", "0.5", "1e308",
    "x", "N", "Conv2d", "Linear", "BatchNorm2d", "ReLU", "relu", "cat", "reshape", "fp32",
    "ternary(method=absmean)", "TernaryTensor[2, 2]", "Tensor[N, 3]", "range(100000000)",
    "mean", "softmax", "chunk", "permute", "x.shape", ".shape[0]", "[:, :2]", ":", "::",
    "[1] * 100001", "ceil(", "interpolate", "H",
    "\x00", "\u00e9", "\t",
]


NUMBERS = ["0", "1", "2", "3", "7", "-1", "64", "1000", "0.5", "1e9", "99999999999"]


@st.composite
def mutated_programs(draw: st.DrawFn) -> str:
    """A seed program with a few edits of tokens or whole lines, keeping its layout."""
    seed = draw(st.sampled_from(SEEDS))
    pieces = [(m.group(0), m.end()) for m in TOKEN.finditer(seed)]
    tokens = [tok for tok, _ in pieces]
    glue = [seed[end:nxt] for (_, end), (_, nxt) in
            zip(pieces, [(t, m.start()) for t, m in
                         zip(tokens[1:], list(TOKEN.finditer(seed))[1:], strict=True)],
                strict=False)] + ["\n"]
    names = sorted({t for t in tokens if t[0].isalpha()})
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(tokens) - 1))
        action = draw(st.sampled_from(
            ["number", "number", "name", "name", "vocab", "delete", "insert", "line", "swap"]))
        if action == "number":
            tokens[i] = draw(st.sampled_from(NUMBERS))
        elif action == "name":
            tokens[i] = draw(st.sampled_from(names))
        elif action == "vocab":
            tokens[i] = draw(st.sampled_from(VOCABULARY))
        elif action == "delete":
            k = draw(st.integers(1, 3))
            del tokens[i : i + k], glue[i : i + k]
        elif action == "insert":
            tokens.insert(i, draw(st.sampled_from(VOCABULARY)))
            glue.insert(i, " ")
        elif action == "line":  # duplicate or drop everything up to the next newline
            j = next((k for k in range(i, len(glue)) if "\n" in glue[k]), len(glue) - 1) + 1
            if draw(st.booleans()):
                tokens[j:j], glue[j:j] = tokens[i:j], glue[i:j]
            else:
                del tokens[i:j], glue[i:j]
        else:
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        if not tokens:
            return ""
    return "".join(t + g for t, g in zip(tokens, glue, strict=False))


@pytest.mark.slow
@settings(max_examples=2000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_programs())
def test_only_compile_errors_escape(source: str) -> None:
    """Checking any mutation either succeeds (and verifies) or raises CompileError."""
    try:
        checked = check_source(source, "fuzz.tdsl")
    except CompileError as error:
        assert error.diagnostics, "a CompileError must carry at least one diagnostic"
        rendered = error.render()
        assert "fuzz.tdsl" in rendered
        return
    verify(checked)
