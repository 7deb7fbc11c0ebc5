"""tritondsl: a compiler toolchain for ternary neural networks.

Importing the package is cheap: the front end never imports torch, and the
torch-based parts (runtime layers, kernels, exporters) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it; resolved lazily so `tritondsl check` stays fast.
_LAZY = {
    "deploy": "tritondsl.backend.deploy",
    "compile": "tritondsl.program",
    "load_model": "tritondsl.program",
    "CompileError": "tritondsl.compiler.diagnostics",
    "save_pretrained": "tritondsl.export.hub",
    "from_pretrained": "tritondsl.export.hub",
    "push_to_hub": "tritondsl.export.hub",
    "ArtifactError": "tritondsl.export.artifact",
    "ArtifactNotFoundError": "tritondsl.export.artifact",
    "ArtifactAuthError": "tritondsl.export.artifact",
    "CorruptArtifactError": "tritondsl.export.artifact",
    "onnx_session": "tritondsl.export.onnx_session",
}


def __getattr__(name: str) -> Any:
    """Load torch-based public API members on first access."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tritondsl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
