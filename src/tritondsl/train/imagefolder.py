"""``--data imagefolder:DIR``: one sub-folder of images per class, decoded with Pillow.

Layouts: ``DIR/train/<class>/...`` with ``DIR/val/<class>/...`` (or ``DIR/test``), or
``DIR/<class>/...`` split per class by ``val_fraction`` with a fixed seed. Classes are the
sorted folder names (as torchvision's ImageFolder numbers them) and must be the same in
both splits. Files count as images by extension; every image is opened and verified when
the folder is scanned, and one that fails is skipped and counted (``bad_images="skip"``,
the default) or refused with the list (``"error"``). An image that still fails to decode
during training stops the run with its name (checkpoints/last keeps the last epoch).
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tritondsl.train.dataspec import ImageOptions
from tritondsl.train.errors import DataError

if TYPE_CHECKING:
    from tritondsl.train.images import Transform

log = logging.getLogger("tritondsl.train")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif",
              ".tiff", ".webp")  # fmt: skip
TRAIN_DIRS, VAL_DIRS = ("train",), ("val", "test")
SPLIT_SEED = 1234  # the split and the sample order never depend on --seed
SIZE_SAMPLE = 256  # images looked at to choose the input size of a symbolic model
FAILED = -1  # the label of a sample whose image failed to decode (see ImageFolder.check)


@dataclass
class Scan:
    """The images of one split: (path, label) pairs and the class names."""

    samples: list[tuple[Path, int]]
    classes: list[str]


def scan(folder: Path, options: ImageOptions) -> tuple[Scan, Scan]:
    """The train and validation samples of an image folder; DataError for a bad layout."""
    _pil()
    if not folder.is_dir():
        raise DataError(f"imagefolder:{folder}: no such folder")
    train_dir = _first_dir(folder, TRAIN_DIRS)
    val_dir = _first_dir(folder, VAL_DIRS)
    bad: list[str] = []
    if train_dir is not None:
        if val_dir is None:
            raise DataError(f"imagefolder:{folder} has train/ but no val/ (or test/) beside it")
        train, val = _split(train_dir, bad), _split(val_dir, bad)
        if train.classes != val.classes:
            only_train = sorted(set(train.classes) - set(val.classes))
            only_val = sorted(set(val.classes) - set(train.classes))
            raise DataError(
                f"imagefolder:{folder}: the splits have different classes: only in "
                f"{train_dir.name}/: {only_train or 'none'}; only in {val_dir.name}/: "
                f"{only_val or 'none'}"
            )
    else:
        train, val = _divide(_split(folder, bad), options.val_fraction, folder)
    if bad:
        listed = "; ".join(bad[:5]) + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        if options.bad_images == "error":
            raise DataError(f"imagefolder:{folder}: {len(bad)} unreadable image(s): {listed}")
        log.warning("imagefolder:%s: skipped %d unreadable image(s): %s", folder, len(bad), listed)
    # Sorted by class on disk: a fixed shuffle makes --limit-train a sample of every class.
    for split in (train, val):
        random.Random(SPLIT_SEED).shuffle(split.samples)
    return train, val


def load(
    folder: Path, sample_shape: Sequence[int | str], options: ImageOptions
) -> tuple[ImageFolder, ImageFolder]:
    """Train and validation datasets of ``folder`` shaped for a model's ``[C, H, W]`` input
    (symbolic sizes allowed; a flat input gets gray images of the data's size)."""
    if len(sample_shape) == 3:
        channels, height, width = sample_shape
    else:
        # A flat input (an MLP): gray images at the data's size, flattened by the trainer.
        channels, height, width = 1, "H", "W"
    if isinstance(channels, str):
        channels = 3
    if channels not in (1, 3):
        raise DataError(
            f"imagefolder:{folder}: images are gray or RGB; the model takes {channels} channels"
        )
    fixed = not (isinstance(height, str) or isinstance(width, str))
    if options.size is not None and fixed and (height, width) != (options.size, options.size):
        raise DataError(
            f"the model's input is {height}x{width}; --size {options.size} is for models with "
            "symbolic H, W"
        )
    from tritondsl.train.images import Transform  # after scan(): Pillow is known to exist

    train, val = scan(folder, options)
    if not fixed:
        # Symbolic H, W: the input size follows the data (or --size).
        side = options.size or input_size(train.samples)
        height = side if isinstance(height, str) else height
        width = side if isinstance(width, str) else width
    name = f"imagefolder:{folder}"
    datasets = []
    for split, is_train in ((train, True), (val, False)):
        transform = Transform(int(height), int(width), int(channels), is_train, options)
        datasets.append(ImageFolder(split, transform, name))
    return datasets[0], datasets[1]


def input_size(samples: list[tuple[Path, int]]) -> int:
    """The most common shorter side among (up to SIZE_SAMPLE of) the images."""
    sides = Counter()
    for path, _ in samples[:SIZE_SAMPLE]:
        with _pil().open(path) as image:
            sides[min(image.size)] += 1
    return sides.most_common(1)[0][0]


class ImageFolder(Dataset[tuple[Tensor, int]]):
    """Images of a scan, decoded and transformed on each access."""

    def __init__(self, scan: Scan, transform: Transform, name: str) -> None:
        self.samples, self.classes = scan.samples, scan.classes
        self.transform, self.name = transform, name
        self.seed, self.epoch = 0, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        rng = random.Random(f"{self.seed}/{self.epoch}/{index}")
        pil = _pil()
        try:
            with pil.open(path) as image:
                return self.transform(image, rng), label
        except (OSError, ValueError, pil.DecompressionBombError):
            # Raised in a worker, an exception reaches the caller wrapped in a traceback;
            # a FAILED label lets the main process name the file in one line (check()).
            t = self.transform
            return torch.zeros(t.channels, t.height, t.width), FAILED - index

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Draw the augmentations of this epoch (a pure function of seed, epoch, index)."""
        self.epoch, self.seed = epoch, seed

    def head(self, count: int) -> ImageFolder:
        """The first ``count`` samples (of the fixed shuffle)."""
        part = ImageFolder(Scan(self.samples[:count], self.classes), self.transform, self.name)
        part.seed, part.epoch = self.seed, self.epoch
        return part

    def check(self, labels: Tensor) -> None:
        """Raise DataError naming the first image of a batch that failed to decode."""
        failed = labels[labels <= FAILED]
        if len(failed):
            path, _ = self.samples[FAILED - int(failed[0])]
            raise DataError(f"{self.name}: cannot decode {path}: {_reason(path)}")


def _first_dir(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def _split(folder: Path, bad: list[str]) -> Scan:
    """The class folders of ``folder`` and their images (unreadable ones go to ``bad``)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: {folder} has no class folders (one sub-folder per class)")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = 0
        for path in _image_files(folder / name):
            reason = _reason(path)
            if reason is None:
                samples.append((path, label))
                found += 1
            else:
                bad.append(f"{path}: {reason}")
        if not found:
            raise DataError(f"imagefolder: class folder {folder / name} has no readable images "
                            f"({', '.join(EXTENSIONS)})")  # fmt: skip
    return Scan(samples, classes)


def _image_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root, n) for n in sorted(names)
                  if n.lower().endswith(EXTENSIONS) and not n.startswith(".")]  # fmt: skip
    return files


