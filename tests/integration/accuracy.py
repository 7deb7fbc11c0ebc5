"""The Fashion-MNIST accuracy experiment: fp32, ternary, and ternary with its STE broken.

Shared by the slow test (tests/integration/test_accuracy.py) and by hand runs:

    python -m tests.integration.accuracy [--epochs 3] [--data fashion-mnist-5k] [--output DIR]

which prints each variant's test accuracy and saves it to OUT/VARIANT.json.
"""

from __future__ import annotations

import argparse
import json
import types
from pathlib import Path

import torch
from torch import nn

from tritondsl.backend.layers import QuantModule
from tritondsl.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples" / "fashion_mnist.tdsl"
VARIANTS = ("fp32", "ternary", "broken_ste")


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
        source=str(SOURCE), data=data, epochs=epochs, batch_size=128,
        optimizer="adamw", lr=3e-3, schedule="cosine", seed=0, params={"width": width},
        precision="fp32" if variant == "fp32" else None, out=out / variant, progress=False,
    )  # fmt: skip
    trainer = Trainer(config, break_ste if variant == "broken_ste" else None)
    history = trainer.fit()
    return max(h["test_acc"] for h in history), trainer


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


if __name__ == "__main__":
    main()
