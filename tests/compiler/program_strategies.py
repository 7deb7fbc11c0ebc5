"""Random *valid* .tdsl programs, for the check => build => forward property test.

``programs()`` draws a ``Program``: the text of one model plus the blocks and layers it
uses, the declared input and concrete values for its symbolic sizes. Every program is valid
by construction (each piece is drawn for the shape that flows into it), so ``tritondsl
check`` must accept it, and the generated PyTorch module must return exactly the inferred
shape (``test_check_builds.py``).

Covered: blocks and ``layer``s calling each other (positional, keyword and default
arguments, bool flags, their own ``weights``), ``block B = Sequential {...}``,
``Sequential(...)`` and ``Sequential { ... }`` with named items and ``let``/``if``/``for``
inside (over ``range`` and over tables), compile-time ``if``/``elif``/``else``, ``let``s,
sizes written as expressions (arithmetic, ``min``/``max``, ``make_divisible``, ``len``,
``round``, ``abs``, indexing, conditionals, reads such as ``conv1.out_channels``),
precisions (``@fp32``/``@fp16``/``@int8``/``@ternary(...)`` and ``weights``), activation
precisions (``@a8(...)``/``@a32``, per-token on Linear, and ``activations``), ``param`` and
constant ``TernaryTensor``s, symbolic input sizes, and in forward: every forward op,
arithmetic with broadcasting, residuals, conditional expressions, ``if``, ``for``, indexing
a Sequential, tuple results.

Adding a layer or a forward operation (each new one must join: ``test_check_builds``
fails while ``LAYER_CASES`` misses a name of ``compiler.layers.LAYERS`` or ``OP_CASES`` one
of ``compiler.functions.FORWARD_OPS``):

* a layer: ``def _my_layer(g: Gen, shape: Shape, keep: bool) -> Drawn | None`` returns the
  constructor text for an input of ``shape`` (the sizes after the batch) and its output
  shape, or None when the layer cannot take that shape; with ``keep`` the output shape
  must equal ``shape``. Draw every choice through ``g`` and write sizes with ``g.size(v)``
  (which sometimes turns them into expressions). Add ``"MyLayer": _my_layer`` to
  ``LAYER_CASES``; ``QUANTIZABLE`` lists the layers ``@precision`` may annotate.
* a forward op: ``def _my_op(g: Gen, x: str, shape: Shape) -> Drawn | None`` gets the
  forward expression ``x`` of a tensor of ``shape`` and returns the expression applying
  the op and its output shape; add it to ``OP_CASES`` (and to ``KEEP_OPS`` if it never
  changes the shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

Shape = tuple[int, ...]  # the sizes after the batch dimension N


@dataclass(frozen=True)
class Drawn:
    """A piece of program text and the shape it produces."""

    text: str
    shape: Shape
    reads: tuple[tuple[str, int], ...] = ()  # int arguments readable as ``member.NAME``


@dataclass(frozen=True)
class Program:
    """A generated program and how to feed its model."""

    source: str
    model: str
    declared: tuple[int | str, ...]  # the input's sizes after N, as declared
    sizes: dict[str, int]  # values of the symbolic sizes
    output: Shape | tuple[Shape, ...]  # what the generator expects (torch decides the truth)
    tokens: int = 0  # > 0: the input is int64 token ids below this vocabulary size

    def input_shape(self, batch: int) -> tuple[int, ...]:
        """The concrete shape of an input batch."""
        return (batch, *(self.sizes[d] if isinstance(d, str) else d for d in self.declared))


@dataclass
class Scope:
    """The compile-time names of the definition being generated."""

    ints: dict[str, int] = field(default_factory=dict)
    bools: dict[str, bool] = field(default_factory=dict)
    reads: dict[int, list[str]] = field(default_factory=dict)  # value -> 'conv1.out_channels'
    pre: list[str] = field(default_factory=list)  # lets to emit before the next statement
    decls: list[str] = field(default_factory=list)  # param/constant tensors (top of the body)
    in_forward: bool = False  # no new lets while writing forward
    model: bool = False  # the model's own definition (its forward reads N, H, W)


PRECISIONS = [
    "fp32", "fp16", "int8", "ternary()", "ternary(threshold=0.5)", "ternary(method=absmean)",
    "ternary(learned=true)", "ternary(sparsity=0.4)", "ternary(scale=per_tensor)",
]  # fmt: skip
# Activation precisions for '@' (per-token only on a Linear itself) and for `activations`.
ACTIVATIONS = [
    "a8", "a32", "a8(signed=true)", "a8(percentile=99.5)", "a8(method=lsq)",
    "a8(method=lsq, signed=true)", "a8(momentum=0.5, signed=true)",
]  # fmt: skip
ACTIVATION_STATEMENTS = [*ACTIVATIONS, "int8", "fp32"]
NAMES = ["conv", "fc", "body", "head", "layers", "proj", "stage", "norm", "act", "seq1_", "b",
         "activations"]  # fmt: skip


class Gen:
    """Draws program pieces; keeps the definitions made so far and the current scope."""

    def __init__(self, draw: st.DrawFn, max_depth: int = 3) -> None:
        self.draw, self.max_depth = draw, max_depth
        self.definitions: list[str] = []
        self.scopes: list[Scope] = [Scope()]
        self.used: set[str] = set()  # names of every definition and compile-time value
        self.depth = 0
        self.symbolic = False  # the input has symbolic sizes: no shape-specific reshapes
        self.used.update(("x", "inp", "h", "r", "t", "u"))  # forward locals

    # ------------------------------------------------------------ choices
    @property
    def scope(self) -> Scope:
        """The scope of the definition being generated."""
        return self.scopes[-1]

    def integer(self, low: int, high: int) -> int:
        """An int in [low, high]."""
        return self.draw(st.integers(low, high))

    def choice(self, items: list) -> object:
        """One of ``items``."""
        return self.draw(st.sampled_from(items))

    def chance(self, percent: int) -> bool:
        """True with about ``percent``% probability."""
        return self.integer(0, 99) < percent

    def fresh(self, base: str) -> str:
        """A name no definition or value of the program uses yet."""
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}{i}"
        self.used.add(name)
        return name

    @contextmanager
    def hidden(self) -> Iterator[None]:
        """Generate code that may not run (a branch, a loop body): its names stay inside."""
        scope = self.scope
        saved = dict(scope.ints), dict(scope.bools), {k: list(v) for k, v in scope.reads.items()}
        try:
            yield
        finally:
            scope.ints, scope.bools, scope.reads = saved

    @contextmanager
    def definition(self) -> Iterator[Scope]:
        """Generate inside a new definition's scope."""
        self.scopes.append(Scope())
        self.depth += 1
        try:
            yield self.scope
        finally:
            self.scopes.pop()
            self.depth -= 1

    # ------------------------------------------------------------ compile-time values
    def size(self, value: int) -> str:
        """Text of an int expression equal to ``value``, often just the literal."""
        scope = self.scope
        same = [name for name, v in scope.ints.items() if v == value] + scope.reads.get(value, [])
        form = self.integer(0, 19)
        if form < 8 or value < 1:
            return str(value)
        if form < 11 and same:
            return str(self.choice(same))
        if form == 11 and scope.ints:
            name, other = self.choice(sorted(scope.ints.items()))
            if value == 2 * other:
                return f"{name} * 2"
            if value == other // 2:
                return f"{name} // 2"
            return f"{name} + {value - other}" if value >= other else f"{name} - {other - value}"
        if form == 12 and not scope.in_forward:
            name = self.fresh(self.choice(["w", "width", "ch", "n"]))
            scope.pre.append(f"let {name} = {self.size(value)}")
            scope.ints[name] = value
            return name
        low, high = max(1, value - 3), value + 3
        forms = [
            f"max({value}, {self.integer(low, value)})",
            f"min([{self.integer(value, high)}, {value}])",
            f"make_divisible({value}, 1)",
            f"round({value} + 0.25)",
            f"int({value} * 1.5) - {value} // 2",
            f"abs(-{value})",
            f"({value} if true else 0)",
            f"[{low}, {value}][1]",
            f"({value},)[0]",
            f"ceil({value} - 0.5)",
            f"floor({value} + 0.75)",
            f"([{value}] * 3)[-1]",
            f"[0, {value}, 1][1:][0]",
        ]
        if value <= 5:
            forms.append(f"len({tuple(range(value))!r})".replace(",)", ")") if value != 1
                         else "len([7])")  # fmt: skip
        if value & (value - 1) == 0:
            forms.append(f"2 ** {value.bit_length() - 1}")
        return str(self.choice(forms))

    def condition(self, value: bool) -> str:
        """Text of a compile-time bool expression equal to ``value``."""
        scope = self.scope
        forms = ["true" if value else "false", f"not {'false' if value else 'true'}"]
        forms += [name if v == value else f"not {name}" for name, v in scope.bools.items()]
        for name, v in list(scope.ints.items())[:3]:
            forms.append(f"{name} {'>=' if value else '<'} {v}")
            forms.append(f"{name} % 2 {'==' if (v % 2 == 0) == value else '!='} 0")
        return str(self.choice(forms))

    @contextmanager
    def statement(self) -> Iterator[list[str]]:
        """Collect the ``let`` lines that sizes drawn now need before the statement."""
        scope = self.scope
        outer, scope.pre = scope.pre, []
        try:
            yield scope.pre
        finally:
            scope.pre = outer

    def precision(self) -> str:
        """A precision expression."""
        return str(self.choice(PRECISIONS))

    def annotate(self, drawn: Drawn, layer: str | None = None) -> Drawn:
        """``drawn`` with, sometimes, a weight and/or an activation annotation."""
        text = drawn.text
        weights = self.chance(20 if layer else 15)
        activation = self.chance(15 if layer else 10)
        choices = ACTIVATIONS + (["a8(method=per_token)"] if layer == "Linear" else [])
        for kind in ["weights", "activation"] if self.chance(50) else ["activation", "weights"]:
            if kind == "weights" and weights:
                text += f" @{self.precision()}"
            elif kind == "activation" and activation:
                text += f" @{self.choice(choices)}"
        return Drawn(text, drawn.shape)

    def activations_statement(self) -> list[str]:
        """Sometimes an `activations` default for a definition."""
        return [f"activations {self.choice(ACTIVATION_STATEMENTS)}"] if self.chance(20) else []

    # ------------------------------------------------------------ modules
    def module(self, shape: Shape, keep: bool = False) -> Drawn:
        """A constructor expression (layer, Sequential, block) taking ``shape``."""
        kinds = ["layer"] * 6
        if self.depth < self.max_depth:
            kinds += ["sequential", "sequential", "block", "block"]
        while True:
            kind = self.choice(kinds)
            if kind == "layer":
                name = str(self.choice(sorted(LAYER_CASES)))
                drawn = LAYER_CASES[name](self, shape, keep)
                if drawn is None:
                    continue
                return self.annotate(drawn, name) if name in QUANTIZABLE else drawn
            self.depth += 1
            try:
                drawn = self.sequential(shape, keep) if kind == "sequential" else block(
                    self, shape, keep
                )
            finally:
                self.depth -= 1
            return self.annotate(drawn)

    def chain(self, shape: Shape, keep: bool, lo: int = 1, hi: int = 3) -> list[Drawn]:
        """Modules applied one after the other (with ``keep``: each keeps the shape)."""
        items = []
        for _ in range(self.integer(lo, hi)):
            item = self.module(shape, keep)
            items.append(item)
            shape = item.shape
        return items

    def sequential(self, shape: Shape, keep: bool) -> Drawn:
        """``Sequential(a, b)`` or ``Sequential { ... }`` with statements inside."""
        if self.chance(40):
            items = self.chain(shape, keep)
            return Drawn(f"Sequential({', '.join(i.text for i in items)})", items[-1].shape)
        lines, shape = self.seq_body(shape, keep)
        return Drawn("Sequential {\n" + _indent(lines) + "\n}", shape)

    def seq_body(self, shape: Shape, keep: bool, loop: bool = False) -> tuple[list[str], Shape]:
        """Statements of a Sequential body (``loop``: inside a ``for``) and the shape after."""
        lines: list[str] = []
        for _ in range(self.integer(1, 3)):
            form = self.integer(0, 9)
            if form < 5:
                with self.statement() as pre:
                    item = self.module(shape, keep)
                if self.chance(25) and not loop:  # a loop would name it twice
                    name = str(self.choice(NAMES))
                    if name not in self.used:
                        self.used.add(name)
                        lines += [*pre, f"{name} = {item.text}"]
                        shape = item.shape
                        continue
                lines += [*pre, item.text]
                shape = item.shape
            elif form < 7:  # compile-time if: the taken branch may change the shape
                taken = self.chance(50)
                with self.hidden():
                    body, out = self.seq_body(shape, keep, loop)
                with self.hidden():
                    other, _ = self.seq_body(shape, True, loop)
                first, second = (body, other) if taken else (other, body)
                lines += [f"if {self.condition(taken)} {{", _indent(first), "} else {",
                          _indent(second), "}"]  # fmt: skip
                shape = out
            elif form < 9:  # a loop over range(): every item keeps the shape
                var = self.fresh("i")
                with self.hidden():
                    body, _ = self.seq_body(shape, True, loop=True)
                count = self.integer(0, 3)
                lines += [f"for {var} in range({count}) {{", _indent(body), "}"]
            elif len(shape) == 1 and not keep:  # a table of widths, as in the zoo MLP
                width, var = self.fresh("width"), self.fresh("c")
                sizes = [self.integer(1, 8) for _ in range(self.integer(1, 3))]
                act = self.choice(["ReLU()", "GELU()"])
                with self.statement() as pre:
                    first = self.size(shape[0])
                lines += [*pre, f"let {width} = {first}", f"for {var} in {sizes} {{",
                          f"    Linear({width}, {var})", f"    {act}", f"    let {width} = {var}",
                          "}"]  # fmt: skip
                shape = (sizes[-1],)
        return lines, shape


