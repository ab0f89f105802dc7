"""Lightning's learning-rate range test (``Tuner.lr_find``): the loss-versus-learning-rate plot and its suggestion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from medmnist_lit.callbacks.run_artifacts import run_dir

__all__ = ["LRFindResult", "find_lr"]

log = logging.getLogger("medmnist_lit")


@dataclass
class LRFindResult:
    """Outcome of the learning-rate range test."""

    suggestion: float | None
    plot: Path
    lrs: list[float]
    losses: list[float]


def find_lr(trainer: L.Trainer, model: L.LightningModule, datamodule: Any, options: Any) -> LRFindResult:
    """Run Lightning's ``Tuner.lr_find`` and save the loss-versus-learning-rate plot with its suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner

    from medmnist_lit.utils.plots import save_figure

    finder = Tuner(trainer).lr_find(
        model,
        datamodule=datamodule,
        min_lr=options.min_lr,
        max_lr=options.max_lr,
        num_training=options.num_training,
        mode=options.mode,
        early_stop_threshold=options.early_stop_threshold,
        update_attr=False,  # the suggestion is reported, not applied: the optimizer config stays the source of truth
    )
    if finder is None:
        raise ValueError("lr-find does not run with --trainer.fast_dev_run; drop it")
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=suggestion is not None)
    path = run_dir(trainer) / "lr_find.png"
    save_figure(figure, path)
    if suggestion is None:
        log.info("No suggestion: the loss did not fall enough over the range; widen --lr_find.min_lr/max_lr")
    else:
        log.info("Suggested learning rate: %.3g  (train with --optimizer.lr %.3g)", suggestion, suggestion)
    log.info("plot: %s", path)
    return LRFindResult(suggestion, path, list(finder.results["lr"]), list(finder.results["loss"]))
