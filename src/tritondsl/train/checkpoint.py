"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder (``RUN/checkpoints/last`` after every epoch, ``.../best`` for the
best test accuracy so far)::

    model.safetensors      model.state_dict()
    optimizer.safetensors  optimizer state tensors, keys "state.<param index>.<name>"
    rng.safetensors        RNG states of every process r: "rank<r>.torch",
                           "rank<r>.cuda.<device>", "rank<r>.numpy"
    trainer_state.json     format, epoch, step, config, model spec, optimizer structure
                           (param_groups and where each state tensor went), Python and
                           NumPy RNG scalars, best accuracy, per-epoch history
    model.tdsl             the source the model was built from (for people)
    tokenizer.json         language models: the tokenizer (Hugging Face's format)

Folders are written under a temporary name and renamed into place, so a crash never
leaves half a checkpoint. Reading validates everything (checkpoint_state.py) before the
caller loads anything.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tritondsl.export.artifact import MAX_TOKENIZER_BYTES, TOKENIZER_NAME
from tritondsl.files import replace_dir
from tritondsl.train.checkpoint_state import validate
from tritondsl.train.config import TrainConfig
from tritondsl.train.errors import CheckpointError, DataError
from tritondsl.train.text import TextTokenizer

FORMAT, VERSION = "tritondsl-train-checkpoint", 1
RngState = tuple[dict[str, Tensor], dict[str, Any]]  # tensors, and JSON for the rest
MODEL_FILE, OPTIMIZER_FILE = "model.safetensors", "optimizer.safetensors"
RNG_FILE, STATE_FILE, SOURCE_FILE = "rng.safetensors", "trainer_state.json", "model.tdsl"


@dataclass
class Checkpoint:
    """A checkpoint read from disk; nothing of it is applied yet."""

    path: Path
    state: dict[str, Any]
    model: dict[str, Tensor]
    optimizer: dict[str, Tensor]
    rng: dict[str, Tensor]
    tokenizer_json: str | None = None  # a language model's tokenizer.json text

    @property
    def config(self) -> TrainConfig:
        """The configuration the checkpoint was trained with."""
        return TrainConfig.from_json(self.state["config"])

    def tokenizer(self) -> TextTokenizer | None:
        """The tokenizer a language model was trained with (None for other models)."""
        if self.tokenizer_json is None:
            return None
        try:
            return TextTokenizer.from_json(self.tokenizer_json, str(self.path / TOKENIZER_NAME))
        except DataError as error:
            raise CheckpointError(str(error)) from None


def resolve(path: Path) -> Path:
    """A checkpoint folder, or a run folder's ``checkpoints/last``; CheckpointError if none."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: it does not exist")
    for candidate in (path, path / "checkpoints" / "last"):
        if (candidate / STATE_FILE).is_file():
            return candidate
    raise CheckpointError(
        f"{path} is not a training checkpoint: it has no {STATE_FILE} "
        f"(give a run folder or one of its checkpoints/last, checkpoints/best)"
    )


def read(path: Path) -> Checkpoint:
    """Load a checkpoint's files into memory, checking its format."""
    folder = resolve(path)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{folder / STATE_FILE}: unreadable ({error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{folder / STATE_FILE}: not a {FORMAT} file")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint version {state.get('version')}, this tritondsl reads {VERSION}"
        )
    tensors = {}
    for name in (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE):
        try:
            tensors[name] = load_file(folder / name)
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"{folder / name}: unreadable ({error})") from None
    validate(state, tensors[RNG_FILE], folder / STATE_FILE)
    return Checkpoint(folder, state, tensors[MODEL_FILE], tensors[OPTIMIZER_FILE],
                      tensors[RNG_FILE], read_tokenizer(folder))  # fmt: skip


def read_tokenizer(folder: Path) -> str | None:
    """The text of ``folder/tokenizer.json``, or None when there is none."""
    path = folder / TOKENIZER_NAME
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise CheckpointError(f"{path}: larger than {MAX_TOKENIZER_BYTES:,} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable ({error})") from None


def write(
    folder: Path,
    weights: dict[str, Tensor],
    optimizer: dict[str, Any],
    names: list[str],
    state: dict[str, Any],
    rngs: list[RngState] | None = None,
    tokenizer_json: str | None = None,
) -> None:
    """Write a checkpoint folder atomically.

    ``weights`` and ``optimizer`` are full state dicts (the optimizer's index-keyed, its
    parameters called ``names``, see ``param_names``); ``state`` is the JSON part (minus
    the optimizer structure); ``rngs`` holds each process's ``rng_state()`` in rank order
    (this process's alone by default); ``tokenizer_json`` a language model's tokenizer.
    """
    tensors, structure = flatten_optimizer(optimizer, names)
    rng_tensors: dict[str, Tensor] = {}
    rng_json = []
    for rank, (values, extra) in enumerate(rngs or [rng_state()]):
        rng_tensors.update({f"rank{rank}.{k}": v.cpu() for k, v in values.items()})
        rng_json.append(extra)
    full = {"format": FORMAT, "version": VERSION, **state, "optimizer": structure,
            "rng": rng_json}  # fmt: skip
    model_tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}

    def fill(tmp: Path) -> None:
        save_file(model_tensors, tmp / MODEL_FILE, metadata={"format": FORMAT})
        save_file(tensors, tmp / OPTIMIZER_FILE, metadata={"format": FORMAT})
        save_file(rng_tensors, tmp / RNG_FILE, metadata={"format": FORMAT})
        (tmp / STATE_FILE).write_text(json.dumps(full, indent=1) + "\n")
        (tmp / SOURCE_FILE).write_text(state["spec"]["source"])
        if tokenizer_json is not None:
            (tmp / TOKENIZER_NAME).write_text(tokenizer_json, encoding="utf-8")

    replace_dir(folder, fill)


