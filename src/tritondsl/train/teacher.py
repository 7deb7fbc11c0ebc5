"""Knowledge distillation: the teacher a run names (``--teacher``) and the loss it adds.

``--teacher`` forms:

* ``fp32``: the student's own architecture with every layer in fp32, with the ``--init``
  weights (the usual "quantize a pretrained model, distill from its float self");
* ``PATH``: a training checkpoint or run folder, or a tritondsl Hub folder (each carries
  its architecture and precision); or weights (a .pth/.pt/.safetensors file, a
  save_pretrained folder) for the student's architecture, built in fp32;
* ``MODEL=PATH``: another zoo model or .tdsl file, built in fp32 (with ``teacher_params``)
  with the weights at PATH.

The teacher runs in eval mode without gradients; its logits must have the student's width.
The loss is ``(1 - w)·CE(student, y) + w·T²·KL(softmax(teacher/T) ‖ softmax(student/T))``
(Hinton et al., 2015), ``w = distill_weight`` and ``T = distill_temperature``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tritondsl.models import ZOO
from tritondsl.train import weights as tweights
from tritondsl.train.build import build_model, declared_input, resolve_source
from tritondsl.train.config import TrainConfig
from tritondsl.train.data import Adapter, input_adapter
from tritondsl.train.errors import CheckpointError, TrainingError


class Teacher:
    """A frozen model whose logits the student learns to match."""

    def __init__(self, model: nn.Module, description: str, adapt: Adapter) -> None:
        self.model = model.eval().requires_grad_(False)
        self.description, self.adapt = description, adapt
        self.digest = tweights.digest(model)

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """The teacher's output for a batch as the data gives it (before the student's adapter)."""
        return self.model(self.adapt(x))


def distill_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def build(config: TrainConfig, sample_shape: tuple[int, ...], num_classes: int) -> Teacher:
    """The teacher ``config.teacher`` names, checked against the student's data and classes."""
    spec = config.teacher
    assert spec is not None
    # Building initialises weights from the global RNG: keep the student's stream as it is.
    with torch.random.fork_rng(devices=[]):
        model, description = _model(config, spec)
    try:
        name, declared = declared_input(model)
    except TrainingError as error:
        raise TrainingError(f"--teacher {spec}: {error}") from None
    adapt = input_adapter(declared, sample_shape, f"the data, for --teacher {spec}")
    with torch.no_grad():
        probe = model.eval()(adapt(torch.zeros(2, *sample_shape)))
    if not (isinstance(probe, Tensor) and probe.dim() == 2 and probe.shape[1] == num_classes):
        got = list(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise TrainingError(
            f"--teacher {spec} returns {got} for input '{name}'; the student has "
            f"{num_classes} classes ([N, {num_classes}])"
        )
    return Teacher(model, description, adapt)


def _model(config: TrainConfig, spec: str) -> tuple[nn.Module, str]:
    if spec == "fp32":
        if config.init is None:
            raise TrainingError("--teacher fp32 is the model in fp32 with the --init weights: "
                                "give --init too (on --resume as well: it is read for the "
                                "teacher only)")  # fmt: skip
        if config.reinit:
            raise TrainingError(
                f"--teacher fp32 is the --init model as it is, but --reinit "
                f"{' '.join(config.reinit)} leaves part of it untrained: fine-tune it in fp32 "
                "first (--precision fp32) and --init from that run, or give --teacher PATH"
            )
        model = _fp32(config.source, config.model, config.params)
        _load(model, config.init, "--teacher fp32 (the --init weights)")
        return model, f"{model.tdsl_spec.model} in fp32 from {config.init}"
    architecture, sep, path_text = spec.partition("=")
    if sep and _is_model(architecture):
        model = _fp32(architecture, None, config.teacher_params)
        _load(model, Path(path_text), f"--teacher {spec}")
        return model, f"{model.tdsl_spec.model} in fp32 from {path_text}"
    path = Path(spec)
    carried = _carried(path, spec)
    if carried is not None:
        return carried, f"{carried.tdsl_spec.model} from {path}"
    model = _fp32(config.source, config.model, config.params)
    _load(model, path, f"--teacher {spec}")
    return model, f"{model.tdsl_spec.model} in fp32 from {path}"


def _carried(path: Path, spec: str) -> nn.Module | None:
    """The model of a checkpoint, run or Hub folder, which names its own architecture."""
    from tritondsl.train.checkpoint import STATE_FILE, load_trained

    if not path.is_dir():
        return None
    if (path / STATE_FILE).is_file() or (path / "checkpoints" / "best" / STATE_FILE).is_file():
        try:
            return load_trained(path)
        except CheckpointError as error:
            raise CheckpointError(f"--teacher {spec}: {error}") from None
    if tweights.is_hub_folder(path):
        from tritondsl.export.hub import ArtifactError, from_pretrained

        try:
            return from_pretrained(path)
        except ArtifactError as error:
            raise CheckpointError(f"--teacher {spec}: {error}") from None
    return None


def _is_model(text: str) -> bool:
    return text.lower() in ZOO or (text.endswith(".tdsl") and Path(text).is_file())


def _fp32(source: str, model: str | None, params: dict[str, Any]) -> nn.Module:
    return build_model(resolve_source(source), model, params, "fp32")


def _load(model: nn.Module, path: Path, what: str) -> None:
    tweights.load_into(model, tweights.read(path, what), strict=True, what=what)
