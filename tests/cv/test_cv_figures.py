"""Figures of a cross-validation run, from synthetic fold histories and rows (no training)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from medmnist_lit.cv.figures import band, cv_curves_figure, cv_folds_figure, write_cv_figures
from medmnist_lit.utils.stats import describe


def _fold(loss: list[float], acc: list[float]) -> dict[str, list[float]]:
    return {
        "train/loss": [v - 0.1 for v in loss],
        "val/loss": loss,
        "train/acc": [v + 0.1 for v in acc],
        "val/acc": acc,
    }


HISTORIES = [
    _fold([1.1, 0.9, 0.8], [0.4, 0.6, 0.7]),
    _fold([1.3, 1.1], [0.3, 0.5]),  # stopped early
    _fold([0.9, 0.7, 0.6], [0.5, 0.7, 0.8]),
]
ROWS = [
    {"fold": fold, "repeat": 0, "val/acc": h["val/acc"][-1], "val/loss": h["val/loss"][-1]}
    for fold, h in enumerate(HISTORIES)
]


def test_band_is_the_mean_and_std_over_the_folds_that_reached_each_epoch() -> None:
    mean, std, count = band(HISTORIES, "val/acc")
    assert list(count) == [3, 3, 2]
    assert mean == pytest.approx([0.4, 0.6, 0.75])
    expected = [np.std([0.4, 0.3, 0.5], ddof=1), np.std([0.6, 0.5, 0.7], ddof=1), np.std([0.7, 0.8], ddof=1)]
    assert std == pytest.approx(expected)


def test_cv_curves_show_mean_lines_with_bands_and_one_legend() -> None:
    fig = cv_curves_figure(HISTORIES, name="cv/version_0", subtitle="logistic · 3-fold")
    for ax in fig.axes:
        lines = ax.get_lines()
        assert len(lines) == 2 and all(list(line.get_xdata()) == [1, 2, 3] for line in lines)
        assert len(ax.collections) == 2  # the ± std bands of training and validation
        assert ax.get_legend() is None
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "training: mean over 3 folds ± std",
        "validation: mean over 3 folds ± std",
    ]
    assert fig.axes[1].get_lines()[1].get_ydata() == pytest.approx([0.4, 0.6, 0.75])


def test_cv_folds_dot_plot_shows_each_fold_the_mean_and_its_interval() -> None:
    summary = {key: describe([row[key] for row in ROWS]) for key in ("val/acc", "val/loss")}
    fig = cv_folds_figure(ROWS, summary, name="cv/version_0")
    ax = fig.axes[0]
    dots, mean = ax.get_lines()[0], ax.get_lines()[1]
    assert list(dots.get_xdata()) == [0, 1, 2] and list(dots.get_ydata()) == [0.7, 0.5, 0.8]
    assert mean.get_ydata()[0] == pytest.approx(summary["val/acc"]["mean"])
    lo, hi = summary["val/acc"]["ci95"]
    assert ax.get_title() == f"mean {summary['val/acc']['mean']:.3f}, 95% CI {lo:.3f}–{hi:.3f}"
    assert len(ax.patches) == 1 and ax.get_legend() is None  # the interval's band; one legend for both panels
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["one fold", "mean over folds", "95% confidence interval of the mean"]
    assert ax.get_ylabel() == "validation accuracy" and fig.axes[1].get_ylabel() == "validation loss"


def test_write_cv_figures_writes_both_pngs_without_warnings(tmp_path: Path) -> None:
    summary = {"val/acc": describe([row["val/acc"] for row in ROWS])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_cv_figures(tmp_path / "cv" / "version_0", HISTORIES, ROWS, summary, subtitle="logistic")
    assert not caught, [str(w.message) for w in caught]
    assert [p.name for p in written] == ["cv_curves.png", "cv_folds.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert write_cv_figures(tmp_path / "empty", [], [], {}) == []
