"""Release bundles: one flat folder holding everything a release ships.

``build_release`` writes (flat, so every file is one GitHub release asset)::

    config.json  model.safetensors  model.tdsl  README.md   the Hub folder (from_pretrained)
    model.onnx                                             int2 ONNX, checked in onnxruntime
    manifest.json                                          sha256 and bytes of every other file,
                                                           measured sizes and parity

``verify_bundle`` re-checks a bundle against its manifest; ``github.py`` publishes one.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tritondsl.backend.deploy import deploy
from tritondsl.export.api import ExportReport, to_onnx
from tritondsl.export.artifact import (
    CONFIG_NAME,
    MAX_CONFIG_BYTES,
    WEIGHTS_NAME,
    file_entry,
    parse_config,
    read_file,
    sha256,
)
from tritondsl.export.hub import from_pretrained, save_pretrained, write_model_card
from tritondsl.files import replace_dir, write_atomically

BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
TAG = re.compile(r"[A-Za-z0-9][\w.+-]*")
_ASSET = re.compile(r"[A-Za-z0-9][\w.+-]*")


class ReleaseError(RuntimeError):
    """A bundle cannot be built, does not match its manifest, or GitHub refused it."""


def build_release(
    model: nn.Module,
    out_dir: str | Path,
    example_input: Tensor,
    pack: str = "2bit",
    version: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write a release bundle for ``model`` into a new or empty ``out_dir`` (``force``:
    replace a non-empty one, only once the new bundle is complete); return the manifest."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise ReleaseError(f"{out} exists and is not an empty folder (pass --force to replace it)")
    if version is not None and not TAG.fullmatch(version):
        raise ReleaseError(f"version {version!r} is not a valid tag")
    # One deployed CPU copy serves every step (each would otherwise deploy its own).
    deployed = deploy(copy.deepcopy(model).to("cpu")).eval()
    example = example_input.detach().to("cpu")
    manifests: list[dict[str, Any]] = []

    def fill(tmp: Path) -> None:
        save_pretrained(deployed, tmp, pack=pack)
        report = to_onnx(deployed, tmp / ONNX_NAME, example, weights="int2")
        if not report.ok:
            raise ReleaseError(
                "the ONNX file does not match the model:\n" + "\n".join(report.lines())
            )
        hub_check = hub_parity(deployed, tmp, example)
        write_model_card(tmp)  # again, now that model.onnx is there (tag and size)
        manifest = _manifest(tmp, report, hub_check, version, list(example.shape))
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        write_atomically(tmp / MANIFEST_NAME, text.encode())
        manifests.append(manifest)

    replace_dir(out, fill)
    return manifests[0]


def hub_parity(deployed: nn.Module, folder: Path, example: Tensor) -> dict[str, Any]:
    """Reload the Hub folder and compare its output with the deployed model's."""
    with torch.no_grad():
        expected = deployed(example)
        got = from_pretrained(folder)(example)
    max_abs = float((got - expected).abs().max()) if expected.numel() else 0.0
    if not max_abs == 0.0:
        raise ReleaseError(f"the Hub folder reloads with max abs error {max_abs:g}, expected 0")
    return {"name": "from_pretrained", "max_abs": max_abs, "ok": True}


def _manifest(
    folder: Path, report: ExportReport, hub_check: dict, version: str | None, shape: list[int]
) -> dict[str, Any]:
    config = parse_config(read_file(folder, CONFIG_NAME, MAX_CONFIG_BYTES))
    files = {p.name: file_entry(p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}
    fp32, weights, onnx = config["fp32_bytes"], files[WEIGHTS_NAME], files[ONNX_NAME]
    stats = report.stats
    return {
        "bundle_format": BUNDLE_FORMAT,
        "tritondsl_version": config["tritondsl_version"],
        "version": version,
        "model": config["model"],
        "params": config["params"],
        "precision": config["precision"],
        "packing": config["packing"],
        "example_input_shape": shape,
        "files": files,
        "sizes": {
            "fp32_state_dict_bytes": fp32,
            "safetensors_bytes": weights["bytes"],
            "onnx_bytes": onnx["bytes"],
            "fp32_over_safetensors": round(fp32 / weights["bytes"], 3),
            "fp32_over_onnx": round(fp32 / onnx["bytes"], 3),
            "onnx_ternary_weights": stats.ternary_weights if stats else 0,
            "onnx_ternary_code_bytes": stats.code_bytes if stats else 0,
            "onnx_ternary_scale_bytes": stats.scale_bytes if stats else 0,
            "onnx_code_bits_per_weight": round(stats.code_bits_per_weight, 4) if stats else 0,
        },
        "onnx": {"weights": report.weights, "opset": report.opset, "ir": report.ir_version},
        "parity": [
            *({"name": c.name, "max_abs": c.max_abs, "rel": c.rel, "ok": c.ok}
              for c in report.checks),
            hub_check,
        ],
    }  # fmt: skip


def verify_bundle(bundle_dir: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every file's bytes, after checking each sha256 and size."""
    folder = Path(bundle_dir)
    try:
        manifest = json.loads(read_file(folder, MANIFEST_NAME, MAX_CONFIG_BYTES))
    except (ValueError, RecursionError) as error:  # ArtifactError, JSON, UTF-8
        raise ReleaseError(f"{MANIFEST_NAME}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("bundle_format") != BUNDLE_FORMAT:
        raise ReleaseError(f"{MANIFEST_NAME}: not a bundle_format {BUNDLE_FORMAT} manifest")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ReleaseError(f"{MANIFEST_NAME}: 'files' must map file names to sha256 and bytes")
    present = {p.name for p in folder.iterdir()} - {MANIFEST_NAME}
    if present - listed.keys():
        # A release is exactly what was checked; a stray file would ship unverified.
        raise ReleaseError(f"{sorted(present - listed.keys())} not listed in {MANIFEST_NAME}")
    contents: dict[str, bytes] = {}
    for name, entry in sorted(listed.items()):
        if not _ASSET.fullmatch(name) or name == MANIFEST_NAME:
            raise ReleaseError(f"{MANIFEST_NAME}: {name!r} is not a plain file name")
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
            raise ReleaseError(f"{MANIFEST_NAME}: files.{name} must be {{sha256, bytes}}")
        try:
            data = read_file(folder, name, entry["bytes"])
        except ValueError as error:  # ArtifactError: missing, too large, not a file
            raise ReleaseError(str(error)) from None
        if len(data) != entry["bytes"] or sha256(data) != entry.get("sha256"):
            raise ReleaseError(f"{name}: sha256/size differ from {MANIFEST_NAME}; refusing")
        contents[name] = data
    return manifest, contents
