"""Pretrained weights (``--init``, ``--teacher``): read a state_dict without running code,
then match it to a model key by key.

What can be read:

* ``.safetensors``: raw tensors under a JSON header;
* ``.pth`` / ``.pt`` / ``.bin``: a pickled state_dict, read only by ``torch.load`` with
  ``weights_only=True``, whose unpickler builds nothing but tensors and plain
  containers (any other object, a whole pickled model or a TorchScript archive is refused
  before anything is constructed); one level of ``{"state_dict": ...}`` / ``{"model": ...}``
  wrapping is unwrapped;
* a folder: a tritondsl Hub folder (``save_pretrained``; its ternary layers come back as
  their dequantized float weights), a training checkpoint or run folder (its
  ``checkpoints/best``), or any folder with ``model.safetensors`` (or the shards a
  ``model.safetensors.index.json`` lists).

Keys saved by ``DistributedDataParallel`` (``module.``) or ``torch.compile``
(``_orig_mod.``) lose that prefix when every key has it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from tritondsl.backend.layers import LEARNED_SCALE_NAMES, QuantModule
from tritondsl.backend.quantizers import Learned
from tritondsl.train.errors import CheckpointError

PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
SAFETENSORS_FILE, INDEX_FILE = "model.safetensors", "model.safetensors.index.json"
SHOWN = 8  # keys listed per kind in a message


@dataclass
class Weights:
    """A state_dict read from ``path`` (the file or folder actually read)."""

    path: Path
    tensors: dict[str, Tensor]
    notes: list[str] = field(default_factory=list)  # what reading changed (unwrapping...)


@dataclass
class LoadReport:
    """How a state_dict matched a model: which keys loaded and which did not."""

    source: Path
    loaded: list[str]
    missing: list[str]  # the model has them, the file does not
    unexpected: list[str]  # the file has them, the model does not
    reshaped: list[str]  # both have them, with other shapes: "key: file [..], model [..]"
    reinitialized: list[str]  # the model's tensors kept at their fresh initialization

    def line(self) -> str:
        """One line for the run log."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.reinitialized:
            parts.append(f"{len(self.reinitialized)} re-initialized")
        for name in ("missing", "unexpected", "reshaped"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{len(keys)} {name} ({_listed(keys, None)})")
        return "; ".join(parts)


def read(path: Path, what: str = "--init") -> Weights:
    """The state_dict in a weights file or folder; CheckpointError (naming ``what``) if none."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {path}: no such file or folder")
    if path.is_dir():
        weights = _read_folder(path, what)
    elif path.suffix == ".safetensors":
        weights = Weights(path, _read_safetensors(path, what))
    elif path.suffix in PICKLE_SUFFIXES:
        weights = _read_pickle(path, what)
    else:
        raise CheckpointError(
            f"{what} {path}: unknown weights format {path.suffix or '(no suffix)'!r}; give a "
            ".safetensors or .pth/.pt file, or a Hub, checkpoint or save_pretrained folder"
        )
    _strip_prefixes(weights)
    for key, tensor in weights.tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{what} {weights.path}: tensor {key!r} holds NaN or Inf")
    return weights


def load_into(
    model: nn.Module, weights: Weights, strict: bool = True, reinit: Iterable[str] = (),
    what: str = "--init",
) -> LoadReport:  # fmt: skip
    """Copy the tensors of ``weights`` that fit into ``model``; with ``strict`` every tensor
    of the model must come from the file and every tensor of the file must fit.

    ``reinit`` names modules (``fc``, ``classifier.1``) whose tensors keep the model's
    fresh initialization, e.g. a classifier for another number of classes.
    """
    expected = model.state_dict()
    modules = dict(model.named_modules())
    fresh = set()
    for name in reinit:
        if name not in modules or not name:
            raise CheckpointError(f"--reinit {name!r}: the model has no module of that name")
        fresh |= {k for k in expected if _under(k, name)}
    theirs = {k: v for k, v in weights.tensors.items() if not any(_under(k, n) for n in reinit)}
    fillable = _fillable_scales(model, theirs)
    missing = sorted(set(expected) - set(theirs) - fresh - fillable)
    unexpected = sorted(set(theirs) - set(expected))
    reshaped = [
        f"{k}: file {list(theirs[k].shape)}, model {list(expected[k].shape)}"
        for k in sorted(set(theirs) & set(expected))
        if theirs[k].shape != expected[k].shape
    ]
    loadable = {k: v for k, v in theirs.items() if k in expected and v.shape == expected[k].shape}
    if strict and (missing or unexpected or reshaped):
        raise CheckpointError(_mismatch(weights.path, what, missing, unexpected, reshaped,
                                        _classifier_hint(theirs, expected)))  # fmt: skip
    try:
        model.load_state_dict(loadable, strict=False)
    except (ValueError, RuntimeError) as error:
        raise CheckpointError(f"{what} {weights.path}: {error}") from None
    return LoadReport(weights.path, sorted(loadable), missing, unexpected, reshaped,
                      sorted(fresh))  # fmt: skip


def float_state(model: nn.Module) -> dict[str, Tensor]:
    """A model's state_dict with every deployed layer's storage turned back into ``weight``."""
    state = dict(model.state_dict())
    for name, layer in model.named_modules():
        if not (isinstance(layer, QuantModule) and layer.deployed):
            continue
        prefix = f"{name}." if name else ""
        for stored in layer.storage_tensors():
            if stored not in LEARNED_SCALE_NAMES:  # trained two-scale layers keep theirs
                del state[prefix + stored]
        state[prefix + "weight"] = layer.decomposition().dequantize().reshape(layer.weight_shape)
    return state


def digest(model: nn.Module) -> str:
    """A short hash of every tensor of a model (to tell whether two teachers are the same)."""
    import hashlib

    hasher = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        hasher.update(key.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(flat.view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:16]


# -- reading --------------------------------------------------------------------------


def is_hub_folder(path: Path) -> bool:
    """Whether ``path`` is a folder written by tritondsl's ``save_pretrained``."""
    from tritondsl.export.artifact import CONFIG_NAME, FORMAT

    return (path / CONFIG_NAME).is_file() and _json_field(path / CONFIG_NAME, "format") == FORMAT


def _read_folder(folder: Path, what: str) -> Weights:
    from tritondsl.train.checkpoint import STATE_FILE

    if is_hub_folder(folder):
        return _read_hub(folder, what)
    for candidate in (folder / "checkpoints" / "best", folder):
        if (candidate / STATE_FILE).is_file():
            return Weights(candidate / SAFETENSORS_FILE,
                           _read_safetensors(candidate / SAFETENSORS_FILE, what))  # fmt: skip
    if (folder / SAFETENSORS_FILE).is_file():
        return Weights(folder / SAFETENSORS_FILE,
                       _read_safetensors(folder / SAFETENSORS_FILE, what))  # fmt: skip
    if (folder / INDEX_FILE).is_file():
        return _read_shards(folder / INDEX_FILE, what)
    raise CheckpointError(
        f"{what} {folder}: not a Hub, checkpoint or save_pretrained folder (it has no "
        f"{SAFETENSORS_FILE}); give a weights file (.safetensors, .pth, .pt) itself"
    )


def _read_hub(folder: Path, what: str) -> Weights:
    from tritondsl.export.hub import ArtifactError, from_pretrained

    try:
        model = from_pretrained(folder)
    except ArtifactError as error:
        raise CheckpointError(f"{what} {folder}: {error}") from None
    note = "a Hub folder: quantized layers start from their dequantized weights"
    return Weights(folder, float_state(model), [note])


def _read_shards(index: Path, what: str) -> Weights:
    weight_map = _json_field(index, "weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{what} {index}: no weight_map of key -> file name")
    tensors: dict[str, Tensor] = {}
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        # A shard name is data: it may only name a file beside the index.
        if Path(name).name != name or not shard.is_file():
            raise CheckpointError(f"{what} {index}: shard {name!r} is not a file in {index.parent}")
        tensors.update(_read_safetensors(shard, what))
    return Weights(index, tensors)


def _read_safetensors(path: Path, what: str) -> dict[str, Tensor]:
    try:
        return load_file(path)
    except Exception as error:  # the Rust parser raises its own SafetensorError
        raise CheckpointError(f"{what} {path}: not a readable safetensors file ({error})") from None


def _read_pickle(path: Path, what: str) -> Weights:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # every failure of the restricted unpickler means "refused"
        raise CheckpointError(f"{what} {path}: refused: {_pickle_reason(error)}") from None
    notes = []
    if isinstance(loaded, Mapping) and not _is_state(loaded):
        wrapped = [k for k in WRAPPER_KEYS if isinstance(loaded.get(k), Mapping)]
        if wrapped:
            notes.append(f"took the state_dict under key {wrapped[0]!r}")
            loaded = loaded[wrapped[0]]
    if not (isinstance(loaded, Mapping) and _is_state(loaded)):
        raise CheckpointError(
            f"{what} {path}: refused: {_describe(loaded)}, not a state_dict "
            "(a mapping of names to tensors); save model.state_dict()"
        )
    return Weights(path, dict(loaded), notes)


def _pickle_reason(error: Exception) -> str:
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"it holds a Python object ({found.group(1)}), not only tensors; only a plain "
            "state_dict is read (torch.load weights_only=True), so nothing in it ran"
        )
    if "TorchScript" in text:
        return "a TorchScript archive, not a state_dict"
    if "central directory" in text or isinstance(error, EOFError | KeyError):
        return "not a torch.save file, or a truncated one"
    return f"not a plain state_dict ({type(error).__name__}: {text.splitlines()[0][:200]})"


