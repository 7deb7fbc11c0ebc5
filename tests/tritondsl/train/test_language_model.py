"""Training language models on text: next-token loss, perplexity, checkpoints, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tritondsl.export.artifact import CorruptArtifactError
from tritondsl.export.hub import from_pretrained, read_tokenizer
from tritondsl.train import CheckpointError, DataError, TrainConfig, Trainer, TrainingError
from tritondsl.train.text import FORTUNES_DIR

# A decoder of the zoo, small enough to train for a few steps in a test.
TINY = {"vocab": 256, "dim": 32, "layers": 1, "heads": 2, "kv_heads": 2, "ffn": 64,
        "context": 64}  # fmt: skip
# A language model without attention or a cache: fixed T, learned positions.
FIXED_T = """
model Bigram(vocab: int = 256, dim: int = 32) {
    input ids: Tensor[N, 16, int64]
    weights ternary()
    embed = Embedding(vocab, dim)
    param pos: Tensor[1, 16, dim] = normal(0, 0.02)
    fc = Linear(dim, dim)
    head = Linear(dim, vocab) @fp32
    forward(ids) {
        return head(relu(fc(embed(ids) + pos)))
    }
}
"""


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    """40 short documents of a few repeated words: a tiny model learns them in two epochs."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(40):
        verb = "sat on" if i % 2 else "ran to"
        (folder / f"{i:02d}.txt").write_text(f"{i}: " + f"the cat {verb} the mat. " * 6 + "\n")
    return f"text:{folder}"


