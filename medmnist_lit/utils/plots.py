"""Figures written next to a run: learning curves and the confusion matrix (matplotlib, no pyplot state)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medmnist_lit.utils.files import atomic_path


def save_figure(fig: Figure | Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save ``fig`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")


def curves_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """Loss and accuracy per epoch, train and validation on the same axes (under/over-fitting at a glance)."""
    fig = Figure(figsize=(10, 4))
    for ax, metric, title in zip(fig.subplots(1, 2), ("loss", "acc"), ("Loss", "Accuracy"), strict=True):
        for stage, style in (("train", "-"), ("val", "--")):
            values = history.get(f"{stage}/{metric}", [])
            if values:
                ax.plot(np.arange(1, len(values) + 1), values, style, marker=".", label=stage)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix") -> Figure:
    """Counts with row-normalised shading (rows are true classes)."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    fig = Figure(figsize=(1.2 + 0.75 * n, 1.0 + 0.7 * n))
    ax = fig.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig
