"""Hostile and corrupted Hub folders: each is refused with one ArtifactError naming the file
(and tensor), before any model is returned and without leaving generated modules behind."""

from __future__ import annotations

import hashlib
import json
import linecache
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import tritondsl
from tritondsl.export import hub
from tritondsl.export.artifact import (
    ArtifactAuthError,
    ArtifactError,
    ArtifactNotFoundError,
    CorruptArtifactError,
)

from .test_hub import MIXED, randomize_norms


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MixedNet saved once per packing; each test corrupts its own copy."""
    model = randomize_norms(tritondsl.load_model(MIXED))
    base = tmp_path_factory.mktemp("saved")
    return {pack: hub.save_pretrained(model, base / pack, pack=pack) for pack in ("2bit", "base3")}


def generated_state() -> tuple[dict[str, int], set[str]]:
    """What compile() registers globally: generated modules (by identity) and linecache keys."""
    modules = {k: id(v) for k, v in sys.modules.items() if k.startswith("tritondsl_generated.")}
    lines = {k for k in linecache.cache if k.startswith("<tritondsl generated")}
    return modules, lines


def rewrite(
    folder: Path,
    tensors: Callable[[dict[str, torch.Tensor]], None] | None = None,
    config: Callable[[dict[str, Any]], None] | None = None,
    source: str | None = None,
) -> None:
    """Change a folder the way an attacker would: consistently, hashes and tables updated."""
    cfg = json.loads((folder / "config.json").read_text())
    if tensors is not None:
        state = load_file(folder / "model.safetensors")
        tensors(state)
        save_file(state, folder / "model.safetensors")
        cfg["tensors"] = {
            k: {**cfg["tensors"].get(k, {}), "shape": list(v.shape),
                "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in state.items()
        }  # fmt: skip
    if source is not None:
        (folder / "model.tdsl").write_text(source)
    for name in ("model.tdsl", "model.safetensors"):
        data = (folder / name).read_bytes()
        cfg["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if config is not None:
        config(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def truncate(folder: Path, keep_config: bool) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    if not keep_config:
        rewrite(folder)


def set_code_0b11(state: dict[str, torch.Tensor]) -> None:
    state["dw.weight_packed"][5, 1] = 0b11_01_01_01


def drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def both(*changes: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def change(cfg: dict[str, Any]) -> None:
        for one in changes:
            one(cfg)

    return change


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(cfg: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        for p in parents:
            cfg = cfg[p]
        cfg[last] = value

    return change


def layer_source(extra: str) -> str:
    return MIXED.read_text().replace("    pool = AdaptiveAvgPool2d(1)", extra)


S, C, T = "model.safetensors", "config.json", "model.tdsl"
CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None], str, str]] = {
    # id: (packing, corrupt(folder), the file the error names, part of its message)
    "truncated-hostile": ("2bit", lambda f: truncate(f, False), S, "not a valid safetensors"),
    "truncated": ("2bit", lambda f: truncate(f, True), S, "sha256/size differ"),
    "missing-key": (
        "2bit", lambda f: rewrite(f, drop("pw.bias")), S,
        "missing tensors ['pw.bias'] (expected by the MixedNet model)",
    ),
    "missing-from-file": (
        "2bit",
        lambda f: rewrite(f, drop("pw.bias"), put("tensors/pw.bias", {"shape": [128],
                                                                      "dtype": "float32"})),
        S, "missing tensors ['pw.bias'] (expected by config.json)",
    ),
    "unexpected-key": (
        "2bit", lambda f: rewrite(f, put("evil", torch.zeros(3))), S, "unexpected tensors ['evil']"
    ),
    "trit-code-0b11": (
        "2bit", lambda f: rewrite(f, set_code_0b11), S,
        "'dw.weight_packed': dw.weight_packed: contains the invalid trit code 0b11",
    ),
    "base3-byte-243": (
        "base3", lambda f: rewrite(f, lambda s: s["pw.weight_packed"][0].fill_(243)), S,
        "'pw.weight_packed': base-3 data: byte value above 242",
    ),
    "shape": (
        "2bit", lambda f: rewrite(f, put("res.bn1.weight", torch.ones(33))), S,
        "'res.bn1.weight' is float32 [33], the model expects float32 [32]",
    ),
    "dtype": (
        "2bit", lambda f: rewrite(f, put("res.bn1.weight", torch.ones(32).double())), S,
        "is float64 [32], the model expects float32 [32]",
    ),
    "packed-k": (
        "2bit", lambda f: rewrite(f, config=put("tensors/dw.weight_packed/trits", 10)), S,
        "packs K=10, the layer has K=9",
    ),
    "unknown-model": (
        "2bit", lambda f: rewrite(f, config=both(put("model", "Nope"),
                                                    put("architectures", ["Nope"]))), C,
        "model 'Nope' is not a model of model.tdsl (models: MixedNet)",
    ),
    "architectures": (
        "2bit", lambda f: rewrite(f, config=put("architectures", ["Other"])), C,
        "architectures must be ['MixedNet']",
    ),
    "model-type": (
        "2bit", lambda f: rewrite(f, config=put("model_type", "bert")), C,
        "model_type must be 'tritondsl'",
    ),
    "card-metric": (
        "2bit", lambda f: rewrite(f, config=put("card", {"metrics": {"accuracy": "high"}})), C,
        "card.metrics.accuracy must be int/float, got str",
    ),
    "unknown-layer": (
        "2bit", lambda f: rewrite(f, config=put("layers/ghost", "int8")), C,
        "layer 'ghost': precision int8 in config.json but no such layer",
    ),
    "wrong-layer-precision": (
        "2bit", lambda f: rewrite(f, config=put("layers/head", "fp16")), C,
        "layer 'head': precision fp16 in config.json but int8 in model.tdsl",
    ),
    "unknown-precision": (
        "2bit", lambda f: rewrite(f, config=put("precision", "int4")), C,
        "unknown precision override 'int4'",
    ),
    "bad-params": (
        "2bit", lambda f: rewrite(f, config=put("params", {"num_classes": "ten"})), C,
        "argument 'num_classes' of MixedNet must be an int",
    ),
    "sha256-mismatch": (
        "2bit", lambda f: (f / T).write_text(layer_source("    pool = AdaptiveAvgPool2d(2)")), T,
        "sha256/size differ",
    ),
    "tdsl-errors": (
        "2bit", lambda f: rewrite(f, source=layer_source("    oops = Lineer(1, 2)")), T,
        "error: unknown name 'Lineer'",
    ),
    "tdsl-python": (
        "2bit", lambda f: rewrite(f, source="import os\nos.system('echo pwned')\n"), T,
        "has errors",
    ),
    # compile() would read a one-line text ending in .tdsl as a path; it must stay text.
    "tdsl-path": ("2bit", lambda f: rewrite(f, source=str(MIXED)), T, "has errors"),
    "format-version-type": (
        "2bit", lambda f: rewrite(f, config=put("format_version", "1")), C,
        "format_version must be int, got str",
    ),
    "bool-for-int": (
        "2bit", lambda f: rewrite(f, config=put("fp32_bytes", True)), C,
        "fp32_bytes must be int, got bool",
    ),
    "shape-type": (
        "2bit", lambda f: rewrite(f, config=put("tensors/pw.bias/shape", ["128"])), C,
        "tensors.pw.bias.shape must be int",
    ),
    "layers-type": (
        "2bit", lambda f: rewrite(f, config=put("layers/head", 8)), C,
        "layers.head must be str, got int",
    ),
    "activations-not-a-layer": (
        "2bit", lambda f: rewrite(f, config=put("activations", {"nope": {"bits": 8}})), C,
        "activations.nope: not in 'layers'",
    ),
    "activations-type": (
        "2bit", lambda f: rewrite(f, config=put("activations", {"head": "a8"})), C,
        "activations.head must be dict, got str",
    ),
    "newer-format": (
        "2bit", lambda f: rewrite(f, config=put("format_version", 2)), C,
        "format_version 2 is not 1",
    ),
    "not-json": ("2bit", lambda f: (f / C).write_text("{nope"), C, "not valid JSON"),
    "no-config": ("2bit", lambda f: (f / C).unlink(), C, "missing"),
    "no-weights": ("2bit", lambda f: (f / S).unlink(), S, "missing"),
    **{
        f"pickle{suffix}": (
            "2bit", lambda f, s=suffix: (f / f"pytorch_model{s}").write_bytes(b"\x80\x04"),
            f"pytorch_model{suffix}", "pickle-based files are refused",
        )
        for suffix in (".bin", ".pt", ".pkl", ".pth")
    },
}  # fmt: skip


@pytest.mark.parametrize("case", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_or_hostile_artifacts_are_refused(
    saved: dict[str, Path], tmp_path: Path, case: tuple[str, Callable[[Path], None], str, str]
) -> None:
    pack, corrupt, file, message = case
    folder = tmp_path / "artifact"
    shutil.copytree(saved[pack], folder)
    corrupt(folder)
    before = generated_state()
    with pytest.raises(ArtifactError) as info:
        hub.from_pretrained(folder)
    assert info.value.file == file
    assert str(info.value).startswith(f"{file}: ")
    assert message in str(info.value)
    # Nothing half-loaded stays behind: no model was returned and compile()'s registrations
    # from a failed load are gone.
    assert generated_state() == before


def test_errors_keep_their_kind(tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError, match="not found locally nor on the Hub"):
        hub.from_pretrained("tritondsl/absent", local_files_only=True, cache_dir=tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="not a model folder nor a Hub repo id"):
        hub.from_pretrained(str(tmp_path / "absent" / "x y"))
    (tmp_path / "m").mkdir()
    with pytest.raises(CorruptArtifactError, match=r"config\.json: missing"):
        hub.from_pretrained(tmp_path / "m")
    # One base for all three (and a ValueError, as before).
    assert all(issubclass(kind, ArtifactError) and issubclass(kind, ValueError)
               for kind in (ArtifactNotFoundError, ArtifactAuthError, CorruptArtifactError))