def _is_state(mapping: Mapping[Any, Any]) -> bool:
    return bool(mapping) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in mapping.items()
    )


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        if not value:
            return "an empty mapping"
        kinds = sorted({type(v).__name__ for v in value.values() if not isinstance(v, Tensor)})
        return f"a mapping with non-tensor values ({', '.join(kinds) or 'non-string keys'})"
    return f"a {type(value).__name__}"


def _json_field(path: Path, name: str) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(name) if isinstance(data, dict) else None


def _strip_prefixes(weights: Weights) -> None:
    for prefix in PREFIXES:
        keys = list(weights.tensors)
        if keys and all(k.startswith(prefix) for k in keys):
            weights.tensors = {k[len(prefix) :]: v for k, v in weights.tensors.items()}
            weights.notes.append(f"dropped the key prefix {prefix!r}")


# -- matching -------------------------------------------------------------------------


def _under(key: str, module: str) -> bool:
    return key.startswith(module + ".")


def _fillable_scales(model: nn.Module, theirs: Mapping[str, Tensor]) -> set[str]:
    """Learned scale keys a float checkpoint lacks: the layer derives them from the weight."""
    fillable = set()
    for name, layer in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(layer, QuantModule) and isinstance(layer.quantizer, Learned):
            keys = {prefix + n for n in LEARNED_SCALE_NAMES}
            if prefix + "weight" in theirs and not keys & set(theirs):
                fillable |= keys
    return fillable


