"""Instantiation: run block bodies at compile time to build a model's module tree."""

from __future__ import annotations

import math
from typing import Any

from tritondsl.backend.precision import (
    A32,
    FP32,
    A8PerToken,
    ActivationPrecision,
    WeightPrecision,
    as_activation,
    ternary_or_default,
)
from tritondsl.compiler import nodes as n
from tritondsl.compiler.diagnostics import Reporter, suggest
from tritondsl.compiler.evaluate import Abort, Budget, BudgetExceeded, ExprEvaluator, Scope
from tritondsl.compiler.functions import CONSTANTS
from tritondsl.compiler.layers import LAYERS
from tritondsl.compiler.shapes import MAX_ELEMENTS, MAX_SIZE
from tritondsl.compiler.transformer import linear_weights
from tritondsl.compiler.values import (
    FLOAT_DTYPES,
    INT_DTYPES,
    POISON,
    EvalError,
    Init,
    Module,
    Named,
    Poison,
    Tensor,
    TensorDecl,
    is_int,
    is_number,
    show_shape,
    show_value,
)

MAX_NESTING = 40
DTYPES = (*FLOAT_DTYPES, *INT_DTYPES)
TRIT_VALUES = (-1, 0, 1)
TENSOR_TYPES = ("Tensor", "TernaryTensor")


