"""``--data imagefolder:DIR`` on real Fashion-MNIST images written as PNG files."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests import fashion_folder
from tritondsl.train import DataError
from tritondsl.train import data as tdata
from tritondsl.train.dataspec import IMAGENET_MEAN, IMAGENET_STD, DataSpec, ImageOptions, parse
from tritondsl.train.imagefolder import ImageFolder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 train and 50 val images (28×28 gray) in DIR/train, DIR/val."""
    return fashion_folder.write(tmp_path_factory.mktemp("fashion"), 200, 50)


def _load(spec: str, shape: tuple[int | str, ...] = (1, 28, 28), **options: object
          ) -> tdata.Datasets:  # fmt: skip
    return tdata.load_datasets(spec, shape, 10, images=ImageOptions(**options))  # type: ignore[arg-type]


def _all(dataset: ImageFolder, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*tdata.batches(dataset, range(len(dataset)), 64, CPU, workers), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_specs_parse() -> None:
    assert parse("fashion-mnist") == DataSpec("builtin", "fashion-mnist")
    assert parse("imagefolder:data/my:pets") == DataSpec("imagefolder", "data/my:pets")
    assert parse("pkg.mod:make") == DataSpec("hook", "pkg.mod:make")
    assert not parse("pkg.mod:make").from_checkpoint_allowed
    assert parse("imagefolder:x").from_checkpoint_allowed
    for bad, message in (("imagenet", "unknown dataset 'imagenet'"),
                         ("imagefolder:", "needs a folder"), ("", "empty data spec")):  # fmt: skip
        with pytest.raises(DataError, match=message):
            parse(bad)


def test_train_and_val_folders_give_labelled_normalized_images(folder: Path) -> None:
    sets = _load(f"imagefolder:{folder}", flip=False, crop_scale=1.0, eval_crop=1.0)
    train, val = sets.train, sets.test
    assert isinstance(train, ImageFolder) and isinstance(val, ImageFolder)
    assert train.classes == sorted(fashion_folder.CLASSES) == val.classes
    assert (len(train), len(val)) == (200, 50)
    for path, label in train.samples:
        assert path.parent.name == train.classes[label]
    x, y = _all(val)
    assert x.shape == (50, 1, 28, 28) and y.dtype == torch.long
    # Evaluation of a 28×28 image at eval_crop 1 is the image itself, normalized.
    path, label = val.samples[0]
    pixels = torch.tensor(list(Image.open(path).getdata()), dtype=torch.float32).reshape(28, 28)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    assert torch.allclose(x[0, 0], (pixels / 255 - mean) / std, atol=1e-6) and y[0] == label
    # With the whole area and no flips, a square training crop is the whole image too.
    assert torch.allclose(train[0][0], _load(f"imagefolder:{folder}", eval_crop=1.0).test
                          .transform(Image.open(train.samples[0][0]), None), atol=1e-6)  # fmt: skip


@pytest.mark.slow
def test_augmentation_is_a_function_of_seed_epoch_and_index(folder: Path) -> None:
    train = _load(f"imagefolder:{folder}").train
    assert isinstance(train, ImageFolder)
    train.set_epoch(1, seed=0)
    first, _ = _all(train)
    again, _ = _all(train, workers=2)  # worker processes draw the same crops
    assert torch.equal(first, again)
    train.set_epoch(2, seed=0)
    assert not torch.equal(first, _all(train)[0])
    train.set_epoch(1, seed=5)
    assert not torch.equal(first, _all(train)[0])


@pytest.mark.slow
def test_split_fraction_is_per_class_and_fixed(tmp_path: Path) -> None:
    flat = fashion_folder.write(tmp_path / "flat", 300, 0, flat=True)
    sets = _load(f"imagefolder:{flat}", val_fraction=0.2)
    train, val = sets.train, sets.test
    assert isinstance(train, ImageFolder) and isinstance(val, ImageFolder)
    assert len(train) + len(val) == 300
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    assert {label for _, label in val.samples} == set(range(10))
    again = _load(f"imagefolder:{flat}", val_fraction=0.2).test
    assert [p for p, _ in val.samples] == [p for p, _ in again.samples]  # type: ignore[attr-defined]
    # A fixed shuffle: --limit-train takes every class, not the first class folder.
    limited = tdata.load_datasets(f"imagefolder:{flat}", (1, 28, 28), 10, limit_train=30)
    assert len({label for _, label in limited.train.samples}) > 5  # type: ignore[attr-defined]


def test_input_size_follows_the_data_or_size(tmp_path: Path) -> None:
    big = fashion_folder.write(tmp_path / "big", 40, 40, size=32)
    symbolic = (3, "H", "W")
    sets = _load(f"imagefolder:{big}", symbolic)
    assert sets.sample_shape() == (3, 32, 32)  # gray images become RGB for an RGB model
    assert _load(f"imagefolder:{big}", symbolic, size=24).sample_shape() == (3, 24, 24)
    assert _load(f"imagefolder:{big}", (1, 20, "W")).sample_shape() == (1, 20, 32)
    assert _load(f"imagefolder:{big}", (1024,)).sample_shape() == (1, 32, 32)  # an MLP


def test_small_images_are_resized_or_padded(tmp_path: Path) -> None:
    small = fashion_folder.write(tmp_path / "small", 40, 40, size=20)
    padded = _load(f"imagefolder:{small}", small="pad", eval_crop=1.0).test
    resized = _load(f"imagefolder:{small}", small="resize", eval_crop=1.0).test
    x_pad, x_resize = padded[0][0], resized[0][0]
    assert x_pad.shape == x_resize.shape == (1, 28, 28)
    # Padding: a 4-pixel border of the mean color (0 once normalized), the image inside.
    assert torch.allclose(x_pad[:, :4], torch.zeros(1, 4, 28), atol=0.01)
    image = Image.open(padded.samples[0][0])  # type: ignore[attr-defined]
    inside = torch.tensor(list(image.getdata()), dtype=torch.float32).reshape(20, 20)
    mean, std = sum(IMAGENET_MEAN) / 3, sum(IMAGENET_STD) / 3
    assert torch.allclose(x_pad[0, 4:24, 4:24], (inside / 255 - mean) / std, atol=1e-6)
    assert not torch.allclose(x_resize[:, :4], torch.zeros(1, 4, 28), atol=0.01)


def test_stated_mean_and_std(folder: Path) -> None:
    plain = _load(f"imagefolder:{folder}", mean=(0.0,), std=(1.0,), eval_crop=1.0).test[0][0]
    assert float(plain.min()) >= 0 and float(plain.max()) <= 1
    with pytest.raises(DataError, match="--mean has 2 values; the model takes 3 channel"):
        _load(f"imagefolder:{folder}", (3, 28, 28), mean=(0.5, 0.5), std=(0.2, 0.2))


def test_bad_folders_get_one_clear_error(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        _load(f"imagefolder:{tmp_path / 'absent'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        _load(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "empty" / "cats").mkdir()
    (tmp_path / "empty" / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"class folder .*cats has no readable images"):
        _load(f"imagefolder:{tmp_path / 'empty'}")
    mismatch = tmp_path / "mismatch"
    shutil.copytree(folder, mismatch)
    shutil.rmtree(mismatch / "val" / "bag")
    (mismatch / "val" / "bags").mkdir()
    shutil.copy(next((folder / "val" / "bag").iterdir()), mismatch / "val" / "bags" / "a.png")
    with pytest.raises(DataError, match=r"only in train/: \['bag'\]; only in val/: \['bags'\]"):
        _load(f"imagefolder:{mismatch}")
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="has train/ but no val/"):
        _load(f"imagefolder:{tmp_path / 'half'}")
    with pytest.raises(DataError, match="input is 28x28; --size 20 is for models with symbolic"):
        _load(f"imagefolder:{folder}", size=20)


def test_unreadable_images_are_skipped_and_counted_or_refused(
    tmp_path: Path, folder: Path, train_log: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    victims = sorted((broken / "train" / "coat").iterdir())[:2]
    victims[0].write_bytes(b"not a png")
    victims[1].write_bytes(victims[1].read_bytes()[:40])  # truncated
    sets = _load(f"imagefolder:{broken}")
    assert len(sets.train) == 198  # type: ignore[arg-type]
    assert "skipped 2 unreadable image(s)" in train_log.text
    assert victims[0].name in train_log.text and victims[1].name in train_log.text
    with pytest.raises(DataError, match=r"2 unreadable image\(s\): .*coat"):
        _load(f"imagefolder:{broken}", bad_images="error")
    # An image that breaks after the scan stops the run with its name, in one line.
    train = sets.train
    assert isinstance(train, ImageFolder)
    later = train.samples[5][0]
    later.write_bytes(b"garbage")
    for workers in (0, 2):
        with pytest.raises(DataError, match=f"cannot decode {later}") as caught:
            _all(train, workers)
        assert "Traceback" not in str(caught.value)


def test_without_pillow_the_error_says_what_to_install(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)  # what an install without the extra sees
    with pytest.raises(DataError, match=r"need Pillow: pip install 'tritondsl\[images\]'"):
        _load(f"imagefolder:{folder}")
