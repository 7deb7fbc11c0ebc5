"""Train the ternary FashionCNN on Fashion-MNIST with the Trainer API.

    make data                                   # the dataset-fashion-mnist Debian package
    python examples/train_fashion_mnist.py --epochs 1
    python examples/train_fashion_mnist.py --resume runs/fashion_mnist --epochs 3

The same as ``tritondsl train examples/fashion_mnist.tdsl --data fashion-mnist ...``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tritondsl.train import TrainConfig, Trainer, to_hub

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> float:
    """Train, print the best test accuracy, return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--limit-train", type=int, default=None, help="first N train samples")
    parser.add_argument("--output", type=Path, default=Path("runs/fashion_mnist"))
    parser.add_argument("--resume", type=Path, default=None)
    parser.add_argument("--hub", type=Path, default=None, help="write the best model here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the epoch lines

    config = TrainConfig(
        source=str(HERE / "fashion_mnist.tdsl"),
        data=args.data,
        epochs=args.epochs,
        batch_size=64,
        optimizer="sgd",
        lr=0.05,
        schedule="cosine",
        label_smoothing=0.1,
        limit_train=args.limit_train,
        out=args.output,
        resume=args.resume,
    )
    trainer = Trainer(config)
    history = trainer.fit()
    best = max(h["test_acc"] for h in history)
    print(f"best test accuracy {best:.2%}; checkpoints in {trainer.best_checkpoint.parent}")
    if args.hub is not None:
        print(f"Hub folder: {to_hub(trainer.best_checkpoint, args.hub)}")
    return best


if __name__ == "__main__":
    main()
