"""Generation: sampling rules, the cached decoding loop against full forwards, its limits."""

from __future__ import annotations

import pytest
import torch

import tritondsl
from tritondsl.generation import (
    GenerationError,
    Sampling,
    TorchDecoder,
    generate,
    next_token,
)

TINY = {"vocab": 64, "dim": 32, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 64,
        "context": 24}  # fmt: skip


@pytest.fixture(scope="module")
def lm() -> torch.nn.Module:
    torch.manual_seed(0)
    return tritondsl.load_model("bitnet_b158", **TINY).eval()


def test_greedy_takes_the_most_likely_token() -> None:
    logits = torch.tensor([0.1, 3.0, -1.0, 2.9])
    generator = torch.Generator().manual_seed(0)
    assert next_token(logits, Sampling(temperature=0), generator) == 1
    # top_k=1 is greedy at any temperature; so is a tiny top_p.
    for seed in range(5):
        generator.manual_seed(seed)
        assert next_token(logits, Sampling(temperature=5.0, top_k=1), generator) == 1
        assert next_token(logits, Sampling(temperature=5.0, top_p=1e-6), generator) == 1


def draws(logits: torch.Tensor, sampling: Sampling, n: int = 400) -> set[int]:
    generator = torch.Generator().manual_seed(sampling.seed)
    return {next_token(logits, sampling, generator) for _ in range(n)}


def test_top_k_and_top_p_cut_the_candidates() -> None:
    probabilities = torch.tensor([0.4, 0.3, 0.2, 0.06, 0.04])
    logits = probabilities.log()
    assert draws(logits, Sampling()) == {0, 1, 2, 3, 4}
    assert draws(logits, Sampling(top_k=2)) == {0, 1}
    # The nucleus of 0.65 needs tokens 0 and 1 (0.4 < 0.65 <= 0.7); of 0.75, also token 2.
    assert draws(logits, Sampling(top_p=0.65)) == {0, 1}
    assert draws(logits, Sampling(top_p=0.75)) == {0, 1, 2}
    assert draws(logits, Sampling(top_k=3, top_p=0.95)) == {0, 1, 2}


def test_temperature_sharpens_and_flattens() -> None:
    logits = torch.tensor([2.0, 0.0])
    def share_of_first(temperature: float) -> float:
        generator = torch.Generator().manual_seed(0)
        picks = [next_token(logits, Sampling(temperature=temperature), generator)
                 for _ in range(2000)]  # fmt: skip
        return picks.count(0) / len(picks)
    # p(first) = sigmoid(2 / T): 0.98 at T=0.5, 0.88 at T=1, 0.73 at T=2.
    assert share_of_first(0.5) == pytest.approx(0.982, abs=0.02)
    assert share_of_first(1.0) == pytest.approx(0.881, abs=0.03)
    assert share_of_first(2.0) == pytest.approx(0.731, abs=0.03)


@pytest.mark.parametrize(("settings", "match"), [
    ({"temperature": -1.0}, "temperature must be >= 0"),
    ({"temperature": float("nan")}, "temperature must be >= 0"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
])  # fmt: skip
def test_bad_sampling_settings(settings: dict, match: str) -> None:
    with pytest.raises(GenerationError, match=match):
        Sampling(**settings)


def full_forward_greedy(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_greedy_decoding_equals_full_forwards(lm: torch.nn.Module) -> None:
    decoder = TorchDecoder(lm)
    assert decoder.vocab_size == 64 and decoder.context == 24
    got = list(generate(decoder, [5, 9, 2], 12, Sampling(temperature=0)))
    assert got == full_forward_greedy(lm, [5, 9, 2], 12)
    assert len(decoder) == 3 + 11  # the last token is returned, never fed


def test_the_same_seed_gives_the_same_tokens(lm: torch.nn.Module) -> None:
    decoder = TorchDecoder(lm)
    sampling = Sampling(temperature=1.0, top_k=20, seed=7)
    first = list(generate(decoder, [1, 2], 10, sampling))
    assert list(generate(decoder, [1, 2], 10, sampling)) == first
    others = [list(generate(decoder, [1, 2], 10, Sampling(temperature=1.0, seed=s)))
              for s in range(3)]  # fmt: skip
    assert any(o != first for o in others)


def test_generation_stops_at_the_context_and_on_request(lm: torch.nn.Module) -> None:
    decoder = TorchDecoder(lm)
    # 24 positions: 20 prompt tokens leave room to feed 4 more, so 5 new ones come out.
    assert len(list(generate(decoder, list(range(20)), 50, Sampling(temperature=0)))) == 5
    stopped = list(generate(decoder, [3], 50, Sampling(temperature=0.8),
                            stop=lambda new: len(new) == 3))  # fmt: skip
    assert len(stopped) == 3


def test_bad_prompts_get_one_clear_error(lm: torch.nn.Module) -> None:
    decoder = TorchDecoder(lm)
    with pytest.raises(GenerationError, match="the prompt holds no tokens"):
        list(generate(decoder, [], 3, Sampling()))
    with pytest.raises(GenerationError, match=r"token id 64 is out of range: .* ids 0 to 63"):
        list(generate(decoder, [1, 64], 3, Sampling()))
    with pytest.raises(GenerationError, match=r"25 tokens, longer than the model's context of 24"):
        list(generate(decoder, [1] * 25, 3, Sampling()))


def test_a_model_without_a_cache_is_refused() -> None:
    mlp = tritondsl.load_model("ternary_mlp")
    with pytest.raises(GenerationError, match="not a language model with a KV cache"):
        TorchDecoder(mlp)