def lm(out: Path, data: str, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "source": "bitnet_b158", "params": TINY, "data": data, "epochs": 2, "batch_size": 8,
        "seq_len": 32, "optimizer": "adamw", "lr": 1e-2, "out": out, "progress": False,
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.slow
def test_a_decoder_learns_the_text(tmp_path: Path, corpus: str) -> None:
    trainer = Trainer(lm(tmp_path / "run", corpus))
    history = trainer.fit()
    first, last = history
    assert last["test_loss"] < first["test_loss"] < math.log(256)
    assert last["test_ppl"] == pytest.approx(math.exp(last["test_loss"]))
    assert last["test_ppl"] < 8  # from 256 equally likely bytes
    assert last["tokens_per_s"] == pytest.approx(32 * last["samples_per_s"])
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("train_ppl,test_ppl,tokens_per_s")
    best = tmp_path / "run" / "checkpoints" / "best"
    state = json.loads((best / "trainer_state.json").read_text())
    assert state["task"] == "language-model" and state["seq_len"] == 32
    assert state["best_score"] == -min(h["test_loss"] for h in history)
    assert json.loads((best / "tokenizer.json").read_text())["model"]["type"] == "BPE"


@pytest.mark.slow
def test_resume_is_bit_exact_and_keeps_the_tokenizer(tmp_path: Path, corpus: str) -> None:
    straight = Trainer(lm(tmp_path / "a", corpus, tokenizer="bpe:300", params={**TINY,
                                                                          "vocab": 300}))
    straight.fit()
    config = lm(tmp_path / "b", corpus, tokenizer="bpe:300", params={**TINY, "vocab": 300},
                stop_after=1)  # fmt: skip
    Trainer(config).fit()
    resumed = Trainer(lm(tmp_path / "b", corpus, tokenizer="bpe:300",
                         params={**TINY, "vocab": 300}, resume=tmp_path / "b"))  # fmt: skip
    resumed.fit()
    a = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tokenizers = [(tmp_path / r / "checkpoints" / "last" / "tokenizer.json").read_text()
                  for r in "ab"]  # fmt: skip
    assert tokenizers[0] == tokenizers[1]


def test_a_fixed_length_model_trains_on_its_own_blocks(tmp_path: Path, corpus: str) -> None:
    history = Trainer(lm(tmp_path / "run", corpus, source=FIXED_T, params={}, seq_len=None,
                         epochs=1)).fit()  # fmt: skip
    assert history[0]["test_ppl"] < 256
    with pytest.raises(DataError, match=r"--seq-len 32 does not fit the model's input ids: "
                       r"Tensor\[N, 16, int64\] \(<string>, line 3\)"):  # fmt: skip
        Trainer(lm(tmp_path / "other", corpus, source=FIXED_T, params={}))


def test_blocks_longer_than_the_context_are_refused_at_the_rotary_line(
    tmp_path: Path, corpus: str
) -> None:
    with pytest.raises(DataError, match=r"blocks of --seq-len 128 tokens: 128 positions do not "
                       r"fit the context of 64 tokens .*bitnet_b158\.tdsl, line \d+"):  # fmt: skip
        Trainer(lm(tmp_path / "run", corpus, seq_len=128))


def test_a_vocabulary_that_is_not_the_tokenizers_is_refused(tmp_path: Path, corpus: str) -> None:
    with pytest.raises(TrainingError, match=r"predicts 256 tokens but the tokenizer has 300: .*"
                       r"--param vocab=300"):  # fmt: skip
        Trainer(lm(tmp_path / "run", corpus, tokenizer="bpe:300"))


def test_models_and_data_of_the_other_kind_are_refused(tmp_path: Path, corpus: str) -> None:
    with pytest.raises(DataError, match=r"whose input is token ids \[N, T\].*declares x: "
                       r"Tensor\[N, 784, float32\]"):  # fmt: skip
        Trainer(lm(tmp_path / "a", corpus, source="ternary_mlp", params={}))
    with pytest.raises(DataError, match=r"takes token ids \(ids: Tensor\[N, T, int64\].*"
                       r"--data text:fortunes"):  # fmt: skip
        Trainer(lm(tmp_path / "b", "synthetic"))


def test_the_hub_folder_carries_the_tokenizer_and_the_scores(tmp_path: Path, corpus: str) -> None:
    Trainer(lm(tmp_path / "run", corpus, epochs=1, hub=tmp_path / "hub")).fit()
    hub = tmp_path / "hub"
    config = json.loads((hub / "config.json").read_text())
    assert "tokenizer.json" in config["files"]
    card = config["card"]
    assert card["pipeline_tag"] == "text-generation"
    assert set(card["metrics"]) == {"accuracy", "loss", "perplexity"}
    assert card["training"]["data"] == corpus and card["training"]["seq_len"] == 32
    readme = (hub / "README.md").read_text()
    assert "## Training" in readme
    assert f"| perplexity | {card['metrics']['perplexity']:.4f} |" in readme
    model = from_pretrained(hub)
    assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 256)
    assert json.loads(read_tokenizer(hub) or "")["model"]["type"] == "BPE"
    saved = (hub / "tokenizer.json").read_text()
    (hub / "tokenizer.json").write_text(saved.replace('"BPE"', '"BPF"'))  # the same size
    for load in (read_tokenizer, from_pretrained):
        with pytest.raises(CorruptArtifactError, match=r"tokenizer\.json: sha256/size differ"):
            load(hub)


def test_a_checkpoint_with_a_broken_tokenizer_is_refused(tmp_path: Path, corpus: str) -> None:
    Trainer(lm(tmp_path / "run", corpus, epochs=2, stop_after=1)).fit()
    (tmp_path / "run" / "checkpoints" / "last" / "tokenizer.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"tokenizer\.json: not a tokenizer\.json file"):
        Trainer(lm(tmp_path / "run", corpus, resume=tmp_path / "run"))


@pytest.mark.slow
@pytest.mark.skipif(not (FORTUNES_DIR / "fortunes").is_file(), reason="run `make data`")
def test_the_fortunes_corpus_trains(tmp_path: Path) -> None:
    history = Trainer(lm(tmp_path / "run", "text:fortunes", epochs=1, limit_train=32,
                         limit_test=8)).fit()  # fmt: skip
    assert len(Trainer(lm(tmp_path / "x", "text:fortunes")).data.test) > 100  # whole split
    assert history[0]["test_ppl"] < 256
