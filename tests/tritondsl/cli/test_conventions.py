"""The conventions of cli/app.py, checked on every command: choices, exit codes, help, logging."""

from __future__ import annotations

import re
import typing
from enum import StrEnum

import pytest
import typer
from typer.testing import CliRunner

import tritondsl
from tests.conftest import ROOT
from tritondsl.cli import app, choices

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
MLP = str(ROOT / "examples" / "ternary_mlp.tdsl")


def _choice_options() -> list[tuple[str, str, list[str]]]:
    """(command, --option, choices) for every parameter typed with a ``StrEnum``."""
    group = typer.main.get_command(app)
    found = []
    for registered in app.registered_commands:
        function = registered.callback
        assert function is not None
        name = registered.name or function.__name__
        opts = {p.name: p.opts[0] for p in group.commands[name].params}  # type: ignore[attr-defined]
        for param, hint in typing.get_type_hints(function, include_extras=True).items():
            annotated = typing.get_args(hint)
            kinds = typing.get_args(annotated[0]) or annotated[:1] if annotated else ()
            for kind in kinds:
                if isinstance(kind, type) and issubclass(kind, StrEnum):
                    found.append((name, opts[param], [str(m) for m in kind]))
    return found


def test_every_enum_matches_the_set_it_stands_for() -> None:
    from tritondsl.backend.precision import NAMED
    from tritondsl.export import EXPORTERS
    from tritondsl.train.config import OPTIMIZERS, PARALLEL, SCHEDULES
    from tritondsl.train.dataspec import BAD_IMAGES, SMALL_IMAGES

    def values(enum: type[StrEnum]) -> list[str]:
        return [str(member) for member in enum]

    assert values(choices.Precision) == list(NAMED)
    assert values(choices.Optimizer) == list(OPTIMIZERS)
    assert values(choices.Schedule) == list(SCHEDULES)
    assert values(choices.Parallel) == list(PARALLEL)
    assert values(choices.SmallImages) == list(SMALL_IMAGES)
    assert values(choices.BadImages) == list(BAD_IMAGES)
    assert values(choices.Format) == list(EXPORTERS)
    every_form = {w for exporter in EXPORTERS.values() for w in exporter.weights}
    assert set(values(choices.Weights)) == every_form


def test_the_choices_found_cover_the_known_options() -> None:
    found = {(command, option) for command, option, _ in _choice_options()}
    assert {("export", "--format"), ("export", "--weights"), ("compile", "--precision"),
            ("train", "--precision"), ("train", "--optimizer"), ("train", "--schedule"),
            ("train", "--small-images"), ("train", "--bad-images"),
            ("train", "--parallel")} <= found


@pytest.mark.parametrize(("command", "option", "values"), _choice_options())
def test_a_choice_is_listed_in_help_and_a_bad_value_exits_2(
    command: str, option: str, values: list[str]
) -> None:
    shown = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "|".join(values) in shown.output
    result = runner.invoke(app, [command, MLP, "-o", "x", option, "no-such-value"])
    assert result.exit_code == 2, result.output
    assert "no-such-value" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_no_python_objects_and_takes_v_and_q(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert not re.search(r"tritondsl\.\w", result.output), result.output
    if command != "version":
        assert "--verbose" in result.output and "--quiet" in result.output


@pytest.mark.parametrize(
    "args",
    [["frobnicate"], ["check"], ["check", "--no-such-flag", MLP], ["export", MLP],
     ["summary", MLP, "--batch-size", "0"], ["train", MLP, "--epochs", "0"],
     ["compile"], ["publish-release", "x"]],
)  # fmt: skip
def test_usage_errors_exit_2_everywhere(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_version_option_and_command() -> None:
    for args in (["--version"], ["version"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert result.output == f"tritondsl {tritondsl.__version__}\n"


def test_check_reads_standard_input() -> None:
    text = "model M() {\n  input x: Tensor[N, 4]\n  a = Linear(4, 2)\n"
    text += "  forward(x) { return a(x) }\n}\n"
    result = runner.invoke(app, ["check", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert "model M(): x: [N, 4] -> [N, 2]" in result.output
    result = runner.invoke(app, ["check", "-"], input=b"model \xff")
    assert result.exit_code == 1
    assert "<stdin>:1:7: error: file is not valid UTF-8 (byte 0xff)" in result.output


def test_zoo_names_work_in_every_command() -> None:
    result = runner.invoke(app, ["check", "resnet18", "MobileNet_V2"])
    assert result.exit_code == 0, result.output
    assert "ResNet18(num_classes=1000)" in result.output and "MobileNetV2(" in result.output
    result = runner.invoke(app, ["compile", "ternary_mlp"])
    assert result.exit_code == 0 and "class TernaryMLP(nn.Module):" in result.stdout
    result = runner.invoke(app, ["summary", "ternary_mlp"])
    assert result.exit_code == 0 and "TernaryMLP:" in result.output
    assert tritondsl.compile("resnet18").model_names == ["ResNet18"]
    result = runner.invoke(app, ["check", "resnet19"])
    assert result.exit_code == 1 and "resnet19: error: cannot read file" in result.output


def test_quiet_and_verbose_before_or_after_the_command() -> None:
    for args in (["-q", "check", MLP], ["check", MLP, "-q"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and result.output == ""
    assert "ok" in runner.invoke(app, ["check", MLP]).output  # -q did not stick
    for flag_first in (True, False):
        args = ["compile", MLP, "-o", "/dev/null"]
        result = runner.invoke(app, ["-v", *args] if flag_first else [*args, "-v"])
        assert result.exit_code == 0
        assert "wrote /dev/null" in result.output


def test_debug_lines_time_each_step(tmp_path: object) -> None:
    out = f"{tmp_path}/m.onnx"
    result = runner.invoke(app, ["-v", "export", MLP, "-o", out, "--size", "8"])
    assert result.exit_code == 0, result.output
    assert re.search(r"debug: checking in onnxruntime: \d+\.\d\d s", result.output)
    quiet = runner.invoke(app, ["-q", "export", MLP, "-o", out])
    assert "debug:" not in quiet.output  # warnings stay: random weights are worth one
    assert "warning: no --checkpoint given, so the weights are the model's random init" in (
        quiet.output
    )


def test_shell_completion_lists_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    # By default --show-completion is a flag and Typer asks shellingham for the shell of
    # the parent processes: "sh" under make, none at all in an orphaned run, so the test
    # depended on how pytest was started. Typer's switch makes the shell an argument.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = runner.invoke(app, ["--show-completion", "bash"], prog_name="tritondsl")
    assert script.exit_code == 0 and "_TRITONDSL_COMPLETE=complete_bash" in script.output
    env = {"_TRITONDSL_COMPLETE": "complete_bash", "COMP_CWORD": "4",
           "COMP_WORDS": "tritondsl export x --format "}  # fmt: skip
    result = runner.invoke(app, [], prog_name="tritondsl", env=env)
    assert result.output.split() == ["onnx", "decoder", "torchscript", "pt2", "hub", "release"]


def test_usage_errors_exit_2() -> None:
    assert runner.invoke(app, ["check"]).exit_code == 2
    assert runner.invoke(app, ["check", "--no-such-flag", "x.tdsl"]).exit_code == 2
    assert runner.invoke(app, ["frobnicate"]).exit_code == 2
