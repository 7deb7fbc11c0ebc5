"""Parsing: AST shapes and spans, layout rules, and that lark stays inside parser.py."""

from __future__ import annotations

import re

import pytest

from tests.conftest import EXAMPLES, ROOT, ZOO
from tritondsl.compiler import nodes as n
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.parser import decode, parse


def test_spans_point_at_the_source() -> None:
    source = "model M(k: int = 3) {\n    conv = Conv2d(3, 8, k, padding=1)\n}\n"
    program = parse(source)
    (model,) = program.definitions
    assert (model.kind, model.name) == ("model", "M")
    assert model.name_span == n.Span(1, 7, 1, 8)
    (assign,) = model.body
    assert isinstance(assign, n.Assign)
    call = assign.value
    assert isinstance(call, n.Call)
    assert call.span == n.Span(2, 12, 2, 38)
    assert [kw.name for kw in call.kwargs] == ["padding"]
    lines = source.split("\n")
    k = call.args[2]
    assert lines[k.span.line - 1][k.span.column - 1 : k.span.end_column - 1] == "k"


def test_newlines_inside_brackets_do_not_end_statements() -> None:
    program = parse("block B() = Sequential(\n  ReLU(),\n  ReLU()\n)\n")
    alias = program.definitions[0].alias
    assert isinstance(alias, n.SeqExpr) and len(alias.body) == 2


def test_semicolons_separate_statements_and_comments_are_ignored() -> None:
    program = parse("# lead\nmodel M() { let a = 1; let b = 2 /* inline */ }  # tail\n")
    assert [s.name for s in program.definitions[0].body] == ["a", "b"]


def test_operator_precedence() -> None:
    (let,) = parse("model M() { let a = 1 + 2 * 3 ** 2 }").definitions[0].body
    value = let.value
    assert isinstance(value, n.Binary) and value.op == "+"
    assert isinstance(value.right, n.Binary) and value.right.op == "*"
    assert isinstance(value.right.right, n.Binary) and value.right.right.op == "**"


def test_conditional_expression_and_boolean_operators() -> None:
    (let,) = parse("model M() { let a = 1 if x and not y or z else 2 }").definitions[0].body
    cond = let.value
    assert isinstance(cond, n.Cond) and isinstance(cond.cond, n.BoolOp)
    assert cond.cond.op == "or"


def test_string_escapes_are_decoded() -> None:
    (let,) = parse('model M() { let s = "a\\tb\\"c" }').definitions[0].body
    assert let.value == n.Str('a\tb"c', let.value.span)


def test_unknown_escape_is_an_error() -> None:
    with pytest.raises(CompileError, match=r"unknown escape sequence '\\q'"):
        parse('model M() { let s = "\\q" }')


def test_empty_file_is_an_empty_program() -> None:
    assert parse("").definitions == ()
    assert parse("\n\n# only a comment\n").definitions == ()


def test_one_syntax_error_per_definition_is_reported() -> None:
    source = "block A() {\n  x = = 1\n}\nblock B() {\n  y = )\n}\nmodel C() {\n  let ok = 1\n}\n"
    with pytest.raises(CompileError) as info:
        parse(source)
    assert [(d.span.line, d.span.column) for d in info.value.diagnostics] == [(2, 7), (5, 7)]


def test_invalid_utf8_is_located() -> None:
    with pytest.raises(CompileError) as info:
        decode(b"model M() {\n  let a = \xff\n}\n", "bad.tdsl")
    (diag,) = info.value.diagnostics
    assert diag.span is not None and (diag.span.line, diag.span.column) == (2, 11)
    assert "not valid UTF-8" in diag.message


@pytest.mark.parametrize("path", ZOO + EXAMPLES, ids=lambda p: p.name)
def test_every_node_has_a_span_inside_the_file(path) -> None:
    source = path.read_text()
    program = parse(source, str(path))
    last_line = source.count("\n") + 1
    for definition in program.definitions:
        for node in n.walk(definition):
            span = node.span
            assert 1 <= span.line <= span.end_line <= last_line, node


PARSING = {"parser.py", "tree_depth.py"}  # the parser and the tree class it builds with


def test_nothing_after_parsing_imports_lark() -> None:
    importing = re.compile(r"^\s*(import lark|from lark)", re.MULTILINE)
    offenders = [p.name for p in (ROOT / "compiler").glob("*.py")
                 if p.name not in PARSING and importing.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize("word", ["block", "model", "layer", "input", "weights"])
def test_soft_keywords_name_members_at_the_start_of_a_statement(word: str) -> None:
    source = (f"model M() {{\n    input x: Tensor[N, 4]\n    {word} = Linear(4, 4)\n"
              f"    if true {{\n        {word} = 1\n    }}\n    s = Sequential {{\n"
              f"        {word} = ReLU(); {word} = 2\n    }}\n"
              f"    forward(x) {{\n        {word} = {word}(x)\n        return {word}\n    }}\n}}\n")
    (model,) = parse(source).definitions
    assigns = [s for s in n.walk(model) if isinstance(s, n.Assign) and s.name != "s"]
    assert [a.name for a in assigns] == [word] * 5
    assert model.body[0] == n.InputDecl("x", model.body[0].type, model.body[0].span)


def test_a_definition_keyword_before_a_name_still_starts_a_definition() -> None:
    # An unclosed '{' swallows the next model: the error names the keyword, not 'Net'.
    with pytest.raises(CompileError) as info:
        parse("model A() {\n    if true {\n        x = 1\n}\nmodel Net() {\n}\n")
    (diag,) = info.value.diagnostics
    assert (diag.span.line, diag.span.column) == (5, 1)
    assert diag.message == "unexpected keyword 'model' inside a definition; expected '}'"
    assert "never closed" in (diag.help or "")
