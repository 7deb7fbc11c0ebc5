"""The malformed-program corpus, and hostile inputs that are not programs at all.

Each ``malformed/NN_name.tdsl`` is a small realistic program with a deliberate mistake
(a few have two, to show that every error is reported). Its header lists the exact
diagnostics it must produce, one per line::

    # expect: 7:20: unknown name 'Conv2D'
    # help: did you mean 'Conv2d'?

``# help:`` is optional and applies to the ``# expect:`` line above it. The test compares
the *set* of (line, column, message) that ``check_file`` reports with the expected set,
so a wrong location, a missing error and an extra (follow-on) error all fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tritondsl.compiler.check import CheckedProgram, check_file, check_source
from tritondsl.compiler.diagnostics import MAX_ERRORS, CompileError, Diagnostic
from tritondsl.compiler.parser import MAX_SOURCE_BYTES
from tritondsl.compiler.tree_depth import MAX_DEPTH

CORPUS = Path(__file__).resolve().parent / "malformed"
FILES = sorted(CORPUS.glob("*.tdsl"))
_EXPECT = re.compile(r"# expect: (\d+):(\d+): (.+)")
_HELP = re.compile(r"# help: (.+)")
_GUTTER = len("    1 | ")  # width of the line-number gutter in a rendered excerpt


@dataclass(frozen=True)
class Expected:
    """One diagnostic a corpus file must produce."""

    line: int
    column: int
    message: str
    help: str | None = None

    @property
    def key(self) -> tuple[int, int, str]:
        """What is compared with the reported diagnostics."""
        return self.line, self.column, self.message


def expectations(path: Path) -> list[Expected]:
    """The ``# expect:`` / ``# help:`` header of a corpus file."""
    found: list[Expected] = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if match := _EXPECT.fullmatch(text):
            found.append(Expected(int(match[1]), int(match[2]), match[3]))
        elif match := _HELP.fullmatch(text):
            assert found, f"{path.name}: '# help:' before any '# expect:'"
            last = found.pop()
            found.append(Expected(last.line, last.column, last.message, match[1]))
    return found


def diagnostics_of(path: Path) -> CompileError:
    """Check ``path``, which must fail; return the error."""
    with pytest.raises(CompileError) as info:
        check_file(path)
    return info.value


