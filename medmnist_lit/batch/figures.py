"""Figures of a batch: the metric per variant, validation curves overlaid, train vs validation, time per run.

Each variant is summarised over its finished seeds (mean, with the standard deviation as error bars). Curves are
each run's per-epoch history (cv runs: the mean over folds), averaged over seeds epoch by epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medmnist_lit.utils.plots import save_figure

FIGURES = ("metric.png", "curves.png", "train_val.png", "time.png")


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
    return 1.2 + 0.38 * max(n, 2)


def _spread(values: np.ndarray) -> float:
    """Sample standard deviation; 0 for a single value (an error bar of nothing)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _errorbars(groups: dict[str, list[dict[str, Any]]], key: str, title: str, xlabel: str) -> Figure | None:
    names = [v for v, recs in groups.items() if len(_values(recs, key))]
    if not names:
        return None
    fig = Figure(figsize=(7.5, _height(len(names))))
    ax = fig.subplots()
    for y, name in enumerate(names):
        values = _values(groups[name], key)
        std = _spread(values)
        ax.errorbar(values.mean(), y, xerr=std, fmt="o", color="C0", capsize=4)
        ax.plot(values, np.full(len(values), y + 0.18), "|", color="0.45", markersize=7)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _mean_curve(records: list[dict[str, Any]], key: str) -> np.ndarray:
    curves = [r.get("history", {}).get(key) or [] for r in records]
    length = max((len(c) for c in curves), default=0)
    out = np.full(length, np.nan)
    for i in range(length):
        points = [c[i] for c in curves if i < len(c) and c[i] is not None and not math.isnan(c[i])]
        out[i] = np.mean(points) if points else np.nan
    return out


def curves_figure(groups: dict[str, list[dict[str, Any]]]) -> Figure | None:
    """Validation accuracy and loss per epoch of every variant (mean over seeds), on shared axes."""
    if not any(len(_mean_curve(recs, "val/acc")) for recs in groups.values()):
        return None
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(groups))]
    styles = ["-", "--", ":", "-."]
    for i, (name, recs) in enumerate(groups.items()):
        for ax, key in zip(axes, ("val/acc", "val/loss"), strict=True):
            curve = _mean_curve(recs, key)
            if len(curve):
                style = styles[(i // 10) % len(styles)]
                ax.plot(np.arange(1, len(curve) + 1), curve, style, color=colors[i], marker=".", label=name)
    for ax, title in zip(axes, ("Validation accuracy", "Validation loss"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Mean over seeds (cv: mean over folds)", fontsize=9)
    return fig


def train_val_figure(groups: dict[str, list[dict[str, Any]]]) -> Figure | None:
    """Training vs validation accuracy per variant (mean ± std over seeds): the gap shows over-fitting."""
    names = [v for v, recs in groups.items() if len(_values(recs, "train/acc")) and len(_values(recs, "val/acc"))]
    if not names:
        return None
    fig = Figure(figsize=(7.5, _height(len(names)) * 1.3))
    ax = fig.subplots()
    y = np.arange(len(names))
    for offset, key, color in ((-0.18, "train/acc", "C1"), (0.18, "val/acc", "C0")):
        values = [_values(groups[n], key) for n in names]
        means = [v.mean() for v in values]
        stds = [_spread(v) for v in values]
        ax.barh(y + offset, means, height=0.34, xerr=stds, color=color, label=key.split("/")[0], capsize=3)
    low = min(min(_values(groups[n], k).min() for n in names) for k in ("train/acc", "val/acc"))
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")
    ax.set_title("Training vs validation accuracy")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    return fig


def time_figure(groups: dict[str, list[dict[str, Any]]]) -> Figure | None:
    """Wall time per run of each variant (mean ± std over seeds)."""
    names = [v for v, recs in groups.items() if recs]
    if not names:
        return None
    fig = Figure(figsize=(7.5, _height(len(names))))
    ax = fig.subplots()
    seconds = [np.array([r.get("seconds", math.nan) for r in groups[n]], dtype=float) for n in names]
    stds = [_spread(s) for s in seconds]
    ax.barh(range(len(names)), [s.mean() for s in seconds], xerr=stds, color="C2", capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("seconds per run (wall)")
    ax.set_title("Cost per run")
    ax.grid(axis="x", alpha=0.3)
    return fig


def write_figures(directory: Path, batch: dict[str, Any], records: Sequence[dict[str, Any] | None]) -> list[Path]:
    """Write the figures that have data; remove stale ones that no longer do. Returns the paths written."""
    groups = _by_variant(batch, records)
    metric = batch["metric"]
    figures = {
        "metric.png": _errorbars(groups, metric, f"{metric} per variant (mean ± std over seeds; ticks: seeds)", metric),
        "curves.png": curves_figure(groups),
        "train_val.png": train_val_figure(groups),
        "time.png": time_figure(groups),
    }
    written = []
    for name, fig in figures.items():
        path = directory / name
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        save_figure(fig, path)
        written.append(path)
    return written
