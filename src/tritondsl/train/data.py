"""Datasets for training: fashion-mnist, fashion-mnist-5k, synthetic, an image folder, or
a ``module:function`` hook (the specs: ``tritondsl.train.dataspec``).

Built-in datasets are ``TensorDataset``s held in memory (a batch is one index operation);
image folders decode on access (``train/imagefolder.py``) through DataLoader workers; a
hook may return any map-style torch datasets of ``(x, label)`` pairs.
"""

from __future__ import annotations

import gzip
import importlib
import importlib.util
import math
import os
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from tritondsl.train import dataspec, imagefolder
from tritondsl.train.dataspec import ImageOptions
from tritondsl.train.errors import DataError
from tritondsl.train.imagefolder import ImageFolder

FASHION_ENV = "TRITONDSL_FASHION_MNIST"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # where dataset-fashion-mnist puts it
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Mean and std of the training pixels (scaled to [0, 1]): inputs are standardised with them.
FASHION_STATS = (0.2860, 0.3530)
# A subset shipped inside the package, so a bare `pip install` can train on real images.
FASHION_5K_DIR = Path(__file__).resolve().parent / "fashion_mnist_5k"
FASHION_5K_SIZES = {"train": 4000, "test": 1000}
SYNTHETIC_SIZES = (2048, 512)
SYMBOLIC_SIZE = 32  # what synthetic data uses for a symbolic input size such as H or W
DATA_SEED = 1234  # data never depends on --seed, so runs with different seeds compare

Adapter = Callable[[Tensor], Tensor]


