"""The best checkpoint becomes a Hub folder that loads back to the same predictions."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tritondsl.train.conftest import tiny
from tritondsl.export import hub
from tritondsl.train import Trainer, to_hub
from tritondsl.train import checkpoint as ckpt
from tritondsl.train.build import build_model


def test_best_checkpoint_to_hub_folder(tmp_path: Path) -> None:
    trainer = Trainer(tiny(tmp_path / "run", epochs=2, hub=tmp_path / "hub"))
    history = trainer.fit()
    files = {p.name for p in (tmp_path / "hub").iterdir()}
    assert {"config.json", "model.safetensors", "model.tdsl"} <= files

    best = ckpt.read(trainer.best_checkpoint)
    assert best.state["epoch"] == max(history, key=lambda h: h["test_acc"])["epoch"]
    spec = best.state["spec"]
    trained = build_model(spec["source"], spec["model"], spec["params"], spec["precision"])
    trained.load_state_dict(best.model)
    loaded = hub.from_pretrained(tmp_path / "hub")
    x = torch.randn(8, 784)
    with torch.no_grad():
        assert torch.allclose(loaded(x), trained.eval()(x), atol=1e-5)
    card = (tmp_path / "hub" / "README.md").read_text()
    best_acc = max(h["test_acc"] for h in history)
    assert f"| accuracy | {best_acc:.4f} |" in card  # the card quotes the run's own metric
    # The function the CLI's --hub uses works on its own, on any checkpoint folder.
    assert to_hub(tmp_path / "run" / "checkpoints" / "last", tmp_path / "hub2").is_dir()