# ---------------------------------------------------------------- user definitions


def block(g: Gen, shape: Shape, keep: bool) -> Drawn:
    """Define a block (or ``layer``) for ``shape`` and return a call of it."""
    name = g.fresh(str(g.choice(["Block", "Unit", "Stage"])))
    args = [(g.fresh("cin"), shape[0])] + [(g.fresh("p"), g.integer(1, 8))
                                           for _ in range(g.integer(0, 2))]  # fmt: skip
    flag = (g.fresh("flag"), g.chance(50)) if g.chance(40) else None
    # Defaults are the values passed here, so a call may leave them out.
    defaults = {p for p, _ in args[g.integer(0, len(args)) :]}
    params = [f"{p}: int" + (f" = {v}" if p in defaults else "") for p, v in args]
    if flag:
        params.append(f"{flag[0]}: bool = {str(not flag[1]).lower()}")
    with g.definition() as scope:
        scope.ints.update(args)
        if flag:
            scope.bools[flag[0]] = flag[1]
        if g.chance(30):
            lines, out = g.seq_body(shape, keep)
            text = f"block {name}({', '.join(params)}) = Sequential {{\n{_indent(lines)}\n}}"
        else:
            own = [f"weights {g.precision()}"] if g.chance(25) else []
            own += g.activations_statement()
            lines, out = definition_body(g, shape, keep, model=False)
            kind = g.choice(["block", "block", "layer"])
            text = f"{kind} {name}({', '.join(params)}) {{\n{_indent(own + lines)}\n}}"
    g.definitions.append(text)
    passed: list[str] = []
    positional = True
    for param, value in args:
        if param in defaults and g.chance(50):
            positional = False
            continue
        positional = positional and g.chance(70)
        passed.append(g.size(value) if positional else f"{param}={g.size(value)}")
    if flag:
        passed.append(f"{flag[0]}={g.condition(flag[1])}")
    return Drawn(f"{name}({', '.join(passed)})", out, tuple(args))


