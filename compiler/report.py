"""Plain-text descriptions of checked programs for the command line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tritondsl.compiler.check import CheckedProgram
from tritondsl.compiler.values import Tensor, show_value


def show_output(output: Any) -> str:
    """``[N, 1000]`` for a tensor, ``([N, 10], [N, 4])`` for a tuple of them."""
    if isinstance(output, Tensor):
        return output.show()
    if isinstance(output, tuple | list):
        return "(" + ", ".join(show_output(o) for o in output) + ")"
    return show_value(output)


def describe_models(checked: CheckedProgram) -> Iterator[str]:
    """One line per model: arguments, inputs, inferred output shape, parameter count."""
    if not checked.models:
        kinds = ", ".join(f"{d.kind} {d.name}" for d in checked.definitions.values())
        yield f"no models ({kinds or 'empty file'})"
    for info in checked.models.values():
        args = ", ".join(f"{k}={show_value(v)}" for k, v in info.args.items())
        inputs = ", ".join(f"{k}: {t.show()}" for k, t in info.inputs.items())
        yield (
            f"model {info.name}({args}): {inputs} -> {show_output(info.output)}  "
            f"[{info.num_parameters():,} parameters]"
        )
