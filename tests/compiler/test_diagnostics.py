"""Diagnostic rendering: file:line:col, the source line, a caret under the span."""

from __future__ import annotations

import pytest

from tritondsl.compiler.check import check_source
from tritondsl.compiler.diagnostics import CompileError, Diagnostic, suggest
from tritondsl.compiler.nodes import Span


def test_render_points_a_caret_at_the_span() -> None:
    source = "model M() {\n    conv = Conv2D(3, 8, 3)\n}\n"
    diag = Diagnostic("unknown name 'Conv2D'", Span(2, 12, 2, 18), help="did you mean 'Conv2d'?")
    assert diag.render("m.tdsl", source).split("\n") == [
        "m.tdsl:2:12: error: unknown name 'Conv2D'",
        "    2 |     conv = Conv2D(3, 8, 3)",
        "      |            ^^^^^^",
        "  = help: did you mean 'Conv2d'?",
    ]


def test_multi_line_span_underlines_to_the_end_of_its_first_line() -> None:
    source = "let a = f(1,\n   2)\n"
    text = Diagnostic("bad call", Span(1, 9, 2, 6)).render("m.tdsl", source)
    assert text.split("\n")[2] == "      |         ^^^^"


def test_notes_carry_their_own_location() -> None:
    diag = Diagnostic("'A' is defined twice", Span(3, 7, 3, 8),
                      notes=(("first defined here", Span(1, 7, 1, 8)),))
    assert diag.render("m.tdsl", None).endswith("= note: m.tdsl:1:7: first defined here")


def test_compile_error_counts_errors() -> None:
    error = CompileError([Diagnostic("a", None), Diagnostic("b", None)], "m.tdsl")
    assert error.render().split("\n") == ["m.tdsl: error: a", "m.tdsl: error: b",
                                          "2 errors in m.tdsl"]


def test_control_characters_are_not_echoed_raw() -> None:
    text = Diagnostic("unexpected character U+0007", Span(1, 3, 1, 4)).render("m", "ab\x07cd")
    assert "\x07" not in text and "ab?cd" in text


def test_suggest_prefers_case_insensitive_matches() -> None:
    assert suggest("conv2D", ["Conv2d", "Conv1"]) == "did you mean 'Conv2d'?"
    assert suggest("BatchNorm", ["BatchNorm2d", "Linear"]) == "did you mean 'BatchNorm2d'?"
    assert suggest("zzz", ["Conv2d"]) is None


@pytest.mark.parametrize(("name", "pool", "expected"), [
    ("Lienar", ["Linear", "LeakyReLU"], "Linear"),  # a swap of neighbours is one edit
    ("in_chanels", ["in_channels", "out_channels"], "in_channels"),
    ("padd", ["padding", "dilation"], "padding"),  # a prefix
    ("maxpool", ["max", "MaxPool2d"], "MaxPool2d"),  # a prefix in another case
    ("softmax", ["max", "min"], None),  # implausible: no hint at all
    ("mean", ["absmean", "amax"], None),
    ("relu7", ["relu", "relu6"], "relu"),
])
def test_suggest_offers_only_plausible_typos(name: str, pool: list[str],
                                             expected: str | None) -> None:
    assert suggest(name, pool) == (f"did you mean '{expected}'?" if expected else None)


def test_unknown_names_get_hints_of_their_own_kind() -> None:
    source = (
        "model M() {\n    input x: Tensor[N, 4]\n    fc = Lienar(4, 4)\n"
        "    forward(x) {\n        let scale = 1\n"
        "        return softmx(fc(x), 1) + scal\n    }\n}\n"
    )
    with pytest.raises(CompileError) as info:
        check_source(source)
    layer, function, value = info.value.diagnostics
    assert (layer.help, function.help, value.help) == (
        "did you mean 'Linear'?", "did you mean 'softmax'?", "did you mean 'scale'?")
    assert layer.notes[0][0].startswith("layers: AdaptiveAvgPool2d, AdaptiveMaxPool2d")
    assert "ConvTranspose2d" in layer.notes[0][0] and "defined in this file: M" in layer.notes[1][0]
    assert function.notes[0][0].startswith("forward operations: ") and "softmax" in (
        function.notes[0][0])
    assert value.notes == ()
