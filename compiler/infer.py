"""Shape inference: run ``forward`` bodies over symbolic tensors, recording each layer's output."""

from __future__ import annotations

from typing import Any

from tritondsl.compiler import nodes as n
from tritondsl.compiler.evaluate import Abort, Scope
from tritondsl.compiler.instantiate import Instantiator, input_sizes
from tritondsl.compiler.layers import LAYERS
from tritondsl.compiler.shapes import check_sizes
from tritondsl.compiler.tensor_ops import as_tensor
from tritondsl.compiler.values import (
    POISON,
    EvalError,
    Module,
    OpCall,
    Poison,
    Tensor,
    show_shape,
    show_value,
    size_value,
)


class _Return(Exception):
    def __init__(self, value: Any, span: n.Span) -> None:
        self.value, self.span = value, span


def find_forward(definition: n.Definition) -> n.Forward | None:
    """The ``forward`` of a definition, if it has one."""
    return next((s for s in definition.body if isinstance(s, n.Forward)), None)


class ShapeInference(Instantiator):
    """Instantiation plus forward execution over ``Tensor`` shapes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[Scope] = []  # forward scopes active right now (for liveness)
        self.callers: list[Module] = []  # the modules whose forward those scopes belong to

    def call_module(
        self, module: Module, args: list[Any], kwargs: dict[str, Any], span: n.Span
    ) -> Any:
        """Apply a module to tensors and record the output shape on the module."""
        if kwargs:
            raise EvalError(f"{module.label} takes its inputs positionally", span)
        if not module.attached:
            raise EvalError(
                f"this {module.label} is not a submodule of the model",
                span,
                "declare it as a submodule ('name = ...') and call it by name",
            )
        if module.broken:
            return POISON  # its body already failed; its output shape is unknown
        if module.definition is not None and not module.sequential:
            out = self.run_forward(module, args, span)
        else:
            if len(args) != 1:
                raise EvalError(f"{module.label} takes one input, got {len(args)}", span)
            out = as_tensor(args[0], module.label, span)
            if module.sequential:
                for child in module.children.values():
                    out = self.call_module(child, [out], {}, span)  # type: ignore[arg-type]
            else:
                x = out
                module.in_shapes.append(x)
                out = LAYERS[module.kind].shape(module.args, out, span)
                check_sizes(out, module.label, span)
                module.live_at_calls.append(self.live_tensors(x, out))
        module.out_shapes.append(out)
        return out

    def forward_op(
        self, name: str, args: list[Any], kwargs: dict[str, Any], span: n.Span, result: Any
    ) -> None:
        """Record a forward operation on the module whose forward runs it."""
        if self.callers:
            self.callers[-1].op_calls.append(OpCall(name, tuple(args), kwargs, span, result))

    def tensor_op(self, inputs: list[Any], result: Any) -> None:
        """Record what is alive while a forward operation (relu, +, cat...) runs."""
        if self.callers and isinstance(result, Tensor):
            tensors = [t for t in inputs if isinstance(t, Tensor)]
            self.callers[-1].live_at_calls.append(self.live_tensors(*tensors, result))

    def live_tensors(self, *extra: Tensor) -> list[Tensor]:
        """Tensors held by the active forward frames plus ``extra`` (each object once)."""
        seen: dict[int, Tensor] = {}
        for scope in self.frames:
            for value in scope.values.values():
                if isinstance(value, Tensor):
                    seen[id(value)] = value
        for tensor in extra:
            seen[id(tensor)] = tensor
        return list(seen.values())

    def run_forward(
        self, module: Module, args: list[Any], span: n.Span, sizes: dict[str, Any] | None = None
    ) -> Any:
        """Execute a block instance's forward with ``args`` bound to its parameters (and a
        model's input ``sizes`` such as ``H`` bound to their values)."""
        assert module.definition is not None
        forward = find_forward(module.definition)
        if forward is None:
            raise EvalError(f"{module.label} has no forward and cannot be called", span)
        if len(args) != len(forward.params):
            raise EvalError(
                f"{module.label}.forward takes {len(forward.params)} input"
                f"{'s' if len(forward.params) != 1 else ''}, got {len(args)}",
                span,
            )
        values: dict[str, Any] = dict(sizes or {})
        for param, arg in zip(forward.params, args, strict=True):
            if param.type is not None and isinstance(arg, Tensor):
                self.check_annotation(arg, param, module)
            values[param.name] = arg
        scope = Scope(values, Scope(module.env), forward=True)
        self.frames.append(scope)
        self.callers.append(module)
        try:
            self.forward_body(forward.body, scope)
        except _Return as ret:
            return self.check_result(ret.value, module, ret.span)
        except EvalError as error:
            error.notes.append((f"in {module.label}.forward, called here", span))
            raise
        finally:
            self.frames.pop()
            self.callers.pop()
        raise EvalError(f"{module.label}.forward does not return a value", forward.span)

    @staticmethod
    def check_result(value: Any, module: Module, span: n.Span) -> Any:
        """A forward returns a tensor or a tuple of tensors."""
        items = value if isinstance(value, tuple | list) else (value,)
        if not items or not all(isinstance(v, Tensor | Poison) for v in items):
            raise EvalError(
                f"{module.label}.forward must return a tensor, got {show_value(value)}",
                span,
                "call the layer on a tensor, e.g. 'return fc(x)'",
            )
        return tuple(value) if isinstance(value, list) else value

    def check_annotation(self, tensor: Tensor, param: n.FwdParam, module: Module) -> None:
        """Compare an input with ``x: Tensor[...]`` on a forward parameter."""
        assert param.type is not None
        shape, _, _ = self.tensor_type(param.type, Scope(module.env), symbolic=True)
        if not shape:
            return  # dtype-only annotation such as Tensor[float16]
        mismatch = len(shape) != len(tensor.shape) or any(
            isinstance(want, int) and isinstance(got, int) and want != got
            for want, got in zip(shape, tensor.shape, strict=False)
        )
        if mismatch:
            raise EvalError(
                f"{module.label}.forward expects '{param.name}' of shape "
                f"{show_shape(shape)}, got {tensor.show()}",
                param.span,
            )

    def forward_body(self, stmts: tuple[n.Stmt, ...], scope: Scope) -> None:
        """Run forward statements; the first error stops the forward."""
        for stmt in stmts:
            self.budget.tick(stmt.span)
            match stmt:
                case n.Let() | n.Assign():
                    value = self.expr(stmt.value, scope)
                    scope.values[stmt.name] = value
                case n.Return():
                    raise _Return(self.expr(stmt.value, scope), stmt.value.span)
                case n.If():
                    for cond, body in stmt.branches:
                        if self.condition(cond, scope, "an 'if' condition"):
                            self.forward_body(body, scope)
                            break
                    else:
                        if stmt.orelse is not None:
                            self.forward_body(stmt.orelse, scope)
                case n.For():
                    value = self.expr(stmt.iterable, scope)
                    if not isinstance(value, tuple | list):
                        raise EvalError(
                            f"'for' needs a list, tuple or range(), got {show_value(value)}",
                            stmt.iterable.span,
                        )
                    for item in value:
                        self.bind_targets(stmt, item, scope)
                        self.forward_body(stmt.body, scope)
                case n.ExprStmt():
                    raise EvalError(
                        "the value of this expression is not used",
                        stmt.span,
                        "assign it (y = ...) or return it",
                    )
                case _:
                    raise EvalError("this statement is not allowed inside forward", stmt.span)

    def infer_model(self, module: Module) -> Any:
        """Run a model's forward on its declared inputs; POISON when that fails."""
        assert module.definition is not None
        forward = find_forward(module.definition)
        if forward is None or not module.inputs or module.broken:
            return POISON
        try:
            args = []
            for param in forward.params:
                if param.name not in module.inputs:
                    raise EvalError(
                        f"forward parameter '{param.name}' has no 'input' "
                        f"declaration (inputs: {', '.join(module.inputs)})",
                        param.span,
                    )
                args.append(module.inputs[param.name])
            sizes = {
                name: size_value(module.inputs[source].shape[axis])
                for name, (source, axis) in input_sizes(module.definition).items()
                if name not in module.env and isinstance(module.inputs[source], Tensor)
            }
            return self.run_forward(module, args, module.definition.name_span, sizes)
        except Abort:
            return POISON
        except EvalError as error:
            if error.notes:
                error.notes.pop()  # the last note is this root call itself
            self.report(error)
            return POISON
