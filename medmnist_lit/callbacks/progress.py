"""One progress bar: training only, advancing per mini-batch (optimizer step) with an ETA, epochs counted from 1."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

#: Off a terminal the bar is redrawn about once per this many samples (the cadence of earlier releases).
LOG_SAMPLES = 2048


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, one at a time: ``Epoch 5/5``, a step per mini-batch, the rate and an ETA.

    Its total is the epoch's training batches, which are its optimizer steps (Lightning's count; with
    ``accumulate_grad_batches`` a step takes several). On a terminal it redraws at most every ``min_interval``
    seconds: a redraw per step would cost more than a small step. Off a terminal (a log file, CI) it redraws once
    per ~2,048 samples, so logs stay short. Validation is fast next to an epoch of training, so its nested bar
    only adds flicker; the epoch line printed by :class:`~medmnist_lit.callbacks.EpochSummary` reports its result.
    The bar does not stay after training.

    Args:
        refresh_rate: 0 disables the bar (Lightning's meaning); off a terminal, the least number of batches between
            redraws.
        process_position: Lightning's ``process_position``.
        min_interval: Least seconds between two redraws on a terminal.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, min_interval: float = 0.1) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self.min_interval = min_interval
        self._next = 0.0
        self._every = 1
        self._terminal = False

    def init_sanity_tqdm(self) -> Tqdm:
        """A disabled bar for the sanity check."""
        return Tqdm(disable=True)

    def init_validation_tqdm(self) -> Tqdm:
        """A disabled bar for validation."""
        return Tqdm(disable=True)

    def init_train_tqdm(self) -> Tqdm:
        """The training bar, removed when training ends."""
        bar = super().init_train_tqdm()
        bar.leave = False
        bar.unit = "step"
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Reset the bar to the epoch's batches; name the epoch from 1, as the epoch line does."""
        super().on_train_epoch_start(trainer)
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        number = trainer.current_epoch + 1
        self.train_progress_bar.set_description(f"Epoch {number}/{epochs}" if epochs else f"Epoch {number}")
        isatty = getattr(sys.stdout, "isatty", None)  # the bar writes to stdout
        self._terminal = bool(isatty and isatty())
        batch_size = getattr(trainer.train_dataloader, "batch_size", None)
        self._every = max(self.refresh_rate, LOG_SAMPLES // batch_size if isinstance(batch_size, int) else 1, 1)
        self._next = 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Advance to the batch; redraw (with the logged metrics) only when it is time to."""
        bar = self.train_progress_bar
        n = batch_idx + 1
        if bar is None or bar.disable or not self.is_enabled:
            return
        if n != bar.total:
            if self._terminal:
                now = time.monotonic()
                if now < self._next:
                    return
                self._next = now + self.min_interval
            elif n % self._every:
                return
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()
