"""Check an int8 ONNX file against the PyTorch W1.58A8 model it stands for, on data.

The file cannot match PyTorch to float precision: onnxruntime also quantizes tensors the
PyTorch model keeps float (a conv output before a residual Add, pooling inputs), rounds the
bias to int32 and, by default, the full-precision layers' weights to int8. So ``verify_int8``
measures what matters instead, over every batch given: the largest logit difference (absolute
and relative to the largest PyTorch logit), top-1 agreement, and, when the batches carry
labels, both accuracies. It fails when the outputs are not finite or differ in shape, or,
with data, when top-1 agreement is below ``min_agreement``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tritondsl.export.onnx_session import onnx_session
from tritondsl.export.torch_export import run_outputs

MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class AgreementCheck:
    """onnxruntime's outputs against PyTorch's over some samples."""

    name: str
    samples: int
    max_abs: float
    rel: float
    agreement: float | None  # top-1 agreement (None: outputs are not [N, classes])
    accuracy: tuple[float, float] | None  # (PyTorch, onnxruntime) when labels were given
    ok: bool
    judged: bool  # whether agreement decided ``ok`` (only with real data)
    min_agreement: float = MIN_AGREEMENT

    def line(self) -> str:
        """One line for the report."""
        parts = [f"{self.name}: {self.samples} samples, max logit error {self.max_abs:.3g} "
                 f"(rel {self.rel:.3g})"]  # fmt: skip
        if self.agreement is not None:
            parts.append(f"top-1 agreement {100 * self.agreement:.2f}%")
        if self.accuracy is not None:
            torch_acc, onnx_acc = self.accuracy
            parts.append(
                f"accuracy PyTorch {100 * torch_acc:.2f}% vs onnxruntime {100 * onnx_acc:.2f}% "
                f"({100 * (onnx_acc - torch_acc):+.2f} points)"
            )
        verdict = "ok" if self.ok else "FAILED"
        if self.judged and self.agreement is not None and not self.ok:
            verdict += f" (agreement below {100 * self.min_agreement:.1f}%)"
        elif not self.judged and self.agreement is not None:
            verdict += " (agreement reported, not judged)"
        return ", ".join(parts) + f" {verdict}"


def _split(batch: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, tuple | list):
        x = batch[0]
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return x, y
    return batch, None


def verify_int8(
    path: str | Path,
    reference: nn.Module,
    batches: Iterable[Any],
    name: str = "onnxruntime int8 vs PyTorch W1.58A8",
    judged: bool = True,
    min_agreement: float = MIN_AGREEMENT,
) -> AgreementCheck:
    """Compare the file with ``reference`` on ``batches`` (tensors or (input, label) pairs)."""
    session = onnx_session(path)
    feed_name = session.get_inputs()[0].name
    samples = agree = right_torch = right_onnx = labelled = 0
    max_abs = scale = 0.0
    finite, classes = True, True
    for batch in batches:
        x, y = _split(batch)
        expected = run_outputs(reference, x.detach().cpu().float())[0].numpy()
        got = session.run(None, {feed_name: x.detach().cpu().float().numpy()})[0]
        if got.shape != expected.shape:
            return AgreementCheck(
                f"{name} (output shape {got.shape} != {expected.shape})",
                samples, math.inf, math.inf, None, None, False, judged,
            )  # fmt: skip
        finite &= bool(np.isfinite(got).all())
        max_abs = max(max_abs, float(np.abs(got.astype(np.float64) - expected).max(initial=0)))
        scale = max(scale, float(np.abs(expected).max(initial=0)))
        samples += len(x)
        classes &= got.ndim == 2
        if got.ndim == 2:
            top_onnx, top_torch = got.argmax(axis=1), expected.argmax(axis=1)
            agree += int((top_onnx == top_torch).sum())
            if y is not None:
                labels = y.detach().cpu().numpy().reshape(-1)
                labelled += len(labels)
                right_torch += int((top_torch == labels).sum())
                right_onnx += int((top_onnx == labels).sum())
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    agreement = agree / samples if classes and samples else None
    accuracy = (right_torch / labelled, right_onnx / labelled) if labelled else None
    ok = finite and samples > 0
    if judged and agreement is not None:
        ok = ok and agreement >= min_agreement
    return AgreementCheck(
        name, samples, max_abs, rel, agreement, accuracy, ok, judged, min_agreement
    )


def example_batches(example: np.ndarray) -> list[Tensor]:
    """The export's example input as the only batch (no data given)."""
    return [torch.from_numpy(example)]
