"""Checkpoint file names that number epochs from 1, as the console does."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor


class EpochNumberCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``filename`` may also use ``{epoch_number}``: the epoch counted from 1.

    ``best-epoch{epoch_number:03d}`` names the checkpoint of the fifth epoch ``best-epoch005.ckpt``, the epoch
    the console calls ``Epoch [5/5]``. Everything else is ``ModelCheckpoint``'s: ``{epoch}`` and the ``epoch``
    stored in the file stay Lightning's 0-based counter, and monitoring, top-k and ``last.ckpt`` are unchanged
    (only the public :meth:`format_checkpoint_name` is extended).
    """

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key, built once: Lightning reads it at every hook call, several times per step."""
        key = self.__dict__.get("_key")
        if key is None:  # from the monitor, mode and save triggers, all fixed when the callback is made
            key = self.__dict__["_key"] = super().state_key
        return key

    def format_checkpoint_name(
        self, metrics: dict[str, Tensor], filename: str | None = None, ver: int | None = None, prefix: str | None = None
    ) -> str:
        """ModelCheckpoint's name, with ``{epoch_number}`` = ``epoch + 1`` available to the template."""
        if "epoch" in metrics:
            extended: dict[str, Any] = {**metrics, "epoch_number": metrics["epoch"] + 1}
            metrics = extended
        return super().format_checkpoint_name(metrics, filename, ver, prefix)