def definition_body(g: Gen, shape: Shape, keep: bool, model: bool) -> tuple[list[str], Shape]:
    """Members and forward of a block or model taking ``shape`` (returns lines, output)."""
    scope = g.scope
    members: list[str] = []
    forward: list[str] = []
    x = "x" if model else str(g.choice(["x", "inp", "h"]))
    cur, cur_shape = x, shape
    for _ in range(g.integer(1, 4)):
        form = g.integer(0, 9)
        if form < 5:  # a member, maybe chosen by a compile-time if
            name = g.fresh(str(g.choice(NAMES)))
            if g.chance(20):
                taken = g.chance(50)
                with g.statement() as pre, g.hidden():
                    item = g.module(cur_shape, keep)
                    other = g.module(cur_shape, True)
                first, second = (item, other) if taken else (other, item)
                members += [*pre, f"if {g.condition(taken)} {{", f"    {name} = {first.text}",
                            "} else {", f"    {name} = {second.text}", "}"]  # fmt: skip
            else:
                with g.statement() as pre:
                    item = g.module(cur_shape, keep)
                members += [*pre, f"{name} = {item.text}"]
            for value, read in _reads(name, item):
                scope.reads.setdefault(value, []).append(read)
            cur, cur_shape = f"{name}({cur})", item.shape
        elif form < 7:  # a forward operation
            op = _op(g, cur, cur_shape, keep)
            cur, cur_shape = op.text, op.shape
        elif form == 7:  # a residual around a shape-keeping module
            name = g.fresh(str(g.choice(NAMES)))
            with g.statement() as pre:
                item = g.module(cur_shape, True)
            members += [*pre, f"{name} = {item.text}"]
            forward.append(f"{g.choice(['let ', ''])}r = {cur}")
            cur = str(g.choice([f"r + {name}(r)", f"{name}(r) - r", f"r * {name}(r)"]))
        elif form == 8:  # a forward if on a compile-time condition
            forward.append(f"let t = {cur}")
            taken = g.chance(50)
            then = _op(g, "t", cur_shape, keep)
            other = _op(g, "t", cur_shape, True)
            first, second = (then, other) if taken else (other, then)
            forward += [f"if {_forward(g, g.condition, taken)} {{", f"    t = {first.text}",
                        "} else {", f"    t = {second.text}", "}"]  # fmt: skip
            cur, cur_shape = "t", then.shape
        else:  # a forward loop over a Sequential of shape-keeping layers
            name = g.fresh("layers")
            count = g.integer(1, 3)
            with g.statement() as pre:
                items = [g.module(cur_shape, True) for _ in range(count)]
            members += [*pre, f"{name} = Sequential({', '.join(i.text for i in items)})"]
            var = g.fresh("i")
            forward += [f"let u = {cur}", f"for {var} in range({count}) {{",
                        f"    u = {name}[{var}](u)", "}"]  # fmt: skip
            cur = "u"
    if keep and cur_shape != shape:
        raise AssertionError("a shape-keeping body changed the shape")
    result, outputs = cur, cur_shape
    if model and g.chance(15):
        extra = _op(g, cur, cur_shape, False)
        result, outputs = f"({cur}, {extra.text})", (cur_shape, extra.shape)
    forward.append(f"return {result}")
    lines = [*scope.decls, *members, f"forward({x}) {{", _indent(forward), "}"]
    return lines, outputs  # type: ignore[return-value]


