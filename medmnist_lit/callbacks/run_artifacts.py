"""Files a run directory holds besides checkpoints: split indices, chart layout, curves and confusion matrix."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from medmnist_lit.utils.checkpoints import CheckpointError, load_checkpoint
from medmnist_lit.utils.figure_style import describe_run, save_figure, style
from medmnist_lit.utils.plots import confusion_figure, curves_figure

log = logging.getLogger(__name__)

#: TensorBoard "Custom Scalars" layout: train and validation of one metric on one chart.
CHART_LAYOUT = {
    "Train vs validation": {
        title: ["Multiline", [f"^train/{key}$", f"^val/{key}$"]]
        for title, key in (("loss", "loss"), ("accuracy", "acc"), ("macro-F1", "f1"), ("AUROC", "auroc"))
    }
}


def run_dir(trainer: L.Trainer) -> Path:
    """The run directory (``lightning_logs/<name>/version_<n>`` with the default logger).

    Call it on every process: with several processes ``trainer.log_dir`` is a collective (broadcast) call.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def run_name(directory: Path) -> str:
    """How figures title a run: its last two path parts, ``seed_logistic/version_0``."""
    return "/".join(directory.parts[-2:])


def checkpoint_epoch(trainer: L.Trainer) -> int | None:
    """The epoch (counted from 1) of the checkpoint callback's best checkpoint, the one ``fit`` scores."""
    path = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
    if not path:
        return None
    try:
        return int(load_checkpoint(path)["epoch"]) + 1  # Lightning counts from 0
    except (CheckpointError, KeyError, TypeError, ValueError) as err:
        log.debug("no checkpoint mark on the curves: %s", err)
        return None


def tensorboard(trainer: L.Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's TensorBoard logger, if it has one."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


class RunArtifacts(Callback):
    """Write what a researcher needs next to the TensorBoard events.

    - ``split.npz``: the split's indices (``--data.split_file`` re-creates the split exactly);
    - a TensorBoard chart layout with train and validation loss/accuracy on one chart each;
    - ``curves.png``: loss and accuracy per epoch, train and validation, the scored checkpoint's epoch marked;
    - ``confusion_matrix.png`` (test) and confusion-matrix images in TensorBoard.

    Figures are titled with the run's name and settings (:func:`~medmnist_lit.utils.figure_style.describe_run`).

    Args:
        figures: Render the figures (PNG files and TensorBoard images). Cross-validation folds skip them: a
            few hundred milliseconds per figure add up over hundreds of folds.
    """

    def __init__(self, figures: bool = True) -> None:
        self.figures = figures

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the split and the chart layout."""
        directory = run_dir(trainer)  # every process: log_dir is broadcast from rank 0
        if not trainer.is_global_zero:
            return
        directory.mkdir(parents=True, exist_ok=True)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "save_split"):
            datamodule.save_split(directory / "split.npz")
        writer = tensorboard(trainer)
        if writer is not None:
            writer.add_custom_scalars(CHART_LAYOUT)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Plot the learning curves; put the last validation confusion matrix in TensorBoard."""
        directory = run_dir(trainer)
        if not self.figures or not trainer.is_global_zero:
            return
        history = getattr(pl_module, "history", None)
        if history:
            figure = curves_figure(
                history,
                name=run_name(directory),
                subtitle=_settings(trainer, pl_module),
                checkpoint_epoch=checkpoint_epoch(trainer),
            )
            save_figure(figure, directory / "curves.png")
        self._confusion_to_tensorboard(trainer, pl_module, "val", run_name(directory))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the test confusion matrix as ``confusion_matrix.png`` and in TensorBoard."""
        directory = run_dir(trainer)
        matrix = getattr(pl_module, "confusion", {}).get("test")
        if matrix is None or not self.figures or not trainer.is_global_zero:
            return
        figure = self._confusion(trainer, pl_module, "test", run_name(directory))
        save_figure(figure, directory / "confusion_matrix.png")
        self._confusion_to_tensorboard(trainer, pl_module, "test", run_name(directory), figure)

    @staticmethod
    def _confusion(trainer: L.Trainer, pl_module: L.LightningModule, stage: str, name: str) -> Any:
        matrix = getattr(pl_module, "confusion")[stage].numpy()  # noqa: B009 - a Classifier's, not a LightningModule's
        heading = {"test": "Test", "val": "Validation"}.get(stage, stage) + " confusion matrix"
        return confusion_figure(
            matrix,
            _class_names(pl_module, len(matrix)),
            heading,
            name=name,  # not run_dir(trainer) here: a collective call, and only rank zero draws
            subtitle=_settings(trainer, pl_module),
        )

    @classmethod
    def _confusion_to_tensorboard(
        cls, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, name: str, figure: Any = None
    ) -> None:
        matrix = getattr(pl_module, "confusion", {}).get(stage)
        writer = tensorboard(trainer)
        if matrix is None or writer is None:
            return
        figure = figure or cls._confusion(trainer, pl_module, stage, name)
        with style(_class_names(pl_module, len(matrix))):  # add_figure draws it: fonts and ticks as in the PNG
            writer.add_figure(f"{stage}/confusion_matrix", figure, global_step=trainer.current_epoch)


def _settings(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """The subtitle: the model's and data's key settings and the epochs trained (none before training)."""
    epochs = trainer.current_epoch or None
    return describe_run(pl_module, getattr(trainer, "datamodule", None), epochs)


def _class_names(pl_module: L.LightningModule, n: int) -> list[str]:
    names = getattr(pl_module, "hparams", {}).get("class_names")
    return list(names) if names and len(names) == n else [str(i) for i in range(n)]
