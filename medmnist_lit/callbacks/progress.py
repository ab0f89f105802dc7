"""A single progress bar counting optimizer steps: training only, no nested validation or sanity-check bars."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, showing one bar at a time and counting mini-batches (optimizer steps).

    Training batches may be blocks of several mini-batches (see :mod:`medmnist_lit.data.loaders`); the bar advances
    by the block's length so it reads in steps, whatever the block size. Validation is fast next to an epoch of
    training, so its nested bar only adds flicker; the epoch line printed by
    :class:`~medmnist_lit.callbacks.EpochSummary` reports its result. The bar does not stay after training.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self._steps = 0

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
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Reset the bar to the epoch's number of optimizer steps."""
        super().on_train_epoch_start(trainer)
        self._steps = 0
        steps = getattr(trainer.train_dataloader, "num_batches", None)
        if steps is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.reset(total=steps)
            self.train_progress_bar.unit = "step"

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Advance by the number of optimizer steps the batch held."""
        self._steps += len(batch) if hasattr(batch, "parts") else 1
        if getattr(trainer.train_dataloader, "num_batches", None) is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        if not bar.disable:
            bar.n = self._steps
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
