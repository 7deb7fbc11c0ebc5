"""The config: validation, defaults per optimizer, --param parsing, resume inheritance."""

from __future__ import annotations

import pytest

from tests.tritondsl.train.conftest import MLP
from tritondsl.train import TrainConfig, TrainingError


def test_defaults_depend_on_the_optimizer() -> None:
    sgd, adamw = TrainConfig(MLP), TrainConfig(MLP, optimizer="adamw")
    assert (sgd.lr, sgd.weight_decay, adamw.lr, adamw.weight_decay) == (0.05, 0.0, 1e-3, 0.01)
    assert TrainConfig.from_json(adamw.to_json()) == adamw


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("epochs", 0, "epochs must be > 0"), ("schedule", "step", "unknown schedule 'step'"),
     ("label_smoothing", 1.0, "label_smoothing must be in"), ("limit_train", 0, ">= 1")],
)  # fmt: skip
def test_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainConfig(MLP, **{field: value})  # type: ignore[arg-type]
