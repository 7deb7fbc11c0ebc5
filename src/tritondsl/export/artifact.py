"""config.json of a saved model folder: the schema, how it is written and strictly read.

The fields tritondsl reads are required and typed (a wrong one is refused). Fields it does
not know (written by a newer tritondsl, or added by hand) are kept in the parsed dict and
logged as a warning, never refused. The Hugging Face fields below follow transformers'
conventions, so Hub tooling and model pages recognise the folder; they are checked when
present (folders written before they existed load too). A feature that adds a section
(activation quantization, transformer models) registers it in ``OPTIONAL_FIELDS`` with its
type, or adds a key to ``quantization_config`` (an open dict).

config.json (format_version 1)::

    model_type         "tritondsl"                        (Hugging Face conventions)
    architectures      [the model's name]
    dtype, torch_dtype "float32": the dtype of the computation (transformers 5 reads
                       ``dtype``, older readers ``torch_dtype``)
    card               optional model-card metadata (model_card.CARD_FIELDS)
    activations        only when layers quantize their input: {layer path: {"bits": 8,
                       "method": "static" | "lsq" | "per_token", "dtype": "uint8" | "int8",
                       "granularity": "per_tensor" | "per_token", "spelling": "a8(...)",
                       and for static "observer": "minmax" | "percentile", "percentile",
                       "momentum"}}; the scales are the tensors <layer>.input_quant.*
    quantization_config {"quant_method": "tritondsl", "weights": "ternary", "bits": 2 or
                       1.6, "packing", "scale_granularity": "per_channel" | "per_tensor" |
                       "mixed" | null, "modules_to_not_convert": [layers not ternary]}

    format             "tritondsl"
    format_version     1
    tritondsl_version  the version that wrote the folder
    model              the model's name in model.tdsl
    params             constructor arguments (JSON; a tuple is {"tuple": [...]})
    precision          the precision override (fp32, fp16, int8) or null
    packing            "2bit" or "base3": how ternary codes are stored
    files              {"model.tdsl" | "model.safetensors": {"sha256": hex, "bytes": int}},
                       and "tokenizer.json" for a language model trained on text
    layers             {layer path: precision}, e.g. "ternary(twn, threshold=0.7, per_channel)"
    tensors            {name: {"shape": [...], "dtype": "uint8", and for packed ternary codes
                        "packing": "2bit"|"base3", "trits": K (weights per row)}}
    fp32_bytes         what the state_dict would take with every weight in fp32
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import stat
from pathlib import Path
from typing import Any

import torch

from tritondsl.kernels.packing import packed_cols

FORMAT = "tritondsl"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SOURCE_NAME = "model.tdsl"
TOKENIZER_NAME = "tokenizer.json"  # a language model's tokenizer (Hugging Face's format)
MAX_TOKENIZER_BYTES = 256 * 1024 * 1024
CARD_NAME = "README.md"
PACKINGS = ("2bit", "base3")
MAX_CONFIG_BYTES = 16 * 1024 * 1024
DTYPES = {
    str(d).removeprefix("torch."): d
    for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)
}  # fmt: skip
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONFIG_KEYS = {
    "format": str, "format_version": int, "tritondsl_version": str, "model": str,
    "params": dict, "precision": (str, type(None)), "packing": str, "files": dict,
    "layers": dict, "tensors": dict, "fp32_bytes": int,
}  # fmt: skip
MODEL_TYPE = "tritondsl"
# Checked when present: the Hugging Face fields, and sections features add (name -> type).
OPTIONAL_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model_type": str, "architectures": list, "dtype": str, "torch_dtype": str,
    "quantization_config": dict, "card": dict, "activations": dict,
}  # fmt: skip
# config.json's optional "card" section (model_card.py turns it into ModelCardData).
CARD_FIELDS = ("license", "pipeline_tag", "datasets", "base_model", "metrics", "training")
log = logging.getLogger(__name__)


class ArtifactError(ValueError):
    """A saved model cannot be loaded; the message names the file. One of three kinds:"""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file


class ArtifactNotFoundError(ArtifactError):
    """No such folder or Hub repo (or revision), or it is not in the cache when offline."""


class ArtifactAuthError(ArtifactError):
    """The Hub refused access: a private or gated repo, or a missing or wrong token."""


class CorruptArtifactError(ArtifactError):
    """The folder is there but incomplete, corrupted or hostile (pickles, bad codes, ...)."""


def dump_config(config: dict[str, Any]) -> str:
    """JSON with one line per file, layer and tensor, so diffs and reviews stay readable."""
    lines = []
    for key, value in config.items():
        if key in ("files", "layers", "activations", "tensors", "quantization_config") and value:
            inner = ",\n".join(f"    {json.dumps(k)}: {_json(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {_json(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _version() -> str:
    from tritondsl import __version__

    return __version__


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def parse_config(data: bytes) -> dict[str, Any]:
    """config.json parsed and type-checked (see the module docstring for what is required)."""
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CorruptArtifactError(CONFIG_NAME, f"not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise CorruptArtifactError(CONFIG_NAME, "must hold a JSON object")
    if config.get("format") != FORMAT:
        raise CorruptArtifactError(
            CONFIG_NAME, f"'format' must be {FORMAT!r}; not a tritondsl folder"
        )
    unknown = sorted(config.keys() - _CONFIG_KEYS.keys() - OPTIONAL_FIELDS.keys())
    if unknown:
        log.warning(
            "%s: fields %s are unknown to tritondsl %s (a newer version wrote them?); "
            "kept, not used", CONFIG_NAME, ", ".join(map(repr, unknown)), _version(),
        )  # fmt: skip
    for key, kind in _CONFIG_KEYS.items():
        _expect(config.get(key, ...), kind, key)
    for key, kind in OPTIONAL_FIELDS.items():
        if key in config:
            _expect(config[key], kind, key)
    if "card" in config:
        _check_card(config["card"])
    if config.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        raise CorruptArtifactError(CONFIG_NAME, f"model_type must be {MODEL_TYPE!r}")
    if config.get("architectures", [config["model"]]) != [config["model"]]:
        raise CorruptArtifactError(CONFIG_NAME, f"architectures must be [{config['model']!r}]")
    if config["format_version"] != FORMAT_VERSION:
        raise CorruptArtifactError(
            CONFIG_NAME, f"format_version {config['format_version']} is not {FORMAT_VERSION}; "
            "written by another tritondsl version"
        )  # fmt: skip
    if config["precision"] is not None and config["precision"] not in ("fp32", "fp16", "int8"):
        raise CorruptArtifactError(
            CONFIG_NAME, f"unknown precision override {config['precision']!r}"
        )
    _choice(config["packing"], PACKINGS, "packing")
    if set(config["files"]) - {TOKENIZER_NAME} != {SOURCE_NAME, WEIGHTS_NAME}:
        raise CorruptArtifactError(
            CONFIG_NAME, f"'files' must list {SOURCE_NAME} and {WEIGHTS_NAME} "
            f"(and {TOKENIZER_NAME}, if the model has one) and nothing else"
        )  # fmt: skip
    for name, entry in config["files"].items():
        _expect(entry, dict, f"files.{name}")
        _expect(entry.get("bytes", ...), int, f"files.{name}.bytes")
        _expect(entry.get("sha256", ...), str, f"files.{name}.sha256")
        if not _HEX64.fullmatch(entry["sha256"]) or entry["bytes"] < 0 or len(entry) != 2:
            raise CorruptArtifactError(CONFIG_NAME, f"files.{name} must be {{sha256, bytes}}")
    for name, value in config["layers"].items():
        _expect(value, str, f"layers.{name}")
    for name, value in config.get("activations", {}).items():
        _expect(value, dict, f"activations.{name}")
        if name not in config["layers"]:
            raise CorruptArtifactError(CONFIG_NAME, f"activations.{name}: not in 'layers'")
    for name, entry in config["tensors"].items():
        _check_tensor_entry(name, entry, config["packing"])
    return config


def _check_card(card: dict[str, Any]) -> None:
    unknown = sorted(card.keys() - set(CARD_FIELDS))
    if unknown:
        raise CorruptArtifactError(CONFIG_NAME, f"card: unknown fields {unknown}")
    for key in ("license", "pipeline_tag", "base_model"):
        if key in card:
            _expect(card[key], str, f"card.{key}")
    datasets = card.get("datasets", [])
    for name in [datasets] if isinstance(datasets, str) else datasets:
        _expect(name, str, "card.datasets")
    for key in ("metrics", "training"):
        _expect(card.get(key, {}), dict, f"card.{key}")
    for name, value in card.get("metrics", {}).items():
        _expect(value, (int, float), f"card.metrics.{name}")
        if isinstance(value, bool) or not math.isfinite(value):
            raise CorruptArtifactError(CONFIG_NAME, f"card.metrics.{name} must be a number")
    for name, value in card.get("training", {}).items():
        _expect(value, (str, int, float, type(None)), f"card.training.{name}")


def _check_tensor_entry(name: str, entry: Any, packing: str) -> None:
    where = f"tensors.{name}"
    _expect(entry, dict, where)
    _expect(entry.get("shape", ...), list, f"{where}.shape")
    for dim in entry["shape"]:
        _expect(dim, int, f"{where}.shape")
        if dim < 0:
            raise CorruptArtifactError(CONFIG_NAME, f"{where}.shape has a negative size")
    _choice(entry.get("dtype"), tuple(DTYPES), f"{where}.dtype")
    extra = entry.keys() - {"shape", "dtype"}
    if extra and extra != {"packing", "trits"}:
        raise CorruptArtifactError(CONFIG_NAME, f"{where}: unexpected fields {sorted(extra)}")
    if extra:
        _choice(entry["packing"], (packing,), f"{where}.packing")
        _expect(entry["trits"], int, f"{where}.trits")
        if entry["trits"] < 1:
            raise CorruptArtifactError(CONFIG_NAME, f"{where}.trits must be positive")
        per_byte = 5 if packing == "base3" else 4
        rows = entry["shape"][0] if entry["shape"] else 0
        expected = [rows, packed_cols(entry["trits"], per_byte)]
        if entry["dtype"] != "uint8" or entry["shape"] != expected:
            k = entry["trits"]
            raise CorruptArtifactError(
                CONFIG_NAME, f"{where}: {packing} codes of K={k} must be uint8 {expected}"
            )


def read_file(folder: Path, name: str, limit: int) -> bytes:
    """Bytes of a regular file (symlinks followed, as in the HF cache) of at most ``limit``."""
    path = folder / name
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise CorruptArtifactError(name, "is not a regular file")
        if info.st_size > limit:
            raise CorruptArtifactError(
                name, f"is {info.st_size} bytes, more than the {limit} expected"
            )
        with path.open("rb") as file:
            return file.read(limit + 1)
    except FileNotFoundError:
        raise CorruptArtifactError(name, f"missing from {folder}") from None
    except OSError as error:
        raise CorruptArtifactError(name, f"cannot read: {error.strerror or error}") from None


def encode_param(value: Any, where: str) -> Any:
    """A constructor argument as JSON; tuples are tagged so they come back as tuples."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"parameter {where}: {value} cannot be stored in JSON")
        return value
    if isinstance(value, list):
        return [encode_param(v, where) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode_param(v, where) for v in value]}
    raise ValueError(f"parameter {where}: a {type(value).__name__} cannot be stored in JSON")


