"""Fold-parallel cross-validation: the heads of many folds trained together in one pass over the data.

Cross-validation folds train on one shared stream of development-set batches, each fold with its own validation
samples masked out (:meth:`~medmnist_lit.data.datamodule.MedMNISTDataModule.stream_loader`). So the folds can share
each batch: their heads are stacked (:class:`~medmnist_lit.model.heads.StackedHead`), one matrix product computes
every head's logits (the batch is read once), each head's loss is averaged over its own kept samples only, and one
optimizer step of Lightning's automatic optimization steps all stacked parameters: the sum of the heads' losses
gives each head its own gradient, and gradient clipping is applied per head. For element-wise optimizers (SGD
with momentum, Nesterov or weight decay, Adagrad, Adam, AdamW, RMSprop) and schedules that do not watch a metric,
every head then follows exactly the path it would follow alone from the same initial weights and batch order;
floating-point sums are ordered differently, so results agree to within float tolerance rather than bit for bit.
Dropout masks come from one random stream, so with dropout the folds are equivalent in distribution, not sample by
sample.

What needs one model at a time falls back to sequential folds, saying why (:func:`unsupported_reason`): batch norm
(statistics over masked batches), ReduceLROnPlateau and early stopping (they react to each fold's own metric), class
weights that differ per fold (``class_weights="balanced"``), several devices, callbacks that expect one model, and
Trainer options about each fold's own validation loop or Trainer (``val_check_interval``, ``limit_val_batches``,
``max_time``, ...).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelSummary
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar as BaseProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from medmnist_lit.callbacks import LRSchedulerCallback, ProgressBar
from medmnist_lit.cv.folds import fresh_model, init_hparams
from medmnist_lit.data.fold import Fold
from medmnist_lit.data.tasks import Task
from medmnist_lit.model.classifier import HISTORY_KEY, Classifier, PlainAttributes
from medmnist_lit.model.heads import MLP, LogisticRegression, StackedHead
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.training.fit import RunResult, fold_result
from medmnist_lit.utils.checkpoints import secure_trainer
from medmnist_lit.utils.files import atomic_path

log = logging.getLogger("medmnist_lit")

#: Share of free memory the stacked heads of one pass may use.
MEMORY_SHARE = 0.4

#: Trainer options about each fold's own validation loop or Trainer, with the values that leave them inactive.
PER_FOLD_OPTIONS: dict[str, tuple[Any, ...]] = {
    "val_check_interval": (None, 1.0),
    "check_val_every_n_epoch": (None, 1),
    "limit_val_batches": (None, 1.0),
    "limit_test_batches": (None, 1.0),
    "overfit_batches": (None, 0, 0.0),
    "fast_dev_run": (None, False, 0),
    "max_time": (None,),
    "barebones": (None, False),
}


def unsupported_reason(model: Classifier, callbacks: Sequence[Any], trainer_kwargs: dict[str, Any]) -> str | None:
    """Why these folds cannot train in parallel exactly as they would one after another, or ``None``."""
    head = model.head
    if not isinstance(head, (LogisticRegression, MLP)):
        return f"the head {type(head).__name__} is not a logistic or MLP head"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules()):
        return "batch norm computes statistics over each fold's own batch"
    if model.class_weights == "balanced":
        return "balanced class weights differ per fold"
    scheduler = (model.lr_scheduler_config or {}).get("class_path", "")
    if scheduler.rsplit(".", 1)[-1] == "ReduceLROnPlateau":
        return "ReduceLROnPlateau reacts to each fold's own validation loss"
    for callback in callbacks:
        if isinstance(callback, EarlyStopping):
            return "early stopping reacts to each fold's own validation loss"
        factory = getattr(callback, "factory", None)
        if factory is not None and getattr(factory, "func", factory) is ReduceLROnPlateau:
            return "ReduceLROnPlateau reacts to each fold's own validation loss"
        if not isinstance(callback, (BaseProgressBar, ModelSummary, LRSchedulerCallback)):
            return f"the callback {type(callback).__name__} expects one fold's model and Trainer at a time"
    if trainer_kwargs.get("num_nodes", 1) != 1 or several_devices(trainer_kwargs):
        return "several devices train data-parallel, one model at a time"
    for key, inactive in PER_FOLD_OPTIONS.items():
        value = trainer_kwargs.get(key)
        if all(value != default or type(value) is not type(default) for default in inactive):
            return f"trainer.{key}={value!r} needs each fold's own validation loop and Trainer"
    return None


def several_devices(trainer_kwargs: dict[str, Any]) -> bool:
    """Whether Trainer arguments ask for more than one device.

    ``devices`` comes as LightningCLI passes it: ``2``, ``"2"``, ``"0,1"``, ``[0, 1]``, or ``"auto"``/``-1``
    (every GPU there is; one CPU).
    """
    devices = trainer_kwargs.get("devices", "auto")
    if isinstance(devices, str):
        text = devices.strip().strip("[]")
        devices = [part for part in text.split(",") if part.strip()] if "," in text else text
        if isinstance(devices, str) and devices.lstrip("-").isdigit():
            devices = int(devices)
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if devices == "auto" or devices == -1:
        accelerator = str(trainer_kwargs.get("accelerator", "auto"))
        return accelerator in ("auto", "gpu", "cuda") and torch.cuda.device_count() > 1
    return isinstance(devices, int) and devices > 1


def head_bytes(model: Classifier, batch_size: int) -> int:
    """Rough memory of one head in a pass: weights, gradients, optimizer state, best copy, activations."""
    params = sum(p.numel() for p in model.head.parameters())
    widths = sum(m.out_features for m in model.head.modules() if isinstance(m, nn.Linear))
    return 4 * (6 * params + 4 * batch_size * widths)


def folds_per_pass(model: Classifier, batch_size: int, n_folds: int, device: torch.device) -> int:
    """How many folds fit in one pass within :data:`MEMORY_SHARE` of the free memory of ``device``."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 4 << 30
    return max(1, min(n_folds, int(MEMORY_SHARE * free) // head_bytes(model, batch_size)))


class FoldParallelClassifier(PlainAttributes, L.LightningModule):
    """Trains the heads of several folds at once on their shared stream, with Lightning's automatic optimization.

    A batch is one mini-batch of the stream with each fold's membership of its samples; :meth:`training_step`
    returns the sum of the folds' losses and Lightning takes the step (clipping each head on its own, see
    :meth:`configure_gradient_clipping`). After each training epoch every head is scored on its own validation
    samples; each head's best weights (lowest validation loss, first on ties, as ModelCheckpoint does) are kept
    and per-fold histories recorded.

    Args:
        template: The configured classifier (loss, optimizer and schedule settings).
        heads: The folds' freshly initialised heads.
        val_loaders: Each head's validation batches (its fold's samples, converted with its fold's transform).
        task: The data's task: cross-entropy on class indices, or BCE on 0/1 labels (multi-label).
    """

    def __init__(
        self, template: Classifier, heads: Sequence[nn.Module], val_loaders: Sequence[Iterable[Any]], task: Task
    ) -> None:
        super().__init__()
        self.template = [template]  # a list keeps it out of this module's parameters and hparams
        self.task = task
        self.stacked = StackedHead(heads)
        self.val_loaders = list(val_loaders)
        self.history: dict[str, list[Tensor]] = {}
        self.best_loss = torch.full((len(heads),), math.inf)
        self.best_epoch = torch.full((len(heads),), -1, dtype=torch.long)
        self.best_weights: list[Tensor] = []
        self.best_biases: list[Tensor] = []
        #: ``(step, learning rate)`` as LearningRateMonitor(logging_interval="step") logs them for one fold.
        self.learning_rates: list[tuple[int, float]] = []

    def on_fit_start(self) -> None:
        """Place the best-weight copies and the epoch's running sums on the training device."""
        self.best_weights = [w.detach().clone() for w in self.stacked.weights]
        self.best_biases = [b.detach().clone() for b in self.stacked.biases]
        self._sums = torch.zeros(3, self.stacked.num_heads, device=self.device)

    def _losses(self, logits: Tensor, y: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """Per-fold mean loss over kept samples (as each fold computes it alone), and the kept counts."""
        model = self.template[0]
        k, b, c = logits.shape
        kept = keep.sum(1)
        if self.task.multilabel:
            # Task.loss per sample: BCE with logits on targets smoothed towards 0.5, class weights as pos_weight;
            # its mean over all of a fold's kept entries is the mean over kept samples of their mean over labels
            smoothing = model.label_smoothing
            soft = y.to(logits.dtype) * (1 - smoothing) + smoothing / 2
            bce = nn.functional.binary_cross_entropy_with_logits(
                logits, soft.expand(k, b, c), pos_weight=model.class_weight, reduction="none"
            ).mean(-1)
            return (bce * keep).sum(1) / kept.clamp_min(1e-12), kept
        ce = nn.functional.cross_entropy(
            logits.reshape(k * b, c),
            y.repeat(k),
            weight=model.class_weight,
            label_smoothing=model.label_smoothing,
            reduction="none",
        ).view(k, b)
        # cross_entropy's mean divides the (class-weighted) sum by the sum of the targets' class weights
        norm = kept if model.class_weight is None else (keep * model.class_weight[y]).sum(1)
        return (ce * keep).sum(1) / norm.clamp_min(1e-12), kept

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Record the learning rate this step applies, where LearningRateMonitor would log it for a fold alone.

        Every head shares the one optimizer and schedule, so one curve serves all folds of the pass; like the
        monitor, a step is recorded when Lightning updates its logs (every ``log_every_n_steps`` steps).
        """
        trainer = self.trainer
        step, every = trainer.global_step, getattr(trainer, "log_every_n_steps", 1)  # set on the Trainer at init
        if (step + 1) % every == 0 or trainer.should_stop:
            self.learning_rates.append((step, float(trainer.optimizers[0].param_groups[0]["lr"])))

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        """The sum of the folds' mean losses on their own samples of the batch (heads are independent)."""
        x, y, keep = batch
        logits = self.stacked(x)
        per_fold, kept = self._losses(logits, y, keep)
        with torch.no_grad():
            correct = (self._correct(logits, y) * keep).sum(1)
            self._sums += torch.stack([per_fold.detach() * kept, correct, kept])
        self._batches += 1
        return per_fold.sum()

    def _correct(self, logits: Tensor, y: Tensor) -> Tensor:
        """Per fold and sample, 1 for a right class, or the share of labels right at 0.5 (multi-label)."""
        if self.task.multilabel:
            return ((logits > 0) == y.bool()).to(logits.dtype).mean(-1)  # sigmoid > 0.5, as the metrics threshold
        return (logits.argmax(-1) == y).to(logits.dtype)

    def configure_gradient_clipping(
        self, optimizer: Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Clip each fold's gradient on its own, as that fold's Trainer would (``trainer.gradient_clip_val``).

        Clipping by value is element-wise, the same for all heads at once; clipping by norm takes each head's norm.
        """
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        else:
            self.stacked.clip_grad_norm_(float(gradient_clip_val))

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's running sums."""
        self._sums.zero_()
        self._batches = 0

    @torch.inference_mode()
    def _validate(self) -> tuple[Tensor, Tensor]:
        """Per-fold validation loss and accuracy of the current weights (each head on its own samples only)."""
        sums = torch.zeros(3, self.stacked.num_heads, device=self.device)
        was_training = self.training
        self.eval()
        with self.trainer.precision_plugin.forward_context():  # as the validation loop of one fold would
            for row, loader in enumerate(self.val_loaders):
                for x, y in loader:
                    logits = self.stacked.forward_head(row, x)[None]
                    per_fold, kept = self._losses(logits, y, torch.ones(1, len(y), dtype=torch.bool, device=y.device))
                    correct = self._correct(logits[0], y).sum()
                    sums[:, row] += torch.stack([per_fold[0] * kept[0], correct, kept[0]])
        self.train(was_training)
        sums = sums.cpu()
        return sums[0] / sums[2].clamp_min(1), sums[1] / sums[2].clamp_min(1)

    def on_train_epoch_end(self) -> None:
        """Record the epoch and keep each head's best weights (Lightning then steps per-epoch schedules).

        Validation follows an epoch that ran all its batches, as Lightning's does: not one that ``max_steps`` cut.
        """
        sums = self._sums.cpu()
        epoch = {"train/loss": sums[0] / sums[2].clamp_min(1), "train/acc": sums[1] / sums[2].clamp_min(1)}
        complete = self._batches == self.trainer.num_training_batches
        if complete:
            val_loss, val_acc = self._validate()
            epoch.update({"val/loss": val_loss, "val/acc": val_acc})
        for key, value in epoch.items():
            self.history.setdefault(key, []).append(value)
        if not complete:
            return
        better = val_loss < self.best_loss
        self.best_loss = torch.where(better, val_loss, self.best_loss)
        self.best_epoch[better] = self.current_epoch
        index = better.nonzero().flatten().to(self.device)
        current = [*self.stacked.weights, *self.stacked.biases]
        for best, now in zip([*self.best_weights, *self.best_biases], current, strict=True):
            best[index] = now.detach()[index]

    def configure_optimizers(self) -> Any:
        """The template's optimizer and schedule, on the stacked parameters."""
        return self.template[0].build_optimization(self.parameters())

    def fold_history(self, index: int) -> dict[str, list[float]]:
        """Per-epoch metrics of head ``index``."""
        return {key: [float(v[index]) for v in values] for key, values in self.history.items()}

    def best_head_state(self, index: int) -> dict[str, Tensor]:
        """Best weights of head ``index`` as a state dict of the original head."""
        return self.stacked.head_state(index, self.best_weights, self.best_biases)


def _save_checkpoint(
    model: Classifier,
    path: Path,
    epoch: int,
    global_step: int,
    data: dict[str, Any],
    history: dict[str, list[float]],
    data_state: dict[str, Any],
    data_key: str,
) -> None:
    """A Lightning-format checkpoint (loadable with ``Classifier.load_from_checkpoint``), written atomically.

    It holds what a sequential fold's checkpoint holds: the fold's history up to ``epoch`` (what
    ``Classifier.on_save_checkpoint`` stores) and the DataModule's record under its class name (what Lightning
    stores from ``LightningDataModule.state_dict``), so ``predict`` needs only the checkpoint.
    """
    checkpoint = {
        "epoch": epoch,  # Lightning's 0-based counter, as ModelCheckpoint stores it
        "global_step": global_step,
        "pytorch-lightning_version": L.__version__,
        "state_dict": model.state_dict(),
        "hyper_parameters": init_hparams(model),
        "datamodule_hyper_parameters": data,
        data_key: data_state,
        HISTORY_KEY: {
            "history": {key: [float(v) for v in values[: epoch + 1]] for key, values in history.items()},
            "epoch": {key: min(epoch, len(values) - 1) for key, values in history.items() if values},
        },
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _finish_fold(
    run: FoldParallelClassifier,
    row: int,
    fold: Fold,
    scorer: Classifier,
    datamodule: Any,
    run_dir: Path,
    started: float,
    checkpoint: str,
    metrics_state: EpochMetrics,
) -> RunResult:
    """Write one fold's directory as a sequential fold would (events, checkpoints) and build its result."""
    directory = run_dir / fold.name
    history = run.fold_history(row)
    epochs = len(history.get("train/loss", []))
    best = int(run.best_epoch[row]) + 1 if run.best_epoch[row] >= 0 else epochs  # counted from 1
    logger = TensorBoardLogger(save_dir=run_dir, name="", version=directory.name, default_hp_metric=False)
    for epoch in range(epochs):
        logger.log_metrics({key: values[epoch] for key, values in history.items() if epoch < len(values)}, step=epoch)
    if run.learning_rates:
        writer, tag = logger.experiment, f"lr-{type(run.trainer.optimizers[0]).__name__}"  # the monitor's name
        for step, rate in run.learning_rates:
            writer.add_scalar(tag, rate, step)
    steps = run.trainer.global_step
    data = {k: v for k, v in datamodule.hparams.items() if not k.startswith("_")}
    data["fold"] = fold.number
    last = run.stacked.head_state(row, list(run.stacked.weights), list(run.stacked.biases))
    scorer.head.load_state_dict(last)
    state, key = datamodule.with_fold(fold).state_dict(), type(datamodule).__qualname__
    _save_checkpoint(scorer, directory / "checkpoints" / "last.ckpt", epochs - 1, steps, data, history, state, key)
    scorer.head.load_state_dict(run.best_head_state(row))
    best_path = directory / "checkpoints" / f"best-epoch{best:03d}.ckpt"
    _save_checkpoint(scorer, best_path, best - 1, steps, data, history, state, key)
    if checkpoint != "best":
        scorer.head.load_state_dict(last)
    return fold_result(
        scorer,
        datamodule,
        fold,
        directory,
        history,
        scored_epoch=best if checkpoint == "best" else epochs,
        started=started,
        loggers=[logger],
        checkpoint=str(best_path) if checkpoint == "best" else None,
        save_yaml=False,
        metrics=metrics_state,
    )


def train_parallel(
    template: Classifier,
    datamodule: Any,
    recipe: Any,
    run_dir: Path,
    folds: list[Fold],
    per_pass: int | None = None,
    checkpoint: str = "last",
) -> Iterator[tuple[Fold, RunResult]]:
    """Train ``folds`` (stream folds) in passes of stacked heads; yield each with its result, directory written.

    Head ``k`` starts from the weights a sequential run draws for its fold (seeded ``fold.seed``).
    """
    own = ("callbacks", "logger", "enable_progress_bar", "enable_checkpointing", "num_sanity_val_steps")
    kwargs = {k: v for k, v in recipe.kwargs.items() if k not in own}
    progress = recipe.kwargs.get("enable_progress_bar") is not False

    def make_trainer() -> L.Trainer:
        return secure_trainer(
            L.Trainer(
                **kwargs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=progress,
                callbacks=[*([ProgressBar()] if progress else []), *copy.deepcopy(recipe.callbacks)],
                num_sanity_val_steps=0,
            )
        )

    trainer = make_trainer()
    device = trainer.strategy.root_device
    size = per_pass or folds_per_pass(template, folds[0].stream_batch_size or 1, len(folds), device)
    task = datamodule.task
    scorer = fresh_model(template).to(device)
    if scorer.task_kind not in (None, task.kind):
        raise ValueError(
            f"the Classifier was built for a {scorer.task.kind.value} task but the data's task is {task.kind.value}; "
            "leave model.task out to take it from the data"
        )
    scorer.set_task(task.kind)  # as a sequential fold's setup adopts the data's task (checkpoints record it)
    metrics_state = scorer.new_metrics(sync=False).to(device)
    for start in range(0, len(folds), size):
        chunk = folds[start : start + size]
        heads = []
        for fold in chunk:
            L.seed_everything(fold.seed, workers=True, verbose=False)
            heads.append(template.make_head())
        val_loaders = [datamodule.loader(f.val, shard=False, device=device, transform=f.transform) for f in chunk]
        run = FoldParallelClassifier(template, heads, val_loaders, task)
        if start:
            trainer = make_trainer()
        began = time.perf_counter()
        trainer.fit(run, train_dataloaders=datamodule.stream_loader(chunk, device))
        share = (time.perf_counter() - began) / len(chunk)
        log.info("folds %s trained together in one pass (%.1f s)", _span(chunk), time.perf_counter() - began)
        for row, fold in enumerate(chunk):
            started = time.perf_counter() - share
            yield fold, _finish_fold(run, row, fold, scorer, datamodule, run_dir, started, checkpoint, metrics_state)


def _span(folds: list[Fold]) -> str:
    return f"{folds[0].number}–{folds[-1].number}" if len(folds) > 1 else str(folds[0].number)
