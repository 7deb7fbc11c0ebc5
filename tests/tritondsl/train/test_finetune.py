"""From pretrained weights to a ternary model: --init, --teacher, fp32 warm-up, and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tritondsl
from tests import fashion_folder
from tests.tritondsl.train.conftest import MLP, tiny
from tests.tritondsl.train.test_trainer import TIMING
from tritondsl.backend.layers import QuantModule
from tritondsl.train import CheckpointError, Trainer, TrainingError

TINY_CNN = """
model TinyCNN(num_classes: int = 10) {
    input x: Tensor[N, 1, H, W]
    weights ternary(threshold=0.7, scale=per_channel)
    conv = Conv2d(1, 8, 3, padding=1, bias=false)
    bn = BatchNorm2d(8)
    pool = AdaptiveAvgPool2d(1)
    fc = Linear(8, num_classes)
    forward(x) {
        return fc(flatten(pool(relu(bn(conv(x)))), 1))
    }
}
"""


@pytest.fixture
def fp32_weights(tmp_path: Path) -> Path:
    """A "pretrained" fp32 MLP: the fp32 build of the tiny model, trained one epoch."""
    trainer = Trainer(tiny(tmp_path / "pretrain", epochs=1, precision="fp32", seed=7))
    trainer.fit()
    path = tmp_path / "pretrained.pth"
    torch.save(trainer.model.state_dict(), path)
    return path


def _strip(history: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per-epoch metrics without the timing figures (which differ run to run)."""
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "last" / "model.safetensors")


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_loads_the_file_and_logs_how_many_tensors(
    tmp_path: Path, fp32_weights: Path, train_log: pytest.LogCaptureFixture
) -> None:
    state = torch.load(fp32_weights, weights_only=True)
    trainer = Trainer(tiny(tmp_path / "run", init=fp32_weights))
    assert _equal(trainer.model.state_dict(), state)
    trainer.fit()
    assert f"init: loaded {len(state)} tensors from {fp32_weights}" in train_log.text
    # Starting from trained weights beats starting from scratch after the same epochs.
    scratch = Trainer(tiny(tmp_path / "scratch")).fit()
    assert trainer.history[0]["train_loss"] < scratch[0]["train_loss"]


def test_resume_takes_the_weights_from_the_checkpoint(tmp_path: Path, fp32_weights: Path) -> None:
    straight = Trainer(tiny(tmp_path / "straight", init=fp32_weights)).fit()
    Trainer(tiny(tmp_path / "split", init=fp32_weights, stop_after=1)).fit()
    # --init names a file that is gone (or changed): a resumed run never reads it.
    fp32_weights.write_bytes(b"garbage")
    resumed = Trainer(tiny(tmp_path / "split", init=fp32_weights, resume=tmp_path / "split"))
    assert resumed.init_report is None
    assert _strip(resumed.fit()) == _strip(straight)
    assert _equal(_weights(tmp_path / "split"), _weights(tmp_path / "straight"))


def test_teacher_fp32_distills_without_changing_the_teacher(
    tmp_path: Path, fp32_weights: Path, train_log: pytest.LogCaptureFixture
) -> None:
    plain = Trainer(tiny(tmp_path / "plain", init=fp32_weights)).fit()
    trainer = Trainer(tiny(tmp_path / "kd", init=fp32_weights, teacher="fp32",
                           distill_temperature=2.0, distill_weight=0.7))  # fmt: skip
    teacher = trainer.teacher
    assert teacher is not None and not teacher.model.training
    assert not any(isinstance(m, QuantModule) for m in teacher.model.modules())
    assert not any(p.requires_grad for p in teacher.model.parameters())
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    assert _equal(before, torch.load(fp32_weights, weights_only=True))
    history = trainer.fit()
    assert _equal(teacher.model.state_dict(), before) and not teacher.model.training
    assert "teacher: TernaryMLP in fp32 from" in train_log.text
    assert "0.3·CE + 0.7·T²·KL at T=2" in train_log.text
    # The distillation term changes the loss and the weights.
    assert history[0]["train_loss"] != plain[0]["train_loss"]
    assert not _equal(_weights(tmp_path / "kd"), _weights(tmp_path / "plain"))
    with pytest.raises(TrainingError, match=r"--teacher fp32 .* give --init too"):
        tiny(tmp_path / "x", teacher="fp32")
    with pytest.raises(TrainingError, match="--reinit out leaves part of it untrained"):
        Trainer(tiny(tmp_path / "y", init=fp32_weights, reinit=["out"], teacher="fp32"))


def test_distilled_runs_resume_only_with_the_same_teacher_given_again(
    tmp_path: Path, fp32_weights: Path
) -> None:
    common = {"init": fp32_weights, "teacher": "fp32"}
    straight = Trainer(tiny(tmp_path / "straight", **common)).fit()
    Trainer(tiny(tmp_path / "split", stop_after=1, **common)).fit()
    split = tmp_path / "split"
    with pytest.raises(CheckpointError, match="pass --teacher again"):
        Trainer(tiny(split, resume=split))
    other = tmp_path / "other.safetensors"
    state = torch.load(fp32_weights, weights_only=True)
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other)
    with pytest.raises(CheckpointError, match=r"not the teacher .* its weights differ"):
        Trainer(tiny(split, resume=split, teacher=str(other)))
    # The same weights spelled as a path to the same file are the same teacher.
    again = Trainer(tiny(split, resume=split, teacher=str(fp32_weights)))
    assert _strip(again.fit()) == _strip(straight)