def decode_param(value: Any, where: str) -> Any:
    """The constructor argument ``encode_param`` stored; ArtifactError for anything else."""
    if isinstance(value, float) and not math.isfinite(value):  # Python's json reads NaN
        raise CorruptArtifactError(CONFIG_NAME, f"{where}: {value} is not a finite number")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [decode_param(v, where) for v in value]
    if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(decode_param(v, where) for v in value["tuple"])
    raise CorruptArtifactError(CONFIG_NAME, f"{where}: unsupported value {value!r}")


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> None:
    # bool is an int in Python; JSON true must not pass for a count.
    wrong = isinstance(value, bool) and kind is int
    if value is ... or wrong or not isinstance(value, kind):
        got = "missing" if value is ... else f"got {type(value).__name__} {value!r:.60}"
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CorruptArtifactError(CONFIG_NAME, f"{where} must be {names}, {got}")


def _choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise CorruptArtifactError(CONFIG_NAME, f"{where} must be one of {', '.join(choices)}, "
                            f"got {value!r:.60}")  # fmt: skip


def dtype_name(tensor: torch.Tensor) -> str:
    """``float32`` for ``torch.float32``: the spelling config.json uses."""
    return str(tensor.dtype).removeprefix("torch.")


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_entry(data: bytes) -> dict[str, Any]:
    """The ``{"sha256", "bytes"}`` entry config.json and manifest.json keep per file."""
    return {"sha256": sha256(data), "bytes": len(data)}
