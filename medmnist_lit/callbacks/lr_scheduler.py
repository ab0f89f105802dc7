"""Learning-rate decay and cyclic schedules attached as a callback, without touching the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.optim import Optimizer

from medmnist_lit.model.classifier import scheduler_interval, step_scheduler

#: Attribute marking an optimizer whose schedule a callback owns (two schedules would double-step it).
_OWNER = "_medmnist_lit_lr_schedule"


class LRSchedulerCallback(Callback):
    """Wrap any ``torch.optim.lr_scheduler`` class and step it per optimizer step or per epoch.

    In a config file::

        trainer:
          callbacks:
            - class_path: medmnist_lit.callbacks.LRSchedulerCallback
              init_args:
                scheduler:
                  class_path: torch.optim.lr_scheduler.CyclicLR
                  init_args: {base_lr: 0.0001, max_lr: 0.01, step_size_up: 200, mode: triangular2}

    Per-step schedules are stepped by a hook on the optimizer's ``step``, so they advance exactly once per
    optimizer step (with ``accumulate_grad_batches``, once per accumulated step). A model that configures its own
    scheduler for the same optimizer (``--lr_scheduler``) is an error rather than a silent double step. The
    scheduler's state is saved in checkpoints and restored on resume.

    Args:
        scheduler: Builds the scheduler from the optimizer, e.g. a ``class_path``/``init_args`` config or
            ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10)``.
        interval: ``"step"`` or ``"epoch"``; ``"auto"`` steps cyclic and one-cycle schedules per step, others per
            epoch.
        monitor: Metric given to ``ReduceLROnPlateau``.
        optimizer_index: Which of the model's optimizers to schedule.
    """

    def __init__(
        self,
        scheduler: Callable[[Optimizer], Any],
        interval: Literal["auto", "step", "epoch"] = "auto",
        monitor: str = "val/loss",
        optimizer_index: int = 0,
    ) -> None:
        self.factory = scheduler
        self.interval = interval
        self.monitor = monitor
        self.optimizer_index = optimizer_index
        self.scheduler: Any = None
        self._state: dict[str, Any] | None = None
        self._hook: Any = None
        self._optimizer: Optimizer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Build the scheduler on the trainer's optimizer and hook it to its steps."""
        if self.optimizer_index >= len(trainer.optimizers):
            raise MisconfigurationException(
                f"LRSchedulerCallback(optimizer_index={self.optimizer_index}) but the model has "
                f"{len(trainer.optimizers)} optimizer(s)"
            )
        optimizer = trainer.optimizers[self.optimizer_index]
        if any(config.scheduler.optimizer is optimizer for config in trainer.lr_scheduler_configs):
            raise MisconfigurationException(
                "The optimizer already has a learning-rate scheduler from the model (--lr_scheduler or "
                "configure_optimizers); LRSchedulerCallback would step the learning rate a second time. "
                "Use one of the two."
            )
        owner = getattr(optimizer, _OWNER, None)
        if owner is not None and owner is not self:
            raise MisconfigurationException(
                "Two LRSchedulerCallbacks schedule the same optimizer; combine them into one scheduler "
                "(e.g. torch.optim.lr_scheduler.SequentialLR or medmnist_lit.model.schedules.WarmupCosineLR)."
            )
        setattr(optimizer, _OWNER, self)
        self._optimizer = optimizer
        self.scheduler = self.factory(optimizer)
        if self._state is not None:
            self.scheduler.load_state_dict(self._state)
        self.interval = scheduler_interval(self.scheduler, self.interval)  # type: ignore[assignment]
        if self.interval == "step":
            self._hook = optimizer.register_step_post_hook(lambda *_: self.scheduler.step())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Step per-epoch schedules."""
        if self.interval == "epoch" and self.scheduler is not None:
            step_scheduler(self.scheduler, trainer.callback_metrics, self.monitor)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Detach from the optimizer."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._optimizer is not None and getattr(self._optimizer, _OWNER, None) is self:
            delattr(self._optimizer, _OWNER)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, saved in checkpoints."""
        return {"scheduler": self.scheduler.state_dict()} if self.scheduler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the scheduler's state when training resumes."""
        self._state = state_dict.get("scheduler")