@pytest.mark.slow
def test_teacher_of_another_architecture(tmp_path: Path) -> None:
    wide = tmp_path / "wide"
    Trainer(tiny(wide, epochs=1, precision="fp32", params={"hidden": [32]})).fit()
    weights = wide / "checkpoints" / "best" / "model.safetensors"
    trainer = Trainer(tiny(tmp_path / "kd", teacher=f"{MLP}={weights}",
                           teacher_params={"hidden": [32]}))  # fmt: skip
    assert trainer.teacher is not None
    assert trainer.teacher.model.layers[0].weight.shape == (32, 784)
    trainer.fit()
    # A run folder carries its architecture: no MODEL= needed.
    assert Trainer(tiny(tmp_path / "kd2", teacher=str(wide))).teacher is not None
    with pytest.raises(CheckpointError, match="does not fit the model"):
        Trainer(tiny(tmp_path / "kd3", teacher=str(weights)))  # hidden 16 != 32
    three = tmp_path / "three"
    Trainer(tiny(three, epochs=1, params={"hidden": [16], "num_classes": 3})).fit()
    with pytest.raises(TrainingError, match=r"returns \[2, 3\] .* the student has 10 classes"):
        Trainer(tiny(tmp_path / "kd4", teacher=str(three)))


@pytest.mark.slow
def test_fp32_warmup_trains_in_fp32_then_ternary(tmp_path: Path) -> None:
    # Epoch 1 of a warm-up run is exactly an fp32 run's epoch (same init, same schedule).
    Trainer(tiny(tmp_path / "warm", fp32_warmup_epochs=1, stop_after=1)).fit()
    Trainer(tiny(tmp_path / "fp32", precision="fp32", stop_after=1)).fit()
    assert _equal(_weights(tmp_path / "warm"), _weights(tmp_path / "fp32"))
    straight = Trainer(tiny(tmp_path / "straight", fp32_warmup_epochs=1)).fit()
    assert [h["fp32_warmup"] for h in straight] == [True, False]
    resumed = Trainer(tiny(tmp_path / "warm", fp32_warmup_epochs=1, resume=tmp_path / "warm"))
    assert _strip(resumed.fit()) == _strip(straight)
    # Best is chosen among ternary epochs only: deployed, the model is ternary.
    best = load_file(tmp_path / "straight" / "checkpoints" / "best" / "model.safetensors")
    assert _equal(best, _weights(tmp_path / "straight"))
    with pytest.raises(TrainingError, match="fp32_warmup_epochs must be in"):
        tiny(tmp_path / "x", fp32_warmup_epochs=2)


@pytest.mark.slow
def test_image_folder_run_with_workers_resumes_bit_exact(tmp_path: Path) -> None:
    folder = fashion_folder.write(tmp_path / "images", 96, 40)
    common = {"source": TINY_CNN, "data": f"imagefolder:{folder}", "params": {},
              "limit_train": None, "limit_test": None, "workers": 2}  # fmt: skip
    straight = Trainer(tiny(tmp_path / "straight", **common)).fit()
    Trainer(tiny(tmp_path / "split", stop_after=1, **common)).fit()
    resumed = Trainer(tiny(tmp_path / "split", resume=tmp_path / "split", **{**common,
                                                                          "workers": 0}))
    assert _strip(resumed.fit()) == _strip(straight)  # workers do not change a single crop
    assert _equal(_weights(tmp_path / "split"), _weights(tmp_path / "straight"))


@pytest.mark.slow
def test_image_folder_fine_tunes_a_zoo_model_with_another_classifier(tmp_path: Path) -> None:
    folder = fashion_folder.write(tmp_path / "images", 32, 40, size=32)
    pretrained = tritondsl.load_model("resnet18", precision="fp32")  # 1000 classes
    save_file({k: v.contiguous() for k, v in pretrained.state_dict().items()},
              tmp_path / "resnet18.safetensors")  # fmt: skip
    config = tiny(tmp_path / "run", source="resnet18", params={"num_classes": 10},
                  data=f"imagefolder:{folder}", epochs=1, limit_train=None, limit_test=None,
                  init=tmp_path / "resnet18.safetensors", reinit=["fc"], workers=0)  # fmt: skip
    trainer = Trainer(config)
    assert trainer.init_report is not None and trainer.init_report.reinitialized == [
        "fc.bias", "fc.weight"]  # fmt: skip
    assert torch.equal(trainer.model.conv1.weight, pretrained.conv1.weight)
    assert trainer.data.sample_shape() == (3, 32, 32)
    trainer.fit()
