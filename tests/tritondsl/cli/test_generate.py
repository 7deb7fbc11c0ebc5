"""`tritondsl train --data text:...` then `tritondsl generate`: streaming, seeds, runtimes,
and one clear error (exit 1, no traceback) for every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.tritondsl.train.conftest import one_thread
from tritondsl.cli import app
from tritondsl.train.text import Corpus, make_tokenizer

__all__ = ["one_thread"]

runner = CliRunner()
PARAMS = ["--param", "vocab=256", "--param", "dim=32", "--param", "layers=1",
          "--param", "heads=2", "--param", "kv_heads=2", "--param", "ffn=128",
          "--param", "context=40"]  # fmt: skip


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoder trained for one epoch on a small text folder (every 20th file validates)."""
    folder = tmp_path_factory.mktemp("lm")
    (folder / "text").mkdir()
    for i in range(40):
        (folder / "text" / f"{i:02d}.txt").write_text(f"{i} bottles of beer on the wall.\n" * 4)
    code, output = invoke("train", "bitnet_b158", "--data", f"text:{folder / 'text'}", *PARAMS,
                          "--seq-len", "32", "--batch-size", "8", "--optimizer", "adamw",
                          "--lr", "0.01", "--no-progress", "-o", str(folder / "run"))  # fmt: skip
    assert code == 0, output
    assert "val loss" in output and " ppl " in output and "tokens/s" in output
    return folder / "run"


def test_generate_continues_the_prompt_deterministically(run: Path) -> None:
    args = ("generate", "bitnet_b158", "--checkpoint", str(run), "--prompt", "12 bottles",
            "--max-new-tokens", "12", "--seed", "5", "--no-stop")  # fmt: skip
    code, first = invoke(*args)
    assert code == 0, first
    assert first.startswith("12 bottles") and "tokens/s" in first
    assert invoke(*args)[1].split("\n")[0] == first.split("\n")[0]  # the same seed, the same text


def test_greedy_in_onnxruntime_matches_pytorch(run: Path, tmp_path: Path) -> None:
    args = ("generate", "bitnet_b158", "--checkpoint", str(run), "--prompt", "3 bottles",
            "--max-new-tokens", "8", "--temperature", "0", "--no-stop", "-q")  # fmt: skip
    code, torch_text = invoke(*args)
    assert code == 0, torch_text
    code, onnx_text = invoke(*args, "--runtime", "onnx", "--onnx", str(tmp_path / "d.onnx"),
                             "-o", str(tmp_path / "out.txt"))  # fmt: skip
    assert code == 0, onnx_text
    assert (tmp_path / "d.onnx").is_file()
    assert (tmp_path / "out.txt").read_text() + "\n" == onnx_text
    # The 2-bit kernels quantize activations: the greedy text may part at a near tie.
    assert onnx_text[:14] == torch_text[:14]


def test_a_hub_folder_generates_too(run: Path, tmp_path: Path) -> None:
    code, output = invoke("export", "bitnet_b158", "--checkpoint", str(run), "--format", "hub",
                          "-o", str(tmp_path / "hub"))  # fmt: skip
    assert code == 0, output
    assert (tmp_path / "hub" / "tokenizer.json").is_file()
    code, output = invoke("generate", "bitnet_b158", "--checkpoint", str(tmp_path / "hub"),
                          "--prompt", "1", "--max-new-tokens", "4")  # fmt: skip
    assert code == 0, output


@pytest.mark.parametrize(("extra", "message"), [
    (["--prompt", "x" * 41], "41 tokens, longer than the model's context of 40"),
    (["--temperature", "-1"], "--temperature"),
    (["--top-p", "0"], r"top_p must be in \(0, 1\]"),
    (["--onnx", "x.onnx"], "needs --runtime onnx"),
])  # fmt: skip
def test_bad_generation_settings(run: Path, extra: list[str], message: str) -> None:
    code, output = invoke("generate", "bitnet_b158", "--checkpoint", str(run), *extra)
    assert code in (1, 2) and re.search(message, output), output


def test_a_tokenizer_of_another_vocabulary_is_refused(run: Path, tmp_path: Path) -> None:
    documents = [f"word{i} and more words" for i in range(100)]
    other = make_tokenizer("bpe:300", Corpus("x", documents, []))
    (tmp_path / "tokenizer.json").write_text(other.to_json())
    code, output = invoke("generate", "bitnet_b158", "--checkpoint", str(run), "--tokenizer",
                          str(tmp_path / "tokenizer.json"))  # fmt: skip
    assert code == 1 and "has 300 tokens but the model's vocabulary is 256" in output


def test_checkpoints_that_are_not_language_models_are_refused(run: Path, tmp_path: Path) -> None:
    code, output = invoke("generate", "resnet18", "--checkpoint", str(run))
    assert code == 1 and "holds model BitNetB158, not ResNet18" in output
    code, output = invoke("generate", "bitnet_b158", "--checkpoint", str(tmp_path / "none"))
    assert code == 1 and "no such folder" in output
    best = run / "checkpoints" / "best"
    state = json.loads((best / "trainer_state.json").read_text())
    assert state["task"] == "language-model"