def _classifier_hint(theirs: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> str:
    """Suggest --reinit when the tensors that differ in shape are one module's, by rows."""
    modules = {k.rsplit(".", 1)[0] for k in theirs if k in expected
               and theirs[k].shape != expected[k].shape and "." in k}  # fmt: skip
    if len(modules) != 1:
        return ""
    (module,) = modules
    weight = f"{module}.weight"
    if (
        weight in theirs
        and weight in expected
        and theirs[weight].shape[1:] == expected[weight].shape[1:]
    ):
        rows, mine = theirs[weight].shape[0], expected[weight].shape[0]
        return (f"\n{module} has {rows} outputs in the file and {mine} in the model (another "
                f"number of classes?): add --reinit {module} to start it fresh")  # fmt: skip
    return ""


def _mismatch(path: Path, what: str, missing: list[str], unexpected: list[str],
              reshaped: list[str], hint: str) -> str:  # fmt: skip
    lines = [f"{what} {path} does not fit the model:"]
    for name, keys in (("missing", missing), ("unexpected", unexpected), ("reshaped", reshaped)):
        if keys:
            lines.append(f"  {len(keys)} {name}: {_listed(keys)}")
    tail = "\nwith --no-init-strict the tensors that fit load and the rest are reported"
    return "\n".join(lines) + hint + tail


def _listed(keys: list[str], limit: int | None = SHOWN) -> str:
    """The keys, comma-separated; past ``limit`` of them, how many more."""
    if limit is None or len(keys) <= limit:
        return ", ".join(keys)
    return ", ".join(keys[:limit]) + f", ... ({len(keys) - limit} more)"
