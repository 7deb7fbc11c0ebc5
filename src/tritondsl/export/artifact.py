"""config.json of a saved model folder: the schema, how it is written and strictly read.

Every field is required and typed; unknown fields are refused, so a config.json written by
a newer format or edited by hand fails loudly instead of being half understood.

config.json (format_version 1)::

    format             "tritondsl"
    format_version     1
    tritondsl_version  the version that wrote the folder
    model              the model's name in model.tdsl
    params             constructor arguments (JSON; a tuple is {"tuple": [...]})
    precision          the precision override (fp32, fp16, int8) or null
    packing            "2bit" or "base3": how ternary codes are stored
    files              {"model.tdsl" | "model.safetensors": {"sha256": hex, "bytes": int}}
    layers             {layer path: precision}, e.g. "ternary(twn, threshold=0.7, per_channel)"
    tensors            {name: {"shape": [...], "dtype": "uint8", and for packed ternary codes
                        "packing": "2bit"|"base3", "trits": K (weights per row)}}
    fp32_bytes         what the state_dict would take with every weight in fp32
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import stat
from pathlib import Path
from typing import Any

import torch

from tritondsl.backend.packing import packed_cols

FORMAT = "tritondsl"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SOURCE_NAME = "model.tdsl"
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


class ArtifactError(ValueError):
    """A saved model folder is incomplete, corrupted or hostile; the message names the file."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file


def dump_config(config: dict[str, Any]) -> str:
    """JSON with one line per file, layer and tensor, so diffs and reviews stay readable."""
    lines = []
    for key, value in config.items():
        if key in ("files", "layers", "tensors") and value:
            inner = ",\n".join(f"    {json.dumps(k)}: {_json(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {_json(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def parse_config(data: bytes) -> dict[str, Any]:
    """config.json parsed and type-checked; every field is required, none is extra."""
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ArtifactError(CONFIG_NAME, f"not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ArtifactError(CONFIG_NAME, "must hold a JSON object")
    if config.get("format") != FORMAT:
        raise ArtifactError(CONFIG_NAME, f"'format' must be {FORMAT!r}; not a tritondsl folder")
    unknown = sorted(config.keys() - _CONFIG_KEYS.keys())
    if unknown:
        raise ArtifactError(CONFIG_NAME, f"unknown field {unknown[0]!r}")
    for key, kind in _CONFIG_KEYS.items():
        _expect(config.get(key, ...), kind, key)
    if config["format_version"] != FORMAT_VERSION:
        raise ArtifactError(
            CONFIG_NAME, f"format_version {config['format_version']} is not {FORMAT_VERSION}; "
            "written by another tritondsl version"
        )  # fmt: skip
    if config["precision"] is not None and config["precision"] not in ("fp32", "fp16", "int8"):
        raise ArtifactError(CONFIG_NAME, f"unknown precision override {config['precision']!r}")
    _choice(config["packing"], PACKINGS, "packing")
    if set(config["files"]) != {SOURCE_NAME, WEIGHTS_NAME}:
        raise ArtifactError(CONFIG_NAME, f"'files' must list {SOURCE_NAME} and {WEIGHTS_NAME}")
    for name, entry in config["files"].items():
        _expect(entry, dict, f"files.{name}")
        _expect(entry.get("bytes", ...), int, f"files.{name}.bytes")
        _expect(entry.get("sha256", ...), str, f"files.{name}.sha256")
        if not _HEX64.fullmatch(entry["sha256"]) or entry["bytes"] < 0 or len(entry) != 2:
            raise ArtifactError(CONFIG_NAME, f"files.{name} must be {{sha256, bytes}}")
    for name, value in config["layers"].items():
        _expect(value, str, f"layers.{name}")
    for name, entry in config["tensors"].items():
        _check_tensor_entry(name, entry, config["packing"])
    return config


def _check_tensor_entry(name: str, entry: Any, packing: str) -> None:
    where = f"tensors.{name}"
    _expect(entry, dict, where)
    _expect(entry.get("shape", ...), list, f"{where}.shape")
    for dim in entry["shape"]:
        _expect(dim, int, f"{where}.shape")
        if dim < 0:
            raise ArtifactError(CONFIG_NAME, f"{where}.shape has a negative size")
    _choice(entry.get("dtype"), tuple(DTYPES), f"{where}.dtype")
    extra = entry.keys() - {"shape", "dtype"}
    if extra and extra != {"packing", "trits"}:
        raise ArtifactError(CONFIG_NAME, f"{where}: unexpected fields {sorted(extra)}")
    if extra:
        _choice(entry["packing"], (packing,), f"{where}.packing")
        _expect(entry["trits"], int, f"{where}.trits")
        if entry["trits"] < 1:
            raise ArtifactError(CONFIG_NAME, f"{where}.trits must be positive")
        per_byte = 5 if packing == "base3" else 4
        rows = entry["shape"][0] if entry["shape"] else 0
        expected = [rows, packed_cols(entry["trits"], per_byte)]
        if entry["dtype"] != "uint8" or entry["shape"] != expected:
            raise ArtifactError(CONFIG_NAME, f"{where}: {packing} codes of K={entry['trits']} "
                                f"must be uint8 {expected}")  # fmt: skip


def read_file(folder: Path, name: str, limit: int) -> bytes:
    """Bytes of a regular file (symlinks followed, as in the HF cache) of at most ``limit``."""
    path = folder / name
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(name, "is not a regular file")
        if info.st_size > limit:
            raise ArtifactError(name, f"is {info.st_size} bytes, more than the {limit} expected")
        with path.open("rb") as file:
            return file.read(limit + 1)
    except FileNotFoundError:
        raise ArtifactError(name, f"missing from {folder}") from None
    except OSError as error:
        raise ArtifactError(name, f"cannot read: {error.strerror or error}") from None


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
        raise ArtifactError(CONFIG_NAME, f"{where}: {value} is not a finite number")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [decode_param(v, where) for v in value]
    if isinstance(value, dict) and set(value) == {"tuple"} and isinstance(value["tuple"], list):
        return tuple(decode_param(v, where) for v in value["tuple"])
    raise ArtifactError(CONFIG_NAME, f"{where}: unsupported value {value!r}")


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> None:
    # bool is an int in Python; JSON true must not pass for a count.
    wrong = isinstance(value, bool) and kind is int
    if value is ... or wrong or not isinstance(value, kind):
        got = "missing" if value is ... else f"got {type(value).__name__} {value!r:.60}"
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ArtifactError(CONFIG_NAME, f"{where} must be {names}, {got}")


def _choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ArtifactError(CONFIG_NAME, f"{where} must be one of {', '.join(choices)}, "
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

