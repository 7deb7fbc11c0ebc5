"""Compile-time values: module instances, symbolic tensor shapes, option symbols.

Plain Python ``int``/``float``/``bool``/``str``/``tuple``/``list`` stand for the
language's scalar and table values; precisions are the runtime's own config objects
(``backend/precision.py``); the classes here cover the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tritondsl.backend.precision import ActivationPrecision, Precision, WeightPrecision
from tritondsl.compiler import nodes as n
from tritondsl.compiler.nodes import Span

Dim = int | str  # a str is a symbolic dimension such as "N" or "(H + 1) // 2"
FLOAT_DTYPES = ("float32", "float16", "bfloat16")
INT_DTYPES = ("int64", "int32")  # token ids and other integer inputs


class EvalError(Exception):
    """A located evaluation problem; caught per statement and turned into a diagnostic."""

    def __init__(self, message: str, span: Span | None, help: str | None = None) -> None:
        super().__init__(message)
        self.message, self.span, self.help = message, span, help
        self.notes: list[tuple[str, Span | None]] = []  # e.g. the call sites it came through


@dataclass(frozen=True, slots=True)
class Poison:
    """Stands in for a value whose evaluation already failed, so errors do not cascade."""


POISON = Poison()


@dataclass(frozen=True, slots=True)
class Symbol:
    """A named constant used as an option value, e.g. ``per_channel`` or ``absmean``."""

    name: str


@dataclass(frozen=True, slots=True)
class SymSize:
    """A tensor size inside forward that is known only when the model runs (``x.shape[0]``,
    or a model's symbolic input size such as ``H``); ``dim`` is its symbolic expression."""

    dim: str


def size_value(dim: Dim) -> int | SymSize:
    """A shape entry as a forward value: ints stay ints."""
    return dim if isinstance(dim, int) else SymSize(dim)


@dataclass(frozen=True, slots=True)
class Init:
    """How a ``param`` tensor starts: ``zeros()``, ``ones()``, ``normal(mean, std)``,
    ``uniform(low, high)``."""

    kind: str
    a: float = 0.0
    b: float = 0.0

    def describe(self) -> str:
        """The call that made it, e.g. ``normal(0, 0.02)``."""
        if self.kind in ("zeros", "ones"):
            return f"{self.kind}()"
        return f"{self.kind}({self.a:g}, {self.b:g})"


@dataclass(frozen=True, eq=False)
class Named:
    """``named("encoder_layer_0", block)``: a Sequential child with a name of its own."""

    name: str
    module: Module


@dataclass(eq=False)
class Module:
    """An instantiated layer, block or Sequential: one node of a model's module tree."""

    kind: str  # built-in layer name, "Sequential", or the block's name
    span: Span
    args: dict[str, Any] = field(default_factory=dict)  # bound constructor arguments
    children: dict[str, Module | TensorDecl] = field(default_factory=dict)
    definition: n.Definition | None = None  # the block/layer/model this instantiates
    env: dict[str, Any] = field(default_factory=dict)  # the block's compile-time scope
    explicit: WeightPrecision | None = None  # from `expr @ precision`
    weights_default: WeightPrecision | None = None  # from a `weights` statement in the block
    precision: WeightPrecision | None = None  # resolved for quantizable layers
    explicit_act: ActivationPrecision | None = None  # from `expr @ a8(...)`
    activations_default: ActivationPrecision | None = None  # an `activations` statement
    activation: ActivationPrecision | None = None  # resolved for quantizable layers
    path: str = ""
    sequential: bool = False  # children run in order (Sequential, or a `block B = Sequential`)
    inputs: dict[str, Tensor] = field(default_factory=dict)  # a model's `input` declarations
    attached: bool = False  # a module may have one owner only
    out_shapes: list[Any] = field(default_factory=list)  # recorded during shape inference
    # A statement of its body failed without poisoning a name (a Sequential child, an
    # if/for): the module is incomplete, so shape inference skips it instead of
    # reporting follow-on errors.
    broken: bool = False
    live_at_calls: list[list[Tensor]] = field(default_factory=list)  # tensors alive per call
    in_shapes: list[Tensor] = field(default_factory=list)  # a built-in layer's inputs, per call
    op_calls: list[OpCall] = field(default_factory=list)  # forward operations its forward ran

    @property
    def label(self) -> str:
        """The name shown in messages: the block name or the layer kind."""
        return self.kind


@dataclass(frozen=True)
class OpCall:
    """One forward operation as shape inference ran it (exporters look for unexportable ones)."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    span: Span
    result: Any  # the output Tensor (or tuple of them)


@dataclass(eq=False)
class TensorDecl:
    """A tensor declared in a layer: ``param W: TernaryTensor[n, k]`` or a trit constant."""

    name: str
    shape: tuple[int, ...]
    ternary: bool
    learnable: bool
    span: Span
    values: tuple[int, ...] | None = None
    precision: WeightPrecision | None = None
    path: str = ""
    init: Init | None = None  # a float ``param``'s initializer (None: like nn.Linear's weight)


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor flowing through ``forward``: its (possibly symbolic) shape and dtype."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def show(self) -> str:
        """``[N, 64, 56, 56]``."""
        return show_shape(self.shape)


def show_shape(shape: tuple[Dim, ...]) -> str:
    """Format a shape as ``[N, 64, 56, 56]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def type_name(value: Any) -> str:
    """The language's name for a value's type, for messages."""
    match value:
        case bool():
            return "bool"
        case int():
            return "int"
        case float():
            return "float"
        case str():
            return "str"
        case tuple():
            return "tuple"
        case list():
            return "list"
        case WeightPrecision():
            return "precision"
        case Init():
            return "initializer"
        case ActivationPrecision():
            return "activation"
        case Symbol():
            return "option"
        case SymSize():
            return "size"
        case Module():
            return value.label
        case Tensor():
            return "Tensor"
        case TensorDecl():
            return "TernaryTensor" if value.ternary else "Tensor"
        case _:
            return getattr(value, "type_word", type(value).__name__)


def show_value(value: Any) -> str:
    """A short rendering of a value for messages."""
    match value:
        case bool():
            return "true" if value else "false"
        case str():
            return repr(value)
        case Tensor():
            return f"a tensor of shape {value.show()}"
        case Module():
            return f"a {value.label} layer"
        case Precision() | Init():
            return value.describe()
        case Named():
            return f"named({value.name!r}, {show_value(value.module)})"
        case Symbol():
            return value.name
        case SymSize():
            return f"the size {value.dim}"
        case TensorDecl():
            kind = "ternary tensor" if value.ternary else "tensor"
            return f"the {kind} '{value.name}' of shape {show_shape(value.shape)}"
        case tuple() | list():
            # Items in the language's spelling (true, not True; no dataclass reprs).
            inner = ", ".join(show_value(v) for v in value[:20])
            if isinstance(value, tuple):
                text = f"({inner},)" if len(value) == 1 else f"({inner})"
            else:
                text = f"[{inner}]"
            return text if len(text) < 60 and len(value) <= 20 else text[:57] + "..."
        case _:
            return repr(value)


def is_int(value: Any) -> bool:
    """True for ints that are not bools."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for ints and floats, not bools."""
    return isinstance(value, int | float) and not isinstance(value, bool)
