"""The quantized weight a layer computes with, kept while the tensors it came from are unchanged.

One design serves both cases: an eval-mode (not deployed) layer, whose source is its latent
weight (and a Learned layer's two scales), and a deployed layer, whose source is its packed
codes and scale buffers. A cache entry remembers its sources by weak reference plus each
one's autograd version counter, data pointer, device, dtype and shape, so it is rebuilt
after anything that changes them: an optimizer step or any other in-place update (they bump
``_version``), ``load_state_dict`` (in-place copies), assigning a new Parameter, ``.data =``,
``.to()`` / ``.half()`` (the layer also clears its cache in ``_apply`` and in ``train()``).
Writes through ``tensor.data`` in place (``w.data.mul_(2)``) are invisible to autograd's
version counter and therefore to the cache: call ``clear_weight_cache()`` after those.

Modes (``CacheMode``):

* ``"int8"`` (default): the integer codes (int8 trits or int8 codes, float16 values for FP16
  layers) and scales; each forward multiplies them back into a float weight, one pass over
  a quarter of the bytes of a float weight. Learned layers (two scales) keep the float weight.
* ``"float"``: the dequantized float weight itself (four bytes per weight, no work per call).
* ``"none"``: nothing is kept; every forward decodes the weight again.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import Tensor

from tritondsl.backend.quantizers import Decomposition

CacheMode = Literal["int8", "float", "none"]
CACHE_MODES: tuple[CacheMode, ...] = ("int8", "float", "none")


def check_mode(mode: str) -> CacheMode:
    """``mode`` if it is a cache mode, else ValueError listing them."""
    if mode not in CACHE_MODES:
        raise ValueError(f"weight cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _fingerprint(t: Tensor) -> tuple[Any, ...]:
    return (t._version, t.data_ptr(), t.device, t.dtype, tuple(t.shape))


class WeightCache:
    """One layer's cached weight: codes and scales, or the float weight (see module)."""

    def __init__(self) -> None:
        self._refs: tuple[weakref.ref[Tensor], ...] = ()
        self._key: tuple[Any, ...] | None = None
        self._codes: Tensor | None = None
        self._scale: Tensor | None = None
        self._float: Tensor | None = None

    def clear(self) -> None:
        """Forget the cached weight."""
        self._refs, self._key = (), None
        self._codes = self._scale = self._float = None

    def get(
        self,
        sources: Sequence[Tensor],
        extra: object,
        mode: CacheMode,
        decompose: Callable[[], Decomposition],
    ) -> Tensor:
        """The float weight for ``sources``: from the cache if they are unchanged, else rebuilt."""
        if mode == "none":
            self.clear()
            return decompose().dequantize()
        key = (mode, extra, *(_fingerprint(t) for t in sources))
        alive = len(self._refs) == len(sources) and all(
            ref() is t for ref, t in zip(self._refs, sources, strict=True)
        )
        if not (alive and key == self._key):
            self._fill(decompose(), mode)
            self._refs = tuple(weakref.ref(t) for t in sources)
            self._key = key
        if self._float is not None:
            return self._float
        assert self._codes is not None
        if self._scale is None:  # FP16 values
            return self._codes.float()
        # Convert, then scale in place: one allocation, and the int8 -> float conversion is a
        # fast contiguous loop (a mixed-dtype broadcast multiply measured about twice as slow).
        return self._codes.to(self._scale.dtype).mul_(self._scale)

    def _fill(self, dec: Decomposition, mode: CacheMode) -> None:
        self._codes = self._scale = self._float = None
        if mode == "float" or dec.scale_neg is not None:
            self._float = dec.dequantize().detach()
            return
        self._codes = dec.codes.detach().contiguous()
        if dec.scale is not None:
            group_shape = (-1,) + (1,) * (dec.codes.dim() - 1)
            self._scale = dec.scale.detach().reshape(group_shape).contiguous()

    def nbytes(self) -> int:
        """Bytes the cache holds now (0 when empty)."""
        held = (self._codes, self._scale, self._float)
        return sum(t.numel() * t.element_size() for t in held if t is not None)

    def __getstate__(self) -> dict[str, Any]:
        # Weak references cannot be pickled; a copy starts empty and fills on first use.
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.clear()

    def __deepcopy__(self, memo: dict[int, Any]) -> WeightCache:
        return WeightCache()  # the copy's sources are new tensors: nothing here is valid there
