"""Issue 15's acceptance, end to end: each task type downloaded by name from a local server, trained and scored.

For one dataset of every MedMNIST task type, a tiny npz in MedMNIST's layout is served from 127.0.0.1 with INFO's
URL and MD5 patched to it; ``medmnist-lit fit --data.source medmnist:NAME`` downloads it (MD5 checked, renamed into
the root), trains on the official split and writes MedMNIST's official ACC/AUC, which must equal
``medmnist.evaluator``'s on the probabilities of ``test_predictions.csv``. The multi-label set also goes through
``cv`` (iteratively stratified folds of near-duplicate groups).
"""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path
from types import ModuleType

import medmnist
import numpy as np
import pytest
from cliruns import run_in
from medmnist_server import Server, publish
from runfiles import csv_rows

FLAGS = ("pneumoniamnist", "bloodmnist", "chestmnist", "retinamnist")  # binary, multi-class, multi-label, ordinal
OFFICIAL = ("official_acc", "official_auc", "majority_official_acc", "majority_official_auc")


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    with pytest.MonkeyPatch.context() as patch:  # medmnist.info makes ~/.medmnist on import: a temporary home
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        return importlib.import_module("medmnist.evaluator")


def label_names(flag: str) -> list[str]:
    labels = medmnist.INFO[flag]["label"]
    return [labels[key] for key in sorted(labels, key=int)]


@pytest.mark.parametrize("flag", FLAGS)
def test_fit_downloads_trains_and_scores_every_task_type(
    flag: str, server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evaluator: ModuleType
) -> None:
    info = medmnist.INFO[flag]
    body = publish(server, monkeypatch, tmp_path, flag, sizes=(48, 16, 24))
    cwd = tmp_path / "work"
    cwd.mkdir()
    args = ["--data.source", f"medmnist:{flag}", "--data.channels", str(info["n_channels"])]
    args += ["--data.split", "predefined", "--data.batch_size", "16", "--trainer.max_epochs", "3"]
    run_in(cwd, ["fit", *args, "--trainer.logger.init_args.name", "e2e"])
    assert sorted(p.name for p in root.iterdir()) == [f"{flag}.npz"]  # downloaded, renamed, no partial left
    assert (root / f"{flag}.npz").read_bytes() == body and server.requests == [f"/{flag}.npz?download=1"]

    run = cwd / "lightning_logs" / "e2e" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    for stage in ("val", "test"):
        for key in OFFICIAL:
            assert 0.0 <= metrics[f"{stage}/{key}"] <= 1.0, f"{stage}/{key}"
    rows = csv_rows(run / "test_predictions.csv")
    names = label_names(flag)
    y_score = np.array([[float(row[f"p_{name}"]) for name in names] for row in rows])
    with np.load(root / f"{flag}.npz") as npz:
        y_true = npz["test_labels"]
    assert [row["id"] for row in rows] == [f"test/{i:06d}" for i in range(len(y_true))]
    if info["task"].startswith("multi-label"):
        assert y_true.shape == (24, 14)
        np.testing.assert_array_equal([[int(row[f"label_{n}"]) for n in names] for row in rows], y_true)
        assert {f"test/auroc_{name}" for name in names} <= set(metrics)  # per-label AUROC beside the macro one
    else:
        assert [int(row["label"]) for row in rows] == y_true[:, 0].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = evaluator.getACC(y_true, y_score, info["task"])
        auc = evaluator.getAUC(y_true, y_score, info["task"])
    # test_predictions.csv rounds the probabilities to 6 decimals
    assert metrics["test/official_acc"] == pytest.approx(acc, abs=1e-4)
    assert metrics["test/official_auc"] == pytest.approx(auc, abs=1e-4)


def test_cv_of_a_multilabel_dataset_by_name(
    server: Server, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(server, monkeypatch, tmp_path, "chestmnist", sizes=(48, 16, 24))
    cwd = tmp_path / "work"
    cwd.mkdir()
    args = ["cv", "--data.source", "medmnist:chestmnist", "--data.split", "kfold", "--data.folds", "3"]
    run_in(cwd, [*args, "--data.batch_size", "16", "--trainer.max_epochs", "2"])
    summary = json.loads(next((cwd / "lightning_logs").rglob("summary.json")).read_text())
    text = json.dumps(summary)
    for key in ("oof/official_acc", "oof/official_auc", "test/official_acc", "oof/majority_official_acc"):
        assert f'"{key}"' in text, key
