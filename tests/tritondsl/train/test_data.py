"""Datasets: the IDX reader, each built-in dataset, hooks, input adapters and batching."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from tritondsl.train import DataError
from tritondsl.train import data as tdata


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = b"\0\0\x08" + bytes([array.dim()]) + struct.pack(f">{array.dim()}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.to(torch.uint8).numpy().tobytes())


def test_read_idx_round_trip_and_corruption(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (5, 3, 4), dtype=torch.uint8)
    write_idx(tmp_path / "a.gz", images)
    assert torch.equal(tdata.read_idx(tmp_path / "a.gz"), images)
    with gzip.open(tmp_path / "short.gz", "wb") as file:
        file.write(b"\0\0\x08\x01" + struct.pack(">I", 10) + b"123")
    with pytest.raises(DataError, match="expected 10 bytes of data, found 3"):
        tdata.read_idx(tmp_path / "short.gz")
    (tmp_path / "float").write_bytes(b"\0\0\x0d\x01" + struct.pack(">I", 1) + b"abcd")
    with pytest.raises(DataError, match="not an IDX file of unsigned bytes"):
        tdata.read_idx(tmp_path / "float")


def test_fashion_mnist_from_a_folder_of_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The layout the Debian package installs, with 6 train and 4 test images.
    for split, n in (("train", 6), ("test", 4)):
        images_name, labels_name = tdata.FASHION_FILES[split]
        write_idx(tmp_path / images_name, torch.full((n, 28, 28), 255))
        write_idx(tmp_path / labels_name, torch.arange(n))
    monkeypatch.setenv(tdata.FASHION_ENV, str(tmp_path))
    sets = tdata.load_datasets("fashion-mnist", (1, 28, 28), 10)
    x, y = sets.train.tensors  # type: ignore[attr-defined]
    assert x.shape == (6, 1, 28, 28) and y.tolist() == list(range(6))
    mean, std = tdata.FASHION_STATS
    assert torch.allclose(x, torch.full_like(x, (1 - mean) / std))
    assert len(sets.test) == 4  # type: ignore[arg-type]


def test_missing_fashion_mnist_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tdata.FASHION_ENV, str(tmp_path))
    with pytest.raises(DataError) as info:
        tdata.load_datasets("fashion-mnist", (1, 28, 28), 10)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "make data" in message
    assert "train-images-idx3-ubyte.gz" in message and tdata.FASHION_ENV in message


NEEDS_FASHION = pytest.mark.skipif(
    not (tdata.FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist is not installed (make data)",
)


@pytest.mark.slow
@NEEDS_FASHION
def test_the_installed_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tdata.FASHION_ENV, raising=False)
    sets = tdata.fashion_mnist()
    assert len(sets.train) == 60_000 and len(sets.test) == 10_000  # type: ignore[arg-type]
    y = sets.test.tensors[1]  # type: ignore[attr-defined]
    assert torch.bincount(y).tolist() == [1000] * 10


@NEEDS_FASHION
def test_the_packaged_subset_is_the_start_of_fashion_mnist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(tdata.FASHION_ENV, raising=False)
    sets = tdata.fashion_mnist_5k()
    x, y = sets.train.tensors  # type: ignore[attr-defined]
    test_x, test_y = sets.test.tensors  # type: ignore[attr-defined]
    assert x.shape == (4000, 1, 28, 28) and test_x.shape == (1000, 1, 28, 28)
    assert set(y.tolist()) == set(range(10)) and set(test_y.tolist()) == set(range(10))
    full = tdata.fashion_mnist()
    assert torch.equal(full.train.tensors[0][:4000], x)  # type: ignore[attr-defined]
    assert torch.equal(full.test.tensors[1][:1000], test_y)  # type: ignore[attr-defined]


def test_synthetic_follows_the_model_and_ignores_the_seed() -> None:
    a = tdata.load_datasets("synthetic", (3, 8, 8), 4, limit_train=100)
    b = tdata.load_datasets("synthetic", (3, 8, 8), 4, limit_train=100)
    xa, ya = a.train.tensors  # type: ignore[attr-defined]
    assert xa.shape == (100, 3, 8, 8) and set(ya.tolist()) == {0, 1, 2, 3}
    assert torch.equal(xa, b.train.tensors[0])  # type: ignore[attr-defined]
    assert len(a.test) == tdata.SYNTHETIC_SIZES[1]  # type: ignore[arg-type]


class Squares(Dataset[tuple[torch.Tensor, int]]):
    """A map-style dataset that is not a TensorDataset (takes the DataLoader path)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.full((2,), float(index * index)), index % 3


def test_hooks_by_module_and_by_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_data.py").write_text(
        "from tests.tritondsl.train.test_data import Squares\n"
        "def load():\n    return Squares(), Squares()\n"
        "def bad():\n    return Squares()\n"
    )
    by_file = tdata.load_datasets(f"{tmp_path}/my_data.py:load", (2,), 3, limit_test=4)
    assert by_file.sample_shape() == (2,) and len(by_file.test) == 4  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)  # a dotted module is looked up from the working directory
    monkeypatch.delitem(sys.modules, "my_data", raising=False)  # forgotten after the test
    by_module = tdata.load_datasets("my_data:load", (2,), 3)
    assert len(by_module.train) == 10  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"must return \(train_dataset, test_dataset\)"):
        tdata.load_datasets("my_data:bad", (2,), 3)
    with pytest.raises(DataError, match="has no function nope"):
        tdata.load_datasets("my_data:nope", (2,), 3)
    with pytest.raises(DataError, match="cannot import no_such_module"):
        tdata.load_datasets("no_such_module:load", (2,), 3)
    with pytest.raises(DataError, match="unknown dataset 'cifar10'"):
        tdata.load_datasets("cifar10", (2,), 3)


def test_batches_are_the_same_through_both_paths() -> None:
    tensors = TensorDataset(torch.stack([Squares()[i][0] for i in range(10)]),
                            torch.tensor([i % 3 for i in range(10)]))  # fmt: skip
    order = [3, 1, 4, 0, 5, 9, 2, 6]
    cpu = torch.device("cpu")
    fast = list(tdata.batches(tensors, order, 3, cpu))
    slow = list(tdata.batches(Squares(), order, 3, cpu))
    assert [len(y) for _, y in fast] == [3, 3, 2]
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_input_adapters() -> None:
    x = torch.randn(5, 1, 28, 28)
    assert tdata.input_adapter(("N", 1, 28, 28), (1, 28, 28), "d")(x) is x
    assert tdata.input_adapter(("N", 784), (1, 28, 28), "d")(x).shape == (5, 784)
    rgb = tdata.input_adapter(("N", 3, "H", "W"), (1, 28, 28), "d")(x)
    assert rgb.shape == (5, 3, 28, 28) and torch.equal(rgb[:, 2], x[:, 0])
    with pytest.raises(DataError, match=r"d gives samples of shape \[1, 28, 28\]; .* \[N, 3, 32"):
        tdata.input_adapter(("N", 3, 32, 32), (1, 28, 28), "d")
    assert tdata.sample_shape_for(("N", 3, "H", "W")) == (3, 32, 32)
