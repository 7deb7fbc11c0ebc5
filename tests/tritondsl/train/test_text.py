"""Text data: the fortunes corpus and text files, the split, the tokenizers, the blocks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tritondsl.train import DataError, text

FORTUNES = text.FORTUNES_DIR
needs_fortunes = pytest.mark.skipif(
    not (FORTUNES / "fortunes").is_file(), reason="Debian's fortunes package: run `make data`"
)


def write_fortunes(folder: Path, fortunes: list[str]) -> None:
    """A strfile-format file (fortunes between % lines) plus the .dat and .u8 strfile adds."""
    folder.mkdir(exist_ok=True)
    (folder / "jokes").write_text("\n%\n".join(fortunes) + "\n%\n")
    (folder / "jokes.dat").write_bytes(b"\x00\x00\x00\x02binary index")
    (folder / "jokes.u8").symlink_to("jokes")


@needs_fortunes
def test_fortunes_corpus_is_split_by_fortune() -> None:
    corpus = text.read_corpus("text:fortunes")
    documents = len(corpus.train) + len(corpus.val)
    assert len(corpus.val) == documents // text.VAL_EVERY
    assert documents > 10_000  # the full package; fortunes-min alone has about 430
    # No separator line survives inside a document, and no fortune is in both splits.
    assert not any("\n%\n" in f"\n{doc}\n" for doc in corpus.train + corpus.val)
    assert not set(corpus.val) & set(corpus.train) - {""}


def test_fortune_files_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:  # fmt: skip
    fortunes = [f"fortune {i}\nsecond line" for i in range(40)]
    write_fortunes(tmp_path / "f", fortunes)
    monkeypatch.setenv(text.FORTUNES_ENV, str(tmp_path / "f"))
    corpus = text.read_corpus("text:fortunes")
    # The .dat index and the .u8 link are skipped; every 20th fortune is validation.
    assert corpus.val == [fortunes[19], fortunes[39]]
    assert corpus.train == [f for i, f in enumerate(fortunes) if i not in (19, 39)]


def test_missing_fortunes_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:  # fmt: skip
    monkeypatch.setenv(text.FORTUNES_ENV, str(tmp_path))
    with pytest.raises(DataError, match=r"make data.*apt-get install fortunes"):
        text.read_corpus("text:fortunes")


def test_one_file_gives_its_last_twentieth_to_validation(tmp_path: Path) -> None:
    lines = [f"line {i:03d}" for i in range(200)]
    (tmp_path / "book.txt").write_text("\n".join(lines) + "\n")
    corpus = text.read_corpus(f"text:{tmp_path / 'book.txt'}")
    (train,), (val,) = corpus.train, corpus.val
    assert train + "\n" + val == "\n".join(lines) + "\n"
    assert val.startswith("line 19") and 0.04 < len(val) / len(train + val) < 0.06


def test_a_folder_reads_its_txt_files_in_order(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / f"{i:02d}.txt").write_text(f"document {i}\r\n")
    (tmp_path / ".hidden.txt").write_text("never read")
    (tmp_path / "notes.md").write_text("not a .txt file")
    corpus = text.read_corpus(f"text:{tmp_path}")
    assert corpus.val == ["document 19\n"]
    assert corpus.train[0] == "document 0\n" and len(corpus.train) == 24


@pytest.mark.parametrize(("content", "match"), [
    (b"caf\xe9\n" * 100, r"not UTF-8 text \(byte 3 is 0xe9\)"),
    (b"a\x00b\n" * 100, "holds NUL characters"),
    (b"   \n\n", "the corpus holds no text"),
    (b"one line", "too little text to split"),
])  # fmt: skip
def test_bad_text_files_are_refused(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(DataError, match=match):
        text.read_corpus(f"text:{tmp_path / 'bad.txt'}")


def test_missing_paths_and_empty_specs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        text.read_corpus(f"text:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match=r"holds no \.txt files"):
        text.read_corpus(f"text:{tmp_path}")
    with pytest.raises(DataError, match="text: needs a corpus"):
        text.read_corpus("text:")


def corpus_of(documents: list[str]) -> text.Corpus:
    return text.Corpus("test", documents, [])


def test_byte_tokenizer_ids_are_utf8_bytes() -> None:
    tokenizer = text.make_tokenizer("bytes", corpus_of([]))
    sample = "Grüße, \t world!\n% ≠ 𝄞"
    assert tokenizer.is_bytes and tokenizer.vocab_size == 256
    assert tokenizer.encode(sample) == list(sample.encode("utf-8"))
    assert tokenizer.hf.encode(sample).ids == list(sample.encode("utf-8"))  # the library agrees
    assert tokenizer.decode(tokenizer.encode(sample)) == sample
    # Half a character decodes to U+FFFD until the rest arrives (what streaming relies on).
    assert tokenizer.decode(list("ü".encode())[:1]) == "\ufffd"


@needs_fortunes
def test_the_byte_fast_path_equals_the_library_on_the_corpus() -> None:
    documents = text.read_corpus("text:fortunes").train[:3000]
    tokenizer = text.make_tokenizer("bytes", corpus_of(documents))
    fast = tokenizer.encode_documents(documents)
    tokenizer.is_bytes = False  # the library's own encoding, document by document
    assert tokenizer.encode_documents(documents) == fast


def test_a_changed_byte_tokenizer_is_not_taken_for_bytes() -> None:
    saved = json.loads(text.make_tokenizer("bytes", corpus_of([])).to_json())
    saved["normalizer"] = {"type": "Lowercase"}
    tokenizer = text.TextTokenizer.from_json(json.dumps(saved), "tokenizer.json")
    assert not tokenizer.is_bytes
    assert tokenizer.encode("AB") == list(b"ab")


def test_bpe_is_trained_on_the_training_split_and_round_trips() -> None:
    documents = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)]
    first = text.make_tokenizer("bpe:300", corpus_of(documents))
    second = text.make_tokenizer("bpe:300", corpus_of(documents))
    assert first.to_json() == second.to_json()  # deterministic: resume gets the same ids
    assert first.vocab_size == 300 and not first.is_bytes
    sample = "the lazy fox, ünïcode\n"
    ids = first.encode(sample)
    assert first.decode(ids) == sample and len(ids) < len(sample.encode())
    again = text.TextTokenizer.from_json(first.to_json(), "x")
    assert again.encode(sample) == ids


@pytest.mark.parametrize("spec", ["bpe", "bpe:12", "bpe:x", "words", "bpe:256"])
def test_bad_tokenizer_specs(spec: str) -> None:
    with pytest.raises(DataError, match=f"unknown tokenizer '{spec}'"):
        text.check_tokenizer_spec(spec)


def test_a_corrupt_tokenizer_file_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"tokenizer\.json: not a tokenizer\.json file"):
        text.TextTokenizer.from_json('{"model": 3}', "tokenizer.json")


def test_pack_cuts_overlapping_blocks_of_next_tokens() -> None:
    packed = text.pack(list(range(23)), 5)
    x, y = packed.tensors
    # 22 targets make 4 whole blocks; each input block's targets are its ids shifted by one.
    assert x.tolist() == [list(range(s, s + 5)) for s in (0, 5, 10, 15)]
    assert torch.equal(y, x + 1)
    assert len(text.pack(list(range(5)), 5)) == 0


def test_load_refuses_a_split_too_short_for_one_block(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("x\n" * 200)
    # Validation is the last 9 lines (18 bytes) and the separator (3): 21 tokens.
    with pytest.raises(DataError, match=r"the val split has 21 tokens.*--seq-len 64"):
        text.load(f"text:{tmp_path / 'short.txt'}", "bytes", 64)
    data = text.load(f"text:{tmp_path / 'short.txt'}", "bytes", 8)
    assert data.vocab_size == 256 and data.val_tokens == 21
    assert len(data.train) == (data.train_tokens - 1) // 8
