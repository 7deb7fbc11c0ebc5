"""The front-end pipeline: text -> parsed -> resolved -> instantiated -> shape-inferred.

``check_source`` / ``check_file`` return a ``CheckedProgram`` or raise ``CompileError``
with every diagnostic found; no other exception escapes for any input text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritondsl.compiler import nodes as n
from tritondsl.compiler.diagnostics import (
    CompileError,
    Diagnostic,
    Reporter,
    TooManyErrors,
    printable,
)
from tritondsl.compiler.evaluate import BudgetExceeded
from tritondsl.compiler.infer import ShapeInference
from tritondsl.compiler.instantiate import resolve_precisions
from tritondsl.compiler.layers import LAYERS, activation_state
from tritondsl.compiler.parser import MAX_SOURCE_BYTES, SOURCE_LIMIT, decode, parse
from tritondsl.compiler.resolve import resolve
from tritondsl.compiler.values import EvalError, Module, Poison, Tensor, TensorDecl


@dataclass(frozen=True)
class StateItem:
    """One predicted state_dict entry of a built model."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    learnable: bool


@dataclass
class ModelInfo:
    """A model instantiated with concrete arguments, with inferred shapes."""

    name: str
    definition: n.Definition
    root: Module
    args: dict[str, Any]
    output: Any  # a Tensor, a tuple of them, or None when inference failed

    @property
    def inputs(self) -> dict[str, Tensor]:
        """The declared inputs by name."""
        return self.root.inputs

    def modules(self) -> Iterator[Module]:
        """Every module of the tree in definition order (the root first)."""
        stack = [self.root]
        while stack:
            module = stack.pop()
            yield module
            stack.extend(reversed([c for c in module.children.values() if isinstance(c, Module)]))

    def state_dict(self) -> list[StateItem]:
        """The state_dict entries of the generated model: each layer's float tensors and its
        input quantizer's state (``Learned`` weight scales are not listed)."""
        items: list[StateItem] = []
        for module in self.modules():
            prefix = f"{module.path}." if module.path else ""
            spec = LAYERS.get(module.kind)
            if spec is not None and not module.sequential:
                entries = [*spec.state(module.args), *activation_state(module.activation)]
                items.extend(
                    StateItem(prefix + e.name, e.shape, e.dtype, e.learnable) for e in entries
                )
            for child in module.children.values():
                if isinstance(child, TensorDecl) and child.learnable and child.ternary:
                    # a TernaryTensor param is a bias-free Linear
                    items.append(StateItem(f"{child.path}.weight", child.shape, "float32", True))
                elif isinstance(child, TensorDecl) and child.learnable:  # a float param
                    items.append(StateItem(child.path, child.shape, "float32", True))
                elif isinstance(child, TensorDecl):
                    items.append(StateItem(child.path, child.shape, "int8", False))
        return items

    def num_parameters(self) -> int:
        """Number of learnable scalars (what ``sum(p.numel() for p in parameters())`` gives)."""
        return sum(math.prod(i.shape) for i in self.state_dict() if i.learnable)


