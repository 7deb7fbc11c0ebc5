"""What a run learns, and how it is scored: classification or language modelling.

The trainer is the same for both; a ``Task`` says what the model's output must look like,
the loss, the per-batch sums every process adds up (loss, correct predictions, count), the
metrics they give, and which epoch is best.

* ``Classification``: output ``[N, classes]``, one label per sample; best = highest
  test accuracy.
* ``LanguageModel``: output ``[N, T, vocab]``, a target (the next token) per position;
  the loss is next-token cross-entropy averaged over tokens, the perplexity its exp, the
  accuracy that of the most likely next token; best = lowest validation loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tritondsl.train.errors import TrainingError

Metrics = dict[str, Any]
MAX_PERPLEXITY_LOSS = 700.0  # exp() of more overflows a float: perplexity is inf then


def perplexity(loss: float) -> float:
    """``exp(loss)``, the perplexity of a mean next-token cross-entropy (inf if huge)."""
    return math.exp(loss) if loss < MAX_PERPLEXITY_LOSS else math.inf


class Task:
    """Classification: ``[N, classes]`` outputs, a label per sample."""

    name = "classification"
    unit = "samples"  # what the count of a batch counts
    csv_extra: tuple[str, ...] = ()  # metrics.csv columns beyond the usual ones

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def check_output(self, output: Any, example: Tensor) -> int:
        """The number of classes, from the model's output on ``example``; else TrainingError."""
        if not (isinstance(output, Tensor) and output.dim() == 2):
            got = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise TrainingError(f"training needs a model that returns [N, classes]; got {got}")
        return int(output.shape[1])

    def logits(self, output: Tensor) -> Tensor:
        """The output as ``[samples, classes]`` rows, one per target."""
        return output

    def batch(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The mean loss (to backpropagate) and ``[loss sum, correct, count]`` (float)."""
        logits, labels = self.logits(output), target.reshape(-1)
        total = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing,
                                reduction="sum")  # fmt: skip
        count = labels.numel()
        correct = (logits.detach().argmax(-1) == labels).sum()
        sums = torch.stack([total.detach(), correct.to(total.dtype),
                            torch.tensor(float(count), device=total.device)])  # fmt: skip
        return total / max(count, 1), sums

    def metrics(self, prefix: str, sums: Tensor) -> Metrics:
        """``{prefix}_loss`` and ``{prefix}_acc`` from summed ``[loss, correct, count]``."""
        count = max(float(sums[2]), 1.0)
        return {f"{prefix}_loss": float(sums[0]) / count, f"{prefix}_acc": float(sums[1]) / count}

    def score(self, record: Metrics) -> float:
        """How good an epoch is (higher is better): the test accuracy."""
        return float(record["test_acc"])

    def describe(self, record: Metrics, split: str) -> str:
        """``loss 0.4 acc 85.00%`` for the epoch line."""
        return f"loss {record[f'{split}_loss']:.4f} acc {record[f'{split}_acc']:.2%}"


class LanguageModel(Task):
    """Next-token prediction: ``[N, T, vocab]`` outputs, a target token per position."""

    name = "language-model"
    unit = "tokens"
    csv_extra = ("train_ppl", "test_ppl", "tokens_per_s")

    def __init__(self, seq_len: int, vocab_size: int, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        self.seq_len, self.vocab_size = seq_len, vocab_size

    def check_output(self, output: Any, example: Tensor) -> int:
        """The vocabulary size of the model's ``[N, T, vocab]`` output; TrainingError if it
        is not that, or not the tokenizer's."""
        shape = list(output.shape) if isinstance(output, Tensor) else type(output).__name__
        if not (isinstance(output, Tensor) and output.dim() == 3
                and list(output.shape[:2]) == list(example.shape)):  # fmt: skip
            raise TrainingError(
                f"a language model must return [N, T, vocab] for token ids [N, T]; for ids "
                f"{list(example.shape)} this one returns {shape}"
            )
        vocab = int(output.shape[2])
        if vocab != self.vocab_size:
            raise TrainingError(
                f"the model predicts {vocab} tokens but the tokenizer has {self.vocab_size}: "
                f"build it with that vocabulary (e.g. --param vocab={self.vocab_size}) or "
                f"choose a tokenizer of {vocab} tokens"
            )
        return vocab

    def logits(self, output: Tensor) -> Tensor:
        """``[N·T, vocab]``: one row per predicted token."""
        return output.flatten(0, -2)

    def metrics(self, prefix: str, sums: Tensor) -> Metrics:
        """Loss, next-token accuracy and perplexity."""
        metrics = super().metrics(prefix, sums)
        metrics[f"{prefix}_ppl"] = perplexity(metrics[f"{prefix}_loss"])
        return metrics

    def score(self, record: Metrics) -> float:
        """How good an epoch is (higher is better): minus the validation loss."""
        return -float(record["test_loss"])

    def describe(self, record: Metrics, split: str) -> str:
        """``loss 1.2 ppl 3.3 acc 62.00%``."""
        return (f"loss {record[f'{split}_loss']:.4f} ppl {record[f'{split}_ppl']:.2f} "
                f"acc {record[f'{split}_acc']:.2%}")  # fmt: skip
