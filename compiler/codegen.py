"""Checked program -> readable PyTorch source (one class per block, layer and model).

Compile-time ``if``/``for``/``let`` become the same Python statements in ``__init__``;
each class takes the DSL's parameters plus a keyword-only ``weights`` precision, which
is how the model's default precision reaches the layers of nested blocks:

* a call annotated ``Block(...) @P`` passes ``weights=P``;
* ``weights=None`` (the parameter's default) stands for the block's own ``weights``
  statement, or fp32 without one; unannotated calls of a block with its own ``weights``
  leave it alone;
* otherwise calls pass the caller's ``weights`` on.

This reproduces the checker's rule (use-site ``@`` > the block's ``weights`` > inherited).
Activation precisions follow the same rule through a second keyword, ``activations``, which
classes take only when their file uses activation precisions (``a8``, ``a32``, an
``activations`` statement or an ``activation`` parameter), so other programs generate as
before. An ``@P`` whose family is not visible in the text (P a ``let`` or loop value) is
routed at run time by ``rt.weights_of`` / ``rt.activations_of``.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import PurePath

import jinja2

from tritondsl.backend.precision import (
    A32,
    ACTIVATION_ALIASES,
    ACTIVATION_BUILDERS,
    ACTIVATION_NAMED,
    BUILDERS,
    FP32,
    NAMED,
    OPTION_WORDS,
    Precision,
)
from tritondsl.compiler import nodes as n
from tritondsl.compiler.check import CheckedProgram
from tritondsl.compiler.diagnostics import CompileError, Diagnostic
from tritondsl.compiler.functions import COMPILE_TIME, CONSTANTS, FORWARD_OPS
from tritondsl.compiler.infer import find_forward
from tritondsl.compiler.instantiate import DTYPES, input_sizes
from tritondsl.compiler.layers import LAYERS, RUNTIME_LAYERS
from tritondsl.compiler.pyexpr import OR, POSTFIX, CodegenError, PyPrinter, py_str, wrap
from tritondsl.compiler.transformer import linear_weights

FORWARD_CALLS = {
    "relu": "F.relu",
    "relu6": "F.relu6",
    "gelu": "F.gelu",
    "sigmoid": "torch.sigmoid",
    "tanh": "torch.tanh",
    "silu": "F.silu",
    "hardswish": "F.hardswish",
    "hardsigmoid": "F.hardsigmoid",
    "mish": "F.mish",
    "leaky_relu": "F.leaky_relu",
    "elu": "F.elu",
    "sqrt": "torch.sqrt",
    "exp": "torch.exp",
    "softmax": "F.softmax",
    "log_softmax": "F.log_softmax",
    "mean": "torch.mean",
    "sum": "torch.sum",
    "amax": "torch.amax",
    "flatten": "torch.flatten",
    "cat": "torch.cat",
    "transpose": "torch.transpose",
    "chunk": "torch.chunk",
    "split": "torch.split",
    "matmul": "torch.matmul",
    "adaptive_avg_pool2d": "F.adaptive_avg_pool2d",
    "adaptive_max_pool2d": "F.adaptive_max_pool2d",
    "interpolate": "F.interpolate",
    "relu2": "rt.relu2",
    "split_heads": "rt.split_heads",
    "merge_heads": "rt.merge_heads",
    "causal_mask": "rt.causal_mask",
    "kv_cache": "rt.kv_cache",
}
# Compile-time built-ins that are not Python built-ins.
COMPILE_CALLS = {"make_divisible": "rt.make_divisible", "ceil": "rt.ceil", "floor": "rt.floor"}
# Operations whose runtime errors name the .tdsl line they come from.
LOCATED_CALLS = {"rotary": "rt.rotary"}
LOCATED_LAYERS = {"Embedding": "rt.Embedding"}
INITIALIZERS = ("zeros", "ones", "normal", "uniform")
# A model that calls one of these takes a KV cache (see tritondsl.transformer.KVCache).
DECODING_OPS = ("kv_cache", "rotary")
PY_TYPES = {
    "int": "int",
    "float": "float",
    "bool": "bool",
    "str": "str",
    "trit": "int",
    "precision": "rt.WeightPrecision",
    "activation": "rt.ActivationPrecision",
    "tuple": "tuple",
    "list": "list",
}
QUANTIZABLE = {name for name, spec in LAYERS.items() if spec.quantizable}


@dataclass
class ClassCode:
    """The pieces of one generated class, laid out by the template."""

    name: str
    base: str
    doc: str
    init_def: list[str]
    init: list[str]
    forward_params: str = ""
    returns: str = ""
    forward: list[str] = field(default_factory=list)
    constants: str = ""  # quoted attribute names for TorchScript's __constants__


def generate(checked: CheckedProgram, precision: str | None = None) -> str:
    """Python source for every definition of ``checked``; ``precision`` overrides all."""
    if precision is not None and precision not in NAMED:
        raise ValueError(f"precision must be one of {', '.join(NAMED)}, got {precision!r}")
    classes = []
    errors: list[Diagnostic] = []
    read = attribute_names(checked.program)
    acts = uses_activations(checked.program)
    for definition in checked.program.definitions:
        try:
            emitter = _ClassEmitter(definition, checked, precision, read, acts)
            classes.append(emitter.emit_class())
        except CodegenError as error:
            errors.append(Diagnostic(error.message, error.span))
    if errors:
        raise CompileError(errors, checked.path, checked.source)
    from tritondsl import __version__

    def render(imports: list[str]) -> str:
        return _template().render(
            version=__version__,
            source_name=repr(source_label(checked.path)),
            sha256=hashlib.sha256(checked.source.encode()).hexdigest(),
            imports=imports,
            classes=classes,
        )

    # Import what the code uses as a name; text inside strings (a file named F.tdsl) is not use.
    optional = {"torch": "import torch", "F": "import torch.nn.functional as F"}
    names = {node.id for node in ast.walk(ast.parse(render([]))) if isinstance(node, ast.Name)}
    imports = [line for name, line in optional.items() if name in names]
    return render([*imports, "from torch import Tensor, nn"])


def uses_activations(program: n.Program) -> bool:
    """Whether any definition of ``program`` mentions an activation precision."""
    for node in n.walk(program):
        match node:
            case n.ActivationsDecl():
                return True
            case n.Name(id=name) if name in ACTIVATION_NAMED or name in ACTIVATION_BUILDERS:
                return True
            case n.TypeExpr(name="activation"):
                return True
    return False


def _construct(precision: Precision) -> str:
    """Python text constructing ``precision``: its dataclass repr, a call on ``rt``."""
    return f"rt.{precision!r}"


def _literal_options(node: n.Call, shadowed: set[str]) -> dict[str, object] | None:
    """The keyword options of a precision call if every one is a literal, else None."""
    if node.args:
        return None
    options: dict[str, object] = {}
    for kw in node.kwargs:
        value = kw.value
        negative = isinstance(value, n.Unary) and value.op == "-"
        if negative:
            value = value.operand  # type: ignore[union-attr]
        match value:
            case n.Num() | n.Bool() if not (negative and isinstance(value, n.Bool)):
                options[kw.name] = -value.value if negative else value.value
            case n.Name() if value.id in OPTION_WORDS and value.id not in shadowed and not negative:
                options[kw.name] = value.id
            case _:
                return None
    return options


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tritondsl.compiler", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    return env.get_template("module.py.jinja")


class _ClassEmitter(PyPrinter):
    """Emits one definition; ``forward`` mode changes how names are printed."""

    def __init__(
        self,
        d: n.Definition,
        checked: CheckedProgram,
        precision: str | None,
        read: frozenset[str],
        acts: bool,
    ) -> None:
        self.d, self.checked, self.override, self.acts = d, checked, precision, acts
        self.definitions = checked.definitions
        body = d.alias.body if isinstance(d.alias, n.SeqExpr) else d.body
        statements = n.walk_statements(body)
        self.members = {s.name for s in statements if isinstance(s, n.Assign)}
        self.params = {s.name for s in statements if isinstance(s, n.ParamDecl)}
        self.linear_weights = linear_weights(d)
        self.tensors = self.params | {
            s.name
            for s in statements
            if isinstance(s, n.Let) and s.type is not None and s.type.name.endswith("Tensor")
        }
        self.values = {p.name for p in d.params}
        for stmt in [d.alias] if d.alias is not None else d.body:
            if isinstance(stmt, n.Forward):
                continue
            for node in n.walk(stmt):
                if isinstance(node, n.Let):
                    self.values.add(node.name)
                elif isinstance(node, n.For):
                    self.values.update(node.targets)
        self.annotated_call: n.Expr | None = None  # the constructor an '@' applies to
        self.annotated_act_call: n.Expr | None = None  # the same for an activation '@'
        self.typed = {p.name: p.type.name for p in d.params}
        self.forward_mode = False
        self.locals: set[str] = set()
        self.stored: set[str] = set()  # compile-time values forward reads from self
        # Parameters some `blk.param` in the program may read: kept on the instance.
        self.readable = {p.name for p in d.params} & read
        self.current = "weights"  # the precision expression in effect
        self.current_act = "activations"  # the activation precision expression in effect
        self.temps = 0
        self.pre: list[str] = []

    # ------------------------------------------------------------ class layout
    def emit_class(self) -> ClassCode:
        d = self.d
        own = next((s for s in d.body if isinstance(s, n.WeightsDecl)), None)
        params = [self.param(p) for p in d.params]
        keywords = ["weights: rt.WeightPrecision | None = None"]
        if self.acts:
            keywords.append("activations: rt.ActivationPrecision | None = None")
        signature = ", ".join(["self", *params, "*", *keywords])
        # The block's own `weights` (else fp32) applies unless the caller passed one.
        default = self.precision_text(own.precision) if own else _construct(FP32())
        prologue = [f"weights = {default} if weights is None else weights"]
        if self.acts:
            own_act = next((s for s in d.body if isinstance(s, n.ActivationsDecl)), None)
            act = self.activation_text(own_act.precision) if own_act else _construct(A32())
            # A statement, not a conditional expression: config reprs are long lines.
            prologue += ["if activations is None:", f"    activations = {act}"]
        init_def = wrap(f"def __init__({signature}) -> None:", width=99 - 4)
        where = f"{d.kind} {d.name} ({source_label(self.checked.path)!r}, line {d.span.line})"
        if isinstance(d.alias, n.SeqExpr):
            init = self.sequential_init(d.alias, prologue)
            init += [f"self.{name} = {name}" for name in sorted(self.readable)]
            return ClassCode(d.name, "nn.Sequential", f"Generated from {where}.", init_def, init)
        init = ["super().__init__()", *prologue]
        init += self.block(d.body, target=None)
        forward = find_forward(d)
        assert forward is not None  # the checker requires one
        code = self.forward(forward)
        init += [f"self.{name} = {name}" for name in sorted(self.stored | self.readable)]
        # Compile-time values that forward reads are constants to TorchScript, so a branch
        # on them (`downsample(x) if project else x`) is resolved when scripting.
        constants = ", ".join(py_str(name) for name in sorted(self.stored))
        params_text = "".join(f", {p.name}: Tensor" for p in forward.params)
        if d.kind == "model" and _decodes(self.checked):
            params_text += ", cache: rt.KVCache | None = None"
            code = ["with rt.decoding(cache):", *_indent(code)]
        last = forward.body[-1] if forward.body else None
        returns = (
            " -> tuple[Tensor, ...]"
            if isinstance(last, n.Return) and isinstance(last.value, n.TupleLit)
            else " -> Tensor"
        )
        return ClassCode(
            d.name,
            "nn.Module",
            f"Generated from {where}.",
            init_def,
            _wrap_all(init),
            params_text,
            returns,
            _wrap_all(code),
            constants,
        )

    def param(self, p: n.Param) -> str:
        annotation = PY_TYPES.get(p.type.name, "object")
        items = [
            PY_TYPES.get(a.id, "object") if isinstance(a, n.Name) else "object"
            for a in p.type.args or ()
        ]
        if p.type.name == "tuple" and items:
            annotation = f"tuple[{', '.join(items)}]"
        elif p.type.name == "list":
            # Defaults must not be mutable lists, so a list parameter also takes a tuple.
            item = items[0] if items else "object"
            annotation = f"tuple[{item}, ...] | list[{item}]"
        default = ""
        if p.default is not None:
            value = p.default
            if isinstance(value, n.ListLit):
                value = n.TupleLit(value.items, value.span)
            default = f" = {self.text(value)}"
        return f"{p.name}: {annotation}{default}"

    def sequential_init(self, seq: n.SeqExpr, prologue: list[str]) -> list[str]:
        if _positional(seq):
            items = ", ".join(self.text(s.expr) for s in seq.body)  # type: ignore[union-attr]
            return _wrap_all([*prologue, *self.pre, f"super().__init__({items})"])
        return _wrap_all(["super().__init__()", *prologue, *self.block(seq.body, target="self")])

    # ------------------------------------------------------------ __init__ statements
    def block(self, stmts: tuple[n.Stmt, ...], target: str | None) -> list[str]:
        """Statements of a block body (target None) or of a Sequential body (target var)."""
        lines: list[str] = []
        # A Sequential built inside a statement is hoisted before it (self.pre); an inner
        # body has its own, so the enclosing statement's hoisted lines are kept aside.
        outer = self.pre
        for stmt in stmts:
            self.pre = []
            produced = self.statement(stmt, target)
            lines += self.pre + produced
        self.pre = outer
        return lines

    def statement(self, stmt: n.Stmt, target: str | None) -> list[str]:
        match stmt:
            case n.Let(type=n.TypeExpr(name="TernaryTensor" | "Tensor")):
                return [self.constant(stmt)]
            case n.Let():
                return [f"{stmt.name} = {self.text(stmt.value)}"]
            case n.Assign() if isinstance(stmt.value, n.SeqExpr) and target is None:
                return self.sequential_member(f"self.{stmt.name}", stmt.value)
            case n.Assign() if target is None:
                return [f"self.{stmt.name} = {self.text(stmt.value)}"]
            case n.Assign():
                return [f"{target}.add_module({py_str(stmt.name)}, {self.text(stmt.value)})"]
            case n.ExprStmt() if _is_named(stmt.expr):
                name, child = stmt.expr.args  # type: ignore[union-attr]
                return [f"{target}.add_module({self.text(name)}, {self.text(child)})"]
            case n.ExprStmt():
                return [f"{target}.append({self.text(stmt.expr)})"]
            case n.If():
                lines = []
                for i, (cond, body) in enumerate(stmt.branches):
                    lines.append(f"{'if' if i == 0 else 'elif'} {self.text(cond)}:")
                    lines += _indent(self.block(body, target))
                if stmt.orelse is not None:
                    lines += ["else:", *_indent(self.block(stmt.orelse, target))]
                return lines
            case n.For():
                head = f"for {', '.join(stmt.targets)} in {self.text(stmt.iterable)}:"
                return [head, *_indent(self.block(stmt.body, target))]
            case n.ParamDecl():
                if stmt.type.name == "Tensor":
                    dims = self.text(n.TupleLit(stmt.type.args or (), stmt.type.span))
                    init = "" if stmt.init is None else f", {self.text(stmt.init)}"
                    line = f"self.{stmt.name} = rt.parameter({dims}{init})"
                    quantized = stmt.name in self.linear_weights
                    return [line, "self.weights = weights"] if quantized else [line]
                out, in_ = (self.text(a) for a in stmt.type.args or ())
                # The checker's rule: a TernaryTensor is ternary unless --precision says else.
                weights = (
                    _construct(NAMED[self.override])
                    if self.override
                    else "rt.ternary_or_default(weights)"
                )
                return [f"self.{stmt.name} = rt.ternary_weight({out}, {in_}, weights={weights})"]
            case _:  # input, weights, forward: handled elsewhere
                return []

    def constant(self, stmt: n.Let) -> str:
        assert stmt.type is not None
        dims = ", ".join(self.text(a) for a in stmt.type.args or ())
        return (
            f"self.register_buffer({py_str(stmt.name)}, torch.tensor({self.text(stmt.value)}, "
            f"dtype=torch.int8).reshape({dims}))"
        )

    def sequential_member(self, var: str, seq: n.SeqExpr) -> list[str]:
        if _positional(seq):
            return [f"{var} = {self.seq(seq)}"]
        return [f"{var} = nn.Sequential()", *self.block(seq.body, target=var)]

    # ------------------------------------------------------------ forward
    def forward(self, forward: n.Forward) -> list[str]:
        self.forward_mode = True
        self.locals = {p.name for p in forward.params}
        lines = [self.input_check(s) for s in self.d.body if isinstance(s, n.InputDecl)]
        used = {node.id for node in n.walk(forward) if isinstance(node, n.Name)}
        for name, (source, axis) in input_sizes(self.d).items():
            # A name the block binds (value, member, tensor) wins, as in the checker.
            bound = self.is_value(name) or name in self.members or name in self.tensors
            if name in used and not bound and name not in self.definitions:
                lines.append(f"{name} = {source}.shape[{axis}]")
                self.locals.add(name)
        lines += self.forward_block(forward.body)
        self.forward_mode = False
        return lines

    def input_check(self, decl: n.InputDecl) -> str:
        dims = []
        dtype = ""
        for arg in decl.type.args or ():
            if isinstance(arg, n.Name) and arg.id in DTYPES:
                dtype = "" if arg.id == "float32" else f", dtype={py_str(arg.id)}"
                continue
            known = isinstance(arg, n.Name) and (
                arg.id in self.definitions or self.is_value(arg.id)
            )
            dims.append(py_str(arg.id) if isinstance(arg, n.Name) and not known else self.text(arg))
        shape = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
        name, where = py_str(decl.name), self.where(decl)
        return f"rt.check_input(self, {name}, {decl.name}, {shape}{dtype}, where={where})"

    def forward_block(self, stmts: tuple[n.Stmt, ...]) -> list[str]:
        lines: list[str] = []
        for stmt in stmts:
            match stmt:
                case n.Let() | n.Assign():
                    value = self.text(stmt.value)
                    self.locals.add(stmt.name)
                    lines.append(f"{stmt.name} = {value}")
                case n.Return():
                    lines.append(f"return {self.text(stmt.value)}")
                case n.If():
                    for i, (cond, body) in enumerate(stmt.branches):
                        lines.append(f"{'if' if i == 0 else 'elif'} {self.text(cond)}:")
                        lines += _indent(self.forward_block(body) or ["pass"])
                    if stmt.orelse is not None:
                        lines += ["else:", *_indent(self.forward_block(stmt.orelse) or ["pass"])]
                case n.For():
                    self.locals.update(stmt.targets)
                    lines.append(f"for {', '.join(stmt.targets)} in {self.text(stmt.iterable)}:")
                    lines += _indent(self.forward_block(stmt.body) or ["pass"])
        return lines

    # ------------------------------------------------------------ names and calls
    def is_value(self, name: str) -> bool:
        """A compile-time value of this definition (parameter, let, loop variable)."""
        return name in self.values

    def name(self, node: n.Name) -> str:
        ident = node.id
        if self.forward_mode:
            if ident in self.locals:
                return ident
            if ident in self.members or ident in self.tensors:
                return f"self.{ident}"
            if self.is_value(ident):
                self.stored.add(ident)
                return f"self.{ident}"
        elif ident in self.members or ident in self.tensors:
            return f"self.{ident}"
        elif self.is_value(ident):  # a parameter or let, even one named like a built-in
            return ident
        if ident in NAMED:
            return self.precision_text(node)
        if ident in ACTIVATION_NAMED:
            return self.activation_text(node)
        if ident in CONSTANTS:  # option symbols such as per_channel
            return repr(ident)
        if ident in LAYERS or ident in FORWARD_OPS:
            raise CodegenError(f"'{ident}' must be called where it is used", node.span)
        return ident

    def precision_text(self, node: n.Expr) -> str:
        """A precision expression; ``--precision`` replaces every one of them.

        A named precision, or a builder call with literal options, becomes the construction
        of its config object; a call with computed options calls the same builder at run time.
        """
        if self.override is not None:
            return _construct(NAMED[self.override])
        if isinstance(node, n.Name) and node.id in NAMED:
            return _construct(NAMED[node.id])
        if isinstance(node, n.Call) and isinstance(node.func, n.Name):
            build = BUILDERS.get(node.func.id)
            if build is not None:
                literal = _literal_options(node, self.values | self.members)
                if literal is not None:
                    return _construct(build(**literal))
                return self.plain_call(f"rt.{node.func.id}", node)
        return self.text(node)

    def activation_text(self, node: n.Expr) -> str:
        """An activation precision expression (``--precision`` leaves these alone)."""
        if isinstance(node, n.Name) and node.id in ACTIVATION_NAMED:
            return _construct(ACTIVATION_NAMED[node.id])
        if isinstance(node, n.Name) and node.id in NAMED:  # `activations int8`
            return _construct(ACTIVATION_ALIASES[NAMED[node.id]])
        if isinstance(node, n.Call) and isinstance(node.func, n.Name):
            build = BUILDERS.get(node.func.id)
            if build is not None and node.func.id in ACTIVATION_BUILDERS:
                literal = _literal_options(node, self.values | self.members)
                if literal is not None:
                    return _construct(build(**literal))
                return self.plain_call(f"rt.{node.func.id}", node)
        if self.family(node) == "activations":
            return self.text(node)
        return f"rt.as_activation({self.text(node)})"

    def family(self, node: n.Expr) -> str | None:
        """Which precision an expression is, where the text alone shows it."""
        if isinstance(node, n.Call) and isinstance(node.func, n.Name):
            node = node.func
        if not isinstance(node, n.Name) or node.id in self.values - set(self.typed):
            return None
        if node.id in self.typed:
            return {"precision": "weights", "activation": "activations"}.get(self.typed[node.id])
        if node.id in ACTIVATION_NAMED or node.id in ACTIVATION_BUILDERS:
            return "activations"
        return "weights" if node.id in NAMED or node.id in BUILDERS else None

    def annotated(self, node: n.Binary) -> str | None:
        if self.forward_mode or not _is_constructor(node.left, self.definitions):
            if not self.forward_mode and isinstance(node.left, n.Name):
                raise CodegenError(
                    "annotate a layer where it is created, e.g. 'x = Conv2d(...) @fp32'", node.span
                )
            return None
        saved = self.current, self.annotated_call, self.current_act, self.annotated_act_call
        target = _constructor(node.left)
        family = self.family(node.right)
        # Without activation precisions in the file every '@' value is a weight precision.
        dynamic = family is None and self.acts
        if family != "activations":
            text = self.precision_text(node.right)
            self.annotated_call = target
            routed = dynamic and self.override is None
            self.current = f"rt.weights_of({text}, {self.current})" if routed else text
        if family == "activations" or dynamic:
            self.annotated_act_call = target
            self.current_act = (
                f"rt.activations_of({self.text(node.right)}, {self.current_act})"
                if dynamic
                else self.activation_text(node.right)
            )
        try:
            return self.text(node.left, 0)
        finally:
            self.current, self.annotated_call, self.current_act, self.annotated_act_call = saved

    def call(self, node: n.Call) -> str:
        func = node.func
        callee = func.id if isinstance(func, n.Name) else None
        shadowed = callee is not None and (
            callee in self.locals or self.is_value(callee) or callee in self.members
        )
        if callee is None or shadowed:
            return self.plain_call(self.text(func, POSTFIX), node)
        if callee in QUANTIZABLE:
            keywords = [f"weights={self.current}"]
            if self.acts:
                keywords.append(f"activations={self.current_act}")
            return self.plain_call(f"rt.{callee}", node, tuple(keywords))
        if callee in LOCATED_LAYERS:
            return self.plain_call(LOCATED_LAYERS[callee], node, (f"where={self.where(node)}",))
        if callee in LAYERS:
            return self.layer_call(callee, node)
        if callee in self.definitions:
            target = self.definitions[callee]
            own = any(isinstance(s, n.WeightsDecl) for s in target.body)
            direct = node is self.annotated_call
            passes = [] if own and not direct else [f"weights={self.current}"]
            own_act = any(isinstance(s, n.ActivationsDecl) for s in target.body)
            if self.acts and (not own_act or node is self.annotated_act_call):
                passes.append(f"activations={self.current_act}")
            return self.plain_call(callee, node, tuple(passes))
        if callee in ACTIVATION_BUILDERS:
            return self.activation_text(node)
        if callee in BUILDERS:
            return self.precision_text(node)
        if callee in COMPILE_CALLS:
            return self.plain_call(COMPILE_CALLS[callee], node)
        if callee in ("reshape", "permute", "expand"):
            # The method takes the sizes spread out or as one list, as the language does.
            shape = ", ".join(self.text(a) for a in node.args[1:])
            return f"{self.text(node.args[0], POSTFIX)}.{callee}({shape})"
        if callee == "ternary_matmul":
            x, w = (self.text(a) for a in node.args)
            weight = node.args[1]
            if isinstance(weight, n.Name) and weight.id in self.params:
                return f"{w}({x})"  # a param is a bias-free ternary Linear
            return f"rt.ternary_matmul({x}, {w})"
        if callee == "linear":
            weight = node.args[1] if len(node.args) > 1 else None
            own = isinstance(weight, n.Name) and weight.id in self.params
            return self.plain_call("rt.linear", node, ("weights=self.weights",) if own else ())
        if callee == "scaled_dot_product_attention":
            return self.attention(node)
        if callee in LOCATED_CALLS:
            return self.plain_call(LOCATED_CALLS[callee], node, (f"where={self.where(node)}",))
        if callee in INITIALIZERS:
            return self.plain_call(f"rt.{callee}", node)
        if callee == "interpolate":
            node = _float_scale(node)
        if callee in FORWARD_CALLS:
            return self.plain_call(FORWARD_CALLS[callee], node)
        if callee in COMPILE_TIME:
            return self.plain_call(callee, node)
        return self.plain_call(callee, node)

    def where(self, node: n.Call | n.InputDecl) -> str:
        """The .tdsl place of a call or declaration, for runtime errors (a quoted literal)."""
        return py_str(f"{source_label(self.checked.path)}, line {node.span.line}")

    def attention(self, node: n.Call) -> str:
        """``F.scaled_dot_product_attention``; dropout only while training, as nn layers do."""
        args = [self.text(a) for a in node.args]
        for kw in node.kwargs:
            value = self.text(kw.value)
            if kw.name == "dropout_p":
                value = f"{self.text(kw.value, OR)} if self.training else 0.0"
            args.append(f"{kw.name}={value}")
        return f"rt.scaled_dot_product_attention({', '.join(args)})"

    def layer_call(self, callee: str, node: n.Call) -> str:
        """``nn.Layer(...)`` without ``inplace``: the language has value semantics (in
        ``x + act(x)`` both terms see the same x), which an in-place layer would break."""
        names = [a.name for a in LAYERS[callee].signature]
        args: list[str] = []
        for name, arg in zip(names, node.args, strict=False):
            if name == "inplace":
                continue
            spelled = self.text(arg)
            args.append(f"{name}={spelled}" if len(args) < names.index(name) else spelled)
        args += [f"{kw.name}={self.text(kw.value)}" for kw in node.kwargs if kw.name != "inplace"]
        return f"{'rt' if callee in RUNTIME_LAYERS else 'nn'}.{callee}({', '.join(args)})"

    def seq(self, node: n.SeqExpr) -> str:
        if _positional(node):
            items = ", ".join(self.text(s.expr) for s in node.body)  # type: ignore[union-attr]
            return f"nn.Sequential({items})"
        self.temps += 1
        var = f"_seq{self.temps}"  # user names never start with '_' (resolve.py)
        body = self.block(node.body, target=var)
        self.pre += [f"{var} = nn.Sequential()", *body]
        return var


def attribute_names(program: n.Program) -> frozenset[str]:
    """Every name read as ``value.name`` anywhere in ``program``."""
    return frozenset(a.name for a in n.walk(program) if isinstance(a, n.Attribute))


def source_label(path: str) -> str:
    """The file name as generated code may show it: ASCII letters, digits and ``._+-`` only.

    A file name is outside input: quotes, newlines, backslashes or U+2028 copied into a
    comment or docstring could end it and become code, so everything else becomes ``_``.
    """
    name = PurePath(path).name
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._+-") else "_" for c in name)
    return cleaned[:120] or "program"


def _is_named(expr: n.Expr) -> bool:
    return isinstance(expr, n.Call) and expr.func == n.Name("named", expr.func.span)


def _positional(seq: n.SeqExpr) -> bool:
    """Whether every child of a Sequential is a plain expression (numbered 0, 1, ...)."""
    return all(isinstance(s, n.ExprStmt) and not _is_named(s.expr) for s in seq.body)


def _decodes(checked: CheckedProgram) -> bool:
    """Whether the program attends with a KV cache or rotary positions anywhere."""
    return any(
        isinstance(node, n.Call) and isinstance(node.func, n.Name) and node.func.id in DECODING_OPS
        for definition in checked.program.definitions
        for node in n.walk(definition)
    )


def _constructor(node: n.Expr) -> n.Expr:
    """The call an annotation chain ``Conv2d(...) @P @Q`` applies to."""
    while isinstance(node, n.Binary) and node.op == "@":
        node = node.left
    return node


def _is_constructor(node: n.Expr, definitions: dict[str, n.Definition]) -> bool:
    """Whether an expression creates a new module (so ``@`` annotates it)."""
    match node:
        case n.SeqExpr():
            return True
        case n.Call(func=n.Name(id=callee)):
            return callee in LAYERS or callee in definitions
        case n.Binary(op="@", left=left):
            return _is_constructor(left, definitions)
    return False


def _float_scale(node: n.Call) -> n.Call:
    """interpolate(..., scale_factor=2) with the literal as 2.0: TorchScript's interpolate
    takes float scale factors only (a computed value is passed as it is)."""

    def as_float(expr: n.Expr) -> n.Expr:
        match expr:
            case n.Num(value=int() as value):
                return n.Num(float(value), expr.span)
            case n.TupleLit() | n.ListLit():
                return replace(expr, items=tuple(as_float(i) for i in expr.items))
        return expr

    args = tuple(as_float(a) if i == 2 else a for i, a in enumerate(node.args))
    kwargs = tuple(
        replace(kw, value=as_float(kw.value)) if kw.name == "scale_factor" else kw
        for kw in node.kwargs
    )
    return replace(node, args=args, kwargs=kwargs)


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in (lines or ["pass"])]


def _wrap_all(lines: list[str]) -> list[str]:
    """Wrap long lines; the template indents everything by 8 spaces."""
    return [part for line in lines for part in wrap(line, width=99 - 8)]
