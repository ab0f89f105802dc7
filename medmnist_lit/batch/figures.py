"""Figures of a batch: the metric per variant, validation curves, train vs validation, learning curves, time per run.

Each variant is summarised over its finished seeds (mean, with the standard deviation as error bars or bands).
Curves are each run's per-epoch history (cv runs: the mean over folds), averaged over seeds epoch by epoch. Values
are dots or lines on labelled axes, never bars cut off above zero (they would exaggerate differences); only the
time per run is a bar from zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medmnist_lit.utils.figure_style import (
    PALETTE,
    TRAIN,
    VAL,
    WIDE,
    WIDTH,
    integer_epochs,
    metric_label,
    new_figure,
    save_figure,
    styled,
    title,
)

FIGURES = ("metric.png", "curves.png", "train_val.png", "learning_curve.png", "time.png")

#: The grid key a learning curve runs along.
FRACTION = "data.train_fraction"
_MARKERS = ("o", "s", "^", "D", "v")
_LINESTYLES = ("-", "--", ":", "-.")


def _by_variant(batch: dict[str, Any], records: Sequence[dict[str, Any] | None]) -> dict[str, list[dict[str, Any]]]:
    """Finished records of each variant, in the spec's variant order."""
    groups: dict[str, list[dict[str, Any]]] = {v: [] for v in batch["variants"]}
    for record in records:
        if record and record.get("status") == "ok" and record["variant"] in groups:
            groups[record["variant"]].append(record)
    return groups


def _values(records: list[dict[str, Any]], key: str) -> np.ndarray:
    values = [r.get("metrics", {}).get(key, math.nan) for r in records]
    return np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def _height(n: int) -> float:
    return 1.9 + 0.42 * max(n, 2)


