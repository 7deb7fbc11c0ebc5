"""Generated models pickle like any torch model: torch.save(model), then torch.load it."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tritondsl
from tests.conftest import ROOT
from tritondsl.train.build import declared_input

TINY_LM = {"vocab": 64, "dim": 32, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 64,
           "context": 24}  # fmt: skip
EXAMPLES = sorted((ROOT / "examples").glob("*.tdsl"))


def round_trip(model: nn.Module) -> nn.Module:
    """``model`` through torch.save and torch.load(weights_only=False) in this process."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    """Whether both models, in eval mode, give bit-identical outputs on ``x``."""
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_model_survives_torch_save_and_load(path: Path) -> None:
    program = tritondsl.compile(path)
    for name in program.model_names:
        torch.manual_seed(0)
        model = program.build(name).eval()
        x = torch.randn(2, *_input_shape(model))
        loaded = round_trip(model)
        assert type(loaded) is type(model) and loaded is not model
        assert same_outputs(model, loaded, x)
        assert loaded.tdsl_spec == model.tdsl_spec
        assert same_outputs(model, copy.deepcopy(model), x)  # deepcopy reduces the same way


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    """The declared input shape after the batch dim (the examples fix every other dim)."""
    _, shape = declared_input(model)
    return tuple(int(d) for d in shape[1:])


def test_deployed_and_training_models_pickle_too() -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model("bitnet_b158", **TINY_LM)
    tokens = torch.randint(0, 64, (2, 12))
    trained = round_trip(model.train())
    assert trained.training and same_outputs(model, trained, tokens)
    deployed = tritondsl.deploy(copy.deepcopy(model).eval())
    loaded = round_trip(deployed)
    assert same_outputs(deployed, loaded, tokens)
    assert {k: v.dtype for k, v in loaded.state_dict().items()} == {
        k: v.dtype for k, v in deployed.state_dict().items()
    }


@pytest.mark.slow  # a fresh interpreter imports torch
def test_a_fresh_process_loads_zoo_and_file_models_from_their_saved_source(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    resnet = tritondsl.load_model("resnet18").eval()
    source = tmp_path / "mlp.tdsl"
    source.write_bytes((ROOT / "examples" / "ternary_mlp.tdsl").read_bytes())
    mlp = tritondsl.load_model(source).eval()
    torch.save({"resnet": resnet, "mlp": mlp, "x": x,
                "expected": {"resnet": resnet(x), "mlp": mlp(x.flatten(1)[:, :784])}},
               tmp_path / "models.pt")  # fmt: skip
    source.unlink()  # the pickle carries the .tdsl text; the file is not read again
    probe = (
        "import sys, torch\n"
        "saved = torch.load(sys.argv[1], weights_only=False)\n"
        "x = saved['x']\n"
        "with torch.no_grad():\n"
        "    got = {'resnet': saved['resnet'](x), 'mlp': saved['mlp'](x.flatten(1)[:, :784])}\n"
        "assert all(torch.equal(got[k], saved['expected'][k]) for k in got), 'outputs differ'\n"
        "print(type(saved['resnet']).__name__, type(saved['mlp']).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "models.pt")],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ResNet18", "TernaryMLP"]
