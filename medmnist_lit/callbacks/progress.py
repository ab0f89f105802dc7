"""One progress bar: training only, on a terminal only, advancing per mini-batch (optimizer step) with an ETA."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from medmnist_lit.utils.console import above_progress_bars


def stdout_is_terminal() -> bool:
    """Whether ``sys.stdout`` (where the bar draws) is a terminal, not a file, a pipe or a capture."""
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, one at a time: ``Epoch 5/5``, a step per mini-batch, the rate and an ETA.

    The bar is drawn only when stdout is a terminal: in a log file, a pipe or CI its carriage-return frames would
    be noise, and the epoch line of :class:`~medmnist_lit.callbacks.EpochSummary` already reports each epoch. Being
    the trainer's progress bar even when silent, it keeps Lightning from adding its own.

    Its total is the epoch's training batches, which are its optimizer steps (Lightning's count; with
    ``accumulate_grad_batches`` a step takes several). It redraws at most every ``min_interval`` seconds: a redraw
    per step would cost more than a small step. Validation is fast next to an epoch of training, so its nested bar
    only adds flicker. While the bar is shown, ``medmnist_lit`` log lines print above it (tqdm's logging
    redirection). The bar does not stay after training.

    Args:
        refresh_rate: 0 disables the bar (Lightning's meaning).
        process_position: Lightning's ``process_position``.
        min_interval: Least seconds between two redraws.
    """

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, min_interval: float = 0.1) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self.min_interval = min_interval
        self._next = 0.0
        self._terminal = True
        self._redirect: contextlib.ExitStack | None = None

    @property
    def is_enabled(self) -> bool:
        """Lightning's rule (enabled, ``refresh_rate > 0``, rank zero) and stdout is a terminal."""
        return super().is_enabled and self._terminal

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Decide, once per run, whether stdout is a terminal (the tuner's ``enable()`` cannot undo that)."""
        super().setup(trainer, pl_module, stage)
        self._terminal = stdout_is_terminal()

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

    def on_train_start(self, *args: Any) -> None:
        """Create the bar; from now on log lines print above it."""
        super().on_train_start(*args)
        if self.is_enabled and self._redirect is None:
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(above_progress_bars())

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        """Reset the bar to the epoch's batches; name the epoch from 1, as the epoch line does."""
        super().on_train_epoch_start(trainer)
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        number = trainer.current_epoch + 1
        self.train_progress_bar.set_description(f"Epoch {number}/{epochs}" if epochs else f"Epoch {number}")
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
            now = time.monotonic()
            if now < self._next:
                return
            self._next = now + self.min_interval
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.refresh()

    def on_train_end(self, *args: Any) -> None:
        """Remove the bar; log lines print plainly again."""
        super().on_train_end(*args)
        self._stop_redirect()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Restore plain logging when training fails or is interrupted."""
        self._stop_redirect()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Restore plain logging at the end of every run, whatever happened."""
        super().teardown(trainer, pl_module, stage)
        self._stop_redirect()

    def _stop_redirect(self) -> None:
        redirect, self._redirect = self._redirect, None
        if redirect is not None:
            redirect.close()
