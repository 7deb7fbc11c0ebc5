"""FSDP2 on CPU with gloo on loopback: 2 sharded processes train what 2 DDP processes train,
and their checkpoints (full safetensors + JSON) resume on 1 process, DDP or FSDP.

Why FSDP equals DDP here: both run the same seeds per rank (the same dropout masks), take
the same samples per rank, and average the two ranks' gradients; FSDP reduce-scatters what
DDP all-reduces. Ternary layers stay in: the forward all-gathers the exact latent weights,
so the trits and scales are the replicas' own.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT
from tests.tritondsl.train.conftest import tiny
from tests.tritondsl.train.test_distributed import fork_ddp, torchrun
from tests.tritondsl.train.test_language_model import lm
from tritondsl.train import Trainer, TrainingError
from tritondsl.train.checkpoint import OPTIMIZER_FILE


def test_fsdp_needs_torchrun(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"one process: start it with torchrun"):
        Trainer(tiny(tmp_path / "run", parallel="fsdp"))
    assert not (tmp_path / "run").exists()


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


def assert_same_checkpoints(a: Path, b: Path) -> None:
    """Model and optimizer tensors equal up to float summation order; the same JSON layout."""
    for name in ("model.safetensors", OPTIMIZER_FILE):
        mine = load_file(a / "checkpoints" / "last" / name)
        theirs = load_file(b / "checkpoints" / "last" / name)
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert torch.allclose(mine[key], theirs[key], rtol=1e-5, atol=1e-6), (name, key)
    states = [json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
              for run in (a, b)]  # fmt: skip
    assert states[0]["optimizer"] == states[1]["optimizer"]


def assert_same_training(a: Path, b: Path) -> None:
    for mine, theirs in zip(metrics(a), metrics(b), strict=True):
        for key in ("train_loss", "test_loss", "test_acc"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5), key
        assert mine["ternary"].keys() == theirs["ternary"].keys()
        for layer, stats in mine["ternary"].items():
            assert stats == pytest.approx(theirs["ternary"][layer], rel=1e-5), layer
        for layer, norms in mine["grad_norms"].items():
            assert norms == pytest.approx(theirs["grad_norms"][layer], rel=1e-4), layer
    assert_same_checkpoints(a, b)


@pytest.mark.slow
def test_fsdp_trains_what_ddp_trains(tmp_path: Path) -> None:
    # The ternary MLP with dropout and momentum, 2 epochs; 65 test samples split 33/32.
    logged = torchrun("--param", "hidden=[16]", "--batch-size", "32", "--limit-train", "256",
                      "--limit-test", "65", "--epochs", "2", "--device", "cpu", "--no-progress",
                      "--parallel", "fsdp", "--output", str(tmp_path / "fsdp"))  # fmt: skip
    assert "over 2 process(es)" in logged and logged.count("epoch 2/2: train loss") == 1
    fork_ddp(tiny(tmp_path / "ddp", limit_test=65, device="cpu"))
    assert_same_training(tmp_path / "fsdp", tmp_path / "ddp")
    init = Trainer(tiny(tmp_path / "init")).model.state_dict()
    trained = load_file(tmp_path / "fsdp" / "checkpoints" / "last" / "model.safetensors")
    assert not torch.allclose(init["out.weight"], trained["out.weight"], atol=1e-3)


@pytest.mark.slow
def test_a_sharded_cnn_with_batchnorm_and_activation_observers_trains_as_ddp_does(
    tmp_path: Path,
) -> None:
    # FashionCNN with 8-bit activations on real images: its BatchNorm statistics and
    # observer ranges are buffers, which both take from rank 0 before every training step.
    config = functools.partial(tiny, source=str(ROOT / "examples" / "fashion_mnist_a8.tdsl"),
                               params={}, data="fashion-mnist-5k", batch_size=64, epochs=1,
                               limit_train=256, limit_test=129, device="cpu")  # fmt: skip
    fork_ddp(config(tmp_path / "ddp"))
    fork_ddp(config(tmp_path / "fsdp", parallel="fsdp"))
    assert_same_training(tmp_path / "fsdp", tmp_path / "ddp")


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_one_process_and_with_ddp(tmp_path: Path) -> None:
    # The fp32 MLP without dropout or momentum: 2 processes compute what 1 does (see
    # test_distributed.py), so every way of splitting 2 epochs reaches 2 epochs on 1.
    config = functools.partial(tiny, params={"hidden": [16], "dropout": 0}, precision="fp32",
                               momentum=0.0, lr=0.1, limit_test=64, device="cpu")  # fmt: skip
    Trainer(config(tmp_path / "one")).fit()
    fork_ddp(config(tmp_path / "fsdp_then_one", parallel="fsdp", stop_after=1))
    Trainer(config(tmp_path / "fsdp_then_one", resume=tmp_path / "fsdp_then_one")).fit()
    Trainer(config(tmp_path / "one_then_fsdp", stop_after=1)).fit()
    fork_ddp(config(tmp_path / "one_then_fsdp", parallel="fsdp", resume=tmp_path / "one_then_fsdp"))
    fork_ddp(config(tmp_path / "fsdp_then_ddp", parallel="fsdp", stop_after=1))
    fork_ddp(config(tmp_path / "fsdp_then_ddp", resume=tmp_path / "fsdp_then_ddp"))
    for run in ("fsdp_then_one", "one_then_fsdp", "fsdp_then_ddp"):
        assert [record["epoch"] for record in metrics(tmp_path / run)] == [1, 2]
        assert_same_checkpoints(tmp_path / run, tmp_path / "one")


@pytest.mark.slow
def test_a_sharded_language_model_trains_and_resumes_as_ddp_does(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(24):
        (folder / f"{i:02d}.txt").write_text(f"{i}: " + "the cat sat on the mat. " * 4 + "\n")
    # 1 block a step per process; 3 validation blocks, so rank 0 evaluates
    # one batch more than rank 1 (which must still join every all-gather).
    config = functools.partial(lm, data=f"text:{folder}", batch_size=2, limit_train=12,
                               limit_test=5, device="cpu")  # fmt: skip
    fork_ddp(config(tmp_path / "ddp"))
    fork_ddp(config(tmp_path / "fsdp", parallel="fsdp"))
    assert_same_training(tmp_path / "fsdp", tmp_path / "ddp")
    # AdamW's moments cross over: FSDP resumes DDP's checkpoint, DDP resumes FSDP's.
    fork_ddp(config(tmp_path / "ddp", parallel="fsdp", epochs=3, resume=tmp_path / "ddp"))
    fork_ddp(config(tmp_path / "fsdp", epochs=3, resume=tmp_path / "fsdp"))
    assert [record["epoch"] for record in metrics(tmp_path / "fsdp")] == [1, 2, 3]
    assert_same_training(tmp_path / "fsdp", tmp_path / "ddp")
