"""``medmnist-lit cv`` with planted near-duplicates: stratified fold, pooled and ensemble scores, test intervals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from cliruns import run_in
from planted import NO_GROUPS, Planted, expected_twins, planted_npz
from runfiles import csv_rows
from tbevents import scalars

from medmnist_lit.splits.split import Split

CV = ["--data.split", "kfold", "--data.folds", "3", "--data.seed", "1", "--data.batch_size", "full"]
CV += ["--optimizer", "SGD", "--optimizer.lr", "0.1", "--optimizer.momentum", "0.9", "--trainer.max_epochs", "30"]
CV += ["--trainer.enable_progress_bar", "false", *NO_GROUPS]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().splitlines())


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Planted, Path, list[str]]:
    directory = tmp_path_factory.mktemp("cvleak")
    planted = planted_npz(directory / "leaky.npz")
    handler = _Lines()
    logger = logging.getLogger("medmnist_lit")
    logger.addHandler(handler)
    try:
        run_in(directory, ["cv", "--data.source", str(planted.path), *CV])
    finally:
        logger.removeHandler(handler)
    return planted, next((directory / "lightning_logs").glob("*/version_0")), handler.lines


def test_folds_pooled_and_ensemble_count_exactly_the_planted_twins(cv_run: tuple[Planted, Path, list[str]]) -> None:
    planted, run, _ = cv_run
    split = Split.load(run / "split.npz")
    rows = csv_rows(run / "folds.csv")
    summary = json.loads((run / "summary.json").read_text())
    expected = [expected_twins(planted.cluster, split.val[k], split.train(k)) for k in range(3)]
    assert [float(r["val/with_twin/n"]) for r in rows] == expected
    assert [float(r["val/without_twin/n"]) for r in rows] == [len(split.val[k]) - e for k, e in enumerate(expected)]
    assert sum(expected) > 0
    assert summary["oof/with_twin/n"] == sum(expected)  # each pooled sample against its own fold's training part
    assert summary["oof/without_twin/n"] == len(split.dev) - sum(expected)
    # the fold ensemble's test samples: a twin anywhere in the development set counts
    assert summary["test/with_twin/n"] == expected_twins(planted.cluster, split.test, split.dev)
    for k, row in enumerate(rows):  # each fold model on the test part: against its own training part
        assert float(row["test/with_twin/n"]) == expected_twins(planted.cluster, split.test, split.train(k))
    means = np.mean([float(r["val/without_twin/acc"]) for r in rows])
    assert summary["val/without_twin/acc"]["mean"] == pytest.approx(means)
    assert summary["oof/leak_inflation"] > 0.1  # label-free images: only memorised twins are right


def test_ensemble_intervals_predictions_tensorboard_and_console(cv_run: tuple[Planted, Path, list[str]]) -> None:
    planted, run, lines = cv_run
    split = Split.load(run / "split.npz")
    summary = json.loads((run / "summary.json").read_text())
    rows = csv_rows(run / "test_predictions.csv")
    assert [int(r["index"]) for r in rows] == split.test.tolist()
    correct = sum(r["label"] == r["predicted"] for r in rows)
    assert correct / len(rows) == pytest.approx(summary["test/acc"])
    for name in ("acc", "f1", "auroc"):
        assert summary[f"test/{name}_boot95_low"] <= summary[f"test/{name}"] <= summary[f"test/{name}_boot95_high"]
    assert summary["test/acc_binom95_low"] <= summary["test/acc"] <= summary["test/acc_binom95_high"]
    labels = np.concatenate([np.load(planted.path)[f"{s}_labels"].ravel() for s in ("train", "val", "test")])
    majority = np.bincount(labels[split.dev]).argmax()
    assert summary["test/majority_acc"] == pytest.approx(np.mean(labels[split.test] == majority))
    logged = scalars(run / "summary")
    for tag in ("val/with_twin/acc", "oof/without_twin/acc", "test/leak_inflation", "oof/majority_acc"):
        value = summary[tag]["mean"] if isinstance(summary[tag], dict) else summary[tag]
        assert logged[tag][0][1] == pytest.approx(value, rel=1e-6), tag
    assert any(line.startswith("Leakage: pooled out-of-fold acc") for line in lines)
    assert any(line.startswith("Leakage: test acc (fold ensemble)") for line in lines)
    assert any(line.startswith("test acc (fold ensemble):") and "exact binomial" in line for line in lines)
