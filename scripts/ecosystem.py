"""Try every exported form of a model in the outside tools users reach for; print a table.

    python scripts/ecosystem.py [MODEL] [--size 64]      # MODEL: a zoo name (resnet18)

Forms: ONNX int2 / packed / float, TorchScript, torch.export (.pt2). Consumers: the onnx
checker with strict shape inference, onnxruntime (the installed version), OpenVINO
(f32, no dynamic quantization), onnxsim, onnxslim, onnxruntime's offline optimizer
(``optimized_model_filepath``), and torch.jit.load / torch.export.load. Each cell says
whether it works, the max abs error against the deployed PyTorch model and the file size
after the tool where it writes one. docs/ecosystem.md quotes its output.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import tritondsl
from tritondsl.export.onnx import export_onnx
from tritondsl.export.onnx_verify import create_session
from tritondsl.export.torch_export import deployed_copy, export_pt2, export_torchscript

ONNX_FORMS = ("int2", "packed", "float")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _err(got: Any, expected: np.ndarray) -> str:
    return f"err {float(np.abs(np.asarray(got) - expected).max()):.1e}"


def _ort(proto_or_path: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    source = proto_or_path.SerializeToString() if isinstance(proto_or_path, onnx.ModelProto) else (
        proto_or_path
    )  # fmt: skip
    session = create_session(source)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _uint8_left(proto: onnx.ModelProto) -> str:
    packed = any(t.data_type == onnx.TensorProto.UINT8 and len(t.dims) > 1
                 for t in proto.graph.initializer)  # fmt: skip
    int2 = any(t.data_type == onnx.TensorProto.INT2 for t in proto.graph.initializer)
    return "2-bit codes kept" if packed or int2 else "float weights only"


def checker(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """onnx.checker (full) and strict shape inference."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return "ok"


def onnxruntime(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """All graph optimizations, DQ on weights folded."""
    return f"ok, {_err(_ort(path, x), expected)}"


def openvino(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """compile_model on CPU in exact f32."""
    import openvino as ov

    exact = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
    compiled = ov.Core().compile_model(str(path), "CPU", exact)
    return f"ok, {_err(compiled(x)[0], expected)}"


def onnxsim(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """onnxsim.simplify with its defaults."""
    import onnxsim as sim

    proto, ok = sim.simplify(onnx.load(str(path)))
    size = _mb(proto.ByteSize())
    return f"{'ok' if ok else 'check failed'}, {size}, {_uint8_left(proto)}, " + _err(
        _ort(proto, x), expected
    )


def onnxslim(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """onnxslim.slim with its defaults."""
    import onnxslim as slim

    proto = slim.slim(onnx.load(str(path)))
    return f"ok, {_mb(proto.ByteSize())}, {_uint8_left(proto)}, {_err(_ort(proto, x), expected)}"


def ort_offline(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """onnxruntime's optimized graph saved to a file (optimized_model_filepath)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        create_session(path, save_optimized=out)
        proto = onnx.load(str(out))
        return (
            f"ok, {_mb(out.stat().st_size)}, {_uint8_left(proto)}, {_err(_ort(out, x), expected)}"
        )


CONSUMERS: dict[str, Callable[[Path, np.ndarray, np.ndarray], str]] = {
    "onnx checker + strict shape inference": checker,
    f"onnxruntime {metadata.version('onnxruntime')}": onnxruntime,
    "OpenVINO": openvino,
    "onnxsim": onnxsim,
    "onnxslim": onnxslim,
    "onnxruntime offline optimizer": ort_offline,
}


def _try(run: Callable[[], str]) -> str:
    try:
        return run()
    except ImportError as error:
        return f"not installed ({error.name})"
    except Exception as error:  # a consumer's refusal is the finding
        lines = [line for line in str(error).splitlines() if line.strip()]
        first = lines[-1] if lines else ""  # the last line says why (OpenVINO: the cause)
        return f"**fails**: {type(error).__name__}: {first.strip()[:90]}"


def main() -> None:
    """Export, try, print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = tritondsl.load_model(args.model)
    example = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, args.size + 16, args.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = deployed_copy(model)(x).numpy()
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in
                         ("torch", "onnx", "onnxruntime", "openvino", "onnxsim", "onnxslim")
                         if _installed(p))  # fmt: skip
    print(f"{args.model}, example 1x3x{args.size}x{args.size}, checked on a "
          f"{list(x.shape)} input (other batch and height); {versions}\n")  # fmt: skip
    rows: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in ONNX_FORMS:
            path = Path(tmp) / f"{form}.onnx"
            export_onnx(model, path, example, form)
            column = f"ONNX {form} ({_mb(path.stat().st_size)})"
            for name, consumer in CONSUMERS.items():
                rows.setdefault(name, {})[column] = _try(
                    lambda c=consumer, p=path: c(p, x.numpy(), expected)
                )
        for label, export, load in (
            ("TorchScript", export_torchscript, torch.jit.load),
            ("torch.export", export_pt2, lambda p: torch.export.load(p).module()),
        ):
            path = Path(tmp) / f"{label}.{'pt2' if label == 'torch.export' else 'pt'}"
            export(model, path, example)
            column = f"{label} ({_mb(path.stat().st_size)})"

            def reload(p: Path = path, loader: Any = load) -> str:
                with torch.no_grad():
                    return f"ok, {_err(loader(str(p))(x).numpy(), expected)}"

            rows.setdefault("torch.jit.load / torch.export.load", {})[column] = _try(reload)
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    print("| consumer | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(row.get(c, "—") for c in columns) + " |")


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