def _spread(values: np.ndarray) -> float:
    """Sample standard deviation; 0 for a single value (an error bar of nothing)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _seeds(groups: dict[str, list[dict[str, Any]]]) -> str:
    counts = sorted({len(recs) for recs in groups.values() if recs})
    n = "–".join(str(c) for c in (counts[0], counts[-1]) if c) if counts and counts[0] != counts[-1] else str(counts[0])
    return f"{n} seed" + ("" if n == "1" else "s")


def _look(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the ``i``-th variant: no two variants of a batch look alike."""
    return {
        "color": PALETTE[i % len(PALETTE)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": _LINESTYLES[(i // len(PALETTE)) % len(_LINESTYLES)],
    }


def _columns(labels: list[str]) -> int:
    """Legend columns below a figure: as many as fit across a slide."""
    longest = max((len(label) for label in labels), default=1)
    return max(1, min(len(labels), 90 // (longest + 6), 5))


def _within_unit(ax: Any, values: list[np.ndarray]) -> None:
    """Keep the x-axis of scores that lie in [0, 1] (accuracy, F1, AUROC) from running past 0 or 1."""
    if values and all(len(v) == 0 or (v.min() >= 0 and v.max() <= 1) for v in values):
        low, high = ax.get_xlim()
        ax.set_xlim(max(low, -0.02), min(high, 1.02))


def _variant_axis(ax: Any, names: list[str]) -> None:
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the spec's first variant on top
    ax.grid(True, axis="x")


@styled
def metric_figure(groups: dict[str, list[dict[str, Any]]], metric: str, name: str = "") -> Figure | None:
    """The batch's metric per variant: each seed a small dot, the mean a large one with ± std."""
    names = [v for v, recs in groups.items() if len(_values(recs, metric))]
    if not names:
        return None
    fig = new_figure(WIDTH, _height(len(names)))
    ax = fig.subplots()
    for y, variant in enumerate(names):
        values = _values(groups[variant], metric)
        mean = float(values.mean())
        ax.plot(values, np.full(len(values), y), "o", color="0.6", markersize=4, zorder=2)
        ax.errorbar(mean, y, xerr=_spread(values), fmt="o", color=PALETTE[0], markersize=8, capsize=4, zorder=3)
        ax.annotate(f"{mean:.3f}", (mean, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=9)
    _variant_axis(ax, names)
    ax.set_xlabel(metric_label(metric))
    ax.margins(x=0.15)
    if metric.rpartition("/")[2].removeprefix("majority_") in ("acc", "f1", "auroc", "official_acc", "official_auc"):
        _within_unit(ax, [_values(groups[v], metric) for v in names])
    title(fig, name or "Batch", f"{metric_label(metric)}: mean ± std over {_seeds(groups)} (grey: each seed)")
    return fig


def _mean_curve(records: list[dict[str, Any]], key: str) -> np.ndarray:
    curves = [r.get("history", {}).get(key) or [] for r in records]
    length = max((len(c) for c in curves), default=0)
    out = np.full(length, np.nan)
    for i in range(length):
        points = [c[i] for c in curves if i < len(c) and c[i] is not None and not math.isnan(c[i])]
        out[i] = np.mean(points) if points else np.nan
    return out


@styled
def curves_figure(groups: dict[str, list[dict[str, Any]]], name: str = "") -> Figure | None:
    """Validation accuracy and loss per epoch of every variant (mean over seeds); one legend for both panels."""
    if not any(len(_mean_curve(recs, "val/acc")) for recs in groups.values()):
        return None
    fig = new_figure(WIDE, 4.8 + 0.25 * math.ceil(len(groups) / 3))
    axes = fig.subplots(1, 2)
    epochs = 0
    for i, (variant, recs) in enumerate(groups.items()):
        for ax, key in zip(axes, ("val/acc", "val/loss"), strict=True):
            curve = _mean_curve(recs, key)
            if len(curve):
                epochs = max(epochs, len(curve))
                # about ten markers a curve, staggered between variants so that they do not pile up on each other
                step = max(1, math.ceil(len(curve) / 10))
                look = {**_look(i), "markevery": (i % step, step)}
                # slightly transparent, so identical curves show as one darker line rather than hide each other
                ax.plot(np.arange(1, len(curve) + 1), curve, **look, alpha=0.8, markersize=5, label=variant)
    for ax, key in zip(axes, ("val/acc", "val/loss"), strict=True):
        integer_epochs(ax, epochs)
        ax.set_ylabel(metric_label(key))
        ax.grid(True)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=_columns(labels))
    title(fig, name or "Batch", f"validation curves: mean over {_seeds(groups)} (cv runs: mean over folds)")
    return fig


@styled
def train_val_figure(groups: dict[str, list[dict[str, Any]]], name: str = "") -> Figure | None:
    """Training ● and validation ○ accuracy per variant, joined by a line: its length is the over-fitting gap."""
    names = [v for v, recs in groups.items() if len(_values(recs, "train/acc")) and len(_values(recs, "val/acc"))]
    if not names:
        return None
    fig = new_figure(WIDTH, _height(len(names)))
    ax = fig.subplots()
    for y, variant in enumerate(names):
        train, val = (_values(groups[variant], key) for key in ("train/acc", "val/acc"))
        # the two rows of a variant sit a little apart, so their error bars never hide each other
        ax.plot([train.mean(), val.mean()], [y - 0.12, y + 0.12], color="0.65", linewidth=2.5, zorder=1)
        for values, look, dy in ((train, TRAIN, -0.12), (val, VAL, 0.12)):
            marker = {k: v for k, v in look.items() if k != "linestyle"}
            ax.errorbar(values.mean(), y + dy, xerr=_spread(values), capsize=3, markersize=8, zorder=3, **marker)
    _variant_axis(ax, names)
    ax.set_xlabel("accuracy")
    ax.margins(x=0.1)
    _within_unit(ax, [_values(groups[v], k) for v in names for k in ("train/acc", "val/acc")])
    handles = [
        Line2D([], [], linestyle="", markersize=8, **{k: v for k, v in look.items() if k != "linestyle"})
        for look in (TRAIN, VAL)
    ]
    fig.legend(handles, ["training", "validation"], loc="outside lower center", ncols=2)
    title(fig, name or "Batch", f"training vs validation accuracy: mean ± std over {_seeds(groups)}")
    return fig


def _series(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per train_fraction: the mean training-set size and the mean and std of ``key`` over the seeds."""
    by_fraction: dict[float, list[dict[str, Any]]] = {}
    for record in records:
        by_fraction.setdefault(float(record["varied"][FRACTION]), []).append(record)
    points = []
    for fraction, recs in by_fraction.items():
        sizes, values = _values(recs, "n_train"), _values(recs, key)
        if len(sizes) and len(values):
            points.append({"fraction": fraction, "n": sizes.mean(), "mean": values.mean(), "std": _spread(values)})
    return sorted(points, key=lambda p: p["n"])


def _models(groups: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by everything they vary except the training fraction, named like their variants."""
    models: dict[str, list[dict[str, Any]]] = {}
    for variant, recs in groups.items():
        for record in recs:
            if FRACTION not in (record.get("varied") or {}):
                continue
            short = FRACTION.rsplit(".", 1)[-1] + "="
            label = "__".join(p for p in variant.split("__") if not p.startswith(short)) or "all variants"
            models.setdefault(label, []).append(record)
    return models


@styled
def learning_curve_figure(groups: dict[str, list[dict[str, Any]]], name: str = "") -> Figure | None:
    """Training and validation accuracy against the number of training images, one colour per model.

    Drawn for batches whose variants differ in ``data.train_fraction`` (at least two sizes): mean over seeds,
    with a ± std band.
    """
    models = {label: recs for label, recs in _models(groups).items() if len(_series(recs, "val/acc")) > 1}
    if not models:
        return None
    fig = new_figure(WIDTH + 0.5, 5.2)
    ax = fig.subplots()
    sizes: set[float] = set()
    for i, recs in enumerate(models.values()):
        color = PALETTE[i % len(PALETTE)]
        for key, style, face in (("val/acc", "-", color), ("train/acc", "--", "white")):
            points = _series(recs, key)
            if not points:
                continue
            x = np.array([p["n"] for p in points])
            mean, std = np.array([p["mean"] for p in points]), np.array([p["std"] for p in points])
            sizes.update(x.tolist())
            ax.plot(x, mean, linestyle=style, marker=_MARKERS[i % len(_MARKERS)], color=color, markerfacecolor=face)
            if std.any():
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
    if max(sizes) >= 5 * min(sizes):
        ax.set_xscale("log")
        ax.set_xticks(sorted(sizes), [f"{s:,.0f}" for s in sorted(sizes)])
        ax.minorticks_off()
    ax.set_xlabel("training images")
    ax.set_ylabel("accuracy")
    ax.grid(True)
    handles = [
        Line2D([], [], color=PALETTE[i % len(PALETTE)], marker=_MARKERS[i % len(_MARKERS)]) for i in range(len(models))
    ]
    handles += [Line2D([], [], color="0.3", linestyle="-"), Line2D([], [], color="0.3", linestyle="--")]
    labels = [*models, "validation", "training"]
    fig.legend(handles, labels, loc="outside lower center", ncols=_columns(labels))
    title(fig, name or "Batch", f"learning curves: mean ± std over {_seeds(groups)}")
    return fig


@styled
def time_figure(groups: dict[str, list[dict[str, Any]]], name: str = "") -> Figure | None:
    """Wall time per run of each variant (mean ± std over seeds), bars from zero."""
    names = [v for v, recs in groups.items() if recs]
    if not names:
        return None
    fig = new_figure(WIDTH, _height(len(names)))
    ax = fig.subplots()
    seconds = [np.array([r.get("seconds", math.nan) for r in groups[n]], dtype=float) for n in names]
    means = [float(np.nanmean(s)) if np.isfinite(s).any() else 0.0 for s in seconds]
    stds = [_spread(s[np.isfinite(s)]) for s in seconds]
    ax.barh(range(len(names)), means, xerr=stds, color=PALETTE[2], capsize=3, height=0.6)
    for y, (mean, std) in enumerate(zip(means, stds, strict=True)):
        ax.annotate(f"{mean:.1f} s", (mean + std, y), xytext=(6, 0), textcoords="offset points", va="center")
    _variant_axis(ax, names)
    ax.set_xlim(0, max(m + s for m, s in zip(means, stds, strict=True)) * 1.25 or 1)
    ax.set_xlabel("seconds per run (wall clock)")
    title(fig, name or "Batch", f"cost per run: mean ± std over {_seeds(groups)}")
    return fig


def write_figures(directory: Path, batch: dict[str, Any], records: Sequence[dict[str, Any] | None]) -> list[Path]:
    """Write the figures that have data; remove stale ones that no longer do. Returns the paths written."""
    groups = _by_variant(batch, records)
    name = str(batch.get("name") or directory.name)
    figures = {
        "metric.png": metric_figure(groups, batch["metric"], name),
        "curves.png": curves_figure(groups, name),
        "train_val.png": train_val_figure(groups, name),
        "learning_curve.png": learning_curve_figure(groups, name),
        "time.png": time_figure(groups, name),
    }
    written = []
    for file, fig in figures.items():
        path = directory / file
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        save_figure(fig, path)
        written.append(path)
    return written