@dataclass
class Datasets:
    """A training and a test split of one dataset."""

    name: str
    train: Dataset[Any]
    test: Dataset[Any]

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without the batch dimension)."""
        if isinstance(self.train, TensorDataset):
            return tuple(self.train.tensors[0].shape[1:])
        return tuple(_first_sample(self.train, self.name)[0].shape)


def read_idx(path: Path) -> Tensor:
    """Read a (gzipped) IDX file of unsigned bytes, the format of (Fashion-)MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    # then each dimension as a big-endian uint32.
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != math.prod(dims):
        raise DataError(f"{path}: expected {math.prod(dims)} bytes of data, found {len(body)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def fashion_mnist() -> Datasets:
    """Fashion-MNIST from the Debian package's IDX files (or $TRITONDSL_FASHION_MNIST)."""
    folder = Path(os.environ.get(FASHION_ENV) or FASHION_DIR)
    missing = [n for pair in FASHION_FILES.values() for n in pair if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"Fashion-MNIST not found: {folder} lacks {', '.join(missing)}.\n"
            "Install it with `make data` or `sudo apt-get install dataset-fashion-mnist` "
            f"(Debian/Ubuntu), or set {FASHION_ENV} to a folder holding the four IDX files."
        )
    return _fashion_from(folder, "fashion-mnist")


def _fashion_from(folder: Path, name: str) -> Datasets:
    splits = []
    for images_name, labels_name in FASHION_FILES.values():
        images, labels = read_idx(folder / images_name), read_idx(folder / labels_name)
        splits.append(TensorDataset(_standardise(images[:, None], FASHION_STATS), labels.long()))
    return Datasets(name, splits[0], splits[1])


def fashion_mnist_5k() -> Datasets:
    """The packaged subset: Fashion-MNIST's first 4,000 training and 1,000 test images."""
    return _fashion_from(FASHION_5K_DIR, "fashion-mnist-5k")


def synthetic(
    sample_shape: Sequence[int], num_classes: int, sizes: tuple[int, int] = SYNTHETIC_SIZES
) -> Datasets:
    """Gaussian classes around random prototypes, shaped like the model's input."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    dims = math.prod(sample_shape)
    # Prototypes about 8 noise standard deviations apart: a small model learns them in an
    # epoch or two, yet not at its first step.
    prototypes = torch.randn(num_classes, *sample_shape, generator=generator) * 6 / dims**0.5
    splits = []
    for size in sizes:
        labels = torch.randperm(size, generator=generator) % num_classes
        noise = torch.randn(size, *sample_shape, generator=generator)
        splits.append(TensorDataset(prototypes[labels] + noise, labels))
    return Datasets("synthetic", splits[0], splits[1])


def from_hook(spec: str) -> Datasets:
    """Call ``module:function`` (or ``path/file.py:function``) for (train, test) datasets."""
    module_name, _, function_name = spec.rpartition(":")
    if not module_name or not function_name:
        raise DataError(f"dataset hook {spec!r} must look like module:function")
    module = _import(module_name, spec)
    function = getattr(module, function_name, None)
    if not callable(function):
        raise DataError(f"dataset hook {spec!r}: {module_name} has no function {function_name}")
    result = function()
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise DataError(f"dataset hook {spec!r} must return (train_dataset, test_dataset)")
    for split in result:
        if not (hasattr(split, "__getitem__") and hasattr(split, "__len__")) or not len(split):
            raise DataError(f"dataset hook {spec!r} returned an empty or non-map-style dataset")
        _first_sample(split, spec)
    return Datasets(spec, result[0], result[1])


def load_datasets(
    name: str,
    sample_shape: Sequence[int | str],
    num_classes: int,
    limit_train: int | None = None,
    limit_test: int | None = None,
    images: ImageOptions | None = None,
) -> Datasets:
    """The datasets of a data spec, for a model whose input sample is ``sample_shape``
    (symbolic sizes allowed: synthetic data makes them 32, an image folder's images
    decide them) and that has ``num_classes`` outputs."""
    spec = dataspec.parse(name)
    if spec.kind == "imagefolder":
        train, test = imagefolder.load(spec.folder, sample_shape, images or ImageOptions())
        datasets = Datasets(name, train, test)
    elif spec.kind == "hook":
        datasets = from_hook(name)
    elif spec.kind == "text":
        raise DataError(f"{name} is text: it trains language models (tritondsl.train.text), "
                        "not classifiers of samples and labels")  # fmt: skip
    elif name == "fashion-mnist":
        datasets = fashion_mnist()
    elif name == "fashion-mnist-5k":
        datasets = fashion_mnist_5k()
    else:
        concrete = tuple(d if isinstance(d, int) else SYMBOLIC_SIZE for d in sample_shape)
        datasets = synthetic(concrete, num_classes)
    datasets.train = _limit(datasets.train, limit_train)
    datasets.test = _limit(datasets.test, limit_test)
    return datasets


def sample_shape_for(declared: Sequence[int | str]) -> tuple[int, ...]:
    """A concrete sample shape for a declared input shape such as ``[N, 3, H, W]``."""
    return tuple(d if isinstance(d, int) else SYMBOLIC_SIZE for d in declared[1:])


def input_adapter(declared: Sequence[int | str], sample: Sequence[int], where: str) -> Adapter:
    """Reshape batches to the model's declared input: flatten for an MLP, gray to RGB."""
    want, have = list(declared[1:]), list(sample)
    shown = "[" + ", ".join(map(str, declared)) + "]"

    def fits(a: Sequence[int | str], b: Sequence[int]) -> bool:
        return len(a) == len(b) and all(
            isinstance(w, str) or w == s for w, s in zip(a, b, strict=True)
        )

    if fits(want, have):
        return _identity
    if all(isinstance(w, int) for w in want) and math.prod(want) == math.prod(have):
        return lambda x: x.reshape(x.shape[0], *want)
    gray_to_rgb = len(have) == 3 and have[0] == 1 and isinstance(want[0], int) and want[0] > 1
    if gray_to_rgb and fits(want[1:], have[1:]):
        channels = int(want[0])
        return lambda x: x.expand(-1, channels, *x.shape[2:])
    raise DataError(f"{where} gives samples of shape {have}; the model takes {shown}")


def batches(
    dataset: Dataset[Any], indices: Sequence[int], batch_size: int, device: torch.device,
    workers: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:  # fmt: skip
    """``(x, y)`` batches of ``dataset`` in the order of ``indices``, on ``device``
    (decoded by ``workers`` DataLoader processes, if the dataset is not in memory)."""
    if isinstance(dataset, TensorDataset):
        x_all, y_all = dataset.tensors[:2]
        order = torch.as_tensor(indices, dtype=torch.long, device=x_all.device)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            yield x_all[chunk].to(device), y_all[chunk].to(device)
        return
    # Any other dataset goes through a DataLoader with its own generator: the global RNG,
    # which dropout uses, must not depend on how the data was read (bit-exact resume).
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=list(indices), num_workers=workers,
        generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda",
    )  # fmt: skip
    for x, y in loader:
        labels = torch.as_tensor(y)
        if isinstance(dataset, ImageFolder):
            dataset.check(labels)
        yield x.to(device), labels.to(device)


def set_epoch(dataset: Dataset[Any], epoch: int, seed: int) -> None:
    """Tell a dataset with random augmentations which epoch it serves."""
    if isinstance(dataset, ImageFolder):
        dataset.set_epoch(epoch, seed)


def to_device(datasets: Datasets, device: torch.device) -> None:
    """Move in-memory datasets to ``device`` once, so batches need no copies."""
    for name in ("train", "test"):
        split = getattr(datasets, name)
        if isinstance(split, TensorDataset):
            setattr(datasets, name, TensorDataset(*(t.to(device) for t in split.tensors)))


def _identity(x: Tensor) -> Tensor:
    return x


def _standardise(images: Tensor, stats: tuple[float, float], scale: float = 255.0) -> Tensor:
    mean, std = stats
    return (images.float() / scale - mean) / std


def _limit(dataset: Dataset[Any], limit: int | None) -> Dataset[Any]:
    if limit is None:
        return dataset
    if isinstance(dataset, TensorDataset):
        return TensorDataset(*(t[:limit] for t in dataset.tensors))
    if isinstance(dataset, ImageFolder):
        return dataset.head(limit)
    return Subset(dataset, range(min(limit, len(dataset))))  # type: ignore[arg-type]


def _first_sample(dataset: Dataset[Any], where: str) -> tuple[Tensor, Any]:
    sample = dataset[0]
    if not (isinstance(sample, tuple | list) and len(sample) >= 2):
        raise DataError(f"dataset {where!r}: items must be (input, label) pairs")
    if not isinstance(sample[0], Tensor):
        raise DataError(f"dataset {where!r}: inputs must be tensors, got {type(sample[0])}")
    return sample[0], sample[1]


def _import(module_name: str, spec: str) -> Any:
    """Import a module by dotted name, or a .py file by path (relative to the cwd)."""
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise DataError(f"dataset hook {spec!r}: no such file {module_name}")
            loader_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert loader_spec is not None and loader_spec.loader is not None
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
            return module
        # The console script's sys.path lacks the cwd; a user's data module usually lives there.
        cwd = os.getcwd()
        added = cwd not in sys.path
        if added:
            sys.path.append(cwd)
        try:
            return importlib.import_module(module_name)
        finally:
            if added:
                sys.path.remove(cwd)
    except ImportError as error:
        raise DataError(f"dataset hook {spec!r}: cannot import {module_name}: {error}") from None
