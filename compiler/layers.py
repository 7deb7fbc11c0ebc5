"""Built-in layers: signatures (mirroring torch.nn), parameter shapes and shape rules."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tritondsl.backend.precision import A8LSQ, A8Static, ActivationPrecision
from tritondsl.compiler import shapes as sh
from tritondsl.compiler.nodes import Span
from tritondsl.compiler.tensor_ops import interpolated
from tritondsl.compiler.values import (
    INT_DTYPES,
    EvalError,
    Module,
    Tensor,
    is_int,
    is_number,
    show_value,
)

REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    """One constructor parameter: its name, accepted kind and default."""

    name: str
    kind: str  # "posint", "nonneg", "int", "float", "bool", "str", "pair", "pair0", "dims",
    # "embedding" (an Embedding layer of the same definition)
    default: Any = REQUIRED


@dataclass(frozen=True)
class StateEntry:
    """A predicted state_dict entry of a layer (suffix relative to the layer)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    learnable: bool = True


@dataclass(frozen=True)
class LayerSpec:
    """A built-in layer: signature, state it owns, and how it maps input to output shape."""

    name: str
    signature: tuple[Arg, ...]
    state: Callable[[dict[str, Any]], list[StateEntry]]
    shape: Callable[[dict[str, Any], Tensor, Span], Tensor]
    quantizable: bool = False
    check: Callable[[dict[str, Any], Span], None] | None = None
    # How torch shows the arguments as attributes, for `layer.arg` reads in a program
    # (Conv2d keeps kernel_size as a pair); an argument mapped to UNREADABLE is a tensor in
    # torch (`bias`). None: every argument reads back as given.
    attributes: Callable[[dict[str, Any]], dict[str, Any]] | None = None


UNREADABLE = object()


def read_argument(spec: LayerSpec, args: dict[str, Any], name: str, span: Span) -> Any:
    """``layer.name`` as the generated module will see it (torch's attribute)."""
    if name == "inplace":
        return False  # generated layers compute out of place (codegen.layer_call)
    value = (spec.attributes(args) if spec.attributes else args)[name]
    if value is UNREADABLE:
        raise EvalError(
            f"{spec.name}.{name} is a tensor in PyTorch, not the argument it was built with",
            span,
            "keep the argument in a 'let' and read that instead",
        )
    return value


def activation_state(config: ActivationPrecision | None) -> list[StateEntry]:
    """The ``input_quant.*`` entries a layer's input quantizer adds (backend/activations.py)."""
    if not isinstance(config, A8Static | A8LSQ):
        return []  # float input, or per-token scales computed at run time
    return [
        StateEntry("input_quant.scale", (), learnable=isinstance(config, A8LSQ)),
        StateEntry("input_quant.zero_point", (), "int8" if config.signed else "uint8", False),
        StateEntry("input_quant.range_min", (), learnable=False),
        StateEntry("input_quant.range_max", (), learnable=False),
        StateEntry("input_quant.num_batches_observed", (), "int64", False),
    ]


def check_kind(kind: str, value: Any) -> bool:
    """Whether ``value`` is acceptable for an argument of ``kind``."""
    match kind:
        case "posint":
            return is_int(value) and value >= 1
        case "nonneg":
            return is_int(value) and value >= 0
        case "int":
            return is_int(value)
        case "float":
            return is_number(value)
        case "bool":
            return isinstance(value, bool)
        case "str":
            return isinstance(value, str)
        case "pair" | "pair0":
            low = 1 if kind == "pair" else 0
            if is_int(value):
                return value >= low
            return (
                isinstance(value, tuple | list)
                and len(value) == 2
                and all(is_int(v) and v >= low for v in value)
            )
        case "dims":
            return is_int(value) or (isinstance(value, tuple | list) and all(map(is_int, value)))
        case "posdims":
            items = value if isinstance(value, tuple | list) else (value,)
            return bool(items) and all(is_int(v) and v >= 1 for v in items)
        case "embedding":
            return isinstance(value, Module) and value.kind == "Embedding"
        case "scale":
            items = list(value) if isinstance(value, tuple | list) else [value]
            return len(items) in (1, 2) and all(is_number(v) and v > 0 for v in items)
    return False


