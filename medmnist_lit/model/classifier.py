"""The LightningModule that trains a plain head with its task's loss (cross-entropy, or BCE for multi-label)."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, ReduceLROnPlateau

from medmnist_lit.data.tasks import Task, TaskKind
from medmnist_lit.model.heads import ActivationName, HeadName, build_head
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.utils.checkpoints import WeightsOnlyLoading

log = logging.getLogger(__name__)

#: Schedulers whose formula counts optimizer steps rather than epochs.
PER_STEP_SCHEDULERS: tuple[type, ...] = (CyclicLR, OneCycleLR)
DEFAULT_OPTIMIZER: dict[str, Any] = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.001}}
Stage = Literal["train", "val", "test"]
#: Checkpoint key of the per-epoch history (plain lists of floats: loadable weights-only).
HISTORY_KEY = "medmnist_lit_history"


def resolve_class_path(class_path: str, default_module: str) -> type:
    """Import ``class_path``; a bare name such as ``"SGD"`` is looked up in ``default_module``."""
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name or default_module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"cannot import {class_path!r}: give a class such as {default_module}.{name}") from None


def instantiate(config: dict[str, Any], first: Any, default_module: str) -> Any:
    """Instantiate a ``{"class_path": ..., "init_args": {...}}`` config with ``first`` as first argument."""
    if "class_path" not in config:
        raise ValueError(f"expected a config with 'class_path' and 'init_args', got {config}")
    cls = resolve_class_path(config["class_path"], default_module)
    return cls(first, **dict(config.get("init_args") or {}))


def scheduler_interval(scheduler: Any, interval: str = "auto") -> str:
    """``"step"`` for per-batch schedules (cyclic, one-cycle), else ``"epoch"``, unless forced."""
    if interval != "auto":
        return interval
    return "step" if isinstance(scheduler, PER_STEP_SCHEDULERS) else "epoch"


def step_scheduler(scheduler: Any, metrics: Mapping[str, Any], monitor: str) -> None:
    """Step ``scheduler`` once; ``ReduceLROnPlateau`` gets ``metrics[monitor]`` (skipped, with a warning, if absent)."""
    if not isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step()
        return
    value = metrics.get(monitor)
    if value is None:
        rank_zero_warn(f"ReduceLROnPlateau monitors {monitor!r}, which was not logged; not stepped")
        return
    scheduler.step(float(value))


class PlainAttributes:
    """Assigning a plain attribute of a module skips ``nn.Module.__setattr__``'s checks: same result, less time.

    Lightning sets plain attributes on the LightningModule around every hook (the current hook's name), a few
    dozen times per optimizer step; ``nn.Module.__setattr__`` checks parameters, buffers and submodules each
    time, about a twentieth of the step time at small batches. An attribute already in the instance ``__dict__``
    is none of those (``nn.Module`` keeps them elsewhere), so giving it a value that is neither a tensor nor a
    module is exactly what ``nn.Module.__setattr__`` would do too. Mix in before ``LightningModule``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__ and not isinstance(value, (Tensor, nn.Module)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class UnsetHead(nn.Module):
    """The head of a Classifier whose shapes come from the data at ``setup`` (it has no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        """Refuse: there is no head yet."""
        raise RuntimeError(
            "the Classifier has no shapes yet: train it with a MedMNISTDataModule, or give num_classes and input_shape"
        )


class Classifier(PlainAttributes, WeightsOnlyLoading, L.LightningModule):
    """Training of a logistic-regression or MLP head on flattened images, with the loss of the data's task.

    Single-label tasks (binary, multi-class, ordinal) train a softmax head with cross-entropy; multi-label tasks a
    sigmoid per label with binary cross-entropy (:class:`~medmnist_lit.data.tasks.Task`).

    Lightning's automatic optimization: each batch is one mini-batch, :meth:`training_step` returns its loss and
    Lightning does the rest (backward, gradient clipping and accumulation, the optimizer step, schedulers per
    ``interval``), so every Trainer argument and callback hook means what Lightning's documentation says.

    Args:
        num_classes: Number of classes (linked from the data).
        input_shape: ``(C, H, W)`` of one image (linked from the data).
        class_names: Class names, for per-class metrics and plots (linked from the data).
        task: The task type, MedMNIST's name for it (``"multi-label, binary-class"`` ...) or a member name of
            :class:`~medmnist_lit.data.tasks.TaskKind` (``"multilabel"``); ``None`` takes the data's at ``setup``
            (single-label without data). Checkpoints record it.
        head: ``"logistic"`` (one linear layer) or ``"mlp"``.
        hidden_sizes: MLP hidden layer widths.
        activation: MLP activation.
        dropout: MLP dropout probability.
        batch_norm: MLP batch normalisation.
        label_smoothing: Label smoothing (multi-label: targets move towards 0.5 by as much).
        class_weights: ``"balanced"`` (inverse class frequency of the training part), explicit weights, or
            ``None``. Multi-label: the weights of each label's positives (BCE ``pos_weight``); ``"balanced"``
            gives each label its negatives-to-positives ratio in the training part.
        optimizer: ``{"class_path": "torch.optim.SGD", "init_args": {"lr": 0.001}}``-style config; set from the
            CLI's ``--optimizer``. ``None`` means SGD with lr 0.001, the course recipe.
        lr_scheduler: Scheduler config in the same style (``--lr_scheduler``), or ``None``.
        lr_scheduler_interval: ``"auto"`` steps cyclic and one-cycle schedules per batch, others per epoch.
        monitor: Metric that ``ReduceLROnPlateau`` watches.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        class_names: list[str] | None = None,
        task: str | None = None,
        head: HeadName = "logistic",
        hidden_sizes: list[int] = [512, 512],  # noqa: B006 - jsonargparse shows it; never mutated
        activation: ActivationName = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        label_smoothing: float = 0.0,
        class_weights: Literal["balanced"] | list[float] | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        lr_scheduler_interval: Literal["auto", "step", "epoch"] = "auto",
        monitor: str = "val/loss",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_classes: int = num_classes or 0  # 0 until the shapes are known
        self.class_names = list(class_names) if class_names else None
        try:
            self.task_kind: TaskKind | None = None if task is None else TaskKind.parse(task)
        except ValueError as err:
            raise ValueError(f"model.task: {err}") from None
        self._task: Task | None = None  # built once the classes are known (the loss reads it at every step)
        self.head: nn.Module = UnsetHead()
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self.optimizer_config = optimizer or DEFAULT_OPTIMIZER
        self.lr_scheduler_config = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.monitor = monitor
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing must lie in [0, 1), got {label_smoothing}")
        weight = torch.tensor(class_weights, dtype=torch.float32) if isinstance(class_weights, list) else None
        self.class_weight: Tensor | None
        # not persistent: explicit weights come from the hyperparameters, "balanced" ones from the data at setup
        self.register_buffer("class_weight", weight, persistent=False)
        if num_classes is not None and input_shape is not None:
            self.set_shapes(num_classes, input_shape, class_names, self.task_kind)
        #: Finished epochs' metrics, e.g. ``history["val/loss"] == [0.9, 0.7, ...]`` (also used for plots).
        self.history: dict[str, list[float]] = {}
        self._history_epoch: dict[str, int] = {}
        #: Last computed confusion matrix per stage.
        self.confusion: dict[str, Tensor] = {}

    # -------------------------------------------------------------------------------------- model
    def set_shapes(
        self,
        num_classes: int,
        input_shape: Sequence[int],
        class_names: Sequence[str] | None,
        task: TaskKind | str | None = None,
    ) -> None:
        """Build the head and the metrics for ``num_classes`` classes (or labels) of ``input_shape`` images.

        Called by ``__init__`` when both are given, else by :meth:`setup` with the DataModule's (so
        ``trainer.fit(Classifier(), MedMNISTDataModule(source=...))`` fits the data); the hyperparameters, and so
        the checkpoints, record them.
        """
        if isinstance(self.class_weights, list) and len(self.class_weights) != num_classes:
            raise ValueError(f"model.class_weights has {len(self.class_weights)} values for {num_classes} classes")
        names = list(class_names) if class_names else None
        kind = None if task is None else TaskKind.parse(task)
        self.hparams.update(
            num_classes=int(num_classes),
            input_shape=tuple(input_shape),
            class_names=names,
            task=None if kind is None else kind.value,
        )
        self.num_classes, self.class_names = int(num_classes), names
        self.set_task(kind)  # refuses a task that does not fit the classes (a binary task with 3)
        self.head = self.make_head()

    def set_task(self, task: TaskKind | str | None) -> None:
        """Take ``task`` (recorded in the hyperparameters) and build the stages' metrics for it."""
        kind = None if task is None else TaskKind.parse(task)
        self.hparams["task"] = None if kind is None else kind.value
        self.task_kind, self._task = kind, None
        _ = self.task
        self.train_metrics = self.new_metrics()
        self.val_metrics = self.new_metrics()
        self.test_metrics = self.new_metrics()

    @property
    def task(self) -> Task:
        """The model's :class:`~medmnist_lit.data.tasks.Task` (single-label when none was given)."""
        if self._task is None:
            names = self.class_names or [str(i) for i in range(self.num_classes)]
            try:
                self._task = Task(self.task_kind, tuple(names)) if self.task_kind else Task.single_label(names)
            except ValueError as err:
                raise ValueError(f"model.task: {err}") from None
        return self._task

    def new_metrics(self, sync: bool = True) -> EpochMetrics:
        """A fresh metric accumulator for this model's outputs (``sync=False``: this process's samples only)."""
        return EpochMetrics(self.num_classes, self.class_names, sync=sync, task=self.task)

    def make_head(self) -> nn.Module:
        """A freshly initialised head of this model's architecture (drawn from torch's global generator)."""
        hp = self.hparams
        return build_head(
            hp["head"],
            int(np.prod(hp["input_shape"])),
            hp["num_classes"],
            hidden_sizes=hp["hidden_sizes"],
            activation=hp["activation"],
            dropout=hp["dropout"],
            batch_norm=hp["batch_norm"],
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits of a batch of images."""
        return self.head(x)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """The task's loss (:meth:`Task.loss`) with the configured label smoothing and class weights."""
        return self.task.loss(logits, target, self.class_weight, self.label_smoothing)

    def scores(self, logits: Tensor) -> Tensor:
        """Probabilities of logits: softmax over the classes, or a sigmoid per label (:meth:`Task.scores`)."""
        return self.task.scores(logits)

    def setup(self, stage: str) -> None:
        """Take the shapes, class names and task from the attached DataModule; resolve ``class_weights="balanced"``.

        Raises:
            MisconfigurationException: No shapes were given and no MedMNISTDataModule is attached, or the given
                shapes or task differ from the data's.
        """
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "input_shape"):
            shapes = (int(datamodule.num_classes), tuple(datamodule.input_shape))
            if isinstance(self.head, UnsetHead):
                self.set_shapes(*shapes, datamodule.class_names, self.task_kind)
            elif shapes != (self.num_classes, tuple(self.hparams["input_shape"])):
                raise MisconfigurationException(
                    f"the Classifier was built for {self.num_classes} classes of {tuple(self.hparams['input_shape'])} "
                    f"images but the data has {shapes[0]} classes of {shapes[1]}; leave num_classes and input_shape "
                    "out to take them from the data"
                )
            self._take_task(datamodule)
        elif isinstance(self.head, UnsetHead):
            raise MisconfigurationException(
                "Classifier() without num_classes and input_shape takes them from a MedMNISTDataModule: pass one to "
                "trainer.fit, or give num_classes and input_shape"
            )
        if self.class_weights != "balanced" or self.class_weight is not None:
            return
        if datamodule is None or not hasattr(datamodule, "class_counts"):
            raise MisconfigurationException("class_weights='balanced' needs a MedMNISTDataModule to count classes")
        if self.task.multilabel:
            labels = torch.as_tensor(np.asarray(datamodule.dataset.labels)[datamodule.indices("train")])
            positives = labels.sum(0, dtype=torch.float32)
            # BCE's pos_weight: a label's positives weigh as much as its negatives in total
            self.class_weight = (len(labels) - positives) / positives.clamp_min(1)
            return
        counts = torch.as_tensor(datamodule.class_counts("train"), dtype=torch.float32)
        # sklearn's "balanced": n_samples / (n_classes * count), so a balanced set gets weight 1
        self.class_weight = counts.sum() / (len(counts) * counts.clamp_min(1))

    def _take_task(self, datamodule: Any) -> None:
        """Adopt the data's task when none was given; refuse a model built for another one."""
        data_task = getattr(datamodule, "task", None)
        if not isinstance(data_task, Task):
            return
        if self.task_kind is None:
            if data_task.kind is not self.task.kind:
                self.set_task(data_task.kind)
            else:
                self.hparams["task"] = data_task.kind.value  # checkpoints record it
                self.task_kind, self._task = data_task.kind, None
        elif data_task.kind is not self.task_kind:
            raise MisconfigurationException(
                f"the Classifier was built for a {self.task_kind.value} task but the data's task is "
                f"{data_task.kind.value}; leave model.task out to take it from the data"
            )

    # ----------------------------------------------------------------------------------- training
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """The loss of one mini-batch; Lightning takes the optimizer step."""
        x, y = batch
        logits = self(x)
        # a cross-validation stream batch may hold none of this fold's samples: a zero loss with zero gradients
        # still takes its step, keeping every fold on the shared step count (as the fold-parallel engine does)
        loss = self.loss(logits, y) if len(y) else logits.sum()
        self.train_metrics.update(logits, y, loss)
        return self._global_mean(loss, y) if self.trainer.world_size > 1 else loss

    def _global_mean(self, loss: Tensor, target: Tensor) -> Tensor:
        """This process's part of the mean loss over the samples of all processes' batches of this step.

        DDP averages the processes' gradients, which is the gradient of that mean only when every process holds as
        many samples (as much class weight) as the others: the batches of a cross-validation stream do not. The
        local mean is scaled by the process's share, so the step is the one a single device would take on the
        union of the batches.
        """
        # BCE (multi-label) averages over every sample's labels alike: pos_weight does not change the denominator
        class_weight = None if self.task.multilabel else self.class_weight
        weight = class_weight[target].sum() if class_weight is not None else target.new_tensor(len(target))
        weight = weight.detach().float()
        total = self.trainer.strategy.reduce(weight.clone(), reduce_op="sum")
        share = torch.where(total > 0, weight * self.trainer.world_size / total.clamp_min(1e-12), 0.0)
        return loss * share

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: Stage) -> None:
        x, y = batch
        logits = self(x)
        self.stage_metrics(stage).update(logits, y, self.loss(logits, y))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Record validation outputs."""
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Record test outputs."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Probabilities of a batch (``(x, y)`` or bare ``x``): per class, or per label (multi-label)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.scores(self(x))

    # ---------------------------------------------------------------------------------- epoch ends
    def stage_metrics(self, stage: Stage) -> EpochMetrics:
        """The metric accumulator of ``stage``."""
        return {"train": self.train_metrics, "val": self.val_metrics, "test": self.test_metrics}[stage]

    def _log_stage(self, stage: Stage) -> dict[str, float]:
        metrics = self.stage_metrics(stage)
        if not metrics.num_samples:
            return {}
        scalars, confmat, _, _ = metrics.compute()
        if confmat.ndim == 2:  # multi-label has one 2×2 matrix per label: no class-by-class matrix to draw
            self.confusion[stage] = confmat
        logged = {f"{stage}/{k}": v for k, v in scalars.items()}
        if stage != "test" and not self.trainer.sanity_checking:
            epoch = self.current_epoch
            for key, value in logged.items():
                series = self.history.setdefault(key, [])
                # one value per epoch: a second validation in an epoch (val_check_interval) replaces the first
                if self._history_epoch.get(key) == epoch:
                    series[-1] = value
                else:
                    series.append(value)
                self._history_epoch[key] = epoch
        # x-axis of epoch metrics in TensorBoard is the epoch, so runs with different batch sizes line up
        self.log_dict({**logged, "step": float(self.current_epoch)}, sync_dist=False)
        return logged

    def on_train_epoch_end(self) -> None:
        """Log training metrics."""
        self._log_stage("train")

    def on_validation_epoch_end(self) -> None:
        """Log validation metrics."""
        self._log_stage("val")

    def on_test_epoch_end(self) -> None:
        """Log test metrics."""
        self._log_stage("test")

    # -------------------------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the per-epoch :attr:`history` in the checkpoint (plain floats), so a resumed run goes on with it."""
        checkpoint[HISTORY_KEY] = {
            "history": {key: [float(v) for v in values] for key, values in self.history.items()},
            "epoch": dict(self._history_epoch),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's :attr:`history` when training resumes from it, or the model is loaded alone.

        Evaluating a checkpoint (``trainer.test(ckpt_path=...)`` after a fit) leaves the history of the training
        that made it as it is. Checkpoints without a history (older versions) leave it empty.
        """
        saved = checkpoint.get(HISTORY_KEY)
        try:
            function = self.trainer.state.fn
        except RuntimeError:  # not attached to a Trainer: Classifier.load_from_checkpoint
            function = None
        if saved is None or function not in (None, TrainerFn.FITTING):
            return
        self.history = {str(key): [float(v) for v in values] for key, values in saved["history"].items()}
        self._history_epoch = {str(key): int(epoch) for key, epoch in saved["epoch"].items()}

    # ------------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The configured optimizer, and scheduler if any."""
        return self.build_optimization(self.parameters())

    def build_optimization(self, parameters: Iterable[Any]) -> Any:
        """The configured optimizer over ``parameters`` and its scheduler, as ``configure_optimizers`` returns.

        The scheduler comes in Lightning's dict with its ``interval`` (per optimizer step or per epoch) and, for
        ``ReduceLROnPlateau``, the metric it watches: :attr:`monitor`, or a ``monitor`` in the scheduler's
        ``init_args`` (LightningCLI's ``ReduceLROnPlateau`` takes one).
        """
        optimizer: Optimizer = instantiate(self.optimizer_config, parameters, "torch.optim")
        if not self.lr_scheduler_config:
            return optimizer
        config = dict(self.lr_scheduler_config)
        init_args = dict(config.get("init_args") or {})
        self.monitor = init_args.pop("monitor", None) or self.monitor
        scheduler = instantiate({**config, "init_args": init_args}, optimizer, "torch.optim.lr_scheduler")
        interval = scheduler_interval(scheduler, self.lr_scheduler_interval)
        schedule: dict[str, Any] = {"scheduler": scheduler, "interval": interval, "frequency": 1}
        if isinstance(scheduler, ReduceLROnPlateau):
            # strict=False: a run without validation (a refit) warns that the metric is missing instead of failing
            schedule.update(monitor=self.monitor, strict=False)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