@dataclass
class CheckedProgram:
    """The result of a successful check."""

    program: n.Program
    source: str
    definitions: dict[str, n.Definition]
    models: dict[str, ModelInfo] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The file this program came from."""
        return self.program.path


def check_file(
    path: str | Path,
    args: Mapping[str, Mapping[str, Any]] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> CheckedProgram:
    """Read and check a .tdsl file (see ``check_source`` for ``args`` and ``sizes``)."""
    shown = printable(str(path))
    try:
        with Path(path).open("rb") as file:
            # One byte past the limit is enough to refuse: a huge (or endless, like
            # /dev/zero) file is never loaded whole.
            data = file.read(MAX_SOURCE_BYTES + 1)
    except OSError as exc:
        raise CompileError(
            [Diagnostic(f"cannot read file: {exc.strerror or exc}", None)], shown
        ) from None
    if len(data) > MAX_SOURCE_BYTES:
        limit = SOURCE_LIMIT
        raise CompileError([Diagnostic(f"file is too large; the limit is {limit}", None)], shown)
    return check_source(decode(data, shown), shown, args, sizes)


def check_source(
    source: str,
    path: str = "<input>",
    args: Mapping[str, Mapping[str, Any]] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> CheckedProgram:
    """Check .tdsl text; ``args`` maps a model name to constructor arguments, ``sizes``
    gives symbolic input sizes (such as ``H``) concrete values for shape inference."""
    try:
        return _check(source.removeprefix("\ufeff"), path, args or {}, dict(sizes or {}))
    except RecursionError:
        diag = Diagnostic("program is nested too deeply to check", None)
        raise CompileError([diag], path, source) from None


def _check(
    source: str, path: str, args: Mapping[str, Mapping[str, Any]], sizes: dict[str, int]
) -> CheckedProgram:
    program = parse(source, path)
    reporter = Reporter()
    try:
        checked = _check_program(program, source, reporter, args, sizes)
    except TooManyErrors as stop:
        diagnostics = [*_ordered(reporter.diagnostics), stop.diagnostic]
        raise CompileError(diagnostics, path, source) from None
    if reporter.has_errors:
        raise CompileError(_ordered(reporter.diagnostics), path, source)
    return checked


def _check_program(
    program: n.Program,
    source: str,
    reporter: Reporter,
    args: Mapping[str, Mapping[str, Any]],
    sizes: dict[str, int],
) -> CheckedProgram:
    definitions = resolve(program, reporter)
    for name in args:
        if name not in definitions or definitions[name].kind != "model":
            reporter.error(f"no model named '{name}' to pass arguments to", None)
    checked = CheckedProgram(program, source, definitions)
    if not reporter.has_errors:
        engine = ShapeInference(definitions, reporter)
        engine.sizes = sizes
        try:
            for definition in program.definitions:
                if definition.kind == "model" and definitions.get(definition.name) is definition:
                    info = _check_model(engine, definition, dict(args.get(definition.name, {})))
                    if info is not None:
                        checked.models[definition.name] = info
            _check_unused(engine, program)
        except BudgetExceeded as error:
            engine.report(error)
    return checked


def _check_model(
    engine: ShapeInference, definition: n.Definition, args: dict[str, Any]
) -> ModelInfo | None:
    try:
        root = engine.instantiate(definition, [], args, definition.name_span)
    except EvalError as error:
        engine.report(error)
        return None
    for error in resolve_precisions(root):
        engine.report(error)
    output = engine.infer_model(root)
    return ModelInfo(
        definition.name,
        definition,
        root,
        dict(root.args),
        None if isinstance(output, Poison) else output,
    )


def _check_unused(engine: ShapeInference, program: n.Program) -> None:
    """Run blocks no model used, when their defaults allow, so their bodies get checked too."""
    for definition in program.definitions:
        runnable = all(p.default is not None for p in definition.params)
        if definition.name in engine.instantiated or not runnable:
            continue
        try:
            engine.instantiate(definition, [], {}, definition.name_span)
        except EvalError as error:
            engine.report(error)


def _ordered(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Sort by position (the Reporter already dropped repeats)."""
    return sorted(diagnostics, key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))


def verify(checked: CheckedProgram) -> None:
    """Assert the invariants later stages rely on (used by tests after every check)."""
    for info in checked.models.values():
        paths = set()
        for module in info.modules():
            assert module.path not in paths, f"duplicate module path {module.path!r}"
            paths.add(module.path)
            spec = LAYERS.get(module.kind)
            if spec is not None and spec.quantizable:
                assert module.precision is not None, f"{module.path} has no precision"
            assert module is info.root or module.attached, f"{module.path} is not attached"
        assert isinstance(info.output, Tensor | tuple), f"{info.name} has no inferred output"
