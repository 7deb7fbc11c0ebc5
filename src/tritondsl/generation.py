"""Text generation: next-token sampling and the decoding loop over a KV cache.

A ``Decoder`` turns token ids into next-token logits, keeping its own cache: ``prefill``
takes the prompt, ``step`` one more token. ``TorchDecoder`` runs a built model with a
``KVCache``; ``tritondsl.export.onnx_decoder_runner.OnnxDecoder`` runs an exported decoder
in onnxruntime. ``generate`` yields the new token ids one at a time, so a caller can stream::

    decoder = TorchDecoder(model)
    for token in generate(decoder, prompt_ids, 100, Sampling(temperature=0.8, top_p=0.9)):
        ...

Sampling: temperature 0 is greedy (the most likely token, ties to the lowest id);
otherwise logits are divided by the temperature, cut to the ``top_k`` most likely tokens,
then to the smallest set whose probability reaches ``top_p`` (nucleus), and one token is
drawn with a ``torch.Generator`` seeded by ``seed``: the same seed, the same text.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from tritondsl.transformer import KVCache


class GenerationError(ValueError):
    """The prompt or the settings do not fit the model; the message says how."""


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen (see the module docstring)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise GenerationError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise GenerationError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        """Whether the most likely token is always taken."""
        return self.temperature == 0


def next_token(logits: Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """The id chosen from one position's ``logits`` ``[vocab]``."""
    logits = logits.detach().float().reshape(-1)
    if sampling.greedy:
        return int(logits.argmax())
    scores = logits / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if sampling.top_p is not None and sampling.top_p < 1:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        # Keep a token while the ones before it hold less than top_p: the first always stays.
        drop = (cumulative - torch.softmax(ordered, dim=-1)) >= sampling.top_p
        scores = scores.scatter(0, order, ordered.masked_fill(drop, -math.inf))
    probabilities = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


class Decoder(Protocol):
    """Next-token logits over a growing context (see the module docstring)."""

    vocab_size: int
    context: int | None  # the most positions the model takes (None: no limit known)

    def prefill(self, ids: Sequence[int]) -> Tensor:
        """Start over with ``ids``; the logits ``[vocab]`` after the last of them."""
        ...

    def step(self, token: int) -> Tensor:
        """Append one token; the logits after it."""
        ...

    def __len__(self) -> int:
        """How many tokens the decoder holds."""
        ...


class TorchDecoder:
    """A built language model (``forward(ids, cache=)``) decoding with a ``KVCache``."""

    def __init__(self, model: nn.Module) -> None:
        if "cache" not in inspect.signature(model.forward).parameters:
            raise GenerationError(
                f"{type(model).__name__} is not a language model with a KV cache: its forward "
                "takes no cache= (a .tdsl decoder calls kv_cache in its attention)"
            )
        self.model = model.eval()
        # One token through the model: its vocabulary, and the context its rotary
        # positions declare (None: the model sets no limit).
        probe = KVCache()
        self.vocab_size = int(self._logits(torch.zeros(1, 1, dtype=torch.long), probe).numel())
        self.context = probe.context
        self.cache = KVCache()

    def _logits(self, ids: Tensor, cache: KVCache | None) -> Tensor:
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            try:
                output = self.model(ids.to(device), cache=cache)
            except ValueError as error:  # the model's own check: context, token ids
                raise GenerationError(str(error)) from None
        if not (isinstance(output, Tensor) and output.dim() == 3):
            raise GenerationError(
                f"a language model returns [N, T, vocab] logits; this one returns "
                f"{list(output.shape) if isinstance(output, Tensor) else type(output).__name__}"
            )
        return output[0, -1].float().cpu()

    def prefill(self, ids: Sequence[int]) -> Tensor:
        """Start a new cache with ``ids``; the logits after the last one."""
        self.cache = KVCache()
        return self._logits(torch.tensor([list(ids)], dtype=torch.long), self.cache)

    def step(self, token: int) -> Tensor:
        """Append ``token``; the logits after it."""
        return self._logits(torch.tensor([[token]], dtype=torch.long), self.cache)

    def __len__(self) -> int:
        """Tokens in the cache."""
        return len(self.cache)


def check_prompt(decoder: Decoder, ids: Sequence[int]) -> None:
    """Raise GenerationError for an empty prompt, ids out of range, or one past the context."""
    if not ids:
        raise GenerationError("the prompt holds no tokens")
    bad = next((i for i in ids if not 0 <= i < decoder.vocab_size), None)
    if bad is not None:
        raise GenerationError(
            f"token id {bad} is out of range: the model takes ids 0 to {decoder.vocab_size - 1}"
        )
    if decoder.context is not None and len(ids) > decoder.context:
        raise GenerationError(
            f"the prompt is {len(ids)} tokens, longer than the model's context of "
            f"{decoder.context}; shorten it"
        )


def generate(
    decoder: Decoder,
    prompt: Sequence[int],
    max_new_tokens: int,
    sampling: Sampling,
    stop: Callable[[list[int]], bool] | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new ids after ``prompt``; ends early when ``stop`` of
    the new ids so far is true or the context is full."""
    check_prompt(decoder, prompt)
    generator = torch.Generator().manual_seed(sampling.seed)
    logits = decoder.prefill(prompt)
    new: list[int] = []
    while len(new) < max_new_tokens:
        token = next_token(logits, sampling, generator)
        new.append(token)
        yield token
        if (stop is not None and stop(new)) or len(new) == max_new_tokens:
            return
        if decoder.context is not None and len(decoder) >= decoder.context:
            return
        logits = decoder.step(token)


def greedy_agreement(
    reference: Decoder, candidate: Decoder, prompt: Sequence[int], steps: int
) -> tuple[int, int]:
    """(agreeing, total) greedy choices of ``candidate`` along ``reference``'s greedy text:
    both see the same tokens at every step (the reference's), so one differing choice does
    not make the texts, and every later comparison, part ways."""
    check_prompt(reference, prompt)
    ours, theirs = reference.prefill(prompt), candidate.prefill(prompt)
    agree = 0
    for step in range(steps):
        token = int(ours.argmax())
        agree += token == int(theirs.argmax())
        if step + 1 == steps or (reference.context is not None
                                 and len(reference) >= reference.context):  # fmt: skip
            return agree, step + 1
        ours, theirs = reference.step(token), candidate.step(token)
    return agree, steps
