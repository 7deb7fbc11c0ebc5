"""The Trainer: quantization-aware training of a .tdsl model, resumable bit for bit.

``Trainer(config)`` validates everything (model, data, checkpoint, output folder) and
writes nothing; ``fit()`` trains and, on rank 0 only, writes after every epoch: the
checkpoint (``checkpoints/last``, ``checkpoints/best``), ``metrics.csv``,
``metrics.jsonl``, ``training_curves.png`` and ``sparsity.png``.

Reproducibility: the data order of epoch e is a permutation seeded by ``seed + e``
(``DistributedSampler``), the learning rate a pure function of the step, and every RNG
is saved in the checkpoint; so 2 epochs equal 1 epoch + resume + 1 epoch exactly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DistributedSampler, TensorDataset

from tritondsl.backend.layers import QuantModule
from tritondsl.backend.quantizers import is_ternary
from tritondsl.train import checkpoint as ckpt
from tritondsl.train import data as tdata
from tritondsl.train import distributed as tdist
from tritondsl.train import interrupts, logs, plots, sharding, text
from tritondsl.train import teacher as tteacher
from tritondsl.train import weights as tweights
from tritondsl.train.build import build_model, declared_input, input_declaration, resolve_source
from tritondsl.train.config import TrainConfig
from tritondsl.train.errors import CheckpointError, DataError, NonFiniteError, TrainingError
from tritondsl.train.imagefolder import ImageFolder
from tritondsl.train.monitor import (
    GradientMonitor,
    first_nonfinite_module,
    peak_rss_mb,
    ternary_stats,
)
from tritondsl.train.task import LanguageModel, Task

Metrics = dict[str, Any]
PLOT_EVERY_S = 30.0
# Resuming would replay the same steps bit for bit, so the advice is a new run.
_AFTER_NONFINITE = (
    "Check the data, or start a new run with a lower --lr or another --seed; "
    "checkpoints/last holds the last complete epoch."
)
ONECYCLE_WARMUP, ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 0.3, 25.0, 1e4  # OneCycleLR's defaults
DEFAULT_SEQ_LEN = 256  # text blocks for a model whose input leaves T symbolic


def lr_at(schedule: str, base: float, step: int, total: int) -> float:
    """Learning rate before update ``step`` (0-based) of ``total``: a pure function."""
    t = min(step / max(total, 1), 1.0)
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: OneCycleLR's learning-rate curve (cosine up from base/25, then down).
    low, final = base / ONECYCLE_DIV, base / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    if t < ONECYCLE_WARMUP:
        return low + (base - low) * 0.5 * (1 - math.cos(math.pi * t / ONECYCLE_WARMUP))
    u = (t - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP)
    return final + (base - final) * 0.5 * (1 + math.cos(math.pi * u))


class Trainer:
    """Train the model of ``config`` on its dataset; ``fit()`` returns per-epoch metrics."""

    def __init__(
        self, config: TrainConfig, model_transform: Callable[[nn.Module], None] | None = None
    ) -> None:
        """Check the config; ``model_transform`` may adjust the freshly built model in place
        (e.g. freeze layers) before training starts."""
        self.config = config
        self.ctx = tdist.setup(config.device, config.parallel)
        self.report = logs.Reporter(self.ctx.is_main, config.progress)
        if config.batch_size % self.ctx.world_size:
            raise TrainingError(
                f"batch size {config.batch_size} does not split over "
                f"{self.ctx.world_size} processes (it is the global batch)"
            )
        self.resumed = ckpt.read(config.resume) if config.resume is not None else None
        if self.resumed is not None:
            self._check_resumable(self.resumed)
        self._check_out_dir()
        _seed_everything(config.seed)
        self.model = build_model(
            resolve_source(config.source), config.model, config.params, config.precision
        )
        self.init_report = None
        if config.init is not None and self.resumed is None:
            # On resume the weights come from the checkpoint: --init is not read again.
            self.init_report = tweights.load_into(
                self.model, tweights.read(config.init), config.init_strict, config.reinit
            )
        if model_transform is not None:
            model_transform(self.model)
        if self.ctx.distributed:
            # Own random streams per process (dropout masks differ); DDP copies rank 0's
            # initial weights to the others, so the initialisation above does not matter.
            _seed_everything(config.seed + self.ctx.rank)
        self.input_name, self.declared = declared_input(self.model)
        self.text: text.TextData | None = None
        self.teacher = None
        if text.is_text_spec(config.data):
            if config.teacher is not None:
                raise TrainingError("--teacher distills image classifiers; a language model "
                                    "trains on its text alone")  # fmt: skip
            self.task: Task = self._load_text()
            self.adapt: tdata.Adapter = tdata.input_adapter(self.declared, (self.seq_len,), "")
        else:
            self.task = Task(config.label_smoothing)
            self._refuse_token_ids()
            self.num_classes = self._probe_classes()
            self.data = tdata.load_datasets(
                config.data, self.declared[1:], self.num_classes, config.limit_train,
                config.limit_test, config.images,
            )  # fmt: skip
            self._check_labels()
            sample_shape = self.data.sample_shape()
            self.adapt = tdata.input_adapter(self.declared, sample_shape,
                                             f"dataset {config.data!r}")  # fmt: skip
            if config.teacher is not None:
                self.teacher = tteacher.build(config, sample_shape, self.num_classes)
                self.teacher.model.to(self.ctx.device)
        if self.resumed is not None:
            ckpt.check_model(self.resumed, self.model)
            self.model.load_state_dict(self.resumed.model)
            self._check_teacher(self.resumed)
        self.model.to(self.ctx.device)
        if self.ctx.device.type == "cuda":
            tdata.to_device(self.data, self.ctx.device)
        # FSDP replaces the parameters: the optimizer and the monitor take the sharded ones.
        self.ddp_model = tdist.wrap(self.model, self.ctx, config.sync_bn, config.parallel)
        self.optimizer = self._make_optimizer()
        self.epoch, self.step, self.history = 0, 0, []
        self.best_score, self.best_epoch = -math.inf, 0
        self._plotted_at = time.monotonic()
        if self.resumed is not None:
            self._load(self.resumed)
        self.grads = GradientMonitor(self.model)

    @property
    def out(self) -> Path:
        """The run's output folder."""
        return self.config.out

    @property
    def best_checkpoint(self) -> Path:
        """Folder of the best checkpoint: best test accuracy, or lowest validation loss."""
        return self.out / "checkpoints" / "best"

    def fit(self) -> list[Metrics]:
        """Train up to ``epochs`` (or ``stop_after``) epochs; return every epoch's metrics."""
        config = self.config
        last = min(config.epochs, config.stop_after or config.epochs)
        if self.resumed is not None:
            # The very last thing before training: nothing may draw from the RNGs after it.
            ckpt.restore_rng(self.resumed, self.ctx.rank)
        if self.epoch >= last:
            self.report.line(f"nothing to train: the checkpoint has {self.epoch} epochs already "
                             f"(raise --epochs to go on)")  # fmt: skip
        else:
            self._announce(last)
        try:
            with interrupts.catching():
                for epoch in range(self.epoch + 1, last + 1):
                    record = self._train_epoch(epoch)
                    record.update(self._evaluate())
                    self._finish_epoch(record, plot=epoch == last)
                if self.ctx.is_main and config.hub is not None and self.history:
                    with interrupts.deferred():
                        ckpt.to_hub(self.best_checkpoint, config.hub)
                    self.report.line(f"wrote Hub folder {config.hub}")
        finally:
            tdist.teardown(self.ctx)
        return self.history

    # -- one epoch ------------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> Metrics:
        config, ctx = self.config, self.ctx
        sampler = DistributedSampler(self.data.train, num_replicas=ctx.world_size,
                                     rank=ctx.rank, shuffle=True, seed=config.seed)  # fmt: skip
        sampler.set_epoch(epoch - 1)
        indices = list(sampler)
        per_rank = config.batch_size // ctx.world_size
        steps = math.ceil(len(indices) / per_rank)
        total_steps = steps * config.epochs
        self._set_fake_quant(epoch > config.fp32_warmup_epochs)
        tdata.set_epoch(self.data.train, epoch, config.seed)
        self.ddp_model.train()
        self.grads.reset()
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        totals = torch.zeros(3, dtype=torch.float64)
        lr = config.peak_lr
        start = time.perf_counter()
        with self.report.epoch_bar(epoch, config.epochs, steps, self.task.unit) as bar:
            batches = tdata.batches(self.data.train, indices, per_rank, ctx.device,
                                    config.workers)  # fmt: skip
            for batch, (x, y) in enumerate(batches, 1):
                interrupts.check()
                lr = lr_at(config.schedule, config.peak_lr, self.step, total_steps)
                self.step += 1
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                output = self.ddp_model(self.adapt(x))
                loss, stats = self.task.batch(output, y)
                if self.teacher is not None:
                    loss = self._distilled(loss, output, x)
                    stats[0] = loss.detach() * stats[2]  # the loss is what training minimises
                # Every rank sees the global figures, so all stop together on a NaN.
                stats = tdist.all_reduce_sum(stats, ctx).double().cpu()
                if not math.isfinite(float(stats[0])):
                    self._nonfinite_loss(epoch, batch, self.adapt(x), float(stats[0] / stats[2]))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self._check_gradients(epoch, batch, self.grads.step())
                self.optimizer.step()
                totals += stats
                seconds = time.perf_counter() - start
                bar.update(float(totals[0] / totals[2]), float(totals[1] / totals[2]),
                           float(totals[2]) / seconds, peak_rss_mb())  # fmt: skip
        seconds = time.perf_counter() - start
        cuda_peak = None
        if ctx.device.type == "cuda":
            cuda_peak = torch.cuda.max_memory_allocated(ctx.device) / 2**20
        samples = float(totals[2]) / (self.seq_len if self.text is not None else 1)
        record = {"epoch": epoch, "step": self.step, "lr": lr,
                  **self.task.metrics("train", totals)}  # fmt: skip
        record.update({
            "samples_per_s": samples / seconds, "epoch_s": seconds,
            "peak_rss_mb": peak_rss_mb(), "cuda_peak_mb": cuda_peak,
        })  # fmt: skip
        if self.text is not None:
            record["tokens_per_s"] = float(totals[2]) / seconds
        return record

    @torch.no_grad()
    def _evaluate(self) -> Metrics:
        """Test (validation) metrics; each rank takes every world_size-th sample, then all sum."""
        model, ctx = self.model, self.ctx
        model.eval()
        total = len(self.data.test)  # type: ignore[arg-type]
        indices = list(range(ctx.rank, total, ctx.world_size))
        sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
        per_rank = self.config.batch_size // ctx.world_size
        # Logits of a text block are [T, vocab] per sample: keep text batches as trained.
        batch_size = per_rank if self.text is not None else max(per_rank, 256)
        batches = tdata.batches(self.data.test, indices, batch_size, ctx.device,
                                self.config.workers)  # fmt: skip
        for x, y in batches:
            interrupts.check()
            sums += self.task.batch(model(self.adapt(x)), y)[1].double()
        extra = sharding.missing_forwards(model, total, len(indices), batch_size, ctx.world_size)
        for x, _ in tdata.batches(self.data.test, [0] * extra, 1, ctx.device):
            model(self.adapt(x))  # FSDP all-gathers in every forward: all run as many
        tdist.all_reduce_sum(sums, ctx)
        return self.task.metrics("test", sums.cpu())

    def _finish_epoch(self, record: Metrics, plot: bool) -> None:
        """Record the epoch; rank 0 writes checkpoint, logs and plots; then all sync."""
        config = self.config
        record["grad_norms"] = self.grads.summary()
        record["ternary"] = ternary_stats(self.model)
        record["warnings"] = self.grads.warnings(config.vanishing, config.exploding)
        self.history.append(record)
        self.epoch = record["epoch"]
        # An fp32 warm-up epoch is not a candidate for best: deployed, the model is ternary.
        warmup = self.epoch <= config.fp32_warmup_epochs
        record["fp32_warmup"] = warmup
        improved = not warmup and self.task.score(record) > self.best_score
        if improved:
            self.best_score, self.best_epoch = self.task.score(record), self.epoch
        rngs = tdist.all_gather_objects(ckpt.rng_state(), self.ctx)
        full = sharding.full_state(self.model, self.optimizer)  # weights, optimizer, names
        if self.ctx.is_main:
            # A Ctrl-C now waits for the checkpoint, logs and plots to be written whole.
            with interrupts.deferred():
                folder = self.out / "checkpoints"
                tokenizer = None if self.text is None else self.text.tokenizer.to_json()
                ckpt.write(folder / "last", *full, self._state(), rngs, tokenizer)
                if improved:
                    ckpt.copy(folder / "last", folder / "best")
                logs.write_logs(self.out, self.history, self.task.csv_extra)
                # Drawing takes about a second: refresh the plots at most every PLOT_EVERY_S
                # seconds during a run, and always after its last epoch.
                if plots.MISSING is not None and self.epoch == 1:
                    self.report.warn(f"{plots.MISSING}; metrics.csv has the same numbers")
                elif plots.MISSING is None and (
                    plot or time.monotonic() - self._plotted_at >= PLOT_EVERY_S
                ):
                    plots.training_curves(self.history, self.out / "training_curves.png")
                    plots.sparsity(self.history, self.out / "sparsity.png")
                    self._plotted_at = time.monotonic()
        task, unit = self.task, self.task.unit
        rate = record[f"{unit}_per_s"]
        split = "test" if self.text is None else "val"
        self.report.line(
            f"epoch {self.epoch}/{config.epochs}: train {task.describe(record, 'train')} | "
            f"{split} {task.describe(record, 'test')} | {rate:,.0f} {unit}/s | "
            f"{record['epoch_s']:.1f} s | peak RSS {record['peak_rss_mb']:,.0f} MiB"
        )
        for warning in record["warnings"]:
            self.report.warn(warning)
        tdist.barrier(self.ctx)

    # -- failures -------------------------------------------------------------------------

    def _nonfinite_loss(self, epoch: int, batch: int, x: Tensor, loss: float) -> None:
        found = tdist.all_gather_objects(first_nonfinite_module(self.model, x), self.ctx)
        where = next(((rank, layer) for rank, layer in enumerate(found) if layer), None)
        prefix = f"loss is {loss} at step {self.step} (epoch {epoch}, batch {batch})"
        rank_note = f" on rank {where[0]}" if where and self.ctx.distributed else ""
        if where is None:
            detail = "every layer's output is finite, so the loss itself overflowed"
        elif where[1] == "<input>":
            detail = f"the input batch{rank_note} already contains NaN/Inf (check the data)"
        else:
            detail = f"the first layer whose output went non-finite{rank_note} is '{where[1]}'"
        raise NonFiniteError(
            f"{prefix}: {detail}. {_AFTER_NONFINITE}", self.step, where[1] if where else None,
        )  # fmt: skip

    def _distilled(self, loss: Tensor, output: Tensor, x: Tensor) -> Tensor:
        """The cross-entropy ``loss`` mixed with the distillation term of the teacher."""
        assert self.teacher is not None
        config = self.config
        soft = tteacher.distill_loss(output, self.teacher.logits(x), config.distill_temperature)
        return (1 - config.distill_weight) * loss + config.distill_weight * soft

    def _set_fake_quant(self, on: bool) -> None:
        """Quantized layers compute in fp32 during the warm-up epochs, ternary after."""
        for module in self.model.modules():
            if isinstance(module, QuantModule):
                module.fake_quant = on

    def _check_gradients(self, epoch: int, batch: int, layer_norms: Tensor) -> None:
        if bool(torch.isfinite(layer_norms).all()):
            return
        bad = self.grads.nonfinite_layers(layer_norms)
        raise NonFiniteError(
            f"gradient is not finite at step {self.step} (epoch {epoch}, batch {batch}) in "
            f"layer(s) {', '.join(bad)}, though the loss was finite. {_AFTER_NONFINITE}",
            self.step, bad[0],
        )  # fmt: skip

    # -- set-up ---------------------------------------------------------------------------

    def _check_resumable(self, resumed: ckpt.Checkpoint) -> None:
        differences = self.config.locked_differences(resumed.config)
        if differences:
            raise CheckpointError(
                f"{resumed.path} was trained with other settings:\n  " + "\n  ".join(differences)
            )
        done = int(resumed.state["epoch"])
        if self.config.epochs < done:
            raise CheckpointError(
                f"{resumed.path} already has {done} epochs; --epochs {self.config.epochs} is less"
            )

    def _check_teacher(self, resumed: ckpt.Checkpoint) -> None:
        """A resumed run distills from the same teacher, given again on the command line."""
        saved = resumed.state.get("teacher")
        mine = None if self.teacher is None else self.teacher.digest
        theirs = saved.get("digest") if isinstance(saved, dict) else None
        if mine == theirs:
            return
        if mine is None:
            raise CheckpointError(
                f"{resumed.path} was distilled from a teacher ({saved.get('description')}); "
                "a checkpoint never chooses files to read: pass --teacher again to resume"
            )
        if theirs is None:
            raise CheckpointError(f"{resumed.path} was trained without a teacher; drop --teacher")
        raise CheckpointError(
            f"--teacher {self.config.teacher} is not the teacher {resumed.path} was distilled "
            f"from ({saved.get('description')}): its weights differ"
        )

    def _check_out_dir(self) -> None:
        """Refuse to write into a folder that holds another run (nothing is overwritten)."""
        out = self.out
        holds_run = (out / "checkpoints").exists() or (out / logs.CSV_FILE).exists()
        if not holds_run:
            return
        if self.resumed is not None and self.resumed.path.parent.parent.resolve() == out.resolve():
            return
        raise TrainingError(
            f"{out} already holds a training run; continue it with --resume {out}, "
            f"or choose another --output"
        )

    def _probe_classes(self) -> int:
        """Number of classes: the width of the model's output for a dummy batch."""
        shape = (2, *tdata.sample_shape_for(self.declared))
        self.model.eval()  # no dropout (no RNG draw), BatchNorm statistics untouched
        example = torch.zeros(shape)
        with torch.no_grad():
            output = self.model(example)
        self.model.train()
        return self.task.check_output(output, example)

    def _shown_input(self, tensor: Any) -> str:
        """The input as the .tdsl declares it: ``ids: Tensor[N, T, int64]``."""
        return f"{self.input_name}: Tensor[{', '.join(map(str, tensor.shape))}, {tensor.dtype}]"

    def _refuse_token_ids(self) -> None:
        """A model of token ids learns from text, not from images or synthetic classes."""
        _, tensor, where = input_declaration(self.model)
        if tensor.dtype.startswith("int"):
            shown = self._shown_input(tensor)
            raise DataError(
                f"{self.model.tdsl_spec.model} takes token ids ({shown}, {where}): train it on "
                f"text, e.g. --data text:fortunes, not --data {self.config.data}"
            )

    def _load_text(self) -> LanguageModel:
        """Text data (tokenized, packed) for a model of token ids; the language-model task."""
        config = self.config
        _, tensor, where = input_declaration(self.model)
        shown = self._shown_input(tensor)
        if len(tensor.shape) != 2 or not tensor.dtype.startswith("int"):
            raise DataError(
                f"--data {config.data} trains a language model, whose input is token ids "
                f"[N, T] (e.g. ids: Tensor[N, T, int64]); this model declares {shown} ({where})"
            )
        declared_t = tensor.shape[1]
        if isinstance(declared_t, int) and config.seq_len not in (None, declared_t):
            raise DataError(
                f"--seq-len {config.seq_len} does not fit the model's input {shown} ({where}): "
                f"its blocks must be {declared_t} tokens"
            )
        self.seq_len = declared_t if isinstance(declared_t, int) else (
            config.seq_len or DEFAULT_SEQ_LEN)  # fmt: skip
        saved = self.resumed.tokenizer() if self.resumed is not None else None
        self.text = text.load(config.data, config.tokenizer, self.seq_len, saved,
                              config.limit_train, config.limit_test)  # fmt: skip
        task = LanguageModel(self.seq_len, self.text.vocab_size, config.label_smoothing)
        example = torch.zeros(2, self.seq_len, dtype=torch.long)
        self.model.eval()  # no dropout (no RNG draw), nothing learned
        try:
            with torch.no_grad():
                output = self.model(example)
        except ValueError as error:  # the model's own checks (rotary context, ids) name a line
            raise DataError(f"the model cannot take blocks of --seq-len {self.seq_len} "
                            f"tokens: {error}") from None  # fmt: skip
        self.model.train()
        self.num_classes = task.check_output(output, example)
        self.data = tdata.Datasets(config.data, self.text.train, self.text.val)
        return task

    def _check_labels(self) -> None:
        for split in ("train", "test"):
            dataset = getattr(self.data, split)
            if isinstance(dataset, ImageFolder) and len(dataset.classes) > self.num_classes:
                raise DataError(
                    f"{dataset.name} has {len(dataset.classes)} classes; the model has "
                    f"{self.num_classes} outputs (a num_classes parameter? --param "
                    f"num_classes={len(dataset.classes)}, and --reinit for a pretrained "
                    f"classifier)"
                )
            if isinstance(dataset, TensorDataset) and len(dataset):
                labels = dataset.tensors[1]
                low, high = int(labels.min()), int(labels.max())
                if low < 0 or high >= self.num_classes:
                    raise DataError(
                        f"dataset {self.config.data!r} ({split}) has labels {low}..{high}; "
                        f"the model has {self.num_classes} outputs"
                    )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr, decay = config.peak_lr, config.decay
        if config.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=decay)

    def _load(self, resumed: ckpt.Checkpoint) -> None:
        loader = sharding.optimizer_loader(self.model, self.optimizer)
        ckpt.load_optimizer(self.optimizer, self.model, resumed, loader)
        state = resumed.state
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        self.best_epoch = state["best_epoch"]
        # Checkpoints before the task abstraction kept the best accuracy only.
        self.best_score = state.get("best_score", state["best_test_acc"])

    def _state(self) -> dict[str, Any]:
        spec = self.model.tdsl_spec
        return {
            "epoch": self.epoch, "step": self.step, "best_score": self.best_score,
            "best_test_acc": self.history[self.best_epoch - 1]["test_acc"],
            "best_epoch": self.best_epoch, "task": self.task.name,
            "seq_len": self.seq_len if self.text is not None else None,
            "config": self.config.to_json(),
            "spec": {"source": spec.source, "model": spec.model, "params": spec.params,
                     "precision": spec.precision},
            "history": self.history,
            "teacher": None if self.teacher is None else
            {"digest": self.teacher.digest, "description": self.teacher.description},
        }  # fmt: skip

    def _announce(self, last: int) -> None:
        config, ctx = self.config, self.ctx
        params = sum(p.numel() for p in self.model.parameters())
        ternary = sum(isinstance(m, QuantModule) and is_ternary(m.quantizer)
                      for m in self.model.modules())  # fmt: skip
        name = self.model.tdsl_spec.model
        start = f", resuming after epoch {self.epoch}" if self.resumed is not None else ""
        self.report.line(
            f"training {name} ({params:,} parameters, {ternary} ternary layers) on "
            f"{self.data.name}: {len(self.data.train):,} train / {len(self.data.test):,} test "  # type: ignore[arg-type]
            f"samples, batch {config.batch_size} over {ctx.world_size} process(es) on "
            f"{ctx.device}, {config.optimizer} lr {config.peak_lr:g} {config.schedule}, "
            f"epochs {self.epoch + 1}..{last} of {config.epochs}{start}"
        )
        if self.init_report is not None:
            self.report.line(f"init: {self.init_report.line()}")
        if self.resumed is not None and config.init is not None:
            self.report.line("init: the weights come from the checkpoint (--init not read)")
        if isinstance(self.data.train, ImageFolder):
            transform = self.data.train.transform
            mean, std = config.images.normalization(transform.channels)
            self.report.line(
                f"images: {len(self.data.train.classes)} classes, input "
                f"{transform.channels}x{transform.height}x{transform.width}, mean "
                f"{_floats(mean)} std {_floats(std)}, {config.workers} worker(s)"
            )
        if self.teacher is not None:
            self.report.line(
                f"teacher: {self.teacher.description}; loss = {1 - config.distill_weight:g}·CE"
                f" + {config.distill_weight:g}·T²·KL at T={config.distill_temperature:g}"
            )
        if config.fp32_warmup_epochs:
            self.report.line(f"fp32 warm-up: epochs 1..{config.fp32_warmup_epochs} train the "
                             "quantized layers in fp32, ternary from the next")  # fmt: skip


def _floats(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def _seed_everything(seed: int) -> None:
    """Seed every RNG a run may draw from (weights init, dropout, users' data hooks)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
