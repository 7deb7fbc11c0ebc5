"""Compile-time evaluation of expressions, shared by instantiation and shape inference.

Values are plain Python scalars/tables plus the classes in ``values``. Tensor
values exist only inside ``forward``; layers are created only outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tritondsl.backend.precision import ActivationPrecision, WeightPrecision
from tritondsl.compiler import nodes as n
from tritondsl.compiler import shapes as sh
from tritondsl.compiler.arith import COMPARE, VERBS, arith, is_scalar, repeat, size_arith
from tritondsl.compiler.functions import COMPILE_TIME, CONSTANTS, FORWARD_OPS
from tritondsl.compiler.layers import LAYERS, LayerSpec, bind, read_argument
from tritondsl.compiler.tensor_ops import as_tensor
from tritondsl.compiler.values import (
    POISON,
    EvalError,
    Module,
    Poison,
    SymSize,
    Tensor,
    TensorDecl,
    is_int,
    is_number,
    show_value,
    size_value,
    type_name,
)

MAX_STEPS = 200_000  # the zoo's largest model needs about 2,100


@dataclass(frozen=True)
class DefRef:
    """A reference to a user definition (block, layer or model)."""

    definition: n.Definition
    type_word = "definition"  # for values.type_name

    def __repr__(self) -> str:  # shown in messages through values.show_value
        name = self.definition.name
        return f"the {self.definition.kind} {name} itself (write {name}(...) to create one)"


@dataclass(frozen=True)
class LayerRef:
    """A reference to a built-in layer."""

    spec: LayerSpec
    type_word = "layer type"

    def __repr__(self) -> str:
        return f"the layer {self.spec.name} itself (write {self.spec.name}(...) to create one)"


@dataclass(frozen=True)
class FuncRef:
    """A reference to a built-in function."""

    name: str
    forward_only: bool
    type_word = "function"

    def __repr__(self) -> str:
        return f"the function {self.name}()"


class Scope:
    """Name bindings of one block instance, or of one forward call (with the block as parent)."""

    def __init__(
        self, values: dict[str, Any], parent: Scope | None = None, forward: bool = False
    ) -> None:
        self.values, self.parent, self.forward = values, parent, forward

    def lookup(self, name: str) -> tuple[bool, Any]:
        """(found, value) for ``name`` in this scope or its parents."""
        scope: Scope | None = self
        while scope is not None:
            if name in scope.values:
                return True, scope.values[name]
            scope = scope.parent
        return False, None


class Budget:
    """Counts evaluation steps so hostile programs cannot hang the compiler."""

    def __init__(self) -> None:
        self.steps = 0

    def tick(self, span: n.Span) -> None:
        """Count one step; raise once the budget is spent."""
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise BudgetExceeded(
                f"compile-time evaluation takes more than {MAX_STEPS:,} steps",
                span,
                "loops and tables in a .tdsl file must stay small",
            )


class BudgetExceeded(EvalError):
    """Evaluation stopped: the program does too much work at compile time."""


class ExprEvaluator:
    """Evaluates expressions; subclasses supply block instantiation and module calls."""

    def __init__(self, definitions: dict[str, n.Definition], budget: Budget) -> None:
        self.definitions = definitions
        self.budget = budget

    # Hooks implemented by the instantiation/shape passes.
    def instantiate(
        self, definition: n.Definition, args: list[Any], kwargs: dict[str, Any], span: n.Span
    ) -> Module:
        """Create a block instance (see ``instantiate.Instantiator``)."""
        raise EvalError(f"cannot use '{definition.name}' here", span)

    def build_sequential(self, node: n.SeqExpr, scope: Scope) -> Module:
        """Create a Sequential module (see ``instantiate.Instantiator``)."""
        raise EvalError("cannot build a Sequential here", node.span)

    def call_module(
        self, module: Module, args: list[Any], kwargs: dict[str, Any], span: n.Span
    ) -> Any:
        """Run a module on tensors (see ``infer.ShapeInference``)."""
        raise EvalError(
            f"layers can only be applied to tensors inside forward ({module.label})", span
        )

    # ------------------------------------------------------------ expressions
    def expr(self, node: n.Expr, scope: Scope) -> Any:
        """Evaluate ``node`` in ``scope``."""
        self.budget.tick(node.span)
        match node:
            case n.Num() | n.Str() | n.Bool():
                return node.value
            case n.Name():
                return self.name(node, scope)
            case n.TupleLit():
                return tuple(self.expr(item, scope) for item in node.items)
            case n.ListLit():
                return [self.expr(item, scope) for item in node.items]
            case n.Unary():
                return self.unary(node, self.expr(node.operand, scope))
            case n.Binary():
                return self.binary(node, self.expr(node.left, scope), self.expr(node.right, scope))
            case n.Compare():
                return self.compare(node, self.expr(node.left, scope), self.expr(node.right, scope))
            case n.BoolOp():
                return self.bool_op(node, scope)
            case n.Not():
                return not self.condition(node.operand, scope, "'not'")
            case n.Cond():
                chosen = (
                    node.then
                    if self.condition(node.cond, scope, "a condition")
                    else (node.otherwise)
                )
                return self.expr(chosen, scope)
            case n.Call():
                return self.call(node, scope)
            case n.Index():
                return self.index(node, scope)
            case n.Attribute():
                return self.attribute(node, scope)
            case n.SeqExpr():
                if scope.forward:
                    raise EvalError(
                        "layers cannot be created inside forward",
                        node.span,
                        "declare them in the block, e.g. 'body = Sequential(...)'",
                    )
                return self.build_sequential(node, scope)
        raise EvalError(f"unsupported expression {type(node).__name__}", node.span)

    def name(self, node: n.Name, scope: Scope) -> Any:
        """Look a name up: local bindings, then constants, definitions and built-ins."""
        found, value = scope.lookup(node.id)
        if found:
            return value
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id in self.definitions:
            return DefRef(self.definitions[node.id])
        if node.id in LAYERS:
            return LayerRef(LAYERS[node.id])
        if node.id in COMPILE_TIME:
            return FuncRef(node.id, forward_only=False)
        if node.id in FORWARD_OPS:
            return FuncRef(node.id, forward_only=True)
        raise _Unassigned(node)

    def callee(self, node: n.Expr, scope: Scope) -> Any:
        """What a call calls: ``a8`` alone is a precision, ``a8(...)`` its builder."""
        if isinstance(node, n.Name) and node.id in COMPILE_TIME and node.id in CONSTANTS:
            found, value = scope.lookup(node.id)
            return value if found else FuncRef(node.id, forward_only=False)
        return self.expr(node, scope)

    def condition(self, node: n.Expr, scope: Scope, what: str) -> bool:
        """Evaluate a compile-time boolean."""
        value = self.expr(node, scope)
        if isinstance(value, Poison):
            raise Abort()
        if not isinstance(value, bool):
            raise EvalError(
                f"{what} must be true or false, got {show_value(value)}",
                node.span,
                "conditions are evaluated at compile time",
            )
        return value

    def bool_op(self, node: n.BoolOp, scope: Scope) -> bool:
        """Short-circuit ``and``/``or`` over compile-time booleans."""
        left = self.condition(node.left, scope, f"the left side of '{node.op}'")
        if (node.op == "and" and not left) or (node.op == "or" and left):
            return left
        return self.condition(node.right, scope, f"the right side of '{node.op}'")

    def unary(self, node: n.Unary, value: Any) -> Any:
        """``-x`` / ``+x`` on numbers and tensors."""
        if isinstance(value, Poison):
            return value
        if isinstance(value, Tensor | TensorDecl):
            return as_tensor(value, node.op, node.span)
        if not is_number(value):
            raise EvalError(f"cannot apply unary '{node.op}' to {show_value(value)}", node.span)
        return -value if node.op == "-" else value

    def binary(self, node: n.Binary, left: Any, right: Any) -> Any:
        """Arithmetic, string/table concatenation, tensor ops and ``layer @ precision``."""
        if isinstance(left, Poison) or isinstance(right, Poison):
            return POISON
        if node.op == "@" and isinstance(left, Module):
            return self.annotate(node, left, right)
        if isinstance(left, Tensor | TensorDecl) or isinstance(right, Tensor | TensorDecl):
            return self.tensor_binary(node, left, right)
        if is_number(left) and is_number(right) and node.op != "@":
            return arith(node, left, right)
        if isinstance(left, SymSize) or isinstance(right, SymSize):
            return size_arith(node, left, right)
        if node.op == "+" and type(left) is type(right) and isinstance(left, str | tuple | list):
            return left + right
        if node.op == "*" and (is_int(left) or is_int(right)):
            table, count = (left, right) if is_int(right) else (right, left)
            if isinstance(table, tuple | list):
                return repeat(node, table, count)
        raise EvalError(
            f"cannot {VERBS.get(node.op, 'apply ' + repr(node.op) + ' to')} "
            f"{type_name(left)} and {type_name(right)}",
            node.span,
        )

    def annotate(self, node: n.Binary, module: Module, precision: Any) -> Module:
        """``layer @ precision``: set the weight (or, with ``a8``/``a32``, the activation)
        precision of a layer or a whole subtree."""
        if not isinstance(precision, WeightPrecision | ActivationPrecision):
            raise EvalError(
                f"'@' after a layer expects a precision (fp32, fp16, int8, ternary(...)) "
                f"or an activation precision (a8, a8(...), a32), got {show_value(precision)}",
                node.right.span,
            )
        activation = isinstance(precision, ActivationPrecision)
        already = module.explicit_act if activation else module.explicit
        if already is not None:
            what = "activation precision" if activation else "precision"
            raise EvalError(f"{module.label} already has {what} {already.describe()}", node.span)
        spec = LAYERS.get(module.kind)
        if spec is not None and not spec.quantizable:
            what = "weights, so no quantized input" if activation else "weights to quantize"
            raise EvalError(
                f"{module.kind} has no {what}; '@{precision.describe()}'"
                " applies to Conv2d, ConvTranspose2d, Linear, blocks and Sequential",
                node.span,
            )
        if isinstance(precision, ActivationPrecision):
            module.explicit_act = precision
        else:
            module.explicit = precision
        return module

    def tensor_op(self, inputs: list[Any], result: Any) -> None:
        """Called after each tensor operation (shape inference records liveness here)."""

    def forward_op(
        self, name: str, args: list[Any], kwargs: dict[str, Any], span: n.Span, result: Any
    ) -> None:
        """Called after each forward operation succeeded (shape inference records it)."""

    def tensor_binary(self, node: n.Binary, left: Any, right: Any) -> Tensor:
        """Elementwise ops with broadcasting, and ``@`` as matmul."""
        result = self._tensor_binary(node, left, right)
        self.tensor_op([left, right], result)
        return result

    def _tensor_binary(self, node: n.Binary, left: Any, right: Any) -> Tensor:
        if node.op == "@":
            return sh.matmul(
                as_tensor(left, "'@'", node.span), as_tensor(right, "'@'", node.span), node.span
            )
        if node.op not in ("+", "-", "*", "/", "**"):
            raise EvalError(f"'{node.op}' is not supported on tensors", node.span)
        verb = VERBS[node.op]
        if is_scalar(left) or is_scalar(right):
            tensor = right if is_scalar(left) else left
            return as_tensor(tensor, f"'{node.op}'", node.span)
        a, b = (
            as_tensor(left, f"'{node.op}'", node.span),
            as_tensor(right, f"'{node.op}'", node.span),
        )
        return Tensor(sh.broadcast(a.shape, b.shape, verb, node.span), a.dtype)

    def compare(self, node: n.Compare, left: Any, right: Any) -> Any:
        """Comparisons of compile-time values."""
        if isinstance(left, Poison) or isinstance(right, Poison):
            return POISON
        if isinstance(left, SymSize) or isinstance(right, SymSize):
            raise EvalError(
                "a size known only when the model runs cannot be compared at compile time",
                node.span,
                "pass concrete sizes to check (--size H=224) or declare them in the input",
            )
        if node.op in ("==", "!="):
            if isinstance(left, Tensor | Module) or isinstance(right, Tensor | Module):
                raise EvalError("tensors and layers cannot be compared", node.span)
            return COMPARE[node.op](left, right)
        ordered = (is_number(left) and is_number(right)) or (
            isinstance(left, str) and isinstance(right, str)
        )
        if not ordered:
            raise EvalError(
                f"cannot compare {type_name(left)} and {type_name(right)} with '{node.op}'",
                node.span,
            )
        return COMPARE[node.op](left, right)

    def call(self, node: n.Call, scope: Scope) -> Any:
        """Calls of definitions, built-in layers, functions, and (in forward) modules."""
        func = self.callee(node.func, scope)
        args = [self.expr(a, scope) for a in node.args]
        kwargs: dict[str, Any] = {}
        for kw in node.kwargs:
            if kw.name in kwargs:
                raise EvalError(f"keyword argument '{kw.name}' is given twice", kw.span)
            kwargs[kw.name] = self.expr(kw.value, scope)
        if any(isinstance(v, Poison) for v in (func, *args, *kwargs.values())):
            return POISON
        match func:
            case DefRef(definition=definition):
                self._no_layers_in_forward(scope, definition.name, node.span)
                return self.instantiate(definition, args, kwargs, node.span)
            case LayerRef(spec=spec):
                self._no_layers_in_forward(scope, spec.name, node.span)
                return Module(spec.name, node.span, bind(spec, args, kwargs, node.span))
            case FuncRef(name=name, forward_only=forward_only):
                fn = FORWARD_OPS[name] if forward_only else COMPILE_TIME[name]
                result = fn(args, kwargs, node.span)
                if forward_only:
                    sh.check_sizes(result, f"{name}()", node.span)
                    self.tensor_op(args, result)
                    self.forward_op(name, args, kwargs, node.span, result)
                return result
            case Module() if not scope.forward:
                raise EvalError(
                    f"layers can only be applied to tensors inside forward ({func.label})",
                    node.span,
                )
            case Module():
                return self.call_module(func, args, kwargs, node.span)
        raise EvalError(f"{show_value(func)} is not callable", node.span)

    @staticmethod
    def _no_layers_in_forward(scope: Scope, what: str, span: n.Span) -> None:
        if scope.forward:
            raise EvalError(
                f"{what} cannot be created inside forward",
                span,
                "declare it in the block (name = ...) and call it by name",
            )

    def index(self, node: n.Index, scope: Scope) -> Any:
        """``table[i]``, ``table[1:]``, ``sequential[i]`` and tensor ``x[:, :c, 0]``."""
        value = self.expr(node.value, scope)
        keys = [self.subscript(i, scope) for i in node.indices]
        if isinstance(value, Poison) or any(isinstance(k, Poison) for k in keys):
            return POISON
        if isinstance(value, Tensor | TensorDecl):
            tensor = as_tensor(value, "indexing", node.span)
            result = sh.index(tensor, keys, node.span)
            self.tensor_op([tensor], result)
            return result
        if len(keys) != 1:
            raise EvalError("an index must be a single int or slice", node.span)
        key = keys[0]
        if isinstance(value, Module) and value.sequential and not isinstance(key, slice):
            items: list[Any] = list(value.children.values())
        elif isinstance(value, tuple | list | str):
            if isinstance(key, slice):
                return value[key]
            items = list(value)
        else:
            raise EvalError(f"{show_value(value)} cannot be indexed", node.span)
        if not -len(items) <= key < len(items):
            raise EvalError(f"index {key} is out of range (length {len(items)})", node.span)
        return items[key]

    def subscript(self, node: n.Expr | n.Slice, scope: Scope) -> Any:
        """One index item: an int, or a slice of optional ints."""
        if not isinstance(node, n.Slice):
            key = self.expr(node, scope)
            if not is_int(key) and not isinstance(key, Poison):
                raise EvalError(f"an index must be an int, got {show_value(key)}", node.span)
            return key
        parts = [
            None if p is None else self.expr(p, scope) for p in (node.start, node.stop, node.step)
        ]
        if any(isinstance(p, Poison) for p in parts):
            return POISON
        if not all(p is None or is_int(p) for p in parts):
            raise EvalError("slice bounds must be ints", node.span)
        if parts[2] == 0:
            raise EvalError("a slice step must not be zero", node.span)
        return slice(*parts)

    def attribute(self, node: n.Attribute, scope: Scope) -> Any:
        """``layer.arg`` reads a constructor argument; ``block.member`` a submodule."""
        value = self.expr(node.value, scope)
        if isinstance(value, Poison):
            return value
        if isinstance(value, Tensor | TensorDecl):
            if node.name != "shape":
                raise EvalError(
                    f"a tensor has no attribute '{node.name}'", node.span, "tensors have .shape"
                )
            return tuple(size_value(d) for d in as_tensor(value, ".shape", node.span).shape)
        if isinstance(value, Module):
            spec = LAYERS.get(value.kind)
            if node.name in value.args and spec is not None and value.definition is None:
                return read_argument(spec, value.args, node.name, node.span)
            if node.name in value.args:
                return value.args[node.name]
            if node.name in value.children:
                return value.children[node.name]
            known = [*value.args, *value.children]
            raise EvalError(
                f"{value.label} has no attribute '{node.name}'",
                node.span,
                f"known: {', '.join(known)}" if known else None,
            )
        raise EvalError(f"{show_value(value)} has no attribute '{node.name}'", node.span)


class _Unassigned(EvalError):
    """A name the resolver accepted but that has no value at this point."""

    def __init__(self, node: n.Name) -> None:
        super().__init__(
            f"'{node.id}' is not defined here",
            node.span,
            "it is assigned only later, or only in a branch that was not taken",
        )


class Abort(Exception):
    """Stop evaluating a statement whose inputs already failed (no new diagnostic)."""
