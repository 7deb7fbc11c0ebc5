"""`tritondsl export`: weights from training runs, and one rule for folder outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.tritondsl.train.conftest import MLP, one_thread, tiny
from tritondsl.cli import app
from tritondsl.export.onnx_verify import create_session
from tritondsl.export.torch_export import deployed_copy
from tritondsl.train import Trainer
from tritondsl.train.checkpoint import load_trained

__all__ = ["one_thread"]
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch training run of the tiny ternary MLP."""
    out = tmp_path_factory.mktemp("train") / "run"
    Trainer(tiny(out, epochs=1)).fit()
    return out


@pytest.mark.parametrize("where", ["", "checkpoints/best", "checkpoints/last"])
def test_checkpoint_takes_a_training_run_or_checkpoint_folder(
    run: Path, tmp_path: Path, where: str
) -> None:
    out = tmp_path / "m.onnx"
    result = runner.invoke(
        app, ["export", MLP, "--checkpoint", str(run / where), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "random init" not in result.output and "weights from" in result.output
    x = torch.randn(3, 784, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = deployed_copy(load_trained(run / where))(x).numpy()
    session = create_session(out)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_folder_that_is_neither_says_what_it_takes(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    args = ["export", MLP, "--checkpoint", str(tmp_path / "stuff"), "-o", str(tmp_path / "x")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "no config.json; give a save_pretrained folder, a training run folder" in result.output


@pytest.mark.parametrize("format_", ["hub", "release"])
def test_folder_outputs_refuse_a_non_empty_folder_unless_forced(
    tmp_path: Path, format_: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["export", MLP, "--format", format_, "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "is not empty; pass --force to replace it" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert "keep.txt" not in names and {"config.json", "model.safetensors"} <= names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left


@pytest.mark.parametrize("form", ["onnx", "torchscript", "pt2"])
def test_a_file_format_into_a_folder_or_a_missing_folder_is_refused_in_words(
    tmp_path: Path, form: str
) -> None:
    for where, message in ((tmp_path, "it is a folder; give a file path"),
                           (tmp_path / "missing" / "m.out",
                            f"the folder {tmp_path / 'missing'} does not exist")):  # fmt: skip
        result = runner.invoke(app, ["export", MLP, "--format", form, "-o", str(where)])
        assert result.exit_code == 1, result.output
        assert f"error: cannot write {where}: {message}" in result.output
        assert "Errno" not in result.output
    assert list(tmp_path.iterdir()) == []