def copy(source: Path, target: Path) -> None:
    """Copy a checkpoint folder atomically (``last`` to ``best``)."""
    replace_dir(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))


def check_model(checkpoint: Checkpoint, model: nn.Module) -> None:
    """Raise CheckpointError unless the checkpoint's tensors fit ``model`` exactly."""
    spec, mine = checkpoint.state["spec"], model.tdsl_spec
    where = checkpoint.path
    if spec["model"] != mine.model:
        raise CheckpointError(f"{where} holds model {spec['model']}, this run builds {mine.model}")
    if spec["source"] != mine.source:
        raise CheckpointError(
            f"{where} was trained from different .tdsl source (its copy is "
            f"{where / SOURCE_FILE}); resume with that source"
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(checkpoint.model))
    extra = sorted(set(checkpoint.model) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{where} does not fit model {mine.model}: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, tensor in expected.items():
        theirs = checkpoint.model[name]
        if theirs.shape != tensor.shape or theirs.dtype != tensor.dtype:
            raise CheckpointError(
                f"{where} does not fit model {mine.model}: {name} is {list(theirs.shape)} "
                f"{theirs.dtype} there, {list(tensor.shape)} {tensor.dtype} here"
            )


def param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[str]:
    """The model's names of the optimizer's parameters, in the optimizer's (index) order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in optimizer.param_groups for p in g["params"]]


def flatten_optimizer(
    state_dict: dict[str, Any], names: list[str]
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer state_dict as safetensors tensors plus a JSON structure that names them."""
    tensors: dict[str, Tensor] = {}
    state: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        state[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, Tensor):
                key = f"state.{index}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                state[str(index)][name] = {"tensor": key}
            else:
                state[str(index)][name] = {"value": _jsonable(value)}
    groups = [{k: _jsonable(v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"state": state, "param_groups": groups, "param_names": names}


def load_optimizer(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    checkpoint: Checkpoint,
    load: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Restore the optimizer from a checkpoint (after checking it covers the same tensors).

    ``load`` takes the full index-keyed state dict (default ``optimizer.load_state_dict``).
    """
    structure = checkpoint.state["optimizer"]
    if structure["param_names"] != param_names(optimizer, model):
        raise CheckpointError(f"{checkpoint.path}: the optimizer state is for other parameters")
    template = optimizer.state_dict()["param_groups"]
    if len(template) != len(structure["param_groups"]):
        raise CheckpointError(f"{checkpoint.path}: the optimizer has other parameter groups")
    groups = []
    for saved, fresh in zip(structure["param_groups"], template, strict=True):
        # JSON turned tuples (AdamW's betas) into lists; give them their type back.
        groups.append({k: tuple(v) if isinstance(fresh.get(k), tuple) else v
                       for k, v in saved.items()})  # fmt: skip
    state: dict[int, dict[str, Any]] = {}
    for index, entries in structure["state"].items():
        state[int(index)] = {}
        for name, ref in entries.items():
            if "tensor" in ref:
                if ref["tensor"] not in checkpoint.optimizer:
                    raise CheckpointError(f"{checkpoint.path}: {ref['tensor']} is missing")
                state[int(index)][name] = checkpoint.optimizer[ref["tensor"]]
            else:
                state[int(index)][name] = ref["value"]
    try:
        (load or optimizer.load_state_dict)({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{checkpoint.path}: optimizer state does not fit: {error}") from None


def rng_state() -> RngState:
    """Every RNG a training step may draw from: tensors, plus Python's state as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = value
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    extra = {"python": [version, list(internal), gauss],
             "numpy": [kind, int(pos), int(has_gauss), float(cached)]}  # fmt: skip
    return tensors, extra


def restore_rng(checkpoint: Checkpoint, rank: int = 0) -> None:
    """Put this process's RNGs back where the checkpoint left them.

    A rank the checkpoint has no state for (more processes than when it was written)
    takes rank 0's: the run goes on, though not as the longer run would have.
    """
    saved = checkpoint.state["rng"]
    if rank >= len(saved):
        rank = 0
    prefix = f"rank{rank}."
    tensors = {k[len(prefix) :]: v for k, v in checkpoint.rng.items() if k.startswith(prefix)}
    extra = saved[rank]
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    kind, pos, has_gauss, cached = extra["numpy"]
    keys = tensors["numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    version, internal, gauss = extra["python"]
    random.setstate((version, tuple(internal), gauss))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    raise CheckpointError(f"cannot store {type(value).__name__} {value!r} in a checkpoint")


def load_trained(checkpoint_path: Path) -> nn.Module:
    """The trained model of a checkpoint folder, or of a run folder's best checkpoint (eval)."""
    return model_of(best_of(checkpoint_path))


def tokenizer_of(checkpoint_path: Path) -> TextTokenizer | None:
    """The tokenizer of the checkpoint ``load_trained`` reads (None if it has none)."""
    best = checkpoint_path / "checkpoints" / "best"
    folder = resolve(best if (best / STATE_FILE).is_file() else checkpoint_path)
    saved = read_tokenizer(folder)
    return None if saved is None else TextTokenizer.from_json(saved, str(folder / TOKENIZER_NAME))


def best_of(path: Path) -> Checkpoint:
    """A run folder's best checkpoint, or the checkpoint folder ``path`` (read, not applied)."""
    best = path / "checkpoints" / "best"
    return read(best if (best / STATE_FILE).is_file() else path)


def model_of(checkpoint: Checkpoint) -> nn.Module:
    """The model a checkpoint holds, built from its spec and loaded (eval mode)."""
    from tritondsl.train.build import build_model

    spec = checkpoint.state["spec"]
    model = build_model(spec["source"], spec["model"], spec["params"], spec["precision"])
    check_model(checkpoint, model)
    model.load_state_dict(checkpoint.model)
    return model.eval()


# The training settings a model card lists (beside data, epochs, steps).
TRAINING_CARD = ("batch_size", "optimizer", "lr", "weight_decay", "schedule", "precision", "seed")
# Built-in datasets under their Hugging Face Hub names, for model cards.
HUB_DATASETS = {"fashion-mnist": "zalando-datasets/fashion_mnist",
                "fashion-mnist-5k": "zalando-datasets/fashion_mnist"}  # fmt: skip


def card(checkpoint: Checkpoint) -> dict[str, Any]:
    """Model-card metadata of a checkpoint: its dataset, how it was trained, and its own
    test accuracy (a language model: validation perplexity, loss and next-token accuracy)."""
    info: dict[str, Any] = {}
    state, config = checkpoint.state, checkpoint.state["config"]
    history = state.get("history") or []
    language_model = state.get("task") == "language-model"
    if history:
        last = history[-1]
        info["metrics"] = {"accuracy": float(last["test_acc"])}
        if language_model:
            info["metrics"].update(perplexity=float(last["test_ppl"]),
                                   loss=float(last["test_loss"]))  # fmt: skip
    dataset = HUB_DATASETS.get(config.get("data"))
    if dataset is not None:
        info.update(datasets=[dataset], pipeline_tag="image-classification")
    if language_model:
        info["pipeline_tag"] = "text-generation"
    trained = {"data": config.get("data"), "epochs": state.get("epoch"), "steps": state.get("step"),
               **{k: config.get(k) for k in TRAINING_CARD}}  # fmt: skip
    if language_model:
        trained.update(tokenizer=config.get("tokenizer"),
                       seq_len=state.get("seq_len", config.get("seq_len")))  # fmt: skip
    info["training"] = trained
    return info


def to_hub(checkpoint_path: Path, hub_dir: Path) -> Path:
    """Turn a checkpoint (say ``RUN/checkpoints/best``) into a Hub folder (save_pretrained)."""
    from tritondsl.export.hub import save_pretrained

    checkpoint = read(checkpoint_path)
    save_pretrained(model_of(checkpoint), hub_dir, card=card(checkpoint),
                    tokenizer=checkpoint.tokenizer_json)  # fmt: skip
    return hub_dir
