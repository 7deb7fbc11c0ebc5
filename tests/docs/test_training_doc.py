"""docs/training.md names only options `tritondsl train` has, and documents all of them."""

from __future__ import annotations

import re

import typer.main

from tests.conftest import ROOT
from tritondsl.cli import app

DOC = (ROOT / "docs" / "training.md").read_text()


def _train_options() -> set[str]:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    names = set()
    for param in command.params:
        names |= {o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")}
    return names - {"--help", "--verbose", "--quiet"}


def test_the_option_table_matches_the_command() -> None:
    table = "\n".join(line for line in DOC.splitlines() if line.startswith("| `"))
    documented = set(re.findall(r"`(--[a-z0-9-]+)", table))
    options = _train_options()
    assert documented - options == set(), "documented but not an option"
    # Every option is in the table (a --no-X form counts for --X/--no-X pairs).
    missing = {o for o in options if o not in documented and f"--no-{o[2:]}" not in documented
               and not (o.startswith("--no-") and f"--{o[5:]}" in documented)}  # fmt: skip
    assert missing == set(), "options missing from docs/training.md"
