"""Everything that writes or reads artifacts: ONNX, TorchScript/pt2, Hub folders, releases.

    import tritondsl.export as tx

    report = tx.to_onnx(model, "resnet18.onnx", torch.randn(1, 3, 224, 224))
    print("\\n".join(report.lines()))   # sizes, bits per ternary weight, errors
    assert report.ok

One module per artifact: ``onnx.py`` (writing) and ``onnx_verify.py`` (checking in
onnxruntime), ``torch_export.py`` (TorchScript, torch.export), ``hub.py`` with
``artifact.py`` and ``model_card.py`` (Hugging Face folders), ``release.py`` (bundles),
``fold.py`` (BatchNorm folded into the Conv / Gemm before it, ternary codes kept)
and ``github.py`` (publishing them); ``api.py`` is the facade below and ``formats.py``
the ``tritondsl export --format`` registry. Members load on first use, so importing
this package does not import onnx.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ExportReport": "tritondsl.export.api",
    "to_onnx": "tritondsl.export.api",
    "to_pt2": "tritondsl.export.api",
    "to_torchscript": "tritondsl.export.api",
    "EXPORTERS": "tritondsl.export.formats",
    "ExportFormat": "tritondsl.export.formats",
    "ExportJob": "tritondsl.export.formats",
    "prepare": "tritondsl.export.formats",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Load a member's module on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tritondsl.export' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