def _reads(name: str, item: Drawn) -> list[tuple[int, str]]:
    """Attribute reads of a member's arguments, with their values."""
    if item.reads:
        return [(value, f"{name}.{arg}") for arg, value in item.reads]
    if item.text.startswith("Conv2d("):
        return [(item.shape[0], f"{name}.out_channels")]
    if item.text.startswith("Linear("):
        return [(item.shape[-1], f"{name}.out_features")]
    if item.text.startswith("BatchNorm2d("):
        return [(item.shape[0], f"{name}.num_features")]
    return []


def _forward(g: Gen, make: Callable, *args: object) -> Any:
    """Call ``make`` in forward mode (no new lets)."""
    g.scope.in_forward = True
    try:
        return make(*args)
    finally:
        g.scope.in_forward = False


def _op(g: Gen, x: str, shape: Shape, keep: bool) -> Drawn:
    names = sorted(KEEP_OPS) if keep else sorted(OP_CASES)
    while True:
        drawn = _forward(g, OP_CASES[str(g.choice(names))], g, x, shape)
        if drawn is not None and (not keep or drawn.shape == shape):
            return drawn


# ---------------------------------------------------------------- layers


def _window(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    """torch's output length of a sliding window (conv and pooling)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pair(g: Gen, a: int, b: int) -> str:
    return g.size(a) if a == b and g.chance(70) else f"({g.size(a)}, {g.size(b)})"


def _conv(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    if len(shape) != 3:
        return None
    c, h, w = shape
    out = c if keep else g.integer(1, 8)
    common = [d for d in range(1, min(c, out) + 1) if c % d == 0 and out % d == 0]
    groups = int(g.choice(common))
    if keep:
        k = int(g.choice([1, 3]))
        kh, kw, s, d, ph, pw = k, k, 1, 1, k // 2, k // 2
    else:
        kh, kw, s, d = g.integer(1, 3), g.integer(1, 3), g.integer(1, 2), g.integer(1, 2)
        ph, pw = g.integer(0, 2), g.integer(0, 2)
        ph = max(ph, -(-(d * (kh - 1) + 1 - h) // 2))
        pw = max(pw, -(-(d * (kw - 1) + 1 - w) // 2))
    args = [g.size(c), g.size(out), _pair(g, kh, kw)]
    if s != 1 or g.chance(20):
        args.append(f"stride={g.size(s)}")
    if (ph, pw) != (0, 0) or g.chance(20):
        args.append(f"padding={_pair(g, ph, pw)}")
    if d != 1:
        args.append(f"dilation={d}")
    if groups != 1:
        args.append(f"groups={g.size(groups)}")
    if g.chance(40):
        args.append(f"bias={g.choice(['true', 'false'])}")
    oh, ow = _window(h, kh, s, ph, d), _window(w, kw, s, pw, d)
    return Drawn(f"Conv2d({', '.join(args)})", (out, oh, ow))


def _linear(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    out = shape[-1] if keep else g.integer(1, 12)
    bias = f", bias={g.choice(['true', 'false'])}" if g.chance(30) else ""
    return Drawn(f"Linear({g.size(shape[-1])}, {g.size(out)}{bias})", (*shape[:-1], out))


def _batchnorm(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    if len(shape) != 3:
        return None
    options = [o for o in ("eps=0.001", "momentum=0.2", "affine=false",
                           "track_running_stats=false") if g.chance(20)]  # fmt: skip
    return Drawn(f"BatchNorm2d({', '.join([g.size(shape[0]), *options])})", shape)


def _pool(name: str) -> Callable[[Gen, Shape, bool], Drawn | None]:
    def draw(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
        if len(shape) != 3:
            return None
        c, h, w = shape
        if keep:
            k, s, p, d, ceil = 1, 1, 0, 1, False
        else:
            k, s, d = g.integer(1, 3), g.integer(1, 3), 1
            if name == "MaxPool2d" and g.chance(20):
                d = 2
            p = g.integer(0, k // 2)
            ceil = g.chance(30)
        if min(h, w) + 2 * p < d * (k - 1) + 1:
            return None
        args = [g.size(k)]
        if s != k or g.chance(30):
            args.append(f"stride={g.size(s)}")
        if p:
            args.append(f"padding={p}")
        if d != 1:
            args.append(f"dilation={d}")
        if ceil:
            args.append("ceil_mode=true")
        if name == "AvgPool2d" and g.chance(20):
            args.append("count_include_pad=false")
        out = (c, _window(h, k, s, p, d, ceil), _window(w, k, s, p, d, ceil))
        return Drawn(f"{name}({', '.join(args)})", out)

    return draw


def _adaptive(name: str) -> Callable[[Gen, Shape, bool], Drawn | None]:
    def draw(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
        if len(shape) != 3:
            return None
        oh = shape[1] if keep else g.integer(1, 4)
        ow = shape[2] if keep else oh if g.chance(50) else g.integer(1, 4)
        return Drawn(f"{name}({_pair(g, oh, ow)})", (shape[0], oh, ow))

    return draw


def _deconv(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    if len(shape) != 3:
        return None
    c, h, w = shape
    out = c if keep else g.integer(1, 8)
    common = [d for d in range(1, min(c, out) + 1) if c % d == 0 and out % d == 0]
    groups = int(g.choice(common))
    if keep:  # stride 1: out = size + d(k - 1) - 2p
        k = int(g.choice([1, 3]))
        kh, kw, s, d, p, op = k, k, 1, 1, k // 2, 0
    else:
        kh, kw, s, d = g.integer(1, 3), g.integer(1, 3), g.integer(1, 3), g.integer(1, 2)
        p, op = g.integer(0, 1), g.integer(0, max(s, d) - 1)
    oh = (h - 1) * s - 2 * p + d * (kh - 1) + op + 1
    ow = (w - 1) * s - 2 * p + d * (kw - 1) + op + 1
    if min(oh, ow) < 1:
        return None
    args = [g.size(c), g.size(out), _pair(g, kh, kw)]
    if s != 1 or g.chance(20):
        args.append(f"stride={g.size(s)}")
    if p or g.chance(20):
        args.append(f"padding={p}")
    if op:
        args.append(f"output_padding={op}")
    if groups != 1:
        args.append(f"groups={g.size(groups)}")
    if d != 1:
        args.append(f"dilation={d}")
    if g.chance(30):
        args.append(f"bias={g.choice(['true', 'false'])}")
    return Drawn(f"ConvTranspose2d({', '.join(args)})", (out, oh, ow))


def _upsample(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    if len(shape) != 3:
        return None
    c, h, w = shape
    mode = str(g.choice(["", ', mode="nearest"', ', mode="bilinear", align_corners=true',
                         ', mode="bicubic"', ', mode="nearest-exact"']))  # fmt: skip
    if keep or g.chance(50):
        oh, ow = (h, w) if keep else (g.integer(1, 6), g.integer(1, 6))
        return Drawn(f"Upsample(size={_pair(g, oh, ow)}{mode})", (c, oh, ow))
    fh, fw = g.integer(1, 3), g.integer(1, 3)
    factor = g.size(fh) if fh == fw else f"({fh}, {fw})"
    return Drawn(f"Upsample(scale_factor={factor}{mode})", (c, h * fh, w * fw))


def _softmax(name: str) -> Callable[[Gen, Shape, bool], Drawn | None]:
    def draw(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
        dim = g.integer(0, len(shape))
        written = dim if g.chance(50) else dim - len(shape) - 1
        return Drawn(f"{name}({'dim=' if g.chance(50) else ''}{written})", shape)

    return draw


def _stochastic_depth(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    p, mode = g.choice(["0.2", "0.0", "1.0"]), g.choice(['"row"', '"batch"'])
    return Drawn(f"StochasticDepth({p}, {mode})" if g.chance(50) else
                 f"StochasticDepth(mode={mode}, p={p})", shape)  # fmt: skip


def _image_only(draw: Callable[[Gen, Shape, bool], Drawn | None]) -> Callable[..., Drawn | None]:
    return lambda g, shape, keep: draw(g, shape, keep) if len(shape) == 3 else None


def _flatten_layer(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    rank = len(shape) + 1
    if keep and rank > 2:
        return None
    start = g.integer(1, rank - 1)
    end = g.integer(start, rank - 1)
    out = (*shape[: start - 1], math.prod(shape[start - 1 : end]), *shape[end:])
    args = []
    if start != 1 or g.chance(30):
        args.append(str(start if g.chance(50) else start - rank))
    if end != rank - 1 or g.chance(30):
        args.append(f"end_dim={end if g.chance(50) else end - rank}")
    return Drawn(f"Flatten({', '.join(args)})", out)


def _simple(name: str, *options: str) -> Callable[[Gen, Shape, bool], Drawn | None]:
    def draw(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
        chosen = [o for o in options if g.chance(30)]
        return Drawn(f"{name}({', '.join(chosen)})", shape)

    return draw


def _norm(name: str, *options: str) -> Callable[[Gen, Shape, bool], Drawn | None]:
    def draw(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
        chosen = [o for o in options if g.chance(30)]
        return Drawn(f"{name}({', '.join([g.size(shape[-1]), *chosen])})", shape)

    return draw


def _token_layer(g: Gen, shape: Shape, keep: bool) -> Drawn | None:
    return None  # Embedding and TiedLinear need token ids: programs() draws them (_tokens)


LAYER_CASES: dict[str, Callable[[Gen, Shape, bool], Drawn | None]] = {
    "Conv2d": _conv,
    "Linear": _linear,
    "BatchNorm2d": _batchnorm,
    "MaxPool2d": _pool("MaxPool2d"),
    "AvgPool2d": _pool("AvgPool2d"),
    "AdaptiveAvgPool2d": _adaptive("AdaptiveAvgPool2d"),
    "AdaptiveMaxPool2d": _adaptive("AdaptiveMaxPool2d"),
    "ConvTranspose2d": _deconv,
    "Upsample": _upsample,
    "Flatten": _flatten_layer,
    "ReLU": _simple("ReLU", "inplace=true"),
    "ReLU6": _simple("ReLU6"),
    "GELU": _simple("GELU", 'approximate="tanh"'),
    "Dropout": _simple("Dropout", "p=0.25", "inplace=true"),
    "Identity": _simple("Identity"),
    "LayerNorm": _norm("LayerNorm", "eps=0.001", "elementwise_affine=false", "bias=false"),
    "RMSNorm": _norm("RMSNorm", "eps=0.001", "elementwise_affine=false"),
    "Embedding": _token_layer,
    "TiedLinear": _token_layer,
    "Tanh": _simple("Tanh"),
    "Sigmoid": _simple("Sigmoid"),
    "SiLU": _simple("SiLU", "inplace=true"),
    "Hardswish": _simple("Hardswish", "inplace=true"),
    "Hardsigmoid": _simple("Hardsigmoid"),
    "Mish": _simple("Mish"),
    "LeakyReLU": _simple("LeakyReLU", "negative_slope=0.3"),
    "ELU": _simple("ELU", "alpha=0.5"),
    "Softmax": _softmax("Softmax"),
    "LogSoftmax": _softmax("LogSoftmax"),
    "Dropout2d": _image_only(_simple("Dropout2d", "p=0.25")),
    "StochasticDepth": _stochastic_depth,
}
QUANTIZABLE = {"Conv2d", "ConvTranspose2d", "Linear"}


# ---------------------------------------------------------------- forward operations


def _unary(name: str) -> Callable[[Gen, str, Shape], Drawn | None]:
    return lambda g, x, shape: Drawn(f"{name}({x})", shape)


def _flatten_op(g: Gen, x: str, shape: Shape) -> Drawn | None:
    rank = len(shape) + 1
    start = g.integer(1, rank - 1)
    end = g.integer(start, rank - 1)
    out = (*shape[: start - 1], math.prod(shape[start - 1 : end]), *shape[end:])
    if end == rank - 1 and g.chance(50):
        return Drawn(f"flatten({x}, {start})", out)
    return Drawn(f"flatten({x}, start_dim={start}, end_dim={end - rank})", out)


def _cat(g: Gen, x: str, shape: Shape) -> Drawn | None:
    dim = g.integer(1, len(shape))
    copies = g.integer(1, 3)
    items = ", ".join([x, *[f"relu({x})"] * (copies - 1)])
    out = tuple(d * copies if i == dim - 1 else d for i, d in enumerate(shape))
    written = dim if g.chance(50) else dim - len(shape) - 1
    return Drawn(f"cat([{items}], {'dim=' if g.chance(50) else ''}{written})", out)


def _reshape(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if g.symbolic:
        return None
    total = math.prod(shape)
    divisors = [d for d in range(1, total + 1) if total % d == 0]
    first = int(g.choice(divisors))
    out = (first, total // first) if g.chance(50) else (total,)
    sizes = ", ".join(g.size(d) for d in out)
    return Drawn(f"reshape({x}, -1, {sizes})", out)


def _matmul(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if len(shape) < 2 or shape[-1] != shape[-2]:
        return None
    return Drawn(f"matmul({x}, {x})" if g.chance(50) else f"({x}) @ ({x})", shape)


def _adaptive_op(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if len(shape) != 3:
        return None
    name = g.choice(["adaptive_avg_pool2d", "adaptive_max_pool2d"])
    size = g.integer(1, 3)
    if g.chance(50):
        return Drawn(f"{name}({x}, {size})", (shape[0], size, size))
    return Drawn(f"{name}({x}, ({size}, 1))", (shape[0], size, 1))


def _ternary_matmul(g: Gen, x: str, shape: Shape) -> Drawn | None:
    """``ternary_matmul(x, W)`` with W a ``param`` or a constant of the definition."""
    out = g.integer(1, 6)
    name = g.fresh("W")
    if g.chance(50):
        g.scope.decls.append(f"param {name}: TernaryTensor[{out}, {shape[-1]}]")
    else:
        rows = [[g.integer(-1, 1) for _ in range(shape[-1])] for _ in range(out)]
        g.scope.decls.append(f"let {name}: TernaryTensor[{out}, {shape[-1]}] = {rows}")
    return Drawn(f"ternary_matmul({x}, {name})", (*shape[:-1], out))


def _arith(g: Gen, x: str, shape: Shape) -> Drawn | None:
    x = f"({x})"
    forms = [f"{x} + {x}", f"{x} * 0.5", f"2 - {x}", f"{x} / 4", f"-{x}", f"{x} * {x}"]
    if len(shape) == 3:  # broadcasting, as in squeeze-and-excitation
        forms.append(f"{x} * sigmoid(adaptive_avg_pool2d({x}, 1))")
    return Drawn(str(g.choice(forms)), shape)


def _conditional(g: Gen, x: str, shape: Shape) -> Drawn | None:
    taken = g.chance(50)
    return Drawn(f"(relu({x}) if {g.condition(taken)} else ({x}))", shape)


def _option(name: str, option: str, value: float) -> Callable[[Gen, str, Shape], Drawn | None]:
    def draw(g: Gen, x: str, shape: Shape) -> Drawn | None:
        return Drawn(f"{name}({x}, {option}={value})" if g.chance(50) else f"{name}({x})", shape)

    return draw


def _dim(g: Gen, shape: Shape, batch: bool = False) -> int:
    """A dimension of the batched tensor (1.. unless ``batch``), sometimes written negative."""
    return g.integer(0 if batch else 1, len(shape))


def _written(g: Gen, dim: int, shape: Shape) -> int:
    return dim if g.chance(50) else dim - len(shape) - 1


def _along_dim(name: str) -> Callable[[Gen, str, Shape], Drawn | None]:
    def draw(g: Gen, x: str, shape: Shape) -> Drawn | None:
        dim = _written(g, _dim(g, shape, batch=True), shape)
        return Drawn(f"{name}({x}, {'dim=' if g.chance(50) else ''}{dim})", shape)

    return draw


def _reduction(name: str) -> Callable[[Gen, str, Shape], Drawn | None]:
    def draw(g: Gen, x: str, shape: Shape) -> Drawn | None:
        dims = sorted({_dim(g, shape) for _ in range(g.integer(1, 2))})
        keep = g.chance(40) or len(dims) == len(shape)  # the batch is never reduced away
        out = tuple(1 if i + 1 in dims else d for i, d in enumerate(shape) if keep or i + 1
                    not in dims)  # fmt: skip
        written = [_written(g, d, shape) for d in dims]
        dim = str(written[0]) if len(written) == 1 and g.chance(50) else str(written)
        return Drawn(f"{name}({x}, {dim}{', keepdim=true' if keep else ''})", out)

    return draw


def _transpose(g: Gen, x: str, shape: Shape) -> Drawn | None:
    a, b = _dim(g, shape), _dim(g, shape)
    out = list(shape)
    out[a - 1], out[b - 1] = out[b - 1], out[a - 1]
    return Drawn(f"transpose({x}, {_written(g, a, shape)}, {_written(g, b, shape)})", tuple(out))


def _permute(g: Gen, x: str, shape: Shape) -> Drawn | None:
    order = g.draw(st.permutations(range(1, len(shape) + 1)))
    out = tuple(shape[i - 1] for i in order)
    items = [0, *order]
    return Drawn(f"permute({x}, {items})" if g.chance(50) else
                 f"permute({x}, {', '.join(map(str, items))})", out)  # fmt: skip


def _chunk(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if g.symbolic:  # needs the size of the dimension
        return None
    dim, chunks = _dim(g, shape), g.integer(1, 3)
    each = -(-shape[dim - 1] // chunks)
    out = tuple(min(each, d) if i == dim - 1 else d for i, d in enumerate(shape))
    return Drawn(f"chunk({x}, {chunks}, dim={_written(g, dim, shape)})[0]", out)


def _split(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if g.symbolic:  # needs the size of the dimension
        return None
    dim = _dim(g, shape)
    size = shape[dim - 1]
    if size >= 2 and g.chance(50):
        first = g.integer(1, size - 1)
        out = tuple(size - first if i == dim - 1 else d for i, d in enumerate(shape))
        return Drawn(f"split({x}, [{first}, {size - first}], {_written(g, dim, shape)})[1]", out)
    part = g.integer(1, size)
    out = tuple(part if i == dim - 1 else d for i, d in enumerate(shape))
    return Drawn(f"split({x}, {part}, dim={_written(g, dim, shape)})[0]", out)


def _interpolate(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if len(shape) != 3:
        return None
    mode = g.choice(["", ', mode="nearest"', ', mode="bilinear"'])
    if g.chance(50):
        h, w = g.integer(1, 6), g.integer(1, 6)
        return Drawn(f"interpolate({x}, size=({h}, {w}){mode})", (shape[0], h, w))
    factor = g.integer(1, 3)
    return Drawn(f"interpolate({x}, scale_factor={factor}{mode})",
                 (shape[0], shape[1] * factor, shape[2] * factor))  # fmt: skip


def _linear_op(g: Gen, x: str, shape: Shape) -> Drawn | None:
    """``linear(x, W, b)`` with float ``param``s of the definition (W quantized like Linear)."""
    out = g.integer(1, 6)
    weight, bias = g.fresh("Wf"), g.fresh("bf")
    init = str(g.choice(["", " = normal(0, 0.1)", " = uniform(-0.5, 0.5)"]))
    g.scope.decls.append(f"param {weight}: Tensor[{out}, {shape[-1]}]{init}")
    if g.chance(50):
        g.scope.decls.append(f"param {bias}: Tensor[{out}] = {g.choice(['zeros()', 'ones()'])}")
        return Drawn(f"linear({x}, {weight}, {bias})", (*shape[:-1], out))
    return Drawn(f"linear({x}, {weight})", (*shape[:-1], out))


def _split_heads(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if len(shape) < 2:  # the batch must stay in front
        return None
    if g.symbolic:  # the feature size must be known; a symbolic W may still be last
        return None
    heads = int(g.choice([h for h in range(1, shape[-1] + 1) if shape[-1] % h == 0]))
    return Drawn(f"split_heads({x}, {heads})",
                 (*shape[:-2], heads, shape[-2], shape[-1] // heads))  # fmt: skip


def _merge_heads(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if len(shape) < 3:
        return None
    return Drawn(f"merge_heads({x})", (*shape[:-3], shape[-2], shape[-3] * shape[-1]))


def _attention(g: Gen, x: str, shape: Shape) -> Drawn | None:
    options = [o for o in ("is_causal=true", "dropout_p=0.1", "scale=0.5") if g.chance(30)]
    return Drawn(f"scaled_dot_product_attention({', '.join([x, x, x, *options])})", shape)


def _rotary(g: Gen, x: str, shape: Shape) -> Drawn | None:
    if shape[-1] % 2:
        return None
    theta = f", theta={g.choice(['10000.0', '500000.0'])}" if g.chance(50) else ""
    return Drawn(f"rotary({x}{theta})", shape)


def _expand(g: Gen, x: str, shape: Shape) -> Drawn | None:
    """``expand`` of a size-1 dimension (made by a reduction) back to a size."""
    dim = _dim(g, shape)
    grown = g.integer(1, 4)
    sizes = ["x.shape[0]" if g.chance(50) else "-1"]
    sizes += [str(grown) if i == dim - 1 else "-1" for i in range(len(shape))]
    out = tuple(grown if i == dim - 1 else d for i, d in enumerate(shape))
    return Drawn(f"expand(amax({x}, {dim}, keepdim=true), {', '.join(sizes)})", out)


def _slice(g: Gen, x: str, shape: Shape) -> Drawn | None:
    """``x[:, a:b:s]`` on one dimension, or an int index dropping it (never the batch)."""
    dim = _dim(g, shape)
    size = shape[dim - 1]
    lead = ":, " * dim
    if g.chance(25) and len(shape) > 1 and not g.symbolic:
        i = g.integer(-size, size - 1)
        return Drawn(f"({x})[{lead}{i}]", tuple(d for j, d in enumerate(shape) if j != dim - 1))
    if g.symbolic and dim > 1:  # a symbolic size: bounds it surely reaches
        start = g.integer(0, 1) if size > 1 else 0
        return Drawn(f"({x})[{lead}{start}:]", tuple(
            d - start if j == dim - 1 else d for j, d in enumerate(shape)))
    start, stop, step = g.integer(-size, size - 1), g.integer(-size, size), g.integer(1, 3)
    length = len(range(size)[start:stop:step])
    if length == 0:
        return None
    text = f"{start}:{stop}" + (f":{step}" if step != 1 or g.chance(30) else "")
    return Drawn(f"({x})[{lead}{text}]", tuple(
        length if j == dim - 1 else d for j, d in enumerate(shape)))


def _sizes_reshape(g: Gen, x: str, shape: Shape) -> Drawn | None:
    """``reshape`` written with run-time sizes: ``x.shape[i]``, ``N``, ``H``, ``W``."""
    if len(shape) < 2:
        return None
    model = g.scope.model
    first = str(g.choice(["N", f"({x}).shape[0]", "-1"] if model else [f"({x}).shape[0]", "-1"]))
    if len(shape) == 3:
        # The input's own symbols only where they are its sizes: the model's input itself.
        forms = ["H * W", "W * H", f"({x}).shape[2] * W"] if model and x == "x" and g.symbolic \
            else [f"({x}).shape[2] * ({x}).shape[-1]"]
        rest = str(g.choice(forms))
        return Drawn(f"reshape({x}, {first}, {g.size(shape[0])}, {rest})",
                     (shape[0], shape[1] * shape[2]))
    last = math.prod(shape[1:])
    return Drawn(f"reshape({x}, {first}, ({x}).shape[1] * {g.size(last)})", (shape[0] * last,))


OP_CASES: dict[str, Callable[[Gen, str, Shape], Drawn | None]] = {
    **{name: _unary(name) for name in ("relu", "relu6", "gelu", "sigmoid", "tanh", "silu",
                                        "hardswish", "hardsigmoid", "mish", "sqrt", "exp")},
    "leaky_relu": _option("leaky_relu", "negative_slope", 0.2),
    "elu": _option("elu", "alpha", 0.5),
    "softmax": _along_dim("softmax"),
    "log_softmax": _along_dim("log_softmax"),
    "mean": _reduction("mean"),
    "sum": _reduction("sum"),
    "amax": _reduction("amax"),
    "transpose": _transpose,
    "permute": _permute,
    "chunk": _chunk,
    "split": _split,
    "interpolate": _interpolate,
    "adaptive_max_pool2d": _adaptive_op,
    "flatten": _flatten_op,
    "cat": _cat,
    "reshape": _reshape,
    "matmul": _matmul,
    "ternary_matmul": _ternary_matmul,
    "adaptive_avg_pool2d": _adaptive_op,
    "arithmetic": _arith,
    "conditional": _conditional,
    "gelu": _option("gelu", "approximate", '"tanh"'),  # type: ignore[arg-type]
    "relu2": _unary("relu2"),
    "linear": _linear_op,
    "split_heads": _split_heads,
    "merge_heads": _merge_heads,
    "scaled_dot_product_attention": _attention,
    "causal_mask": _unary("causal_mask"),
    "rotary": _rotary,
    "kv_cache": lambda g, x, shape: Drawn(f"kv_cache({x}, {x})[{g.integer(0, 1)}]", shape),
    "expand": _expand,
    "slice": _slice,
    "sizes": _sizes_reshape,
}
KEEP_OPS = {"relu", "relu6", "gelu", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid", "mish",
            "sqrt", "exp", "leaky_relu", "elu", "softmax", "log_softmax", "arithmetic",
            "conditional", "relu2", "scaled_dot_product_attention", "causal_mask", "rotary",
            "kv_cache"}  # fmt: skip


# ---------------------------------------------------------------- whole programs


@st.composite
def programs(draw: st.DrawFn, max_depth: int = 3) -> Program:
    """One valid model with the blocks and layers it uses."""
    g = Gen(draw, max_depth)
    if not g.chance(85):  # written so that the simplest example is not a language model
        return _tokens(g)
    image = g.chance(60)
    if image:
        c, h, w = g.integer(1, 4), g.integer(1, 9), g.integer(1, 9)
        symbolic = g.chance(30)
        declared: tuple[int | str, ...] = (c, "H", "W") if symbolic else (c, h, w)
        sizes = {"H": h, "W": w} if symbolic else {}
        g.symbolic = symbolic
        shape: Shape = (c, h, w)
    else:
        shape = (g.integer(1, 9),) if g.chance(70) else (g.integer(1, 4), g.integer(1, 6))
        declared, sizes = shape, {}
    name = g.fresh("Net")
    params = [(g.fresh("width"), g.integer(1, 8)) for _ in range(g.integer(0, 2))]
    with g.definition() as scope:
        scope.model = True
        scope.ints.update(params)
        head = [f"input x: Tensor[N, {', '.join(map(str, declared))}]"]
        if g.chance(50):
            head.append(f"weights {g.precision()}")
        head += g.activations_statement()
        lines, output = definition_body(g, shape, keep=False, model=True)
    signature = ", ".join(f"{p}: int = {v}" for p, v in params)
    model = f"model {name}({signature}) {{\n{_indent(head + lines)}\n}}"
    source = "\n\n".join([*g.definitions, model]) + "\n"
    return Program(source, name, declared, sizes, output)


def _tokens(g: Gen) -> Program:
    """A language model: int64 token ids, an Embedding, a shape-keeping middle, a head that
    is the Embedding itself (TiedLinear) or a Linear."""
    vocab, dim, length = g.integer(2, 20), g.integer(1, 8), g.integer(1, 6)
    symbolic = g.chance(40)
    name = g.fresh("Net")
    with g.definition():
        with g.statement() as pre:
            middle = g.module((length, dim), keep=True)
        tied = g.chance(50)
        head = "TiedLinear(embed)" if tied else f"Linear({dim}, {vocab})"
        lines = [f"input x: Tensor[N, {'T' if symbolic else length}, int64]",
                 f"embed = Embedding({vocab}, {dim})", *pre, f"middle = {middle.text}",
                 f"head = {head}", "forward(x) {", "    return head(middle(embed(x)))", "}"]
    model = f"model {name}() {{\n{_indent(lines)}\n}}"
    source = "\n\n".join([*g.definitions, model]) + "\n"
    declared: tuple[int | str, ...] = ("T",) if symbolic else (length,)
    sizes = {"T": length} if symbolic else {}
    return Program(source, name, declared, sizes, (length, vocab), tokens=vocab)


def _indent(lines: list[str] | str) -> str:
    text = lines if isinstance(lines, str) else "\n".join(lines)
    return "\n".join("    " + line if line else line for line in text.split("\n"))
