"""What torch's ONNX exporter cannot write, found before tracing, as located .tdsl errors.

The TorchScript-based exporter fails deep inside tracing with pages of torch IR for a few
constructs; the front end's record of every layer call and forward operation (at the
example's sizes, and with the input's symbolic sizes) finds them first:

* adaptive pooling to an output other than 1x1 (``AdaptiveAvgPool2d((7, 7))``,
  ``adaptive_max_pool2d(x, 2)``, ``interpolate(mode="area")``) becomes a fixed-window
  pooling, so its input size must be known and a multiple of the output size. A symbolic
  ``H``/``W`` then stays fixed at the example's size in the file (with a note); a size that
  is not a multiple is refused.
* ``mode="nearest-exact"`` resizing has no ONNX form in the exporter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from tritondsl.compiler.check import ModelInfo, check_source
from tritondsl.compiler.diagnostics import CompileError, Diagnostic
from tritondsl.compiler.layers import pair
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.values import Module, OpCall, show_shape
from tritondsl.compiler.values import Tensor as Shape

_ADAPTIVE = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d")
_ADAPTIVE_OPS = ("adaptive_avg_pool2d", "adaptive_max_pool2d")


@dataclass(frozen=True)
class _Use:
    """One call of a layer or operation: what it is, where, its input and output shapes."""

    kind: str  # the layer or operation
    what: str  # how messages name it
    span: Span
    symbolic: Shape  # the input with the .tdsl input's symbolic sizes
    concrete: Shape  # the input at the example's sizes
    output: Shape  # the output at the example's sizes
    mode: str | None  # interpolation mode, for resizes


def onnx_input_axes(
    model: nn.Module, example: tuple[Tensor, ...], axes: list[dict[int, str]]
) -> tuple[list[dict[int, str]], list[str]]:
    """Each input's axes that ONNX can keep dynamic, and notes; raises CompileError for what
    the exporter cannot write (see the module docstring)."""
    spec = getattr(model, "tdsl_spec", None)
    if spec is None:
        return axes, []
    sizes = {
        name: int(x.shape[i])
        for x, dims in zip(example, axes, strict=True)
        for i, name in dims.items()
        if i
    }
    args = {spec.model: dict(spec.params)}
    symbolic = check_source(spec.source, spec.path, args).models[spec.model]
    concrete = check_source(spec.source, spec.path, args, sizes=sizes).models[spec.model]
    errors, fixed = [], False
    for use in _uses(symbolic, concrete):
        if use.mode == "nearest-exact":
            errors.append(
                Diagnostic(
                    f'{use.what}: mode "nearest-exact" cannot be exported to ONNX (torch\'s '
                    "exporter has no form for it)",
                    use.span,
                    help='use mode="nearest"',
                )
            )
            continue
        adaptive = use.kind in (*_ADAPTIVE, *_ADAPTIVE_OPS) or use.mode == "area"
        if not adaptive or tuple(use.output.shape[-2:]) == (1, 1):
            continue
        fixed = fixed or any(isinstance(d, str) for d in use.symbolic.shape[-2:])
        (h, w), (oh, ow) = use.concrete.shape[-2:], use.output.shape[-2:]
        if h % oh or w % ow:
            errors.append(
                Diagnostic(
                    f"{use.what} cannot be exported to ONNX for the input "
                    f"{show_shape(use.concrete.shape)}: ONNX pools with a fixed window, so the "
                    f"input's height and width must be multiples of the output's ({oh}, {ow})",
                    use.span,
                    help="export with an input size that gives such a shape (--size)",
                )
            )
    if errors:
        raise CompileError(errors, spec.path, spec.source)
    if not fixed:
        return axes, []
    kept = [{0: dims[0]} if 0 in dims else {} for dims in axes]
    fixed_sizes = ", ".join(f"{name}={size}" for name, size in sizes.items())
    note = (
        f"note: {fixed_sizes} fixed in the file: adaptive pooling to a size other "
        "than 1x1 needs the input size"
    )
    return kept, [note]


def _uses(symbolic: ModelInfo, concrete: ModelInfo) -> Iterator[_Use]:
    """Every call of a built-in layer and forward operation, in both shape inferences."""
    for sym, con in zip(symbolic.modules(), concrete.modules(), strict=True):
        yield from _layer_uses(sym, con)
        for sym_op, con_op in zip(sym.op_calls, con.op_calls, strict=True):
            use = _op_use(sym_op, con_op)
            if use is not None:
                yield use


def _layer_uses(sym: Module, con: Module) -> Iterator[_Use]:
    if sym.kind not in (*_ADAPTIVE, "Upsample"):
        return
    mode = sym.args.get("mode")
    if sym.kind in _ADAPTIVE:
        what = f"{sym.kind}({pair(sym.args['output_size'])})"
    else:
        what = f"Upsample(mode={mode!r})"
    for x_sym, x_con, out in zip(sym.in_shapes, con.in_shapes, con.out_shapes, strict=True):
        yield _Use(sym.kind, what, sym.span, x_sym, x_con, out, mode)


def _op_use(sym: OpCall, con: OpCall) -> _Use | None:
    if sym.name not in (*_ADAPTIVE_OPS, "interpolate"):
        return None
    mode = _argument(con, "mode", 3, "nearest") if con.name == "interpolate" else None
    x_sym, x_con = _argument(sym, "input", 0, None), _argument(con, "input", 0, None)
    if not isinstance(x_sym, Shape) or not isinstance(x_con, Shape):
        return None
    return _Use(con.name, f"{con.name}()", con.span, x_sym, x_con, con.result, mode)


def _argument(call: OpCall, name: str, position: int, default: Any) -> Any:
    if name in call.kwargs:
        return call.kwargs[name]
    return call.args[position] if len(call.args) > position else default
