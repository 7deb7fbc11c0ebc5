"""``tritondsl.compile`` and ``tritondsl.load_model``: from .tdsl to live PyTorch classes.

The generated source is ordinary Python made only of validated identifiers and
``repr``/JSON-quoted literals (see ``compiler/codegen.py``); it is executed in a fresh
module registered with ``linecache`` so ``inspect`` and TorchScript can read it.
"""

from __future__ import annotations

import builtins
import copyreg
import functools
import hashlib
import linecache
import pickle
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from tritondsl.compiler.check import CheckedProgram, check_file, check_source
from tritondsl.compiler.codegen import generate, source_label
from tritondsl.compiler.diagnostics import CompileError, Diagnostic
from tritondsl.compiler.values import TensorDecl
from tritondsl.models import ZOO, resolve, zoo_names, zoo_path


@dataclass(frozen=True)
class ModelSpec:
    """What a built model was made from; exporters save it so a model can be rebuilt."""

    source: str  # the .tdsl text
    path: str  # where it came from (for messages)
    model: str  # the model's name in that file
    params: dict[str, Any]  # constructor arguments given (the rest are the defaults)
    precision: str | None  # the --precision override, if any


class CompiledProgram:
    """A compiled .tdsl file: its generated classes are attributes, ``.source`` the code."""

    def __init__(self, checked: CheckedProgram, source: str, module: types.ModuleType,
                 precision: str | None = None) -> None:
        self.checked, self.source, self.module = checked, source, module
        self.precision = precision

    def __getattr__(self, name: str) -> Any:
        if name in self.checked.definitions:
            return getattr(self.module, name)
        raise AttributeError(f"{self.checked.path} defines no block or model named {name!r}")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.checked.definitions})

    @property
    def model_names(self) -> list[str]:
        """The models of the file, in order."""
        return list(self.checked.models)

    def build(self, model: str | None = None, **params: Any) -> nn.Module:
        """Instantiate a model (the file's only model unless ``model`` names one)."""
        names = self.model_names
        if model is None:
            if len(names) != 1:
                raise ValueError(f"{self.checked.path} has models {names}; pass model=...")
            model = names[0]
        if model not in names:
            raise ValueError(f"{self.checked.path} has no model {model!r} (models: {names})")
        built = getattr(self.module, model)(**params)
        # A plain attribute (not a buffer): exporters read it, state_dicts do not see it.
        built.tdsl_spec = ModelSpec(self.checked.source, self.checked.path, model, dict(params),
                                    self.precision)
        return built


def where_declared(model: nn.Module, key: str) -> str:
    """Where the layer owning state_dict ``key`` is created in the model's .tdsl source, as
    ``" (Embedding at bitnet_b158.tdsl, line 58)"``; empty when that is unknown."""
    spec = getattr(model, "tdsl_spec", None)
    if not isinstance(spec, ModelSpec):
        return ""
    try:
        info = check_source(spec.source, spec.path, {spec.model: spec.params}).models[spec.model]
    except (CompileError, KeyError):
        return ""
    owner = key.rpartition(".")[0]
    for module in info.modules():
        params = [c for c in module.children.values() if isinstance(c, TensorDecl)]
        for param in params:
            if param.path == key:
                return f" (param {param.name} at {source_label(spec.path)}, line {param.span.line})"
        if module.path == owner:
            return f" ({module.label} at {source_label(spec.path)}, line {module.span.line})"
    return ""


def compile(path_or_text: str | Path, precision: str | None = None) -> CompiledProgram:
    """Check and compile a zoo model (``"resnet18"``), a .tdsl file (a path) or .tdsl text;
    raise ``CompileError`` on errors."""
    return _compile_checked(_check(path_or_text), precision)


def _compile_checked(checked: CheckedProgram, precision: str | None) -> CompiledProgram:
    source = generate(checked, precision)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    label = source_label(checked.path)
    stem = "".join(c if c.isalnum() else "_" for c in label.removesuffix(".tdsl"))
    name = f"tritondsl_generated.{stem}_{digest}"
    filename = f"<tritondsl generated from {label} ({digest})>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    exec(builtins.compile(source, filename, "exec"), module.__dict__)
    # Pickle finds classes by module name, and this module has no file to import from:
    # instances pickle as "rebuild from this .tdsl source", which any process can do.
    origin = (name, checked.source, checked.path, precision)
    for value in vars(module).values():
        if isinstance(value, type) and value.__module__ == name:
            copyreg.pickle(value, functools.partial(_reduce, origin=origin))
    return CompiledProgram(checked, source, module, precision)


def _reduce(obj: nn.Module, origin: tuple[str, str, str, str | None]) -> tuple[Any, ...]:
    return rebuild_instance, (*origin, type(obj).__qualname__), obj.__getstate__()


def rebuild_instance(module_name: str, source: str, path: str, precision: str | None,
                     qualname: str) -> nn.Module:  # fmt: skip
    """An empty instance of a generated class for unpickling (``torch.load`` of a model),
    compiling its .tdsl source again in a process that has not compiled it yet."""
    module = sys.modules.get(module_name)
    if module is None:
        module = _compile_checked(check_source(source, path), precision).module
        if module.__name__ != module_name:
            raise pickle.UnpicklingError(
                f"{module_name} was generated from {path} by another version of tritondsl "
                f"(this one generates {module.__name__}); save a state_dict instead"
            )
    cls = getattr(module, qualname)
    return cls.__new__(cls)


def load_model(
    name_or_path: str | Path, precision: str | None = None, model: str | None = None, **params: Any
) -> nn.Module:
    """Build a zoo model (``"resnet18"``, ``"mobilenetv2"``) or the model of a .tdsl file."""
    path = resolve(name_or_path)
    if not path.exists() and path.suffix != ".tdsl":
        raise ValueError(
            f"unknown model {name_or_path!r}: not a zoo name ({zoo_names()}) or a .tdsl file"
        )
    return compile(path, precision).build(model, **params)


def _check(path_or_text: str | Path) -> CheckedProgram:
    if isinstance(path_or_text, Path):
        return check_file(path_or_text)
    text = str(path_or_text)
    if "\n" not in text and text.lower() in ZOO and not Path(text).exists():
        return check_file(zoo_path(text))
    if "\n" not in text and text.endswith(".tdsl"):
        if not Path(text).exists():
            raise CompileError([Diagnostic("no such file", None)], text)
        return check_file(text)
    return check_source(text, "<string>")
