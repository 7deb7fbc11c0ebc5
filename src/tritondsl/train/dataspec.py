"""Data specs: what ``train --data`` (and ``export --calibrate``) accept, parsed without torch.

A spec is one string:

* a built-in dataset name (``BUILTIN_DATASETS``);
* ``imagefolder:DIR``: one sub-folder of images per class, either ``DIR/train`` and
  ``DIR/val`` (or ``DIR/test``), or the class folders directly in DIR, split by
  ``ImageOptions.val_fraction``;
* ``text:fortunes`` (Debian's fortunes package) or ``text:PATH`` (a UTF-8 file, or a folder
  of ``.txt`` files): text for a language model (``tritondsl.train.text``);
* ``module:function`` or ``path/to/file.py:function``: a hook that returns
  ``(train_dataset, test_dataset)``. A hook runs code, so only a spec the user typed may
  name one (a checkpoint never does: ``DataSpec.from_checkpoint_allowed``).

How images become tensors is ``ImageOptions``; ``tritondsl.train.data.load_datasets``
turns a spec and the options into datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tritondsl.train.errors import DataError

BUILTIN_DATASETS = ("fashion-mnist", "fashion-mnist-5k", "synthetic")
IMAGEFOLDER = "imagefolder"
TEXT = "text"
SMALL_IMAGES = ("resize", "pad")
BAD_IMAGES = ("skip", "error")
Kind = Literal["builtin", "imagefolder", "text", "hook"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: its kind and its argument (a name, a folder, a hook)."""

    kind: Kind
    value: str

    @property
    def from_checkpoint_allowed(self) -> bool:
        """Whether a checkpoint may name this spec on its own (it runs no code)."""
        return self.kind != "hook"

    @property
    def folder(self) -> Path:
        """The image folder of an ``imagefolder:`` spec."""
        return Path(self.value)


def parse(text: str) -> DataSpec:
    """The spec a ``--data`` string means; DataError says what is accepted."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"empty data spec; {_accepted()}")
    if text in BUILTIN_DATASETS:
        return DataSpec("builtin", text)
    prefix, sep, rest = text.partition(":")
    if sep and prefix == IMAGEFOLDER:
        if not rest:
            raise DataError("imagefolder: needs a folder, e.g. imagefolder:data/pets")
        return DataSpec("imagefolder", rest)
    if sep and prefix == TEXT:
        if not rest:
            raise DataError("text: needs a corpus: text:fortunes, or text:PATH (a file or folder)")
        return DataSpec("text", rest)
    module, sep, function = text.rpartition(":")
    if sep and module and function:
        return DataSpec("hook", text)
    raise DataError(f"unknown dataset {text!r}; {_accepted()}")


def _accepted() -> str:
    return (f"choose {', '.join(BUILTIN_DATASETS)}, imagefolder:DIR, text:fortunes, "
            "text:PATH, or module:function (path/to/file.py:function)")  # fmt: skip


@dataclass(frozen=True)
class ImageOptions:
    """How an image folder is read, augmented and normalized (part of every checkpoint).

    Training samples get a random resized crop (``crop_scale``..1 of the area, aspect 3/4..4/3)
    resized to the input size and a horizontal flip (``flip``); evaluation resizes the
    shorter side to size / ``eval_crop`` and takes the center crop. ``size`` is the input
    size of a model with symbolic H, W (None: the most common size of the images); a model
    with a fixed size takes that. Images smaller than the input are enlarged first
    (``small="resize"``) or centered on a canvas of the mean color (``small="pad"``).
    Pixels in [0, 1] are normalized with ``mean`` and ``std`` (None: ImageNet's, which
    torchvision's pretrained weights expect; their average for one channel). An image that
    cannot be read is skipped and counted (``bad_images="skip"``) or stops the run
    (``"error"``).
    """

    size: int | None = None
    small: str = "resize"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_scale: float = 0.08
    eval_crop: float = 0.875
    flip: bool = True
    val_fraction: float = 0.1
    bad_images: str = "skip"

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.size is not None and not (isinstance(self.size, int) and self.size >= 1):
            raise DataError(f"image size must be a positive integer, got {self.size!r}")
        if self.small not in SMALL_IMAGES:
            raise DataError(f"small images: choose {' or '.join(SMALL_IMAGES)}, got {self.small!r}")
        if self.bad_images not in BAD_IMAGES:
            raise DataError(
                f"bad images: choose {' or '.join(BAD_IMAGES)}, got {self.bad_images!r}"
            )
        for name, low in (("crop_scale", 0.0), ("eval_crop", 0.0), ("val_fraction", 0.0)):
            value = getattr(self, name)
            if not low < value <= 1 or (name == "val_fraction" and value == 1):
                raise DataError(f"{name} must be in (0, 1{')' if name == 'val_fraction' else ']'}"
                                f", got {value}")  # fmt: skip
        if self.std is not None and not all(s > 0 for s in self.std):
            raise DataError(f"std must be > 0, got {list(self.std)}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise DataError(f"mean {list(self.mean)} and std {list(self.std)} differ in length")

    def normalization(self, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) per channel: the stated ones, or ImageNet's (averaged for gray)."""
        mean = self.mean or (IMAGENET_MEAN if channels == 3 else (sum(IMAGENET_MEAN) / 3,))
        std = self.std or (IMAGENET_STD if channels == 3 else (sum(IMAGENET_STD) / 3,))
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise DataError(
                    f"--{name} has {len(values)} values; the model takes {channels} channel(s)"
                )
        return tuple(mean) * (channels // len(mean)), tuple(std) * (channels // len(std))