KIND_WORDS = {
    "posint": "a positive int",
    "nonneg": "a non-negative int",
    "int": "an int",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "pair": "a positive int or a pair of them",
    "pair0": "a non-negative int or a pair of them",
    "dims": "an int or a tuple of ints",
    "posdims": "a positive int or a tuple of them",
    "embedding": "an Embedding layer",
    "scale": "a positive number or a pair of them",
}


def bind(spec: LayerSpec, args: list[Any], kwargs: dict[str, Any], span: Span) -> dict[str, Any]:
    """Bind call arguments to ``spec``'s signature, checking count, names and kinds."""
    sig = spec.signature
    if len(args) > len(sig):
        raise EvalError(f"{spec.name} takes at most {len(sig)} arguments, got {len(args)}", span)
    bound = {arg.name: value for arg, value in zip(sig, args, strict=False)}
    for key, value in kwargs.items():
        if key in bound:
            raise EvalError(f"{spec.name} got two values for '{key}'", span)
        bound[key] = value
    for arg in sig:
        if arg.name not in bound:
            if arg.default is REQUIRED:
                raise EvalError(f"{spec.name} is missing its argument '{arg.name}'", span)
            bound[arg.name] = arg.default
        elif bound[arg.name] is not None and not check_kind(arg.kind, bound[arg.name]):
            raise EvalError(
                f"{spec.name}: '{arg.name}' must be {KIND_WORDS[arg.kind]}, "
                f"got {show_value(bound[arg.name])}",
                span,
            )
    for arg in sig:
        value = bound[arg.name]
        ints = value if isinstance(value, tuple | list) else [value]
        if arg.kind != "float" and any(is_int(v) and abs(v) > sh.MAX_SIZE for v in ints):
            raise EvalError(
                f"{spec.name}: '{arg.name}' is {show_value(value)}, above the limit of "
                f"{sh.MAX_SIZE:,}",
                span,
            )
    if spec.check is not None:
        spec.check(bound, span)
    for entry in spec.state(bound):
        if math.prod(entry.shape) > sh.MAX_ELEMENTS:
            raise EvalError(
                f"{spec.name}: its {entry.name} would have {math.prod(entry.shape):,} elements, "
                f"above the limit of {sh.MAX_ELEMENTS:,}",
                span,
            )
    return bound


def pair(value: int | tuple | list) -> tuple[int, int]:
    """Expand an int to ``(v, v)``; pass pairs through."""
    return (value, value) if is_int(value) else (int(value[0]), int(value[1]))


# ---------------------------------------------------------------- Conv2d


def _conv_check(a: dict[str, Any], span: Span, name: str = "Conv2d") -> None:
    for key in ("in_channels", "out_channels"):
        if a[key] % a["groups"]:
            raise EvalError(
                f"{name}: {key} ({a[key]}) must be divisible by groups ({a['groups']})", span
            )


