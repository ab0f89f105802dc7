"""What the two cross-validation engines share: how a fold's Trainer and model are made.

:mod:`.runner` (sequential folds, the summary) and :mod:`.fold_parallel` (folds trained together in one pass)
both build on these, so neither imports the other's internals.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from medmnist_lit.training.fit import default_callbacks
from medmnist_lit.utils.checkpoints import secure_trainer

__all__ = ["TrainerRecipe", "fresh_model", "init_hparams"]


@dataclass
class TrainerRecipe:
    """How to build a fresh Trainer: keyword arguments plus template callbacks, deep-copied for every use."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)

    def build(self, log_dir: Path, *, monitor: str | None = "val/loss") -> L.Trainer:
        """A Trainer logging to ``log_dir`` with fresh callbacks; no progress bar or epoch lines (one per fold)."""
        kwargs = {k: v for k, v in self.kwargs.items() if k not in ("callbacks", "logger", "enable_progress_bar")}
        defaults = default_callbacks(monitor=monitor, progress_bar=False, epoch_lines=False, figures=False)
        logger = TensorBoardLogger(save_dir=log_dir.parent, name="", version=log_dir.name, default_hp_metric=False)
        return secure_trainer(
            L.Trainer(
                **kwargs,
                logger=logger,
                callbacks=[*defaults, *copy.deepcopy(self.callbacks)],
                enable_progress_bar=False,
            )
        )


ModelT = TypeVar("ModelT", bound=L.LightningModule)


def init_hparams(model: L.LightningModule) -> dict[str, Any]:
    """``model``'s constructor arguments: its hparams without LightningCLI's bookkeeping (``_instantiator``...)."""
    return {k: v for k, v in model.hparams.items() if not k.startswith("_")}


def fresh_model(template: ModelT) -> ModelT:
    """A new, untrained model with ``template``'s hyperparameters (new weights from the current seed)."""
    return type(template)(**init_hparams(template))
