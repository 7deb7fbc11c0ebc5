"""Real images on disk: Fashion-MNIST (Debian's dataset-fashion-mnist) written as an image folder.

``write(out, train=N, val=M, size=S)`` writes ``out/train/<class>/<index>.png`` and
``out/val/...`` (grayscale PNGs, resized to S×S with Pillow when S != 28) from the first N
training and M test images, with the dataset's own class names as folder names.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from tritondsl.train.data import FASHION_DIR, FASHION_FILES, read_idx

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "boot")  # fmt: skip


def write(out: Path, train: int, val: int, size: int = 28, flat: bool = False) -> Path:
    """Write the image folder (``flat``: class folders directly in ``out``, no splits)."""
    for split, count, (images_name, labels_name) in zip(
        ("train", "val"), (train, val), FASHION_FILES.values(), strict=True
    ):
        images, labels = read_idx(FASHION_DIR / images_name), read_idx(FASHION_DIR / labels_name)
        for index in range(count):
            folder = out if flat else out / split
            folder = folder / CLASSES[int(labels[index])]
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(images[index].numpy())
            if size != 28:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            image.save(folder / f"{split}-{index:05d}.png")
    return out