def _reason(path: Path) -> str | None:
    """Why an image cannot be read (None if it can): the file is opened and verified."""
    pil = _pil()
    try:
        with pil.open(path) as image:
            image.verify()
    except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as error:
        return str(error) or type(error).__name__
    return None


def _divide(whole: Scan, fraction: float, folder: Path) -> tuple[Scan, Scan]:
    """Per class, the last ``fraction`` of a fixed shuffle is validation (at least one)."""
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for sample in whole.samples:
        by_class.setdefault(sample[1], []).append(sample)
    train: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    for label, samples in sorted(by_class.items()):
        if len(samples) < 2:
            raise DataError(f"imagefolder:{folder}: class {whole.classes[label]!r} has one image; "
                            "a train/validation split needs two or more")  # fmt: skip
        random.Random(SPLIT_SEED + label).shuffle(samples)
        cut = min(len(samples) - 1, max(1, round(len(samples) * fraction)))
        train += samples[:-cut]
        val += samples[-cut:]
    return Scan(train, whole.classes), Scan(val, whole.classes)


def _pil() -> ModuleType:
    """``PIL.Image``, or a DataError saying how to install Pillow (the ``images`` extra)."""
    try:
        from PIL import Image
    except ImportError:
        raise DataError(
            "image folders need Pillow: pip install 'tritondsl[images]' (or pillow)"
        ) from None
    return Image
