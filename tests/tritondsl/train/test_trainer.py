"""The Trainer end to end on tiny models: metrics, files, bit-exact resume, failures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.image
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DistributedSampler

from tests.tritondsl.train.conftest import MLP, snapshot, tiny
from tritondsl.backend.activations import scale_from_range
from tritondsl.train import CheckpointError, NonFiniteError, Trainer, TrainingError
from tritondsl.train.trainer import lr_at

TIMING = {"samples_per_s", "epoch_s", "peak_rss_mb", "cuda_peak_mb"}


def test_fit_learns_and_writes_every_artifact(tmp_path: Path) -> None:
    history = Trainer(tiny(tmp_path, epochs=3)).fit()
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["step"] == 3 * 256 // 32
    # 10 classes: chance is 10%; the synthetic classes are well separated.
    assert history[-1]["test_acc"] > 0.5 and history[-1]["train_loss"] < history[0]["train_loss"]
    last = history[-1]
    assert set(last["grad_norms"]) == {"layers.0", "out"}
    assert set(last["ternary"]) == {"layers.0"}  # the output layer is @fp32
    assert 0 < last["ternary"]["layers.0"]["zero_fraction"] < 1
    assert last["samples_per_s"] > 0 and last["peak_rss_mb"] > 0

    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["test_acc"]) == last["test_acc"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    for name in ("training_curves.png", "sparsity.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(tmp_path / name)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600
        assert pixels.std() > 0.05  # lines and text, not a blank canvas
    for name in ("last", "best"):
        files = sorted(p.name for p in (tmp_path / "checkpoints" / name).iterdir())
        assert files == ["model.safetensors", "model.tdsl", "optimizer.safetensors",
                         "rng.safetensors", "trainer_state.json"]  # fmt: skip
    state = json.loads((tmp_path / "checkpoints" / "best" / "trainer_state.json").read_text())
    assert state["best_test_acc"] == max(h["test_acc"] for h in history)


def test_evaluation_runs_the_model_in_eval_mode(tmp_path: Path) -> None:
    # Heavy dropout: the same weights give a clearly different test loss in training mode.
    config = tiny(tmp_path, epochs=1, params={"hidden": [16], "dropout": 0.75})
    trainer = Trainer(config)
    (record,) = trainer.fit()
    test = trainer.data.test
    x, y = test.tensors[:2]
    model = trainer.model.eval()
    with torch.no_grad():
        output = model(trainer.adapt(x))
        loss = torch.nn.functional.cross_entropy(
            output, y, label_smoothing=config.label_smoothing, reduction="sum"
        ) / len(y)
        train_mode = torch.nn.functional.cross_entropy(model.train()(trainer.adapt(x)), y)
    assert record["test_loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert record["test_acc"] == (output.argmax(1) == y).float().mean().item()
    assert abs(train_mode.item() - loss.item()) > 1e-3  # 100x the tolerance of the check above


@pytest.mark.parametrize(
    ("optimizer", "schedule"), [("sgd", "cosine"), ("adamw", "onecycle")]
)  # fmt: skip
def test_resume_is_bit_exact(tmp_path: Path, optimizer: str, schedule: str) -> None:
    # Dropout (global RNG), momentum/Adam state, the LR schedule and the data order must
    # all continue where they stopped.
    common = {"optimizer": optimizer, "schedule": schedule, "label_smoothing": 0.1}
    straight = Trainer(tiny(tmp_path / "straight", **common)).fit()
    first = Trainer(tiny(tmp_path / "split", stop_after=1, **common)).fit()
    assert len(first) == 1
    resumed = Trainer(tiny(tmp_path / "split", resume=tmp_path / "split", **common)).fit()

    for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "last" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "last" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"

    def strip(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in h.items() if k not in TIMING} for h in history]

    assert strip(straight) == strip(resumed)


def test_activation_quantized_training_learns_scales_and_resumes_bit_exactly(
    tmp_path: Path,
) -> None:
    # Static inputs (observed range) and an LSQ input: their state is in the checkpoint,
    # the LSQ scale is optimised, and a resumed run continues bit for bit.
    source = Path(MLP).read_text().replace(
        "weights ternary(method=absmean)", "weights ternary(method=absmean)\n    activations a8"
    ).replace("@fp32", "@fp32 @a8(method=lsq)")
    common = {"source": source, "optimizer": "adamw"}
    Trainer(tiny(tmp_path / "straight", **common)).fit()
    Trainer(tiny(tmp_path / "split", stop_after=1, **common)).fit()
    Trainer(tiny(tmp_path / "split", resume=tmp_path / "split", **common)).fit()
    a = load_file(tmp_path / "straight" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["layers.0.input_quant.num_batches_observed"]) == 16  # 2 epochs of 8 steps
    # The LSQ layer observed its first batch only; its scale then moved away from the one
    # that batch's range gives.
    lsq = {k.removeprefix("out.input_quant."): v for k, v in a.items() if "out.input_quant" in k}
    assert int(lsq["num_batches_observed"]) == 1
    first = scale_from_range(float(lsq["range_min"]), float(lsq["range_max"]), signed=False)
    assert float(lsq["scale"]) != pytest.approx(first[0], rel=1e-3)


def test_resume_can_extend_the_run(tmp_path: Path) -> None:
    # With a constant learning rate, 1 epoch then "--epochs 2" equals 2 epochs straight.
    Trainer(tiny(tmp_path / "a", epochs=2, schedule="constant")).fit()
    Trainer(tiny(tmp_path / "b", epochs=1, schedule="constant")).fit()
    Trainer(tiny(tmp_path / "b", epochs=2, schedule="constant", resume=tmp_path / "b")).fit()
    a = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_incompatible_checkpoint_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    Trainer(tiny(tmp_path, epochs=1)).fit()
    before = snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=r"params: checkpoint \{'hidden': \[16\]\}"):
        Trainer(tiny(tmp_path, params={"hidden": [24]}, resume=tmp_path))
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.05, this run 0\.2"):
        Trainer(tiny(tmp_path, lr=0.2, resume=tmp_path))
    with pytest.raises(CheckpointError, match=r"different \.tdsl source"):
        text = Path(MLP).read_text().replace("ReLU()", "ReLU()\n")
        Trainer(tiny(tmp_path, source=text, resume=tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(tiny(tmp_path, resume=tmp_path / "nope"))
    with pytest.raises(TrainingError, match="already holds a training run"):
        Trainer(tiny(tmp_path))
    assert snapshot(tmp_path) == before


def test_a_checkpoint_with_other_shapes_is_refused(tmp_path: Path) -> None:
    # Same settings, but the tensors in the file no longer fit (say it was edited by hand).
    Trainer(tiny(tmp_path, epochs=1)).fit()
    last = tmp_path / "checkpoints" / "last"
    tensors = load_file(last / "model.safetensors")
    tensors["out.weight"] = torch.zeros(10, 17)
    save_file(tensors, last / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"out.weight is \[10, 17\]"):
        Trainer(tiny(tmp_path, resume=tmp_path))


def test_nonfinite_loss_names_step_and_first_bad_layer(tmp_path: Path) -> None:
    trainer = Trainer(tiny(tmp_path))
    with torch.no_grad():
        trainer.model.out.weight[0, 0] = float("inf")  # layers.0 stays finite, out does not
    with pytest.raises(NonFiniteError, match=r"at step 1 \(epoch 1, batch 1\).*'out'") as info:
        trainer.fit()
    assert info.value.step == 1 and info.value.layer == "out"
    assert not (tmp_path / "checkpoints").exists()


def test_nonfinite_gradient_with_finite_loss_names_the_layer(tmp_path: Path) -> None:
    trainer = Trainer(tiny(tmp_path))
    # A gradient hook that poisons only the backward pass of one weight.
    trainer.model.layers[0].weight.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(
        NonFiniteError, match=r"gradient is not finite at step 1 .*layer\(s\) layers\.0,"
    ):
        trainer.fit()


def test_nan_in_the_data_is_blamed_on_the_input(tmp_path: Path) -> None:
    hook = tmp_path / "nan_data.py"
    hook.write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def load():\n"
        "    x = torch.randn(64, 784)\n    x[40, 3] = float('nan')\n"
        "    y = torch.arange(64) % 10\n"
        "    return TensorDataset(x, y), TensorDataset(x[:8], y[:8])\n"
    )
    # Sample 40 lands in the batch the epoch-0 permutation puts it in.
    order = list(DistributedSampler(range(64), num_replicas=1, rank=0, seed=0))
    step = order.index(40) // 32 + 1
    trainer = Trainer(tiny(tmp_path / "out", data=f"{hook}:load", limit_train=None))
    with pytest.raises(
        NonFiniteError, match=rf"step {step} \(epoch 1, batch {step}\).*input"
    ) as info:
        trainer.fit()
    assert info.value.layer == "<input>"


ZERO_DATA = """
import torch
from torch.utils.data import TensorDataset

