"""Text for language models: a corpus, a tokenizer, and fixed-length blocks to train on.

``--data text:fortunes`` reads Debian's ``fortunes`` package (the strfile text files in
/usr/share/games/fortunes, or the folder ``$TRITONDSL_FORTUNES`` names): each fortune, the
text between two lines holding only ``%``, is one document. ``--data text:PATH`` reads a
UTF-8 file, or every ``*.txt`` file under a folder (sorted): each file is one document.

Split: each document is kept once (exact repeats go), then every ``VAL_EVERY``-th (the
20th, 40th, ...) is validation; a corpus of fewer than ``VAL_EVERY`` documents gives its
last twentieth, from a line start, to validation. The split never depends on ``--seed``
or the tokenizer.

Tokenizers are Hugging Face ``tokenizers`` objects, stored as ``tokenizer.json`` beside a
checkpoint's weights (JSON, read by the Rust library: nothing runs):

* ``bytes``: one token per UTF-8 byte, id = the byte's value (vocabulary 256); a BPE model
  with GPT-2's byte alphabet and no merges, so nothing is trained;
* ``bpe:N``: byte-level BPE with N tokens, trained on the training split only.

Each split is its documents, each tokenized and followed by ``SEPARATOR`` (the ``%`` line
of the fortune format), cut into blocks of ``seq_len + 1`` tokens taken every ``seq_len``
tokens: a sample is ``(block[:-1], block[1:])``, the inputs and their next tokens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritondsl.train.dataspec import TEXT, parse
from tritondsl.train.errors import DataError

if TYPE_CHECKING:  # torch is imported where tensors are made: config checks specs without it
    from torch import Tensor
    from torch.utils.data import TensorDataset

FORTUNES = "fortunes"
FORTUNES_ENV = "TRITONDSL_FORTUNES"
FORTUNES_DIR = Path("/usr/share/games/fortunes")  # where Debian's fortunes(-min) put them
TEXT_SUFFIX = ".txt"
VAL_EVERY = 20
SEPARATOR = "\n%\n"
BYTES = "bytes"
BPE = "bpe"
MIN_BPE, MAX_BPE = 257, 1 << 20
MAX_FILE_BYTES = 1 << 30  # one text file; a corpus this big wants a streaming loader


@dataclass
class Corpus:
    """The documents of a text corpus, split into training and validation."""

    name: str
    train: list[str]
    val: list[str]



def is_text_spec(spec: str) -> bool:
    """Whether a ``--data`` spec names text (``text:fortunes``, ``text:PATH``)."""
    return spec.startswith(TEXT + ":")


def read_corpus(spec: str) -> Corpus:
    """The corpus a ``text:...`` spec names, split; DataError if it cannot be read."""
    parsed = parse(spec)
    if parsed.kind != "text":
        raise DataError(f"{spec!r} is not a text corpus (text:fortunes or text:PATH)")
    source = parsed.value
    # A file or folder named "fortunes" is text:./fortunes.
    documents = _fortunes() if source == FORTUNES else _documents_at(Path(source))
    # The package repeats some fortunes in several files: each document is kept once, so
    # no validation document is also a training one.
    documents = list(dict.fromkeys(d for d in documents if d.strip()))
    if not documents:
        raise DataError(f"{spec}: the corpus holds no text")
    if len(documents) >= VAL_EVERY:
        train = [d for i, d in enumerate(documents, 1) if i % VAL_EVERY]
        val = [d for i, d in enumerate(documents, 1) if not i % VAL_EVERY]
        return Corpus(spec, train, val)
    text = SEPARATOR.join(documents)
    cut = text.find("\n", len(text) - len(text) // VAL_EVERY)
    if cut < 0 or not text[:cut].strip() or not text[cut + 1 :].strip():
        raise DataError(f"{spec}: too little text to split into training and validation")
    return Corpus(spec, [text[:cut]], [text[cut + 1 :]])


def _fortunes() -> list[str]:
    folder = Path(os.environ.get(FORTUNES_ENV) or FORTUNES_DIR)
    # strfile writes NAME.dat (a binary index) beside each NAME, and NAME.u8 links to it.
    files = [] if not folder.is_dir() else sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )  # fmt: skip
    if not files:
        raise DataError(
            f"the fortunes corpus is not installed: {folder} holds no fortune files.\n"
            "Install it with `make data` or `sudo apt-get install fortunes` (Debian/Ubuntu), "
            f"or set {FORTUNES_ENV} to a folder of fortune files"
        )
    documents = []
    for path in files:
        fortune: list[str] = []
        for line in _read(path).splitlines():
            if line.strip() == "%":
                documents.append("\n".join(fortune))
                fortune = []
            else:
                fortune.append(line)
        documents.append("\n".join(fortune))
    return documents


def _documents_at(path: Path) -> list[str]:
    if path.is_file():
        return [_read(path)]
    if path.is_dir():
        files = sorted(p for p in path.rglob(f"*{TEXT_SUFFIX}")
                       if p.is_file() and not any(part.startswith(".") for part in p.parts))
        if not files:
            raise DataError(f"text:{path}: the folder holds no {TEXT_SUFFIX} files")
        return [_read(p) for p in files]
    raise DataError(
        f"text:{path}: no such file or folder (give text:fortunes, a UTF-8 file, "
        f"or a folder of {TEXT_SUFFIX} files)"
    )


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DataError(f"{path}: {size:,} bytes; text files above {MAX_FILE_BYTES:,} "
                            "bytes are not read into memory")  # fmt: skip
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (byte {error.start} is {data[error.start]:#x})"
                        ) from None  # fmt: skip
    if "\0" in text:
        raise DataError(f"{path}: holds NUL characters; it is not a text file")
    return text.replace("\r\n", "\n")


# -- tokenizers ---------------------------------------------------------------------------


def check_tokenizer_spec(spec: str) -> None:
    """Raise DataError unless ``spec`` is ``bytes`` or ``bpe:N``."""
    _vocab_of(spec)


def _vocab_of(spec: str) -> int:
    if spec == BYTES:
        return 256
    kind, _, size = spec.partition(":")
    if kind == BPE and size.isdecimal() and MIN_BPE <= int(size) <= MAX_BPE:
        return int(size)
    raise DataError(
        f"unknown tokenizer {spec!r}: choose bytes, or bpe:N with {MIN_BPE} <= N <= {MAX_BPE}"
    )


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte value (what ByteLevel pre-tokenizing yields)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars, extra = {}, 0
    for byte in range(256):
        if byte in kept:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` (``.hf``) with what training and generation ask of it."""

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        # A byte tokenizer's ids are the UTF-8 bytes: reading them straight from the text
        # gives the library's ids about 200 times faster (a test compares them).
        spec = json.loads(hf.to_str())
        model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
        self.is_bytes = (
            model.get("type") == "BPE" and not model.get("merges")
            and model.get("vocab") == _BYTE_VOCAB and not spec.get("added_tokens")
            and spec.get("normalizer") is None and pre.get("type") == "ByteLevel"
            and pre.get("use_regex") is False and pre.get("add_prefix_space") is False
        )  # fmt: skip

    @property
    def vocab_size(self) -> int:
        """How many token ids there are."""
        return int(self.hf.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        if self.is_bytes:
            return list(text.encode("utf-8"))
        return list(self.hf.encode(text).ids)

    def encode_documents(self, documents: list[str]) -> list[int]:
        """Token ids of the documents, each followed by the separator's.

        Documents are encoded one by one (in parallel): one long string is several times
        slower, and no token spans two documents.
        """
        if self.is_bytes:
            return list("".join(doc + SEPARATOR for doc in documents).encode("utf-8"))
        separator = self.encode(SEPARATOR)
        ids: list[int] = []
        for encoding in self.hf.encode_batch(documents):
            ids += encoding.ids
            ids += separator
        return ids

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids`` (bytes that do not yet form a whole character show as U+FFFD)."""
        return str(self.hf.decode(ids))

    def to_json(self) -> str:
        """tokenizer.json text (Hugging Face's format)."""
        return str(self.hf.to_str(pretty=True)) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> TextTokenizer:
        """A tokenizer from tokenizer.json text; DataError naming ``where`` if it is bad."""
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_str(text))
        except Exception as error:  # the Rust parser raises its own exception type
            raise DataError(f"{where}: not a tokenizer.json file ({error})") from None


_BYTE_VOCAB = {char: byte for byte, char in enumerate(_byte_alphabet())}


def make_tokenizer(spec: str, corpus: Corpus) -> TextTokenizer:
    """A new tokenizer: bytes, or byte-level BPE trained on the corpus's training split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    size = _vocab_of(spec)
    if spec == BYTES:
        tokenizer = Tokenizer(models.BPE(vocab=dict(_BYTE_VOCAB), merges=[]))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    else:
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )  # fmt: skip
        tokenizer.train_from_iterator(corpus.train, trainer)
    tokenizer.decoder = decoders.ByteLevel()
    return TextTokenizer(tokenizer)


# -- blocks -------------------------------------------------------------------------------


def pack(ids: list[int] | Tensor, seq_len: int) -> TensorDataset:
    """``(inputs, next tokens)`` pairs: blocks of ``seq_len + 1`` ids every ``seq_len`` ids."""
    import torch
    from torch.utils.data import TensorDataset

    tokens = torch.as_tensor(ids, dtype=torch.long)
    blocks = (len(tokens) - 1) // seq_len
    if blocks < 1:
        return TensorDataset(torch.empty(0, seq_len, dtype=torch.long),
                             torch.empty(0, seq_len, dtype=torch.long))  # fmt: skip
    windows = tokens[: blocks * seq_len + 1].unfold(0, seq_len + 1, seq_len)
    return TensorDataset(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())


@dataclass
class TextData:
    """Everything a language-model run reads: corpus, tokenizer, and the packed splits."""

    corpus: Corpus
    tokenizer: TextTokenizer
    train: TensorDataset
    val: TensorDataset
    train_tokens: int
    val_tokens: int

    @property
    def vocab_size(self) -> int:
        """How many token ids the tokenizer has."""
        return self.tokenizer.vocab_size


def load(
    spec: str,
    tokenizer_spec: str,
    seq_len: int,
    tokenizer: TextTokenizer | None = None,
    limit_train: int | None = None,
    limit_val: int | None = None,
) -> TextData:
    """Read, tokenize (with ``tokenizer``, e.g. a checkpoint's, or a new one) and pack; the
    limits keep the first blocks of each split."""
    corpus = read_corpus(spec)
    if tokenizer is None:
        tokenizer = make_tokenizer(tokenizer_spec, corpus)
    splits, counts = [], []
    for split, limit in (("train", limit_train), ("val", limit_val)):
        ids = tokenizer.encode_documents(getattr(corpus, split))
        if limit is not None:
            ids = ids[: limit * seq_len + 1]
        packed = pack(ids, seq_len)
        if not len(packed):
            raise DataError(
                f"{spec}: the {split} split has {len(ids):,} tokens, too few for one block of "
                f"--seq-len {seq_len} + 1; give a shorter --seq-len or more text"
            )
        splits.append(packed)
        counts.append(len(ids))
    return TextData(corpus, tokenizer, splits[0], splits[1], counts[0], counts[1])
