"""The Fashion-MNIST accuracy experiment: fp32, ternary (W1.58A32), W1.58A8 trained and
calibrated only, and ternary with its STE broken (the control).

Shared by the slow tests (tests/integration/test_accuracy.py) and by hand runs:

    python -m tests.integration.accuracy [--epochs 3] [--data fashion-mnist-5k] [--output DIR]
        [--variant fp32 --variant ternary --variant a8 ...]

which prints each variant's test accuracy and saves it to OUT/VARIANT.json. Every variant
trains with the same data, epochs, optimizer and seed:

* ``fp32``: examples/fashion_mnist.tdsl with ``--precision fp32`` (weights and inputs float);
* ``ternary``: the same file as written (W1.58A32: ternary convs, float activations); its
  run also writes ``a8_calibrated.json``: the best checkpoint given 8-bit inputs at every
  conv and linear layer (``add_input_quantizers``) and calibrated on CALIBRATION_BATCHES
  training batches (``calibrate``), never trained with them;
* ``a8``: examples/fashion_mnist_a8.tdsl (W1.58A8: the same model with ``activations a8``),
  quantization-aware for weights and activations; ``a8_lsq``: the same with learned (LSQ)
  input scales (``activations a8(method=lsq)``);
* ``broken_ste``: ternary without the straight-through estimator.
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from tritondsl.backend.activations import calibrate
from tritondsl.backend.deploy import add_input_quantizers
from tritondsl.backend.layers import QuantModule
from tritondsl.backend.precision import A8Static
from tritondsl.train import TrainConfig, Trainer
from tritondsl.train import data as tdata

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples" / "fashion_mnist.tdsl"
A8 = ROOT / "examples" / "fashion_mnist_a8.tdsl"
SOURCES = {
    "a8": str(A8),
    # The same model with learned (LSQ) input scales instead of observed ones.
    "a8_lsq": A8.read_text().replace("activations a8\n", "activations a8(method=lsq)\n"),
}
VARIANTS = ("fp32", "ternary", "a8", "a8_lsq", "broken_ste")
CALIBRATION_BATCHES = 16  # of 128 training images: 2,048 samples


def break_ste(model: nn.Module) -> None:
    """The control: every quantized layer uses its ternary weight *without* the
    straight-through estimator, so no gradient reaches the latent weights."""
    for module in model.modules():
        if isinstance(module, QuantModule):
            quantize = module.quantized_weight
            module.quantized_weight = types.MethodType(  # type: ignore[method-assign]
                lambda self, q=quantize: q().detach(), module)


def ternary_value_counts(model: nn.Module) -> list[int]:
    """Distinct values per scale group (per output channel) of every ternary layer."""
    counts = []
    for module in model.modules():
        if isinstance(module, QuantModule):
            with torch.no_grad():
                weight = module.quantized_weight().reshape(module.weight.shape[0], -1)
            counts += [len(torch.unique(row)) for row in weight]
    return counts


def run(variant: str, epochs: int, out: Path, data: str = "fashion-mnist",
        width: int = 16) -> tuple[float, Trainer]:
    """Train one variant; return its best test accuracy and the trainer."""
    config = TrainConfig(
        source=SOURCES.get(variant, str(SOURCE)), data=data, epochs=epochs, batch_size=128,
        optimizer="adamw", lr=3e-3, schedule="cosine", seed=0, params={"width": width},
        precision="fp32" if variant == "fp32" else None, out=out / variant, progress=False,
    )  # fmt: skip
    trainer = Trainer(config, break_ste if variant == "broken_ste" else None)
    history = trainer.fit()
    return max(h["test_acc"] for h in history), trainer


@torch.no_grad()
def evaluate_accuracy(trainer: Trainer, model: nn.Module) -> float:
    """``model``'s accuracy on the trainer's test set (eval mode)."""
    model.eval()
    correct = total = 0
    test = trainer.data.test
    for x, y in tdata.batches(test, range(len(test)), 256, trainer.ctx.device):  # type: ignore[arg-type]
        correct += int((model(trainer.adapt(x)).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def calibrated_a8(trainer: Trainer) -> tuple[float, float, int]:
    """The best checkpoint's accuracy as trained (A32) and with 8-bit inputs calibrated
    after training (no retraining), and the number of calibration batches used."""
    model = trainer.model
    model.load_state_dict(load_file(trainer.best_checkpoint / "model.safetensors"))
    float_inputs = evaluate_accuracy(trainer, model)
    add_input_quantizers(model, A8Static())
    train = trainer.data.train
    indices = range(min(len(train), CALIBRATION_BATCHES * 128))  # type: ignore[arg-type]
    batches = tdata.batches(train, indices, 128, trainer.ctx.device)
    used = calibrate(model, (trainer.adapt(x) for x, _ in batches))
    return float_inputs, evaluate_accuracy(trainer, model), used


def main() -> None:
    """Run the chosen variants, print and save (one JSON per variant) their results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--output", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--variant", choices=VARIANTS, action="append")
    args = parser.parse_args()
    for variant in args.variant or VARIANTS:
        accuracy, trainer = run(variant, args.epochs, args.output, args.data)
        result = {"variant": variant, "data": args.data, "epochs": args.epochs,
                  "test_accuracy": accuracy,
                  "values_per_scale_group": sorted(set(ternary_value_counts(trainer.model)))}
        (args.output / f"{variant}.json").write_text(json.dumps(result, indent=2))
        print(f"{variant}: {accuracy:.2%}", flush=True)
        if variant == "ternary":
            best, calibrated, used = calibrated_a8(trainer)
            extra = {"variant": "a8_calibrated", "data": args.data, "epochs": args.epochs,
                     "test_accuracy": calibrated, "float_inputs_accuracy": best,
                     "calibration_batches": used}
            (args.output / "a8_calibrated.json").write_text(json.dumps(extra, indent=2))
            print(f"a8_calibrated: {calibrated:.2%} (the same weights with float inputs: "
                  f"{best:.2%}; {used} calibration batches)", flush=True)


if __name__ == "__main__":
    main()
