"""Figures of one run: learning curves, the confusion matrix and the learning-rate range test.

Each takes plain numbers (no Trainer) and returns a :class:`~matplotlib.figure.Figure` in the look of
:mod:`medmnist_lit.utils.figure_style`; save it with :func:`~medmnist_lit.utils.figure_style.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from medmnist_lit.utils.figure_style import TRAIN, VAL, WIDE, WIDTH, integer_epochs, new_figure, style, title

__all__ = ["clipped_loss_limits", "confusion_figure", "curves_figure", "lr_find_figure", "scientific"]

#: Beyond this many points a curve is a plain line: markers would merge into a band.
_MARKERS_UP_TO = 40


def curves_figure(
    history: Mapping[str, Sequence[float]],
    *,
    name: str = "Learning curves",
    subtitle: str = "",
    checkpoint_epoch: int | None = None,
) -> Figure:
    """Loss and accuracy per epoch, training and validation on the same axes (under/over-fitting at a glance).

    Args:
        history: Per-epoch metrics, ``history["val/loss"][k - 1]`` for epoch ``k``.
        name: The title (the run's name).
        subtitle: The run's settings (:func:`~medmnist_lit.utils.figure_style.describe_run`).
        checkpoint_epoch: The epoch (from 1) whose weights were scored, marked with a vertical line.
    """
    epochs = max((len(v) for v in history.values()), default=0)
    with style():
        fig = new_figure(WIDE, 4.6)
        axes = fig.subplots(1, 2)
        for ax, metric, label in zip(axes, ("loss", "acc"), ("loss (cross-entropy)", "accuracy"), strict=True):
            for stage, look, word in (("train", TRAIN, "training"), ("val", VAL, "validation")):
                values = np.asarray(history.get(f"{stage}/{metric}") or [], dtype=float)
                if len(values):
                    marker = look["marker"] if len(values) <= _MARKERS_UP_TO else None
                    ax.plot(np.arange(1, len(values) + 1), values, **{**look, "marker": marker}, label=word)
            if checkpoint_epoch is not None:
                ax.axvline(checkpoint_epoch, color="0.35", linestyle=":", linewidth=1.5)
                # above the plot area, where no curve runs (the layout engine makes room for it)
                ax.annotate(
                    f"checkpoint: epoch {checkpoint_epoch}",
                    xy=(checkpoint_epoch, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=9,
                    color="0.25",
                )
            integer_epochs(ax, epochs)
            ax.set_ylabel(label)
            ax.grid(True)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncols=len(handles))
        title(fig, name, subtitle)
    return fig


def confusion_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    heading: str = "Confusion matrix",
    *,
    name: str = "",
    subtitle: str = "",
) -> Figure:
    """Counts in the cells, colour = share of the true class (rows), a colour bar and the overall accuracy.

    Drawn by scikit-learn's ``ConfusionMatrixDisplay``; class names in any script (see :mod:`~.fonts`).

    Args:
        matrix: ``matrix[i, j]`` = samples of true class ``i`` predicted as ``j``.
        class_names: One name per class.
        heading: What the matrix is of, e.g. ``Test confusion matrix``; the accuracy is appended.
        name: The figure's title (the run's name); ``heading`` alone when empty.
        subtitle: The run's settings.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(matrix, dtype=np.int64)
    names = [str(n) for n in class_names]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    total, correct = int(counts.sum()), int(np.trace(counts))
    accuracy = f"accuracy {correct / total:.1%} ({correct:,}/{total:,})" if total else "no samples"
    n = len(names)
    longest = max((len(x) for x in names), default=1)
    with style(names):
        fig = new_figure(max(WIDTH * 0.8, 2.4 + 0.7 * n + 0.06 * longest), max(4.8, 1.9 + 0.6 * n + 0.06 * longest))
        ax = fig.subplots()
        display = ConfusionMatrixDisplay(share, display_labels=names)
        display.plot(ax=ax, cmap="Blues", colorbar=True, xticks_rotation=45 if longest > 4 else "horizontal")
        display.im_.set_clim(0.0, 1.0)
        display.figure_.axes[-1].set_ylabel("share of the true class (row)")
        size = 11 if n <= 6 else 9 if n <= 12 else 7
        for (i, j), text in np.ndenumerate(display.text_):
            text.set_text(f"{counts[i, j]:,}")
            text.set_fontsize(size)
            text.set_color("white" if share[i, j] > 0.55 else "black")
        if longest > 4:
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
                label.set_rotation_mode("anchor")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if name:
            ax.set_title(f"{heading}: {accuracy}")
            title(fig, name, subtitle)
        else:
            title(fig, f"{heading}: {accuracy}", subtitle)
    return fig


