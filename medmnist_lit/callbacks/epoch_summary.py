"""One console line per epoch, in the course's format."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("medmnist_lit")


def _value(metrics: dict[str, Any], key: str) -> float:
    value = metrics.get(key)
    return math.nan if value is None else float(value)


class EpochSummary(Callback):
    """Log ``Epoch [k/n], Train Loss: …, Validation Loss: …, Validation Acc: … %`` once per epoch.

    Reads ``train/loss``, ``val/loss`` and ``val/acc`` from the trainer's callback metrics, so it works with any
    LightningModule that logs those keys. The line is written when the next epoch starts (or training ends):
    only then has every epoch-end hook, the module's included, logged its metrics.
    """

    def __init__(self) -> None:
        self._finished: int | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remember that an epoch finished."""
        self._finished = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report the previous epoch."""
        self._report(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report the last epoch."""
        self._report(trainer)

    @rank_zero_only
    def _report(self, trainer: L.Trainer) -> None:
        if self._finished is None:
            return
        epoch, self._finished = self._finished, None
        metrics = trainer.callback_metrics
        total = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        parts = [f"Epoch [{epoch + 1}/{total}]" if total else f"Epoch [{epoch + 1}]"]
        parts.append(f"Train Loss: {_value(metrics, 'train/loss'):.4f}")
        if "val/loss" in metrics:
            parts.append(f"Validation Loss: {_value(metrics, 'val/loss'):.4f}")
            parts.append(f"Validation Acc: {100 * _value(metrics, 'val/acc'):.2f} %")
        log.info(", ".join(parts))