def test_corpus_is_complete() -> None:
    # The brief for this corpus asks for at least 45 cases, each named NN_short_name.
    assert len(FILES) >= 45
    for path in FILES:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.tdsl", path.name), path.name
    numbers = [path.name[:2] for path in FILES]
    assert len(numbers) == len(set(numbers)), "two corpus files share a number"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_malformed_program(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' header"
    error = diagnostics_of(path)
    assert all(d.span is not None for d in error.diagnostics), error.render()
    got = [(d.span.line, d.span.column, d.message) for d in error.diagnostics if d.span]
    assert sorted(set(got)) == sorted(e.key for e in expected), error.render()
    assert len(got) == len(set(got)), f"a diagnostic is reported twice:\n{error.render()}"
    by_key = {(d.span.line, d.span.column, d.message): d for d in error.diagnostics if d.span}
    for item in expected:
        if item.help is not None:
            assert by_key[item.key].help == item.help, error.render()


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_rendering_shows_the_line_and_a_caret(path: Path) -> None:
    error = diagnostics_of(path)
    source_lines = path.read_text(encoding="utf-8").split("\n")
    for diag in error.diagnostics:
        assert diag.span is not None
        assert_rendered(diag, str(path), error.source, source_lines[diag.span.line - 1])


def assert_rendered(diag: Diagnostic, path: str, source: str | None, line_text: str) -> None:
    """``path:L:C: error: msg``, then the source line, then '^' under column C."""
    assert diag.span is not None
    header, excerpt, caret, *_ = diag.render(path, source).split("\n")
    assert header == f"{path}:{diag.span.line}:{diag.span.column}: error: {diag.message}"
    assert excerpt.rstrip() == f"{diag.span.line:>5} | {line_text}".rstrip()
    assert caret.index("^") == _GUTTER + diag.span.column - 1, f"{excerpt}\n{caret}"


# ------------------------------------------------------------------ inputs that are not programs

MODEL = """model Net(num_classes: int = 10) {
    input x: Tensor[N, 64]
    fc = Linear(64, num_classes)
    forward(x) {
        return fc(x)
    }
}
"""


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "input.tdsl"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data", [b"", b"\n\n\n", b"   \t\n", b"# only a comment\n", b"/* c */"])
def test_empty_file_has_no_models(tmp_path: Path, data: bytes) -> None:
    checked = check_file(write(tmp_path, data))
    assert isinstance(checked, CheckedProgram)
    assert checked.models == {}
    assert checked.definitions == {}


def test_binary_garbage_is_a_located_utf8_error(tmp_path: Path) -> None:
    garbage = bytes(range(256)) * 4  # control bytes first, then the invalid 0x80
    error = diagnostics_of(write(tmp_path, garbage))
    [diag] = error.diagnostics
    assert diag.message == "file is not valid UTF-8 (byte 0x80)"
    assert diag.span is not None
    assert (diag.span.line, diag.span.column) == (2, 118)  # 0x0a ends line 1 at byte 10


def test_control_characters_are_an_unexpected_character(tmp_path: Path) -> None:
    error = diagnostics_of(write(tmp_path, b"\x00\x01\x02model"))
    [diag] = error.diagnostics
    assert diag.message == "unexpected character U+0000"
    assert diag.span is not None and (diag.span.line, diag.span.column) == (1, 1)


def test_invalid_utf8_is_located_at_the_bad_byte(tmp_path: Path) -> None:
    # 'é' before the bad byte is two bytes but one column: columns count characters.
    data = MODEL.encode().replace(b"fc = Linear(", "fé = Linear(".encode() + b"\xff")
    path = write(tmp_path, data)
    error = diagnostics_of(path)
    [diag] = error.diagnostics
    assert diag.message == "file is not valid UTF-8 (byte 0xff)"
    assert diag.span is not None and (diag.span.line, diag.span.column) == (3, 17)
    shown = data.decode("utf-8", "replace").split("\n")[2]
    assert_rendered(diag, str(path), error.source, shown)


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    checked = check_file(write(tmp_path, b"\xef\xbb\xbf" + MODEL.encode()))
    assert list(checked.models) == ["Net"]


@pytest.mark.parametrize("via", ["file", "text"])
def test_file_over_the_size_limit_is_refused(tmp_path: Path, via: str) -> None:
    padding = "# " + "x" * 1000 + "\n"
    text = MODEL + padding * (MAX_SOURCE_BYTES // len(padding) + 1)
    with pytest.raises(CompileError) as info:
        if via == "file":
            check_file(write(tmp_path, text.encode()))
        else:
            check_source(text)
    [diag] = info.value.diagnostics
    assert "too large" in diag.message and "128 KiB" in diag.message


def test_missing_file_is_a_diagnostic(tmp_path: Path) -> None:
    error = diagnostics_of(tmp_path / "nope.tdsl")
    assert [d.message for d in error.diagnostics] == ["cannot read file: No such file or directory"]


def in_model(statement: str, forward: str = "return fc(x)") -> str:
    """A valid model with one extra block-level statement and the given forward body."""
    return (
        "model Net(num_classes: int = 10) {\n    input x: Tensor[N, 64]\n"
        f"    fc = Linear(64, num_classes)\n{statement}\n"
        f"    forward(x) {{\n{forward}\n    }}\n}}\n"
    )


DEEP = 1000
TOO_DEEP = f"nesting is too deep (more than {MAX_DEPTH} levels)"
NESTED = {  # id: (program, the one expected message)
    "lists": (in_model("    let a = " + "[" * DEEP + "1" + "]" * DEEP), TOO_DEEP),
    "unary minus": (in_model("    let a = " + "-" * DEEP + "1"), TOO_DEEP),
    "not": (in_model("    let a = " + "not " * DEEP + "true"), TOO_DEEP),
    "calls": (in_model("", "return " + "relu(" * DEEP + "x" + ")" * DEEP), TOO_DEEP),
    "if blocks": (in_model("    if true {\n" * DEEP + "    }\n" * DEEP), TOO_DEEP),
    "Sequential blocks": (in_model("    s = " + "Sequential {\n" * DEEP + "}\n" * DEEP), TOO_DEEP),
    "braces only": (
        "{" * DEEP + "}" * DEEP,
        "unexpected '{'; expected 'block', 'model' or 'layer'",
    ),
}


@pytest.mark.parametrize(("text", "message"), NESTED.values(), ids=NESTED.keys())
def test_deep_nesting_is_refused_in_words(text: str, message: str) -> None:
    # 1,000 levels would overflow Python's stack in a recursive pass: the parser must
    # refuse it, in words and at a location, before any such pass runs.
    with pytest.raises(CompileError) as info:
        check_source(text)
    [diag] = info.value.diagnostics
    assert diag.message == message
    assert diag.span is not None


def test_deep_parentheses_are_just_grouping() -> None:
    # Redundant parentheses leave no node in the tree, so any number of them is fine.
    checked = check_source(in_model("    let a = " + "(" * DEEP + "1" + ")" * DEEP))
    assert checked.models["Net"].root.env["a"] == 1


def test_long_expression_within_the_depth_limit_checks() -> None:
    terms = MAX_DEPTH // 2
    checked = check_source(in_model("    let width = " + " + ".join(["1"] * terms)))
    assert checked.models["Net"].root.env["width"] == terms


def test_very_long_expression_chain_is_refused_in_words() -> None:
    with pytest.raises(CompileError) as info:
        check_source(in_model("    let width = " + " + ".join(["1"] * 20_000)))
    [diag] = info.value.diagnostics
    assert diag.message == f"nesting is too deep (more than {MAX_DEPTH} levels)"
    assert diag.help == "split the expression with 'let' bindings"
    # The parse stops at the first node taller than the limit: the error covers the
    # first MAX_DEPTH or so terms ("1 + " is 4 columns each), not the whole chain.
    assert diag.span.line == diag.span.end_line
    assert 4 * (MAX_DEPTH - 2) < diag.span.end_column - diag.span.column < 4 * (MAX_DEPTH + 2)


def test_many_statements_are_fine() -> None:
    # Statement lists are iterated, not recursed: thousands of them check normally.
    forward = "let y = x\n" + "y = relu(y)\n" * 5_000 + "return fc(y)"
    checked = check_source(in_model("", forward))
    assert checked.models["Net"].output is not None


def test_error_recovery_is_bounded_by_counting() -> None:
    # Each retry after a syntax error reports one error; the reporter stops at MAX_ERRORS,
    # so 10,000 broken definitions cost 100 retries, each ending at its own error.
    text = "model A x\n" * 10_000
    with pytest.raises(CompileError) as info:
        check_source(text)
    *errors, stop = info.value.diagnostics
    assert len(errors) == MAX_ERRORS
    assert [d.span.line for d in errors if d.span] == list(range(1, MAX_ERRORS + 1))
    assert (stop.severity, stop.message) == ("note", f"stopped after {MAX_ERRORS} errors")
    assert info.value.render().endswith(f"{MAX_ERRORS} errors in <input>")


def test_an_error_repeated_by_many_instances_is_reported_once() -> None:
    block = ("block B() {\n    fc = Linear(4, 4)\n    forward(x) {\n        return fc(x, x)\n"
             "    }\n}\n")  # fmt: skip
    members = "".join(f"    b{i} = B()\n" for i in range(300))
    calls = "".join(f"        let y{i} = b{i}(x)\n" for i in range(300))
    model = (f"model M() {{\n    input x: Tensor[N, 4]\n{members}    forward(x) {{\n{calls}"
             "        return x\n    }\n}\n")  # fmt: skip
    with pytest.raises(CompileError) as info:
        check_source(block + model)
    assert [d.message for d in info.value.diagnostics] == ["Linear takes one input, got 2"]


def test_many_different_errors_stop_at_the_limit() -> None:
    lets = "".join(f"    let v{i} = w{i}\n" for i in range(1000))
    with pytest.raises(CompileError) as info:
        check_source(f"model M() {{\n    input x: Tensor[N, 4]\n{lets}"
                     "    forward(x) {\n        return x\n    }\n}\n")  # fmt: skip
    *errors, stop = info.value.diagnostics
    assert len(errors) == MAX_ERRORS and stop.message == f"stopped after {MAX_ERRORS} errors"
    assert errors[0].message == "unknown name 'w0'"
