"""Image transforms with Pillow and torch (no torchvision): crops, flips, resizing, padding.

Pillow is the ``images`` extra: this module is imported only when an image folder is read.

Each training sample draws its augmentation from its own ``random.Random`` seeded by
(seed, epoch, index), so the images of a step do not depend on DataLoader workers, and a
resumed run sees exactly the crops the uninterrupted run would have.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from tritondsl.train.dataspec import ImageOptions

RATIO = (3 / 4, 4 / 3)  # aspect ratios of RandomResizedCrop
CROP_ATTEMPTS = 10


@dataclass(frozen=True)
class Transform:
    """PIL image -> normalized ``[C, H, W]`` float tensor; random when ``train``."""

    height: int
    width: int
    channels: int  # 1 (gray) or 3 (RGB)
    train: bool
    options: ImageOptions

    def __post_init__(self) -> None:
        mean, std = self.options.normalization(self.channels)  # DataError now, not per image
        object.__setattr__(self, "_mean", torch.tensor(mean)[:, None, None])
        object.__setattr__(self, "_std", torch.tensor(std)[:, None, None])
        fill = tuple(round(m * 255) for m in mean)
        object.__setattr__(self, "_fill", fill[0] if self.channels == 1 else fill)

    def __call__(self, image: Image.Image, rng: random.Random) -> Tensor:
        """The transformed image (``rng`` draws the augmentation of a training sample)."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        if self.options.small == "pad":
            image = self._pad(image)
        if self.train:
            box = self._random_crop(image.size, rng)
            image = image.resize((self.width, self.height), Image.Resampling.BILINEAR, box=box)
            if self.options.flip and rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            image = self._resize_center_crop(image)
        return self._to_tensor(image)

    def _pad(self, image: Image.Image) -> Image.Image:
        """Center an image smaller than the input on a canvas of the mean color."""
        width, height = image.size
        if width >= self.width and height >= self.height:
            return image
        size = (max(width, self.width), max(height, self.height))
        canvas = Image.new(image.mode, size, self._fill)  # type: ignore[attr-defined]
        canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
        return canvas

    def _random_crop(self, size: tuple[int, int], rng: random.Random) -> tuple[int, ...]:
        """RandomResizedCrop's box: ``crop_scale``..1 of the area, aspect ratio 3/4..4/3."""
        width, height = size
        area = width * height
        log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
        for _ in range(CROP_ATTEMPTS):
            target = area * rng.uniform(self.options.crop_scale, 1.0)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                left, top = rng.randint(0, width - w), rng.randint(0, height - h)
                return (left, top, left + w, top + h)
        # Fallback (as torchvision): the largest centered crop within the ratio range.
        ratio = width / height
        if ratio < RATIO[0]:
            w, h = width, round(width / RATIO[0])
        elif ratio > RATIO[1]:
            w, h = round(height * RATIO[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return (left, top, left + w, top + h)

    def _resize_center_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to size / eval_crop, then crop the center to the input."""
        width, height = image.size
        scale = max(self.width, self.height) / self.options.eval_crop / min(width, height)
        new = (max(self.width, round(width * scale)), max(self.height, round(height * scale)))
        if new != image.size:
            image = image.resize(new, Image.Resampling.BILINEAR)
        left, top = (new[0] - self.width) // 2, (new[1] - self.height) // 2
        return image.crop((left, top, left + self.width, top + self.height))

    def _to_tensor(self, image: Image.Image) -> Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        if pixels.dim() == 2:
            pixels = pixels[:, :, None]
        x = pixels.permute(2, 0, 1).float() / 255.0
        return (x - self._mean) / self._std  # type: ignore[attr-defined]
