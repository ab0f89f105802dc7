"""Lightning's learning-rate range test (``Tuner.lr_find``): the loss-versus-learning-rate plot and its suggestion."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from medmnist_lit.callbacks.run_artifacts import run_dir, run_name
from medmnist_lit.utils.console import final_frames_only
from medmnist_lit.utils.figure_style import describe_run, save_figure
from medmnist_lit.utils.plots import lr_find_figure, scientific, smoothing_warmup

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
    """Run Lightning's ``Tuner.lr_find`` and save the loss-versus-learning-rate plot with its suggestion.

    The plot (``lr_find.png`` in the run directory) is drawn here rather than by ``finder.plot``: its loss axis
    leaves out the divergence at the largest rates, the smoother's warm-up is shaded, and the suggestion (Lightning's
    steepest descent, searched after the warm-up) is labelled.
    """
    from lightning.pytorch.tuner import Tuner

    with final_frames_only():  # Lightning's finder draws its own tqdm bar, a frame per step in a log file
        finder = Tuner(trainer).lr_find(
            model,
            datamodule=datamodule,
            min_lr=options.min_lr,
            max_lr=options.max_lr,
            num_training=options.num_training,
            mode=options.mode,
            early_stop_threshold=options.early_stop_threshold,
            update_attr=False,  # the suggestion is reported, not applied: the optimizer config is the source of truth
        )
    if finder is None:
        raise ValueError("lr-find does not run with --trainer.fast_dev_run; drop it")
    lrs, losses = [float(v) for v in finder.results["lr"]], [float(v) for v in finder.results["loss"]]
    # Lightning's smoothed loss starts low and rises over its first steps whatever the rate (see
    # utils.plots.smoothing_warmup); its steepest descent is looked for after that warm-up, when enough steps remain
    warmup = smoothing_warmup(len(losses))
    suggestion = finder.suggestion(skip_begin=warmup) if len(losses) > 3 * warmup else finder.suggestion()
    directory = run_dir(trainer)
    settings = describe_run(model, datamodule)
    steps = f"{len(lrs)} steps from {scientific(options.min_lr)} to {scientific(options.max_lr)} ({options.mode})"
    figure = lr_find_figure(lrs, losses, suggestion, name=run_name(directory), subtitle=f"{settings} · {steps}")
    path = directory / "lr_find.png"
    save_figure(figure, path)
    if suggestion is None:
        log.info("No suggestion: the loss did not fall enough over the range; widen --lr_find.min_lr/max_lr")
    else:
        log.info("Suggested learning rate: %.3g  (train with --optimizer.lr %.3g)", suggestion, suggestion)
    log.info("plot: %s", path)
    return LRFindResult(suggestion, path, lrs, losses)
