"""A batch's figures from synthetic records (no training): dot plots, shared legends, the learning curve."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from medmnist_lit.batch.figures import (
    FIGURES,
    curves_figure,
    learning_curve_figure,
    metric_figure,
    train_val_figure,
    write_figures,
)

MODELS = ("logistic", "mlp_small")
FRACTIONS = (0.05, 0.2, 1.0)


def _fitting() -> tuple[dict, list[dict]]:
    """Records of experiments/fitting.yaml's shape: models × train_fraction × 2 seeds."""
    variants, records = [], []
    for m, model in enumerate(MODELS):
        for fraction in FRACTIONS:
            variant = f"{model}__train_fraction={fraction:g}"
            variants.append(variant)
            for seed in (0, 1):
                val = 0.6 + 0.3 * fraction + 0.02 * m + 0.01 * seed
                records.append(
                    {
                        "status": "ok",
                        "variant": variant,
                        "varied": {"model.head": model, "data.train_fraction": fraction},
                        "metrics": {"val/acc": val, "train/acc": val + 0.05, "n_train": 400 * fraction + seed},
                        "history": {"val/acc": [val - 0.1, val], "val/loss": [1.0, 0.9]},  # identical losses
                        "seconds": 2.0 + seed,
                    }
                )
    return {"name": "fitting", "variants": variants, "metric": "val/acc", "seeds": [0, 1]}, records


def _groups(batch: dict, records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {v: [] for v in batch["variants"]}
    for record in records:
        groups[record["variant"]].append(record)
    return groups


def test_learning_curve_is_accuracy_against_training_images_per_model() -> None:
    batch, records = _fitting()
    fig = learning_curve_figure(_groups(batch, records), "fitting")
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == len(FRACTIONS)]
    assert len(lines) == 2 * len(MODELS)  # validation and training, per model
    for line in lines:
        assert list(line.get_xdata()) == pytest.approx([400 * f + 0.5 for f in FRACTIONS])  # mean n_train of seeds
    val_logistic = next(line for line in lines if line.get_linestyle() == "-")
    assert list(val_logistic.get_ydata()) == pytest.approx([0.6 + 0.3 * f + 0.005 for f in FRACTIONS])
    assert ax.get_xlabel() == "training images" and ax.get_xscale() == "log"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [*MODELS, "validation", "training"]
    assert ax.collections  # the ± std bands


def test_dot_plots_readable_labels_and_one_shared_legend() -> None:
    batch, records = _fitting()
    groups = _groups(batch, records)
    metric = metric_figure(groups, "val/acc", "fitting")
    assert metric.axes[0].get_xlabel() == "validation accuracy"
    train_val = train_val_figure(groups, "fitting")
    bars = [p for p in train_val.axes[0].patches if isinstance(p, Rectangle)]
    assert not bars  # dots joined by a line, not bars cut off above zero
    assert [t.get_text() for t in train_val.legends[0].get_texts()] == ["training", "validation"]
    curves = curves_figure(groups, "fitting")
    assert len(curves.legends) == 1 and all(ax.get_legend() is None for ax in curves.axes)
    looks = {(line.get_color(), line.get_marker(), line.get_linestyle()) for line in curves.axes[1].get_lines()}
    assert len(looks) == len(batch["variants"])  # identical curves stay distinguishable


def test_write_figures_writes_the_learning_curve_only_where_train_fraction_varies(tmp_path: Path) -> None:
    batch, records = _fitting()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_figures(tmp_path, batch, records)
    assert not caught, [str(w.message) for w in caught]
    assert [p.name for p in written] == list(FIGURES) and "learning_curve.png" in FIGURES
    for record in records:
        del record["varied"]["data.train_fraction"]
    written = write_figures(tmp_path, batch, records)
    assert "learning_curve.png" not in [p.name for p in written]
    assert not (tmp_path / "learning_curve.png").exists()  # a stale figure is removed
    assert np.all([(tmp_path / p.name).stat().st_size > 1000 for p in written])