class Instantiator(ExprEvaluator):
    """Builds module trees; reports each failing statement and carries on with the next."""

    def __init__(
        self, definitions: dict[str, n.Definition], reporter: Reporter, budget: Budget | None = None
    ) -> None:
        super().__init__(definitions, budget or Budget())
        self.reporter = reporter
        self.nesting = 0
        self.instantiated: set[str] = set()  # definitions run at least once
        self.sizes: dict[str, int] = {}  # concrete values for symbolic input sizes

    def report(self, error: EvalError) -> None:
        """Turn an evaluation error into a diagnostic."""
        self.reporter.error(error.message, error.span, error.help, error.notes)

    # ------------------------------------------------------------ instantiation
    def instantiate(
        self, definition: n.Definition, args: list[Any], kwargs: dict[str, Any], span: n.Span
    ) -> Module:
        """Create an instance of ``definition`` with the given arguments."""
        if self.nesting >= MAX_NESTING:
            raise EvalError(f"blocks are nested more than {MAX_NESTING} deep", span)
        self.instantiated.add(definition.name)
        bound = self.bind_params(definition, args, kwargs, span)
        scope = Scope(dict(bound))
        self.nesting += 1
        try:
            if definition.alias is not None:
                module = self.expr(definition.alias, scope)
                if not isinstance(module, Module) or not module.sequential:
                    raise EvalError(
                        f"block {definition.name} = ... must be a Sequential, got "
                        f"{show_value(module)}",
                        definition.alias.span,
                    )
                module.kind = definition.name
            else:
                module = Module(definition.name, span)
                self.body(definition.body, scope, module, seq=False)
        finally:
            self.nesting -= 1
        module.span, module.definition, module.args, module.env = (
            span,
            definition,
            bound,
            (scope.values),
        )
        return module

    def bind_params(
        self, definition: n.Definition, args: list[Any], kwargs: dict[str, Any], span: n.Span
    ) -> dict[str, Any]:
        """Match call arguments to a definition's parameters, with defaults and type checks."""
        params = definition.params
        label = definition.name
        if len(args) > len(params):
            raise EvalError(
                f"{label} takes {len(params)} argument"
                f"{'s' if len(params) != 1 else ''}, got {len(args)}",
                span,
            )
        names = [p.name for p in params]
        for key in kwargs:
            if key not in names:
                raise EvalError(f"{label} has no parameter '{key}'", span, suggest(key, names))
        bound: dict[str, Any] = {}
        for i, param in enumerate(params):
            if i < len(args):
                if param.name in kwargs:
                    raise EvalError(f"{label} got two values for '{param.name}'", span)
                value = args[i]
            elif param.name in kwargs:
                value = kwargs[param.name]
            elif param.default is not None:
                value = self.expr(param.default, Scope(dict(bound)))
            else:
                raise EvalError(f"{label} is missing its argument '{param.name}'", span)
            if not isinstance(value, Poison):
                check_type(value, param.type, f"argument '{param.name}' of {label}", span)
                no_tensor_alias(value, f"argument '{param.name}' of {label}", span)
            bound[param.name] = value
        return bound

    def build_sequential(self, node: n.SeqExpr, scope: Scope) -> Module:
        """Evaluate ``Sequential(...)`` / ``Sequential { ... }`` in the enclosing scope."""
        module = Module("Sequential", node.span, sequential=True)
        self.body(node.body, scope, module, seq=True)
        return module

    # ------------------------------------------------------------ statements
    def body(self, stmts: tuple[n.Stmt, ...], scope: Scope, module: Module, seq: bool) -> None:
        """Run statements in order, reporting each failure and continuing."""
        for stmt in stmts:
            try:
                self.stmt(stmt, scope, module, seq)
            except BudgetExceeded:
                raise
            except Abort:
                self.mark_broken(stmt, module, seq)
            except EvalError as error:
                self.report(error)
                self.mark_broken(stmt, module, seq)

    @staticmethod
    def mark_broken(stmt: n.Stmt, module: Module, seq: bool) -> None:
        """Flag ``module`` incomplete unless the failed statement poisoned the name it binds."""
        named = n.Let | n.Assign | n.ParamDecl | n.WeightsDecl | n.ActivationsDecl
        if seq or not isinstance(stmt, named):
            module.broken = True

    def stmt(self, stmt: n.Stmt, scope: Scope, module: Module, seq: bool) -> None:
        """Run one block-level (or Sequential-body) statement."""
        self.budget.tick(stmt.span)
        match stmt:
            case n.Let():
                scope.values[stmt.name] = self.poison_on_error(
                    stmt.name, scope, lambda: self.let(stmt, scope, module)
                )
            case n.Assign():
                value = self.poison_on_error(stmt.name, scope, lambda: self.expr(stmt.value, scope))
                if not seq:
                    scope.values[stmt.name] = value
                if not isinstance(value, Poison):
                    try:
                        self.attach(module, stmt.name, value, stmt.span)
                    except EvalError:
                        if not seq:  # not a usable submodule: keep forward quiet about it
                            scope.values[stmt.name] = POISON
                        raise
            case n.ExprStmt() if seq:
                value = self.expr(stmt.expr, scope)
                if isinstance(value, Named):
                    self.attach(module, value.name, value.module, stmt.span)
                elif not isinstance(value, Poison):
                    self.attach(module, str(len(module.children)), value, stmt.span)
            case n.If():
                for cond, body in stmt.branches:
                    if self.condition(cond, scope, "an 'if' condition"):
                        self.body(body, scope, module, seq)
                        return
                if stmt.orelse is not None:
                    self.body(stmt.orelse, scope, module, seq)
            case n.For():
                for item in self.iterate(stmt, scope):
                    self.bind_targets(stmt, item, scope)
                    self.body(stmt.body, scope, module, seq)
            case n.InputDecl():
                module.inputs[stmt.name] = POISON  # kept if the type fails: skip inference quietly
                shape, dtype, _ = self.tensor_type(stmt.type, scope, symbolic=True)
                module.inputs[stmt.name] = Tensor(shape, dtype)
            case n.WeightsDecl():
                value = self.expr(stmt.precision, scope)
                if not isinstance(value, WeightPrecision):
                    raise EvalError(
                        f"'weights' expects a precision (fp32, fp16, int8, "
                        f"ternary(...)), got {show_value(value)}",
                        stmt.precision.span,
                    )
                module.weights_default = value
            case n.ActivationsDecl():
                value = self.expr(stmt.precision, scope)
                activation = as_activation(value)
                if activation is None:
                    raise EvalError(
                        f"'activations' expects an activation precision (a8, a8(...), a32; "
                        f"or int8, fp32), got {show_value(value)}",
                        stmt.precision.span,
                    )
                module.activations_default = activation
            case n.ParamDecl():
                decl = self.poison_on_error(stmt.name, scope, lambda: self.param(stmt, scope))
                scope.values[stmt.name] = decl
                self.add_tensor(module, decl)
            case n.Forward():
                return  # run later, by shape inference
            case _:
                raise EvalError("this statement has no effect here", stmt.span)

    def param(self, stmt: n.ParamDecl, scope: Scope) -> TensorDecl:
        """``param W: TernaryTensor[out, in]`` or ``param pos: Tensor[...] = normal(0, 0.02)``."""
        shape, dtype, ternary = self.param_type(stmt, scope)
        if ternary and stmt.init is not None:
            raise EvalError(
                "a TernaryTensor param starts like a Linear weight; initializers are for "
                "float params (param p: Tensor[...] = normal(0, 0.02))",
                stmt.init.span,
            )
        if dtype not in FLOAT_DTYPES:
            raise EvalError(
                f"a param is a learnable float tensor; {dtype} cannot be learned", stmt.type.span
            )
        init = None if stmt.init is None else self.expr(stmt.init, scope)
        if init is not None and not isinstance(init, Init | Poison):
            raise EvalError(
                f"a param starts from zeros(), ones(), normal(mean, std) or uniform(low, high), "
                f"got {show_value(init)}",
                stmt.init.span,  # type: ignore[union-attr]
            )
        if isinstance(init, Poison):
            raise Abort()
        decl = TensorDecl(stmt.name, shape, ternary, True, stmt.span)  # type: ignore[arg-type]
        decl.init = init
        return decl

    @staticmethod
    def poison_on_error(name: str, scope: Scope, compute: Any) -> Any:
        """Evaluate; if that fails, bind ``name`` to POISON so later uses stay quiet."""
        try:
            return compute()
        except (EvalError, Abort):
            scope.values[name] = POISON
            raise

    def let(self, stmt: n.Let, scope: Scope, module: Module) -> Any:
        """``let name[: type] = value``; a typed TernaryTensor literal becomes a constant."""
        if stmt.type is not None and stmt.type.name in TENSOR_TYPES:
            shape, _, ternary = self.tensor_type(stmt.type, scope, symbolic=False)
            values = self.trit_literal(stmt.value, scope, shape)  # type: ignore[arg-type]
            decl = TensorDecl(
                stmt.name,
                shape,
                ternary,
                False,
                stmt.span,  # type: ignore[arg-type]
                values,
            )
            self.add_tensor(module, decl)
            return decl
        value = self.expr(stmt.value, scope)
        if stmt.type is not None and not isinstance(value, Poison):
            check_type(value, stmt.type, f"'{stmt.name}'", stmt.value.span)
        no_tensor_alias(value, f"'{stmt.name}'", stmt.value.span)
        return value

    @staticmethod
    def add_tensor(module: Module, decl: TensorDecl) -> None:
        """Register a ``param``/constant tensor of ``module``; names must be unique."""
        if decl.name in module.children:
            raise EvalError(f"'{decl.name}' is defined twice in {module.label}", decl.span)
        module.children[decl.name] = decl

    def attach(self, parent: Module, name: str, child: Any, span: n.Span) -> None:
        """Make ``child`` a submodule of ``parent`` under ``name``."""
        if not isinstance(child, Module):
            where = "a Sequential child" if parent.sequential else f"submodule '{name}'"
            raise EvalError(
                f"{where} must be a layer or block, got {show_value(child)}",
                span,
                None if parent.sequential else f"use 'let {name} = ...' for compile-time values",
            )
        if child.attached:
            raise EvalError(
                f"this {child.label} is already part of the model",
                span,
                "create a new layer for each use; layers do not share weights",
            )
        if name in parent.children:
            raise EvalError(f"'{name}' is defined twice in {parent.label}", span)
        child.attached = True
        parent.children[name] = child

    def iterate(self, stmt: n.For, scope: Scope) -> list[Any]:
        """The items a compile-time ``for`` runs over."""
        value = self.expr(stmt.iterable, scope)
        if isinstance(value, Poison):
            raise Abort()
        if not isinstance(value, tuple | list):
            raise EvalError(
                f"'for' needs a list, tuple or range(), got {show_value(value)}", stmt.iterable.span
            )
        no_tensor_alias(value, "a loop variable", stmt.iterable.span)
        return list(value)

    @staticmethod
    def bind_targets(stmt: n.For, item: Any, scope: Scope) -> None:
        """Bind loop variables, unpacking table rows when there are several."""
        if len(stmt.targets) == 1:
            scope.values[stmt.targets[0]] = item
            return
        if not isinstance(item, tuple | list) or len(item) != len(stmt.targets):
            raise EvalError(
                f"cannot unpack {show_value(item)} into {len(stmt.targets)} names "
                f"({', '.join(stmt.targets)})",
                stmt.iterable.span,
            )
        for target, value in zip(stmt.targets, item, strict=True):
            scope.values[target] = value

    # ------------------------------------------------------------ tensor types
    def tensor_type(
        self, type_: n.TypeExpr, scope: Scope, symbolic: bool
    ) -> tuple[tuple[int | str, ...], str, bool]:
        """Evaluate ``Tensor[...]``/``TernaryTensor[...]`` into (shape, dtype, is_ternary)."""
        if type_.name not in TENSOR_TYPES:
            raise EvalError(
                f"expected Tensor[...] or TernaryTensor[...], got {type_.name}", type_.span
            )
        shape: list[int | str] = []
        dtype = "float32"
        for arg in type_.args or ():
            if isinstance(arg, n.Name) and arg.id in DTYPES:
                dtype = arg.id
            elif isinstance(arg, n.Name) and arg.id in CONSTANTS:
                # e.g. Tensor[N, 4, int8]: would otherwise become a symbolic size named int8.
                raise EvalError(
                    f"'{arg.id}' is not a tensor dtype; use {', '.join(DTYPES)}", arg.span
                )
            elif isinstance(arg, n.Name) and symbolic and arg.id in self.sizes:
                shape.append(self.sizes[arg.id])
            elif isinstance(arg, n.Name) and not scope.lookup(arg.id)[0]:
                if not symbolic:
                    raise EvalError(
                        f"'{arg.id}' is not a known size; layer tensors need concrete sizes",
                        arg.span,
                    )
                shape.append(arg.id)
            else:
                dim = self.expr(arg, scope)
                if not is_int(dim) or dim < 1:
                    raise EvalError(
                        f"a tensor dimension must be a positive int, got {show_value(dim)}",
                        arg.span,
                    )
                if dim > MAX_SIZE:
                    raise EvalError(
                        f"a tensor dimension of {dim:,} is above the limit of {MAX_SIZE:,}",
                        arg.span,
                    )
                shape.append(dim)
        return tuple(shape), dtype, type_.name == "TernaryTensor"

    def param_type(
        self, stmt: n.ParamDecl, scope: Scope
    ) -> tuple[tuple[int | str, ...], str, bool]:
        """A ``param``'s type: any float ``Tensor[...]``, or a 2-D ``TernaryTensor[out, in]``
        (the weight of ternary_matmul)."""
        shape, dtype, ternary = self.tensor_type(stmt.type, scope, symbolic=False)
        if ternary and len(shape) == 2 and math.prod(shape) > MAX_ELEMENTS:  # type: ignore[arg-type]
            raise EvalError(
                f"{stmt.name} would have {math.prod(shape):,} elements, above the limit of "  # type: ignore[arg-type]
                f"{MAX_ELEMENTS:,}",
                stmt.type.span,
            )
        if ternary and len(shape) != 2:
            got = f"{stmt.type.name}{show_shape(shape)}"
            raise EvalError(
                f"a ternary param must be a TernaryTensor[out, in] (the weight of "
                f"ternary_matmul), got {got}",
                stmt.type.span,
                "use a constant (let W: TernaryTensor[...] = [...]) for other shapes",
            )
        return shape, dtype, ternary

    def trit_literal(self, node: n.Expr, scope: Scope, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Check a (nested) list literal of trits against ``shape``; return the flat values."""
        flat: list[int] = []
        nested_shape: list[int] = []

        def visit(item: n.Expr, depth: int) -> None:
            if isinstance(item, n.ListLit):
                if len(nested_shape) <= depth:
                    nested_shape.append(len(item.items))
                elif nested_shape[depth] != len(item.items):
                    raise EvalError(
                        "rows of a tensor literal must all have the same length", item.span
                    )
                for sub in item.items:
                    visit(sub, depth + 1)
                return
            value = self.expr(item, scope)
            if not is_int(value) or value not in TRIT_VALUES:
                raise EvalError(
                    f"trit literal {show_value(value)} is outside {{-1, 0, 1}}", item.span
                )
            flat.append(value)

        if not isinstance(node, n.ListLit):
            raise EvalError(
                "a tensor constant needs a list literal of trits, e.g. [[1, 0, -1]]", node.span
            )
        visit(node, 0)
        expected = 1
        for d in shape:
            expected *= d
        if len(flat) != expected:
            raise EvalError(
                f"TernaryTensor{list(shape)} needs {expected} values, got {len(flat)}", node.span
            )
        if len(nested_shape) > 1 and tuple(nested_shape) != shape:
            raise EvalError(f"literal has shape {nested_shape}, declared {list(shape)}", node.span)
        return tuple(flat)


def input_sizes(definition: n.Definition) -> dict[str, tuple[str, int]]:
    """Names used as sizes in a model's ``input`` types: ``H`` -> (input name, axis).

    The first place a name appears wins; names that are compile-time values (a parameter
    ``c`` in ``Tensor[N, c]``) are in the result too, and callers skip them."""
    found: dict[str, tuple[str, int]] = {}
    for decl in definition.body:
        if not isinstance(decl, n.InputDecl):
            continue
        dims = [a for a in decl.type.args or () if not (isinstance(a, n.Name) and a.id in DTYPES)]
        for axis, arg in enumerate(dims):
            if isinstance(arg, n.Name):
                found.setdefault(arg.id, (decl.name, axis))
    return found


_SCALARS = {
    "int": (is_int, "an int"),
    "float": (is_number, "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "trit": (lambda v: is_int(v) and v in TRIT_VALUES, "a trit (-1, 0 or 1)"),
    "precision": (lambda v: isinstance(v, WeightPrecision), "a precision"),
    "activation": (lambda v: isinstance(v, ActivationPrecision), "an activation precision"),
}
TYPE_NAMES = (*_SCALARS, "tuple", "list", *TENSOR_TYPES)


def no_tensor_alias(value: Any, what: str, span: n.Span) -> None:
    """Refuse a compile-time value holding a declared tensor: the generated module would
    register the tensor (a submodule once deployed) a second time under the new name."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, TensorDecl):
            raise EvalError(
                f"{what} cannot hold the tensor '{item.name}'",
                span,
                f"use '{item.name}' itself where it is needed",
            )
        if isinstance(item, tuple | list):
            stack.extend(item)


def check_type(value: Any, type_: n.TypeExpr, what: str, span: n.Span) -> None:
    """Raise unless ``value`` matches the declared parameter/let type."""
    if type_.name in _SCALARS:
        test, words = _SCALARS[type_.name]
        if not test(value):
            raise EvalError(f"{what} must be {words}, got {show_value(value)}", span)
        return
    if type_.name in ("tuple", "list"):
        if not isinstance(value, tuple | list):
            raise EvalError(f"{what} must be a {type_.name}, got {show_value(value)}", span)
        items = type_.args or ()
        element_types = [a.id for a in items if isinstance(a, n.Name)]
        if type_.name == "tuple" and element_types and len(element_types) != len(value):
            raise EvalError(f"{what} must have {len(element_types)} items, got {len(value)}", span)
        for i, item in enumerate(value):
            if element_types:
                name = element_types[i] if type_.name == "tuple" else element_types[0]
                check_type(item, n.TypeExpr(name, None, type_.span), f"item {i} of {what}", span)
        return
    raise EvalError(f"{what}: type {type_.name} cannot be used here", type_.span)


def resolve_precisions(
    module: Module,
    inherited: WeightPrecision | None = None,
    path: str = "",
    inherited_act: ActivationPrecision | None = None,
) -> list[EvalError]:
    """Give every quantizable layer its effective weight and activation precisions and
    every node its path; return the layers whose activation precision does not fit them."""
    module.path = path
    current = module.explicit or module.weights_default or inherited
    current_act = module.explicit_act or module.activations_default or inherited_act
    errors = []
    spec = LAYERS.get(module.kind)
    if spec is not None and spec.quantizable:
        module.precision = current or FP32()
        module.activation = current_act or A32()
        if isinstance(module.activation, A8PerToken) and module.kind != "Linear":
            errors.append(
                EvalError(
                    f"{module.kind} cannot take a8(method=per_token): per-token activation "
                    "scales are for Linear layers",
                    module.span,
                    "annotate this layer '@a8' (or '@a32'), or set per-token on the Linear "
                    "layers only",
                )
            )
    for name, child in module.children.items():
        child_path = f"{path}.{name}" if path else name
        if isinstance(child, TensorDecl):
            child.path = child_path
            if child.ternary:
                child.precision = ternary_or_default(current)
            elif module.definition and child.name in linear_weights(module.definition):
                child.precision = current or FP32()  # a float weight of linear(), like Linear's
            else:
                child.precision = FP32()
        else:
            errors += resolve_precisions(child, current, child_path, current_act)
    return errors
