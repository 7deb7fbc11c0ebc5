"""The training configuration: every setting a run depends on, validated, saved in checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritondsl.train.dataspec import BUILTIN_DATASETS as BUILTIN_DATASETS
from tritondsl.train.dataspec import ImageOptions, parse
from tritondsl.train.errors import TrainingError
from tritondsl.train.text import check_tokenizer_spec

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "onecycle", "constant"]
Parallel = Literal["ddp", "fsdp"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "constant")
PARALLEL: tuple[str, ...] = ("ddp", "fsdp")
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adamw": 0.01}

# Fields that decide what the weights become: a resumed run must use the checkpoint's
# values, or "resume" would silently train something else. ``epochs`` may grow.
# The teacher is compared by the digest of its weights (trainer_state.json), not its path.
LOCKED_FIELDS = (
    "model", "params", "precision", "data", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "schedule", "label_smoothing", "seed", "limit_train", "limit_test",
    "images", "distill_temperature", "distill_weight", "fp32_warmup_epochs",
    "tokenizer", "seq_len",
)  # fmt: skip
# Fields that describe one invocation, not the training: a resumed run does not inherit them.
# ``init`` and ``teacher`` name files to read: on resume the weights come from the
# checkpoint, and a teacher only from the command line, never from the checkpoint.
PER_RUN_FIELDS = ("stop_after", "hub", "progress", "device", "resume", "out", "workers",
                  "init", "init_strict", "reinit", "teacher", "teacher_params",
                  "parallel")  # fmt: skip
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint."""

    source: str  # a .tdsl path, .tdsl text, or a zoo name ("resnet18")
    data: str = "synthetic"  # a data spec: fashion-mnist, imagefolder:DIR, text:fortunes...
    epochs: int = 1
    batch_size: int = 64  # global: split evenly over distributed processes
    lr: float | None = None  # None: 0.05 for sgd, 1e-3 for adamw
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9  # sgd only
    weight_decay: float | None = None  # None: 0 for sgd, 0.01 for adamw
    schedule: Schedule = "cosine"
    label_smoothing: float = 0.0
    seed: int = 0
    model: str | None = None  # which model of the file, if it has several
    params: dict[str, Any] = field(default_factory=dict)  # model constructor arguments
    precision: str | None = None  # fp32 | fp16 | int8 override for every layer
    out: Path = Path("runs/train")
    resume: Path | None = None  # a checkpoint folder or a run folder
    stop_after: int | None = None  # end this run after this many epochs (resume later)
    limit_train: int | None = None  # use only the first N training samples
    limit_test: int | None = None
    sync_bn: bool = True  # SyncBatchNorm under DDP on GPUs (it has no CPU implementation)
    device: str | None = None  # None: cuda if available, else cpu
    parallel: Parallel = "ddp"  # under torchrun: DistributedDataParallel or FSDP2 sharding
    progress: bool = True
    hub: Path | None = None  # write the best checkpoint here as a Hub folder when done
    images: ImageOptions = field(default_factory=ImageOptions)  # for imagefolder:DIR
    workers: int = DEFAULT_WORKERS  # DataLoader processes decoding images (0: in-process)
    init: Path | None = None  # pretrained weights: a .pth/.pt/.safetensors file or a folder
    init_strict: bool = True  # every tensor must match; False loads what fits and reports
    reinit: list[str] = field(default_factory=list)  # modules kept fresh (a new classifier)
    teacher: str | None = None  # "fp32" (the model in fp32 from --init), PATH, or MODEL=PATH
    teacher_params: dict[str, Any] = field(default_factory=dict)  # for a MODEL=PATH teacher
    distill_temperature: float = 4.0
    distill_weight: float = 0.5  # loss = (1-w)·CE + w·T²·KL(teacher ‖ student)
    fp32_warmup_epochs: int = 0  # train the ternary layers in fp32 for the first N epochs
    tokenizer: str = "bytes"  # text data: bytes | bpe:N (train/text.py)
    seq_len: int | None = None  # text data: tokens per block (None: the input's T, else 256)
    vanishing: float = 1e-7  # warn when a layer's mean gradient norm over an epoch is below
    exploding: float = 1e3  # warn when a layer's gradient norm ever exceeds this

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.resume = None if self.resume is None else Path(self.resume)
        self.hub = None if self.hub is None else Path(self.hub)
        self.init = None if self.init is None else Path(self.init)
        if isinstance(self.images, dict):
            self.images = ImageOptions(**self.images)
        self.reinit = list(self.reinit)
        parse(self.data)
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"unknown optimizer {self.optimizer!r}; choose sgd or adamw")
        if self.schedule not in SCHEDULES:
            raise TrainingError(
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        if self.parallel not in PARALLEL:
            raise TrainingError(f"unknown --parallel {self.parallel!r}; choose ddp or fsdp")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if self.weight_decay is None:
            self.weight_decay = DEFAULT_WEIGHT_DECAY[self.optimizer]
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}
        for name, value in positive.items():
            if not value > 0:
                raise TrainingError(f"{name} must be > 0, got {value}")
        check_tokenizer_spec(self.tokenizer)
        for name in ("stop_after", "limit_train", "limit_test", "seq_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingError(f"{name} must be >= 1, got {value}")
        if not 0 <= self.label_smoothing < 1:
            raise TrainingError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.workers < 0:
            raise TrainingError(f"workers must be >= 0, got {self.workers}")
        if not 0 <= self.fp32_warmup_epochs < self.epochs:
            raise TrainingError(f"fp32_warmup_epochs must be in [0, epochs) = [0, {self.epochs})"
                                f", got {self.fp32_warmup_epochs}")  # fmt: skip
        if not self.distill_temperature > 0:
            raise TrainingError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0 < self.distill_weight <= 1:
            raise TrainingError(f"distill_weight must be in (0, 1], got {self.distill_weight}")
        if self.teacher == "fp32" and self.init is None and self.resume is None:
            raise TrainingError("--teacher fp32 is the model in fp32 with the --init weights: "
                                "give --init too")  # fmt: skip

    @property
    def peak_lr(self) -> float:
        """The learning rate in effect: ``lr``, or the optimizer's default."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr

    @property
    def decay(self) -> float:
        """The weight decay in effect: ``weight_decay``, or the optimizer's default."""
        return (
            DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else self.weight_decay
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        out = dataclasses.asdict(self)
        for name in ("out", "resume", "hub", "init"):
            out[name] = None if out[name] is None else str(out[name])
        return out

    @classmethod
    def from_json(cls, saved: dict[str, Any], /, **overrides: Any) -> TrainConfig:
        """Rebuild a config saved by ``to_json``, replacing the given fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in saved.items() if k in known}
        values.update(overrides)
        return cls(**values)

    def locked_differences(self, saved: TrainConfig) -> list[str]:
        """Lines ``field: checkpoint X, this run Y`` for every locked field that differs."""
        lines = []
        mine_json, theirs_json = self.to_json(), saved.to_json()
        for name in LOCKED_FIELDS:
            mine, theirs = mine_json[name], theirs_json[name]
            # Compare as JSON sees them: a tuple given here is a list once saved.
            if json.loads(json.dumps(mine)) != json.loads(json.dumps(theirs)):
                lines.append(f"{name}: checkpoint {theirs!r}, this run {mine!r}")
        return lines
