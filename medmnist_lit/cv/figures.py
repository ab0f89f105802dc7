"""Figures of a cross-validation run: mean ± std learning curves across folds, and each fold's score.

``cv_curves.png`` shows how the folds train (a wide band: the estimate depends on which samples a fold gets);
``cv_folds.png`` shows the per-fold scores behind the mean and its 95% confidence interval in ``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from medmnist_lit.data.tasks import TaskKind
from medmnist_lit.utils.figure_style import (
    PALETTE,
    TRAIN,
    VAL,
    WIDE,
    integer_epochs,
    metric_label,
    new_figure,
    save_figure,
    styled,
    title,
)

__all__ = ["FIGURES", "band", "cv_curves_figure", "cv_folds_figure", "write_cv_figures"]

FIGURES = ("cv_curves.png", "cv_folds.png")
#: Metrics of ``cv_folds.png``, where the folds have them.
FOLD_METRICS = ("val/acc", "val/loss")


def band(histories: Sequence[Mapping[str, Sequence[float]]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch: mean and sample std of ``key`` over the folds that reached the epoch, and how many did.

    Folds stopped early simply end; the std of an epoch only one fold reached is 0.
    """
    series = [np.asarray(h[key], dtype=float) for h in histories if h.get(key)]
    length = max((len(s) for s in series), default=0)
    mean, std, count = np.full(length, np.nan), np.zeros(length), np.zeros(length, dtype=int)
    for epoch in range(length):
        values = np.array([s[epoch] for s in series if epoch < len(s) and math.isfinite(s[epoch])])
        count[epoch] = len(values)
        if len(values):
            mean[epoch] = values.mean()
            std[epoch] = values.std(ddof=1) if len(values) > 1 else 0.0
    return mean, std, count


@styled
def cv_curves_figure(
    histories: Sequence[Mapping[str, Sequence[float]]],
    *,
    name: str = "Cross-validation",
    subtitle: str = "",
    multilabel: bool = False,
) -> Figure | None:
    """Training and validation loss and accuracy per epoch: the mean over folds with a ± std band.

    Args:
        histories: Each fold's per-epoch metrics (``histories[i]["val/loss"]``).
        name: The title (the run's name).
        subtitle: The run's settings.
        multilabel: The loss is binary cross-entropy and the accuracy a mean over labels.
    """
    if not any(h.get("train/loss") or h.get("val/loss") for h in histories):
        return None
    n = len(histories)
    fig = new_figure(WIDE, 4.8)
    axes = fig.subplots(1, 2)
    epochs = 0
    names = ("loss (cross-entropy)", "accuracy")
    if multilabel:
        names = ("loss (binary cross-entropy)", "accuracy (mean over labels)")
    for ax, metric, label in zip(axes, ("loss", "acc"), names, strict=True):
        for stage, look in (("train", TRAIN), ("val", VAL)):
            mean, std, _ = band(histories, f"{stage}/{metric}")
            if not len(mean):
                continue
            epochs = max(epochs, len(mean))
            x = np.arange(1, len(mean) + 1)
            step = max(1, math.ceil(len(mean) / 15))
            ax.plot(x, mean, **look, markevery=step)
            ax.fill_between(x, mean - std, mean + std, color=look["color"], alpha=0.15, linewidth=0)
        ax.set_ylabel(label)
        ax.grid(True)
    for ax in axes:
        integer_epochs(ax, epochs)
    handles = [Line2D([], [], **look) for look in (TRAIN, VAL)]
    labels = [f"{stage}: mean over {n} fold{'s' if n != 1 else ''} ± std" for stage in ("training", "validation")]
    fig.legend(handles, labels, loc="outside lower center", ncols=2)
    title(fig, name, subtitle)
    return fig


