"""Leakage-stratified scores, majority baseline, test intervals and test_predictions.csv of ``fit`` (planted twins)."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cliruns import run_in
from planted import NO_GROUPS, Planted, expected_twins, planted_npz
from tbevents import scalars
from torchmetrics.functional.classification import binary_auroc

from medmnist_lit.jobs import cv_metrics
from medmnist_lit.jobs import scalars as record_scalars
from medmnist_lit.training.twin_scores import baseline_warning, leakage_line, probability_scores, stage_scores
from medmnist_lit.utils.stats import binomial_interval

# full-batch SGD on 256 noise pixels and 60 training images: the logistic head can memorise its training set
FIT = ["--data.split", "predefined", "--data.batch_size", "full", "--optimizer", "SGD", "--optimizer.lr", "0.1"]
FIT += ["--optimizer.momentum", "0.9", "--trainer.enable_progress_bar", "false", *NO_GROUPS]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _fit(directory: Path, planted: Planted, epochs: int) -> tuple[Path, list[str]]:
    handler = _Lines()
    logger = logging.getLogger("medmnist_lit")
    logger.addHandler(handler)
    try:
        run_in(directory, ["fit", "--data.source", str(planted.path), *FIT, "--trainer.max_epochs", str(epochs)])
    finally:
        logger.removeHandler(handler)
    return next((directory / "lightning_logs").glob("*/version_0")), handler.lines


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Planted, Path, list[str]]:
    directory = tmp_path_factory.mktemp("leaky")
    planted = planted_npz(directory / "leaky.npz")
    return (planted, *_fit(directory, planted, 30))


def test_fit_counts_exactly_the_planted_twins(leaky: tuple[Planted, Path, list[str]]) -> None:
    planted, run, _ = leaky
    metrics = json.loads((run / "metrics.json").read_text())
    n_train, n_val, n_test = planted.sizes
    train = np.arange(n_train)
    val, test = np.arange(n_train, n_train + n_val), np.arange(n_train + n_val, sum(planted.sizes))
    assert metrics["val/with_twin/n"] == expected_twins(planted.cluster, val, train) == 10
    assert metrics["val/without_twin/n"] == n_val - 10
    assert metrics["test/with_twin/n"] == expected_twins(planted.cluster, test, train) == 7
    assert metrics["test/without_twin/n"] == n_test - 7
    for stage, n in (("val", n_val), ("test", n_test)):
        parts = [metrics[f"{stage}/{p}/acc"] * metrics[f"{stage}/{p}/n"] for p in ("with_twin", "without_twin")]
        assert sum(parts) == pytest.approx(metrics[f"{stage}/acc"] * n, abs=1e-4)  # the halves make the whole
        assert metrics[f"{stage}/leak_inflation"] == pytest.approx(
            metrics[f"{stage}/acc"] - metrics[f"{stage}/without_twin/acc"]
        )
        for key in ("loss", "f1", "auroc"):
            assert math.isfinite(metrics[f"{stage}/without_twin/{key}"]), (stage, key)


def test_planted_leakage_shows_as_a_positive_inflation(leaky: tuple[Planted, Path, list[str]]) -> None:
    metrics = json.loads((leaky[1] / "metrics.json").read_text())
    for stage in ("val", "test"):
        # label-free images: the twins are memorised, the rest are guessed
        assert metrics[f"{stage}/with_twin/acc"] >= 0.85, stage
        assert metrics[f"{stage}/without_twin/acc"] <= 0.6, stage
        assert metrics[f"{stage}/leak_inflation"] > 0.1, stage


def test_majority_baseline_and_test_intervals(leaky: tuple[Planted, Path, list[str]]) -> None:
    planted, run, _ = leaky
    metrics = json.loads((run / "metrics.json").read_text())
    data = np.load(planted.path)
    majority = np.bincount(data["train_labels"].ravel()).argmax()
    for stage in ("val", "test"):
        assert metrics[f"{stage}/majority_acc"] == pytest.approx(np.mean(data[f"{stage}_labels"].ravel() == majority))
    with (run / "test_predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    n_train, n_val, n_test = planted.sizes
    assert [int(r["index"]) for r in rows] == list(range(n_train + n_val, sum(planted.sizes)))
    assert [r["id"] for r in rows] == [f"test/{i:06d}" for i in range(n_test)]
    assert [int(r["label"]) for r in rows] == data["test_labels"].ravel().tolist()
    correct = sum(r["label"] == r["predicted"] for r in rows)
    assert correct / n_test == pytest.approx(metrics["test/acc"])
    low, high = binomial_interval(correct, n_test)
    assert (metrics["test/acc_binom95_low"], metrics["test/acc_binom95_high"]) == pytest.approx((low, high))
    for name in ("acc", "f1", "auroc"):
        assert metrics[f"test/{name}_boot95_low"] <= metrics[f"test/{name}"] <= metrics[f"test/{name}_boot95_high"]


def test_console_tensorboard_and_records_carry_the_stratified_scores(leaky: tuple[Planted, Path, list[str]]) -> None:
    _, run, lines = leaky
    metrics = json.loads((run / "metrics.json").read_text())
    test_line = next(line for line in lines if line.startswith("Accuracy of the model on the 30 test images"))
    assert "exact binomial" in test_line and "stratified bootstrap" in test_line
    assert test_line.endswith(f"; majority-class baseline {100 * metrics['test/majority_acc']:.2f} %")
    val_line = next(line for line in lines if line.startswith("Leakage: val acc"))
    assert f"on the 10 images with a near-duplicate in training, {100 * metrics['val/without_twin/acc']:.2f} %" in (
        val_line
    )
    assert any(line.startswith("Leakage: test acc") for line in lines)
    assert lines.index(test_line) < lines.index(val_line)
    logged = scalars(run / "summary")  # the HParams trial: its metric columns
    for tag in ("val/with_twin/acc", "val/without_twin/acc", "test/without_twin/auroc", "test/leak_inflation"):
        assert logged[tag][0][1] == pytest.approx(metrics[tag], rel=1e-6), tag
    assert "val/majority_acc" in logged and "test/f1_boot95_low" in logged
    kept = record_scalars(metrics)
    assert {"val/with_twin/acc", "test/without_twin/n", "test/majority_acc", "test/auroc_boot95_high"} <= set(kept)


def test_a_leak_free_dataset_shows_no_inflation(tmp_path: Path) -> None:
    planted = planted_npz(tmp_path / "clean.npz", amplitude=80, seed=1)  # every image follows its class pattern
    run, _ = _fit(tmp_path, planted, 10)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/with_twin/n"] == 10 and metrics["test/with_twin/n"] == 7
    assert abs(metrics["val/leak_inflation"]) <= 0.05 and abs(metrics["test/leak_inflation"]) <= 0.05
    assert metrics["test/acc"] > metrics["test/majority_acc"]


# --------------------------------------------------------------------------------------------------------
# the scores and lines themselves
# --------------------------------------------------------------------------------------------------------
NAMES = ["a", "b", "c"]


def test_stage_scores_of_an_empty_half_are_nan_with_n_zero() -> None:
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.7, 0.2, 0.1]])
    targets = np.array([0, 1, 2, 1])
    scores = stage_scores("val", probs, targets, twin=np.zeros(4, bool), majority=1)
    assert scores["val/with_twin/n"] == 0 and math.isnan(scores["val/with_twin/acc"])
    assert scores["val/without_twin/n"] == 4 and scores["val/without_twin/acc"] == pytest.approx(0.75)
    assert scores["val/leak_inflation"] == pytest.approx(0.0) and scores["val/majority_acc"] == 0.5
    # per-sample majorities (pooled out-of-fold samples come from folds with different training parts)
    pooled = stage_scores("oof", probs, targets, twin=None, majority=np.array([0, 1, 1, 1]))
    assert pooled == {"oof/majority_acc": 0.75}


def test_probability_scores_equal_the_metrics_of_a_run() -> None:
    from medmnist_lit.model.metrics import EpochMetrics

    logits = torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(60) % 3
    half = (torch.arange(60) % 2 == 0).numpy()
    got = probability_scores(logits.softmax(-1), targets, np.stack([half, ~half, np.zeros(60, bool)]))
    for row, chosen in enumerate((half, ~half)):
        reference = EpochMetrics(3, NAMES, sync=False)
        picked = torch.as_tensor(np.flatnonzero(chosen))
        reference.update(
            logits[picked], targets[picked], torch.nn.functional.cross_entropy(logits[picked], targets[picked])
        )
        expected = reference.compute()[0]
        assert got[row] == pytest.approx({k: expected[k] for k in ("acc", "loss", "f1", "auroc")}, rel=1e-5), row
    assert all(math.isnan(v) for v in got[2].values())  # an empty subset


def test_auroc_of_a_subset_lacking_classes_averages_the_classes_it_has() -> None:
    # torchmetrics' macro AUROC would count the two missing classes as 0 and report about a third of this
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.3, 0.6, 0.1, 0.0], [0.6, 0.3, 0.05, 0.05], [0.2, 0.7, 0.05, 0.05]])
    targets = torch.tensor([0, 1, 1, 0])
    expected = np.mean([float(binary_auroc(probs[:, c], (targets == c).long())) for c in (0, 1)])
    assert probability_scores(probs, targets, np.ones((1, 4)))[0]["auroc"] == pytest.approx(expected)


def test_leakage_line_and_baseline_warning() -> None:
    metrics = {
        "val/acc": 0.9932,
        "val/with_twin/acc": 0.9993,
        "val/with_twin/n": 17660.0,
        "val/without_twin/acc": 0.9895,
        "val/without_twin/n": 29503.0,
        "val/leak_inflation": 0.0037,
        "val/majority_acc": 0.17,
    }
    assert leakage_line("val", metrics) == (
        "Leakage: val acc 99.32 % = 99.93 % on the 17,660 images with a near-duplicate in training, 98.95 % on the "
        "29,503 without (believe this one): near-duplicates inflate it by 0.37 points."
    )
    assert "none of the 29,503 images" in leakage_line("val", {**metrics, "val/with_twin/n": 0.0})
    assert leakage_line("test", metrics) is None and baseline_warning("val", metrics) is None
    warning = baseline_warning("val", {**metrics, "val/acc": 0.17})
    assert warning is not None and "17.00 % does not beat the majority-class baseline 17.00 %" in warning


def test_cv_records_keep_the_stratified_summary() -> None:
    summary = {
        "val/with_twin/acc": {"mean": 0.9, "std": 0.1, "sem": 0.05, "ci95": [0.8, 1.0], "n": 3},
        "oof/without_twin/acc": 0.7,
        "test/leak_inflation": 0.02,
        "oof/majority_acc": 0.4,
        "val/acc_a": {"mean": 0.5, "std": 0.1, "sem": 0.05, "ci95": [0.4, 0.6], "n": 3},
    }
    kept = cv_metrics(summary, [])
    assert kept["val/with_twin/acc"] == 0.9 and kept["val/with_twin/acc_std"] == 0.1
    assert {"oof/without_twin/acc", "test/leak_inflation", "oof/majority_acc"} <= set(kept)
    assert "val/acc_a" not in kept
