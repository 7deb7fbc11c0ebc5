"""Integer codes and per-channel scales for each layer of an int8 ONNX file (W1.58A8).

Every weight written for onnxruntime's int8 kernels is ``codes · scale[channel]`` with int8
codes and one positive float32 scale per output channel (axis 0), computed here from the
BatchNorm-folded weight (``fold.py``):

* single-scale ternary layers (TWN, AbsMean, SparsityTarget): the trits themselves,
  {-1, 0, 1}, with the folded α — exact, and stored 2-bit (INT2) on disk;
* Learned layers ({-Wn, 0, +Wp}): codes {-a, 0, +b} on one scale per channel, with
  max(a, b) = 127 and the other rounded; exact when the ratio Wp/Wn rounds exactly, else
  off by the reported relative error; beyond ``ratio_tolerance`` the layer stays float;
* Int8 layers: their own codes and scales;
* full-precision layers (fp32 / fp16 weights): symmetric per-channel int8,
  ``scale = max|W| / 127``, ``codes = round(W / scale)`` (ONNX rounding: half to even).

A channel whose scale would be 0 (all codes 0, or a BatchNorm γ of 0) gets codes 0 and
scale 1, so the bias scale ``input_scale · weight_scale`` that onnxruntime needs is never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritondsl.backend.quantizers import Decomposition

INT8_MAX = 127
DEFAULT_RATIO_TOLERANCE = 0.01  # Learned layers: largest relative error of the smaller scale


@dataclass(frozen=True)
class WeightPlan:
    """How one layer's weight is written: int8 codes, per-channel scales, 2-bit or not."""

    codes: np.ndarray  # int8, shaped like the weight
    scale: np.ndarray  # float32 [N], every entry > 0
    trits: bool  # codes are {-1, 0, 1}: stored as INT2 on disk
    how: str  # one line for the report

    def weight(self) -> np.ndarray:
        """The float weight the codes and scales stand for."""
        shape = (-1,) + (1,) * (self.codes.ndim - 1)
        return (self.codes.astype(np.float32) * self.scale.reshape(shape)).astype(np.float32)


def _positive(codes: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channels with scale 0 (or not finite) get codes 0 and scale 1 (weight 0 either way)."""
    dead = ~(np.isfinite(scale) & (scale > 0))
    if dead.any():
        codes = codes.copy()
        codes[dead] = 0
        scale = np.where(dead, 1.0, scale)
    return codes.astype(np.int8), scale.astype(np.float32)


def _per_channel(scale: np.ndarray | None, n: int) -> np.ndarray:
    assert scale is not None
    return np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (n,)).copy()


def plan_ternary(dec: Decomposition) -> WeightPlan:
    """A single-scale ternary decomposition as trits and per-channel scales (exact)."""
    codes = dec.codes.numpy()
    scale = _per_channel(dec.scale.detach().numpy() if dec.scale is not None else None, len(codes))
    codes, scale32 = _positive(codes, scale)
    return WeightPlan(codes, scale32, True, "ternary trits (INT2 on disk), per-channel scales")


def plan_int8(dec: Decomposition) -> WeightPlan:
    """An Int8 layer's own codes and scales."""
    codes = dec.codes.numpy()
    scale = _per_channel(dec.scale.detach().numpy() if dec.scale is not None else None, len(codes))
    codes, scale32 = _positive(codes, scale)
    return WeightPlan(codes, scale32, False, "int8 codes of the Int8 quantizer")


def plan_learned(dec: Decomposition, tolerance: float) -> WeightPlan | str:
    """Learned {-Wn, 0, +Wp} as codes {-a, 0, +b} on one scale, or why it stays float."""
    assert dec.scale is not None and dec.scale_neg is not None
    trits = dec.codes.numpy().astype(np.int32)
    n = len(trits)
    pos, neg = (
        _per_channel(dec.scale.detach().numpy(), n),
        _per_channel(dec.scale_neg.detach().numpy(), n),
    )
    top = np.maximum(pos, neg)
    safe = np.where(top > 0, top, 1.0)
    b, a = np.rint(INT8_MAX * pos / safe), np.rint(INT8_MAX * neg / safe)
    scale = top / INT8_MAX
    want = np.concatenate([pos, neg])
    got = np.concatenate([b * scale, a * scale])
    used = want > 0
    error = float((np.abs(got - want) / np.where(used, want, 1.0))[used].max(initial=0.0))
    if error > tolerance:
        return (
            f"Learned scales Wp/Wn do not round to int8 codes within {tolerance:.1%} "
            f"(error {error:.2%}); kept float"
        )
    shape = (-1,) + (1,) * (trits.ndim - 1)
    codes = np.where(trits > 0, b.reshape(shape), 0) - np.where(trits < 0, a.reshape(shape), 0)
    codes, scale32 = _positive(codes, scale)
    return WeightPlan(
        codes, scale32, False,
        f"Learned {{-Wn, 0, +Wp}} as int8 codes {{-a, 0, +b}}, scale error {error:.3%}",
    )  # fmt: skip


def plan_float(weight: np.ndarray, origin: str) -> WeightPlan:
    """Symmetric per-channel int8 of a full-precision weight."""
    rows = weight.reshape(len(weight), -1).astype(np.float64)
    scale = np.abs(rows).max(axis=1) / INT8_MAX
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.clip(np.rint(rows / safe[:, None]), -INT8_MAX, INT8_MAX).reshape(weight.shape)
    codes, scale32 = _positive(codes, scale)
    return WeightPlan(codes, scale32, False, f"int8 per-channel (was {origin})")
