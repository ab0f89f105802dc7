"""Files a run directory holds besides checkpoints: split indices, chart layout, curves and confusion matrix."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from medmnist_lit.utils.plots import confusion_figure, curves_figure, save_figure

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
    - ``curves.png``: loss and accuracy per epoch, train and validation;
    - ``confusion_matrix.png`` (test) and confusion-matrix images in TensorBoard.

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
            save_figure(curves_figure(history), directory / "curves.png")
        self._confusion_to_tensorboard(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the test confusion matrix as ``confusion_matrix.png`` and in TensorBoard."""
        directory = run_dir(trainer)
        matrix = getattr(pl_module, "confusion", {}).get("test")
        if matrix is None or not self.figures or not trainer.is_global_zero:
            return
        names = _class_names(pl_module, len(matrix))
        save_figure(
            confusion_figure(matrix.numpy(), names, "Test confusion matrix"), directory / "confusion_matrix.png"
        )
        self._confusion_to_tensorboard(trainer, pl_module, "test")

    @staticmethod
    def _confusion_to_tensorboard(trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        matrix = getattr(pl_module, "confusion", {}).get(stage)
        writer = tensorboard(trainer)
        if matrix is None or writer is None:
            return
        figure = confusion_figure(matrix.numpy(), _class_names(pl_module, len(matrix)), f"{stage} confusion matrix")
        writer.add_figure(f"{stage}/confusion_matrix", figure, global_step=trainer.current_epoch)


def _class_names(pl_module: L.LightningModule, n: int) -> list[str]:
    names = getattr(pl_module, "hparams", {}).get("class_names")
    return list(names) if names and len(names) == n else [str(i) for i in range(n)]
