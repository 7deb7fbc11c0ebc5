"""``tritondsl generate``: continue a prompt with a trained language model, streaming."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tritondsl.cli.app import EXIT_INPUT, Quiet, Verbose, app, fail
from tritondsl.cli.choices import Runtime

if TYPE_CHECKING:
    from torch import nn

    from tritondsl.generation import Decoder, Sampling
    from tritondsl.train.text import TextTokenizer

log = logging.getLogger(__name__)


@app.command()
def generate(
    file: Annotated[str, typer.Argument(help="a .tdsl file or a zoo name", show_default=False)],
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="a training run, one of its checkpoints, or a save_pretrained folder",
            show_default=False,
        ),
    ],
    prompt: Annotated[str, typer.Option(help="text to continue ('' starts a new document)")] = "",
    max_new_tokens: Annotated[int, typer.Option(min=1, help="tokens to add at most")] = 200,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 is greedy")] = 0.8,
    top_k: Annotated[int | None, typer.Option(min=1, help="sample from the k likeliest")] = None,
    top_p: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="sample from the nucleus of mass p")
    ] = None,
    seed: Annotated[int, typer.Option(help="the same seed gives the same text")] = 0,
    runtime: Annotated[
        Runtime, typer.Option(help="torch, or onnx: onnxruntime with 2-bit MatMulNBits kernels")
    ] = Runtime.torch,
    onnx_file: Annotated[
        Path | None, typer.Option("--onnx", help="onnx: also keep the decoder file here")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads (default: all)")] = None,
    stop: Annotated[bool, typer.Option(help="stop at the end of a document (a % line)")] = True,
    model: Annotated[str | None, typer.Option(help="which model, if the file has several")] = None,
    tokenizer_file: Annotated[
        Path | None,
        typer.Option("--tokenizer", help="a tokenizer.json (default: the checkpoint's)"),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="also write the text to this file")
    ] = None,
    _v: Verbose = 0,
    _q: Quiet = False,
) -> None:
    """Continue --prompt with the trained model, printing each piece as it is chosen.

    Sampling: --temperature (0: greedy), --top-k, --top-p, --seed. The prompt and the text
    go to stdout; speed and notes to stderr.
    """
    import torch

    from tritondsl.compiler.diagnostics import CompileError
    from tritondsl.export.artifact import ArtifactError
    from tritondsl.generation import GenerationError, Sampling
    from tritondsl.train.errors import TrainingError

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        sampling = Sampling(temperature, top_k, top_p, seed)
        built, tokenizer = _load(file, model, checkpoint, tokenizer_file)
        decoder = _decoder(built, runtime, onnx_file, threads)
        _check_vocabulary(tokenizer, decoder.vocab_size, checkpoint, tokenizer_file)
        text = _stream(decoder, tokenizer, prompt, max_new_tokens, sampling, stop)
    except CompileError as error:
        typer.echo(error.render(), err=True)
        raise typer.Exit(EXIT_INPUT) from None
    except (GenerationError, TrainingError, ArtifactError, ValueError, OSError) as error:
        fail(str(error))
    if output is not None:
        from tritondsl.files import write_atomically

        write_atomically(output, (prompt + text).encode("utf-8"))


def _load(
    file: str, model: str | None, folder: Path, tokenizer_file: Path | None
) -> tuple[nn.Module, TextTokenizer]:
    """The model in ``folder`` (checked to be the one ``file`` names) and its tokenizer."""
    from tritondsl.export.formats import from_folder, prepare
    from tritondsl.export.hub import read_tokenizer
    from tritondsl.train.checkpoint import STATE_FILE, load_trained, tokenizer_of
    from tritondsl.train.text import TextTokenizer

    runs = (folder, folder / "checkpoints" / "best", folder / "checkpoints" / "last")
    training = any((candidate / STATE_FILE).is_file() for candidate in runs)
    loaded = load_trained(folder) if training else from_folder(folder)
    built, _, notes = prepare(file, model, loaded)
    for note in notes:
        log.warning("%s", note)
    if tokenizer_file is not None:
        try:
            saved: str | None = tokenizer_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--tokenizer {tokenizer_file}: unreadable ({error})") from None
        return built, TextTokenizer.from_json(saved or "", str(tokenizer_file))
    if training:
        found = tokenizer_of(folder)
        if found is not None:
            return built, found
    else:
        saved = read_tokenizer(folder)
        if saved is not None:
            return built, TextTokenizer.from_json(saved, str(folder / "tokenizer.json"))
    raise ValueError(
        f"{folder} has no tokenizer.json: it was not trained on text with tritondsl; "
        "give the tokenizer with --tokenizer FILE"
    )


def _decoder(model: nn.Module, runtime: Runtime, onnx_file: Path | None,
             threads: int | None) -> Decoder:  # fmt: skip
    """A decoder over ``model`` in PyTorch, or over its exported ONNX decoder."""
    from tritondsl.generation import TorchDecoder
    from tritondsl.progress import task

    if runtime == Runtime.torch:
        if onnx_file is not None:
            raise typer.BadParameter("needs --runtime onnx", param_hint="--onnx")
        return TorchDecoder(model)
    from tritondsl.export.onnx_decoder import export_decoder
    from tritondsl.export.onnx_decoder_runner import OnnxDecoder

    with tempfile.TemporaryDirectory(prefix="tritondsl-decoder-") as folder:
        path = onnx_file or Path(folder) / "decoder.onnx"
        with task("exporting the ONNX decoder"):
            exported = export_decoder(model, path)
        if not exported.ok:
            lines = "; ".join(check.line() for check in exported.checks)
            raise ValueError(f"the ONNX decoder does not match the PyTorch model: {lines}")
        log.info("ONNX decoder%s: %s", f" written to {path}" if onnx_file else "",
                 _linear_summary(exported.layers))  # fmt: skip
        return OnnxDecoder(path, threads)


def _linear_summary(layers: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for how in layers.values():
        counts[how] = counts.get(how, 0) + 1
    return ", ".join(f"{n} Linear layer(s) {how}" for how, n in sorted(counts.items()))


def _check_vocabulary(tokenizer: TextTokenizer, vocab: int, checkpoint: Path,
                      tokenizer_file: Path | None) -> None:  # fmt: skip
    if tokenizer.vocab_size != vocab:
        source = f"--tokenizer {tokenizer_file}" if tokenizer_file else f"{checkpoint}'s tokenizer"
        raise ValueError(
            f"{source} has {tokenizer.vocab_size} tokens but the model's vocabulary is {vocab}: "
            "the tokenizer and the weights come from different runs"
        )


def _stream(decoder: Decoder, tokenizer: TextTokenizer, prompt: str, max_new_tokens: int,
            sampling: Sampling, stop: bool) -> str:  # fmt: skip
    """Generate after ``prompt``, echoing the text as it grows; return the new text."""
    from tritondsl.generation import generate
    from tritondsl.train.text import SEPARATOR

    # An empty prompt starts a new document: the model saw one begin after each separator.
    ids = tokenizer.encode(prompt) if prompt else tokenizer.encode(SEPARATOR)
    typer.echo(prompt, nl=False)
    new: list[int] = []
    shown = ""

    def document_ends(tokens: list[int]) -> bool:
        return stop and SEPARATOR in tokenizer.decode(tokens)

    start = time.perf_counter()
    for token in generate(decoder, ids, max_new_tokens, sampling, document_ends):
        new.append(token)
        text = tokenizer.decode(new).split(SEPARATOR)[0] if stop else tokenizer.decode(new)
        # A character whose bytes have not all arrived decodes to U+FFFD: hold it back.
        ready = text.rstrip("\ufffd")
        if len(ready) > len(shown):
            typer.echo(ready[len(shown):], nl=False)
            shown = ready
    seconds = time.perf_counter() - start
    final = tokenizer.decode(new)
    final = final.split(SEPARATOR)[0] if stop else final
    typer.echo(final[len(shown):])
    rate = len(new) / max(seconds, 1e-9)
    log.info("%d tokens in %.2f s (%.1f tokens/s)", len(new), seconds, rate)
    return final
