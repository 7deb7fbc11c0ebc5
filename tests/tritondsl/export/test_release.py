"""Release bundles: contents, manifest, refusals, and the export command's hub/release formats."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tritondsl
from tritondsl.cli import app
from tritondsl.export import EXPORTERS, hub
from tritondsl.export.release import ReleaseError, build_release

from .conftest import BUNDLE, EXAMPLE
from .test_hub import MIXED

runner = CliRunner()


def test_bundle_holds_the_hub_folder_onnx_and_a_true_manifest(
    bundle: tuple[Path, dict[str, Any]],
) -> None:
    out, manifest = bundle
    assert {p.name for p in out.iterdir()} == BUNDLE | {"manifest.json"}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["bundle_format"] == 1 and manifest["version"] == "v1.0.0"
    assert manifest["model"] == "MixedNet" and manifest["packing"] == "2bit"
    assert set(manifest["files"]) == BUNDLE
    for name, entry in manifest["files"].items():
        data = (out / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    sizes = manifest["sizes"]
    assert sizes["onnx_bytes"] == (out / "model.onnx").stat().st_size
    assert sizes["safetensors_bytes"] == (out / "model.safetensors").stat().st_size
    config = json.loads((out / "config.json").read_text())
    assert sizes["fp32_state_dict_bytes"] == config["fp32_bytes"]
    # int2 ONNX: exactly two bits of code per ternary weight, read from the file.
    assert manifest["onnx"] == {"weights": "int2", "opset": 25, "ir": 13}
    assert sizes["onnx_code_bits_per_weight"] == 2.0
    assert sizes["onnx_ternary_weights"] == 45_632  # the five ternary convs of MixedNet
    parity = {check["name"]: check for check in manifest["parity"]}
    assert all(check["ok"] for check in parity.values()) and len(parity) >= 3
    assert parity["from_pretrained"]["max_abs"] == 0.0
    assert max(check["max_abs"] for check in parity.values()) < 1e-5
    # The bundle is itself a Hub folder, and its card knows about the ONNX file.
    assert "- onnx" in (out / "README.md").read_text().split("---\n")[1]
    assert hub.from_pretrained(out).tdsl_spec.model == "MixedNet"


def test_build_refuses_a_folder_with_files(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("stale")
    model = tritondsl.load_model(MIXED)
    with pytest.raises(ReleaseError, match="not an empty folder"):
        build_release(model, tmp_path, EXAMPLE)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


# ------------------------------------------------------------- a GitHub-shaped server


@pytest.mark.parametrize("fmt", ["hub", "release"])
def test_export_command_writes_hub_folders_and_bundles(tmp_path: Path, fmt: str) -> None:
    assert EXPORTERS[fmt].weights == ("2bit", "base3")
    out = tmp_path / fmt
    args = ["export", str(MIXED), "--format", fmt, "-o", str(out), "--weights", "base3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "from_pretrained: max abs err 0" in result.output
    names = {p.name for p in out.iterdir()}
    assert names == ({"config.json", "model.safetensors", "model.tdsl", "README.md"} if fmt ==
                     "hub" else BUNDLE | {"manifest.json"})  # fmt: skip
    assert json.loads((out / "config.json").read_text())["packing"] == "base3"
