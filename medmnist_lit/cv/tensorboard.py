"""What a cross-validation run shows in TensorBoard at its root: one HParams trial and the folds' mean curves.

The root is one trial (:mod:`medmnist_lit.training.hparams`, in ``<run>/summary/``) whose scores carry the names a
fit uses: ``val/acc`` is the mean over folds, ``test/acc`` the fold ensemble's, ``val/acc_std`` the spread. Its
folds (``<run>/fold_<i>/``) keep their own curves and are not trials.

The learning curves averaged over folds go into the root's own events file against the 0-based epoch (the x-axis
of the folds' epoch curves): ``cv/val_loss`` is the mean and ``cv/val_loss_lower`` / ``cv/val_loss_upper`` the
band of mean ± one standard deviation across folds; the ``cv/`` prefix keeps them off the folds' charts. A Custom
Scalars layout draws each as a "Margin" chart (the mean with its band).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from medmnist_lit.cv.summary import mean_curves
from medmnist_lit.training.hparams import HParamValue, replace_events, scalar_summary, write_trial

__all__ = ["BAND", "curve_tags", "margin_layout", "write_cv_tensorboard"]

#: What the band around a mean curve is.
BAND = "mean ± 1 std across folds"
_TITLES = {"train/loss": "train loss", "val/loss": "validation loss", "train/acc": "train accuracy"}
_TITLES["val/acc"] = "validation accuracy"


def curve_tags(key: str) -> tuple[str, str, str]:
    """``("cv/val_loss", "cv/val_loss_lower", "cv/val_loss_upper")`` for the curve ``val/loss``."""
    name = "cv/" + key.replace("/", "_")
    return name, f"{name}_lower", f"{name}_upper"


def margin_layout(keys: Sequence[str]) -> dict[str, dict[str, list]]:
    """A Custom Scalars layout with one "Margin" chart (mean and band) per curve."""
    charts = {f"{_TITLES.get(key, key)} ({BAND})": ["Margin", list(curve_tags(key))] for key in keys}
    return {"Cross-validation": charts}


def write_cv_tensorboard(
    run_dir: Path,
    histories: Sequence[Mapping[str, Sequence[float]]],
    hparams: Mapping[str, HParamValue],
    scores: Mapping[str, float],
) -> None:
    """Write the root's trial (``hparams`` and ``scores``) and its mean ± std curves with their Margin layout.

    The scores sit at the last epoch (the folds are scored there by default).
    """
    from torch.utils.tensorboard.summary import custom_scalars

    curves = mean_curves(histories)
    epochs = max((len(curve["mean"]) for curve in curves.values()), default=1)
    write_trial(run_dir, hparams, scores, step=epochs - 1)
    if not curves:
        return
    records = [(0, custom_scalars(margin_layout(list(curves))))]
    for epoch in range(epochs):
        values: dict[str, float] = {}
        for key, curve in curves.items():
            if epoch < len(curve["mean"]):
                mean, std = curve["mean"][epoch], curve["std"][epoch]
                tag, lower, upper = curve_tags(key)
                values.update({tag: mean, lower: mean - std, upper: mean + std})
        records.append((epoch, scalar_summary(values)))
    replace_events(run_dir, "cv", records)