def _conv_state(a: dict[str, Any]) -> list[StateEntry]:
    kh, kw = pair(a["kernel_size"])
    out = [StateEntry("weight", (a["out_channels"], a["in_channels"] // a["groups"], kh, kw))]
    if a["bias"]:
        out.append(StateEntry("bias", (a["out_channels"],)))
    return out


def _conv_shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    batch, c, h, w = sh.expect_image(x, "Conv2d", span)
    sh.expect_dim(c, a["in_channels"], "Conv2d", "input channels", x, span)
    (kh, kw), (sh_, sw) = pair(a["kernel_size"]), pair(a["stride"])
    (ph, pw), (dh, dw) = pair(a["padding"]), pair(a["dilation"])
    oh = sh.window_out(h, kh, sh_, ph, dh, "Conv2d", x, span)
    ow = sh.window_out(w, kw, sw, pw, dw, "Conv2d", x, span)
    return Tensor((*batch, a["out_channels"], oh, ow), x.dtype)


CONV2D = LayerSpec(
    "Conv2d",
    (
        Arg("in_channels", "posint"),
        Arg("out_channels", "posint"),
        Arg("kernel_size", "pair"),
        Arg("stride", "pair", 1),
        Arg("padding", "pair0", 0),
        Arg("dilation", "pair", 1),
        Arg("groups", "posint", 1),
        Arg("bias", "bool", True),
    ),
    _conv_state,
    _conv_shape,
    quantizable=True,
    check=_conv_check,
    attributes=lambda a: {
        **a, **{k: pair(a[k]) for k in ("kernel_size", "stride", "padding", "dilation")},
        "bias": UNREADABLE,
    },
)


# ---------------------------------------------------------------- ConvTranspose2d


def _deconv_check(a: dict[str, Any], span: Span) -> None:
    _conv_check(a, span, "ConvTranspose2d")
    for op, stride, dilation in zip(
        pair(a["output_padding"]), pair(a["stride"]), pair(a["dilation"]), strict=True
    ):
        if op >= stride and op >= dilation:
            raise EvalError(
                f"ConvTranspose2d: output_padding {a['output_padding']} must be smaller than "
                f"the stride {a['stride']} or the dilation {a['dilation']}",
                span,
            )


def _deconv_state(a: dict[str, Any]) -> list[StateEntry]:
    kh, kw = pair(a["kernel_size"])
    out = [StateEntry("weight", (a["in_channels"], a["out_channels"] // a["groups"], kh, kw))]
    if a["bias"]:
        out.append(StateEntry("bias", (a["out_channels"],)))
    return out


def _deconv_shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    batch, c, h, w = sh.expect_image(x, "ConvTranspose2d", span)
    sh.expect_dim(c, a["in_channels"], "ConvTranspose2d", "input channels", x, span)
    sizes = zip(
        (h, w),
        *(pair(a[k]) for k in ("kernel_size", "stride", "padding", "dilation", "output_padding")),
        strict=True,
    )
    out = [sh.transposed_out(*size, x, span) for size in sizes]
    return Tensor((*batch, a["out_channels"], *out), x.dtype)


CONVTRANSPOSE2D = LayerSpec(
    "ConvTranspose2d",
    (
        Arg("in_channels", "posint"),
        Arg("out_channels", "posint"),
        Arg("kernel_size", "pair"),
        Arg("stride", "pair", 1),
        Arg("padding", "pair0", 0),
        Arg("output_padding", "pair0", 0),
        Arg("groups", "posint", 1),
        Arg("bias", "bool", True),
        Arg("dilation", "pair", 1),
    ),
    _deconv_state,
    _deconv_shape,
    quantizable=True,
    check=_deconv_check,
    attributes=lambda a: {
        **a,
        **{k: pair(a[k]) for k in ("kernel_size", "stride", "padding", "output_padding")},
        "dilation": pair(a["dilation"]),
        "bias": UNREADABLE,
    },
)


# ---------------------------------------------------------------- Linear


def _linear_shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    if not x.shape:
        raise EvalError("Linear expects a tensor with at least one dimension", span)
    sh.expect_dim(x.shape[-1], a["in_features"], "Linear", "input features", x, span)
    return Tensor((*x.shape[:-1], a["out_features"]), x.dtype)


LINEAR = LayerSpec(
    "Linear",
    (Arg("in_features", "posint"), Arg("out_features", "posint"), Arg("bias", "bool", True)),
    lambda a: [
        StateEntry("weight", (a["out_features"], a["in_features"])),
        *([StateEntry("bias", (a["out_features"],))] if a["bias"] else []),
    ],
    _linear_shape,
    quantizable=True,
    attributes=lambda a: {**a, "bias": UNREADABLE},
)


# ---------------------------------------------------------------- BatchNorm2d


def _bn_state(a: dict[str, Any]) -> list[StateEntry]:
    c = (a["num_features"],)
    out = [StateEntry("weight", c), StateEntry("bias", c)] if a["affine"] else []
    if a["track_running_stats"]:
        out += [
            StateEntry("running_mean", c, learnable=False),
            StateEntry("running_var", c, learnable=False),
            StateEntry("num_batches_tracked", (), "int64", learnable=False),
        ]
    return out


def _bn_shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    _, c, _, _ = sh.expect_image(x, "BatchNorm2d", span)
    sh.expect_dim(c, a["num_features"], "BatchNorm2d", "channels", x, span)
    return x


BATCHNORM2D = LayerSpec(
    "BatchNorm2d",
    (
        Arg("num_features", "posint"),
        Arg("eps", "float", 1e-5),
        Arg("momentum", "float", 0.1),
        Arg("affine", "bool", True),
        Arg("track_running_stats", "bool", True),
    ),
    _bn_state,
    _bn_shape,
)


# ---------------------------------------------------------------- pooling


def _pool_shape(name: str) -> Callable[[dict[str, Any], Tensor, Span], Tensor]:
    def shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
        batch, c, h, w = sh.expect_image(x, name, span)
        (kh, kw), (ph, pw) = pair(a["kernel_size"]), pair(a["padding"])
        (sh_, sw) = pair(a["stride"] if a["stride"] is not None else a["kernel_size"])
        (dh, dw) = pair(a.get("dilation", 1))
        if ph * 2 > kh or pw * 2 > kw:
            raise EvalError(
                f"{name}: padding {a['padding']} must be at most half the kernel "
                f"size {a['kernel_size']}",
                span,
            )
        ceil = a["ceil_mode"]
        oh = sh.window_out(h, kh, sh_, ph, dh, name, x, span, ceil)
        ow = sh.window_out(w, kw, sw, pw, dw, name, x, span, ceil)
        return Tensor((*batch, c, oh, ow), x.dtype)

    return shape


def _pool_attributes(a: dict[str, Any]) -> dict[str, Any]:
    return {**a, "stride": a["kernel_size"] if a["stride"] is None else a["stride"]}


def _no_indices(name: str, a: dict[str, Any], span: Span) -> None:
    if a["return_indices"]:
        raise EvalError(
            f"{name}(return_indices=true) returns a pair of tensors, which layers cannot "
            "pass on; use return_indices=false",
            span,
        )


MAXPOOL2D = LayerSpec(
    "MaxPool2d",
    (
        Arg("kernel_size", "pair"),
        Arg("stride", "pair", None),
        Arg("padding", "pair0", 0),
        Arg("dilation", "pair", 1),
        Arg("return_indices", "bool", False),
        Arg("ceil_mode", "bool", False),
    ),
    lambda a: [],
    _pool_shape("MaxPool2d"),
    check=lambda a, span: _no_indices("MaxPool2d", a, span),
    attributes=_pool_attributes,
)
AVGPOOL2D = LayerSpec(
    "AvgPool2d",
    (
        Arg("kernel_size", "pair"),
        Arg("stride", "pair", None),
        Arg("padding", "pair0", 0),
        Arg("ceil_mode", "bool", False),
        Arg("count_include_pad", "bool", True),
    ),
    lambda a: [],
    _pool_shape("AvgPool2d"),
    attributes=_pool_attributes,
)


def _adaptive(name: str, *extra: Arg) -> LayerSpec:
    def shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
        batch, c, _, _ = sh.expect_image(x, name, span)
        return Tensor((*batch, c, *pair(a["output_size"])), x.dtype)

    check = (lambda a, span: _no_indices(name, a, span)) if extra else None
    return LayerSpec(name, (Arg("output_size", "pair"), *extra), lambda a: [], shape, check=check)


def _upsample_check(a: dict[str, Any], span: Span) -> None:
    sh.expect_choice(a["mode"], sh.INTERPOLATE_MODES, "Upsample: mode", span)
    if (a["size"] is None) == (a["scale_factor"] is None):
        raise EvalError("Upsample: give either size or scale_factor", span)
    if a["align_corners"] is not None and a["mode"] not in ("bilinear", "bicubic"):
        raise EvalError("Upsample: align_corners applies to bilinear and bicubic modes only", span)


UPSAMPLE = LayerSpec(
    "Upsample",
    (
        Arg("size", "pair", None),
        Arg("scale_factor", "scale", None),
        Arg("mode", "str", "nearest"),
        Arg("align_corners", "bool", None),
        Arg("recompute_scale_factor", "bool", None),
    ),
    lambda a: [],
    lambda a, x, span: interpolated(a, x, "Upsample", span),
    check=_upsample_check,
)


# ---------------------------------------------------------------- shape-preserving and Flatten


def _same(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    return x


def _elementwise(name: str, *signature: Arg) -> LayerSpec:
    return LayerSpec(name, signature, lambda a: [], _same)


def _probability(name: str) -> Callable[[dict[str, Any], Span], None]:
    def check(a: dict[str, Any], span: Span) -> None:
        if not 0 <= a["p"] <= 1:
            raise EvalError(f"{name}: p must be between 0 and 1, got {a['p']}", span)
        if "mode" in a:
            sh.expect_choice(a["mode"], ("row", "batch"), f"{name}: mode", span)

    return check


def _image(name: str) -> Callable[[dict[str, Any], Tensor, Span], Tensor]:
    def shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
        sh.expect_image(x, name, span)
        return x

    return shape


def _along_dim(name: str) -> LayerSpec:
    def shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
        sh.reduce(x, a["dim"], False, name, span)  # checks that dim exists
        return x

    return LayerSpec(name, (Arg("dim", "int"),), lambda a: [], shape)


FLATTEN = LayerSpec(
    "Flatten",
    (Arg("start_dim", "int", 1), Arg("end_dim", "int", -1)),
    lambda a: [],
    lambda a, x, span: sh.flatten(x, a["start_dim"], a["end_dim"], span),
)

# ---------------------------------------------------------------- transformers

def _embedding_check(a: dict[str, Any], span: Span) -> None:
    pad = a["padding_idx"]
    if pad is not None and not -a["num_embeddings"] <= pad < a["num_embeddings"]:
        raise EvalError(
            f"Embedding: padding_idx {pad} is outside the {a['num_embeddings']} embeddings", span
        )


def _embedding_shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    if x.dtype not in INT_DTYPES:
        raise EvalError(
            f"Embedding expects integer token ids, got a {x.dtype} tensor {x.show()}",
            span,
            "declare the input with an integer dtype, e.g. 'input ids: Tensor[N, T, int64]'",
        )
    return Tensor((*x.shape, a["embedding_dim"]), "float32")


EMBEDDING = LayerSpec(
    "Embedding",
    (
        Arg("num_embeddings", "posint"),
        Arg("embedding_dim", "posint"),
        Arg("padding_idx", "int", None),
    ),
    lambda a: [StateEntry("weight", (a["num_embeddings"], a["embedding_dim"]))],
    _embedding_shape,
    check=_embedding_check,
)


def _dims(value: int | tuple | list) -> tuple[int, ...]:
    return (value,) if is_int(value) else tuple(value)


def _norm_shape(name: str) -> Callable[[dict[str, Any], Tensor, Span], Tensor]:
    def shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
        dims = _dims(a["normalized_shape"])
        tail = x.shape[len(x.shape) - len(dims) :] if len(x.shape) >= len(dims) else None
        if x.dtype in INT_DTYPES or tail is None or any(
            is_int(got) and got != want for got, want in zip(tail, dims, strict=True)
        ):
            raise EvalError(
                f"{name} normalizes the last dimensions {list(dims)}, got a {x.dtype} tensor "
                f"{x.show()}",
                span,
            )
        return x

    return shape


def _norm_state(with_bias: bool) -> Callable[[dict[str, Any]], list[StateEntry]]:
    def state(a: dict[str, Any]) -> list[StateEntry]:
        if not a["elementwise_affine"]:
            return []
        dims = _dims(a["normalized_shape"])
        bias = with_bias and a["bias"]
        return [StateEntry("weight", dims), *([StateEntry("bias", dims)] if bias else [])]

    return state


def _eps_check(name: str) -> Callable[[dict[str, Any], Span], None]:
    def check(a: dict[str, Any], span: Span) -> None:
        if a["eps"] is not None and not a["eps"] > 0:
            raise EvalError(f"{name}: eps must be positive, got {a['eps']}", span)

    return check


LAYERNORM = LayerSpec(
    "LayerNorm",
    (
        Arg("normalized_shape", "posdims"),
        Arg("eps", "float", 1e-5),
        Arg("elementwise_affine", "bool", True),
        Arg("bias", "bool", True),
    ),
    _norm_state(with_bias=True),
    _norm_shape("LayerNorm"),
    check=_eps_check("LayerNorm"),
    attributes=lambda a: {**a, "normalized_shape": _dims(a["normalized_shape"]),
                          "bias": UNREADABLE},
)
RMSNORM = LayerSpec(
    "RMSNorm",
    (
        Arg("normalized_shape", "posdims"),
        Arg("eps", "float", None),
        Arg("elementwise_affine", "bool", True),
    ),
    _norm_state(with_bias=False),
    _norm_shape("RMSNorm"),
    check=_eps_check("RMSNorm"),
    attributes=lambda a: {**a, "normalized_shape": _dims(a["normalized_shape"])},
)


def _tied_shape(a: dict[str, Any], x: Tensor, span: Span) -> Tensor:
    vocab, dim = a["embedding"].args["num_embeddings"], a["embedding"].args["embedding_dim"]
    if not x.shape:
        raise EvalError("TiedLinear expects a tensor with at least one dimension", span)
    sh.expect_dim(x.shape[-1], dim, "TiedLinear", "input features", x, span)
    return Tensor((*x.shape[:-1], vocab), x.dtype)


# The weight is the embedding's own Parameter: listed under both names in a state_dict,
# as in Hugging Face models with tie_word_embeddings, but counted once as a parameter.
TIED_LINEAR = LayerSpec(
    "TiedLinear",
    (Arg("embedding", "embedding"),),
    lambda a: [
        StateEntry(
            "weight",
            (a["embedding"].args["num_embeddings"], a["embedding"].args["embedding_dim"]),
            learnable=False,
        )
    ],
    _tied_shape,
)

_GELU_MODES = ("none", "tanh")

_INPLACE = Arg("inplace", "bool", False)

LAYERS: dict[str, LayerSpec] = {
    spec.name: spec
    for spec in (
        CONV2D,
        CONVTRANSPOSE2D,
        LINEAR,
        BATCHNORM2D,
        MAXPOOL2D,
        AVGPOOL2D,
        _adaptive("AdaptiveAvgPool2d"),
        _adaptive("AdaptiveMaxPool2d", Arg("return_indices", "bool", False)),
        UPSAMPLE,
        FLATTEN,
        EMBEDDING,
        LAYERNORM,
        RMSNORM,
        TIED_LINEAR,
        *(
            _elementwise(name, _INPLACE)
            for name in ("ReLU", "ReLU6", "SiLU", "Hardswish", "Hardsigmoid", "Mish")
        ),
        _elementwise("Tanh"),
        _elementwise("Sigmoid"),
        _elementwise("LeakyReLU", Arg("negative_slope", "float", 0.01), _INPLACE),
        _elementwise("ELU", Arg("alpha", "float", 1.0), _INPLACE),
        _along_dim("Softmax"),
        _along_dim("LogSoftmax"),
        LayerSpec(
            "GELU",
            (Arg("approximate", "str", "none"),),
            lambda a: [],
            _same,
            check=lambda a, span: sh.expect_choice(
                a["approximate"], _GELU_MODES, "GELU: approximate", span
            ),
        ),
        LayerSpec(
            "Dropout",
            (Arg("p", "float", 0.5), _INPLACE),
            lambda a: [],
            _same,
            check=_probability("Dropout"),
        ),
        LayerSpec(
            "Dropout2d",
            (Arg("p", "float", 0.5), _INPLACE),
            lambda a: [],
            _image("Dropout2d"),
            check=_probability("Dropout2d"),
        ),
        # torchvision.ops.StochasticDepth: drops whole residual branches while training.
        LayerSpec(
            "StochasticDepth",
            (Arg("p", "float"), Arg("mode", "str")),
            lambda a: [],
            _same,
            check=_probability("StochasticDepth"),
        ),
        _elementwise("Identity"),
    )
}
# Layers that are not in torch.nn: generated code takes them from tritondsl.runtime.
RUNTIME_LAYERS = ("TiedLinear", "StochasticDepth")