def clipped_loss_limits(losses: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """y-limits showing where the loss falls, not where it diverges.

    From the minimum to the higher of the highest loss before the minimum (the descent) and the median loss (the
    plateau, for a range test whose smoothed loss is lowest at its first step): the divergence at the largest
    learning rates (losses of 20 and more against 2 at the start) is left above the axis.
    """
    values = np.asarray([v for v in losses if math.isfinite(v)], dtype=float)
    if not len(values):
        return 0.0, 1.0
    low = float(values.min())
    high = max(float(values[: int(values.argmin()) + 1].max()), float(np.median(values)))
    if high <= low:  # a flat curve: show all of it
        high = float(values.max())
    pad = 0.08 * (high - low) if high > low else max(abs(low) * 0.05, 0.05)
    return low - pad, high + pad


def smoothing_warmup(n: int, beta: float = 0.98, within: float = 0.97) -> int:
    """How many of a range test's first steps show Lightning's smoothed loss still well below the real loss.

    Lightning's ``_LRCallback`` divides its running average by ``1 - beta ** (global_step + 1)`` after the optimizer
    step has already advanced ``global_step``, so step ``k`` (from 1) shows ``(1 - beta**k) / (1 - beta**(k + 1))``
    of the loss: half at the first step, 97% only after ~25 (Lightning issue 14167). Those steps are the
    smoother warming up, not the model: the curve rises there whatever the learning rate.
    """
    k = 1
    while k < n and (1 - beta**k) / (1 - beta ** (k + 1)) < within:
        k += 1
    return min(k, n)


def scientific(value: float) -> str:
    """``0.0032`` → ``3.2e-3``, ``1e-06`` → ``1e-6``, ``1.0`` → ``1``: two significant digits, short exponents."""
    mantissa, exponent = f"{value:.1e}".split("e")
    mantissa = mantissa.removesuffix(".0")
    return mantissa if int(exponent) == 0 else f"{mantissa}e{int(exponent)}"


def lr_find_figure(
    lrs: Sequence[float],
    losses: Sequence[float],
    suggestion: float | None,
    *,
    name: str = "Learning-rate range test",
    subtitle: str = "",
) -> Figure:
    """Loss against learning rate (log scale), the loss axis clipped to the useful region, the suggestion marked.

    Args:
        lrs: Learning rates tried, increasing.
        losses: Lightning's smoothed training loss at each.
        suggestion: The suggested learning rate (steepest descent), if any.
        name: The title (the run's name).
        subtitle: The run's settings.
    """
    x = np.asarray(lrs, dtype=float)
    y = np.asarray(losses, dtype=float)
    with style():
        fig = new_figure(WIDTH, 4.8)
        ax = fig.subplots()
        warmup = smoothing_warmup(len(y)) if len(y) > 3 * smoothing_warmup(len(y)) else 0
        ax.plot(x, y, color=TRAIN["color"])
        ax.set_xscale("log")
        low, high = clipped_loss_limits(y[warmup:])  # the warm-up's low values would flatten the useful region
        if warmup:
            ax.axvspan(x[0], x[warmup - 1], color="0.93", zorder=0, linewidth=0)
            ax.annotate(
                f"first {warmup} steps: Lightning's smoothed\nloss starts low, whatever the rate",
                xy=(x[0], 0.02),
                xycoords=("data", "axes fraction"),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=8,
                color="0.35",
            )
        ax.set_ylim(low, high)
        above = np.flatnonzero(~(y <= high))  # also NaN/inf: they are off the axis too
        if len(above):
            first = int(above[0])
            peak = np.nanmax(np.where(np.isfinite(y), y, np.nan)) if np.isfinite(y).any() else math.nan
            ax.annotate(
                f"off the axis: up to {peak:.3g} ↑" if math.isfinite(peak) else "off the axis: diverges ↑",
                xy=(x[first], high),
                xytext=(-6, -4),  # left of where the curve leaves the axis, under the top edge
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=9,
                color="0.25",
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
            )
        if suggestion is not None and len(x):
            at = int(np.argmin(np.abs(np.log(x) - math.log(suggestion))))
            ax.axvline(suggestion, color=VAL["color"], linestyle="--", linewidth=1.2)
            ax.plot([x[at]], [y[at]], "o", color=VAL["color"], markersize=8)
            ax.annotate(
                f"suggested lr = {scientific(suggestion)}",
                xy=(x[at], y[at]),
                xytext=(8, -12),  # under the point: the top edge holds the note on the divergence
                textcoords="offset points",
                va="top",
                fontsize=10,
                color=VAL["color"],
                weight="bold",
            )
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss (smoothed)")
        ax.grid(True, which="major")
        title(fig, name, subtitle)
    return fig