def load():
    y = torch.arange(64) % 10
    return TensorDataset(torch.zeros(64, 784), y), TensorDataset(torch.zeros(8, 784), y[:8])
"""
NO_BIAS = """
model Tiny() {
    input x: Tensor[N, 784]
    weights ternary(method=absmean)
    hidden = Linear(784, 16, bias=false)
    out = Linear(16, 10) @fp32
    forward(x) { return out(relu(hidden(x))) }
}
"""


def test_gradient_warnings(tmp_path: Path) -> None:
    # All-zero inputs give the bias-free hidden layer an exactly zero gradient.
    (tmp_path / "zeros.py").write_text(ZERO_DATA)
    config = tiny(tmp_path / "a", source=NO_BIAS, params={}, data=f"{tmp_path}/zeros.py:load",
                  epochs=1, limit_train=None)  # fmt: skip
    warnings = Trainer(config).fit()[0]["warnings"]
    assert [w.split(" mean")[0] for w in warnings] == ["vanishing gradient: layer hidden"]
    history = Trainer(tiny(tmp_path / "b", epochs=1, exploding=1e-3)).fit()
    assert any(w.startswith("exploding gradient: layer out") for w in history[0]["warnings"])


def test_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="unknown optimizer 'lion'"):
        tiny(tmp_path, optimizer="lion")
    with pytest.raises(TrainingError, match=r"no such file: nothere\.tdsl"):
        Trainer(tiny(tmp_path, source="nothere.tdsl"))
    with pytest.raises(TrainingError, match="unknown precision 'int4'"):
        Trainer(tiny(tmp_path, precision="int4"))
    with pytest.raises(TrainingError, match="cannot build the model"):
        Trainer(tiny(tmp_path, params={"depth": 3}))
    assert not tmp_path.joinpath("checkpoints").exists()


RGB_CNN = """
model SmallCNN(width: int = 8) {
    input x: Tensor[N, 3, H, W]
    weights ternary(threshold=0.7, scale=per_channel)
    stem = Conv2d(3, width, 3, padding=1, bias=false) @fp32
    bn = BatchNorm2d(width)
    conv = Conv2d(width, width, 3, stride=2, padding=1, bias=false)
    pool = AdaptiveAvgPool2d(1)
    head = Linear(width, 10) @fp32
    forward(x) {
        return head(flatten(pool(relu(conv(relu(bn(stem(x)))))), 1))
    }
}
"""


def test_gray_digits_into_an_rgb_cnn_with_symbolic_sizes(tmp_path: Path) -> None:
    # fashion-mnist-5k gives [1, 28, 28]; the model takes [N, 3, H, W]: gray is repeated.
    config = tiny(tmp_path, source=RGB_CNN, params={}, data="fashion-mnist-5k", epochs=1,
                  limit_train=128, limit_test=64)  # fmt: skip
    history = Trainer(config).fit()
    assert list(history[0]["ternary"]) == ["conv"]
    assert math.isfinite(history[0]["train_loss"]) and history[0]["step"] == 4


def test_lr_schedules() -> None:
    assert lr_at("constant", 0.1, 50, 100) == 0.1
    assert lr_at("cosine", 0.1, 0, 100) == 0.1 and lr_at("cosine", 0.1, 50, 100) == pytest.approx(
        0.05
    )
    cycle = [lr_at("onecycle", 0.1, s, 100) for s in range(100)]
    assert cycle[0] == pytest.approx(0.1 / 25) and max(cycle) == pytest.approx(0.1, rel=1e-3)
    assert cycle.index(max(cycle)) == 30 and cycle[-1] < 0.1 / 25