@styled
def cv_folds_figure(
    folds: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    *,
    name: str = "Cross-validation",
    subtitle: str = "",
    metrics: Sequence[str] = FOLD_METRICS,
) -> Figure | None:
    """Each fold's score as a dot, with the mean across folds and its 95% confidence interval.

    Args:
        folds: One row per fold, as in ``folds.csv`` (``fold``, ``repeat``, ``val/acc``...).
        summary: What ``summary.json`` holds (``summary["val/acc"]["mean"]`` and ``["ci95"]``).
        name: The title (the run's name).
        subtitle: The run's settings.
        metrics: The metrics drawn, one panel each (those the folds have).
    """
    keys = [k for k in metrics if any(_finite(row.get(k)) for row in folds)]
    if not keys:
        return None
    fig = new_figure(WIDE if len(keys) > 1 else WIDE * 0.6, 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    repeats = sorted({int(row.get("repeat", 0)) for row in folds})
    for ax, key in zip(axes, keys, strict=True):
        rows = [row for row in folds if _finite(row.get(key))]
        for i, repeat in enumerate(repeats):
            mine = [row for row in rows if int(row.get("repeat", 0)) == repeat]
            x = [int(row["fold"]) for row in mine]
            y = [float(row[key]) for row in mine]
            size = 7 if len(rows) <= 50 else 3
            ax.plot(x, y, "o", color=PALETTE[i % len(PALETTE)], markersize=size, zorder=3)
        stats = summary.get(key)
        if isinstance(stats, Mapping) and _finite(stats.get("mean")):
            mean = float(stats["mean"])
            ax.axhline(mean, color="0.2", linewidth=1.5)
            lo, hi = stats.get("ci95") or (math.nan, math.nan)
            interval = _finite(lo) and _finite(hi)
            if interval:
                ax.axhspan(lo, hi, color="0.5", alpha=0.18, linewidth=0)
            # the numbers go in the panel's title: a legend inside the axes would cover dots or the band
            ax.set_title(f"mean {mean:.3f}" + (f", 95% CI {lo:.3f}–{hi:.3f}" if interval else ""))
        ax.xaxis.set_major_locator(_integer_locator())
        ax.set_xlabel("fold")
        ax.set_ylabel(metric_label(key))
        ax.margins(x=0.08, y=0.15)
        ax.grid(True, axis="y")
    dots = [Line2D([], [], linestyle="", marker="o", color=PALETTE[i % len(PALETTE)]) for i in range(len(repeats))]
    words = [f"repeat {r}" for r in repeats] if len(repeats) > 1 else ["one fold"]
    handles = [*dots, Line2D([], [], color="0.2"), Patch(color="0.5", alpha=0.18, linewidth=0)]
    labels = [*words, "mean over folds", "95% confidence interval of the mean"]
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels))
    n = len(folds)
    title(fig, name, " · ".join(p for p in (subtitle, f"{n} fold{'s' if n != 1 else ''}") if p))
    return fig


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True, steps=[1, 2, 5, 10])


def write_cv_figures(
    run_dir: Path,
    histories: Sequence[Mapping[str, Sequence[float]]],
    folds: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Any],
    *,
    subtitle: str = "",
) -> list[Path]:
    """Write ``cv_curves.png`` and ``cv_folds.png`` into the cv run root; returns the paths written.

    Args:
        run_dir: The run root (its last two path parts title the figures).
        histories: Each fold's per-epoch metrics (``CVResult.histories``).
        folds: The fold rows (``CVResult.folds``).
        summary: The summary (``CVResult.summary``).
        subtitle: The run's settings (:func:`~medmnist_lit.utils.figure_style.describe_run`).
    """
    name = "/".join(Path(run_dir).parts[-2:])
    multilabel = (summary.get("run") or {}).get("task") == TaskKind.MULTILABEL.value
    figures = {
        "cv_curves.png": cv_curves_figure(histories, name=name, subtitle=subtitle, multilabel=multilabel),
        "cv_folds.png": cv_folds_figure(folds, summary, name=name, subtitle=subtitle),
    }
    written = []
    for file, fig in figures.items():
        if fig is not None:
            save_figure(fig, Path(run_dir) / file)
            written.append(Path(run_dir) / file)
    return written
