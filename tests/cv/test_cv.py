"""``medmnist-lit cv``: fresh state per fold, per-fold files, aggregation, out-of-fold predictions, guards."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from datagen import make_image_folder, make_npz
from runfiles import csv_rows

from medmnist_lit.cli import main
from medmnist_lit.utils.stats import describe

FAST = ["--trainer.max_epochs", "2", "--data.batch_size", "64", "--optimizer.lr", "0.05"]


def _cv(tmp_path: Path, name: str, *args: str) -> Path:
    assert main(["cv", *FAST, "--trainer.logger.init_args.name", name, *args]) == 0
    return tmp_path / "lightning_logs" / name / "version_0"


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("cv")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        return _cv(cwd, "k", "--data.split", "kfold", "--data.folds", "3", "--cv.refit", "true")


def test_every_fold_has_its_own_directory(kfold_run: Path) -> None:
    for fold in range(3):
        directory = kfold_run / f"fold_{fold}"
        assert (directory / "metrics.json").exists()
        assert any(p.name.startswith("events.out.tfevents") for p in directory.iterdir())
        checkpoints = list((directory / "checkpoints").iterdir())
        assert checkpoints and all(p.parent == directory / "checkpoints" for p in checkpoints)
    for name in ("summary.json", "folds.csv", "oof.csv", "config.yaml", "split.npz", "cv_curves.png", "cv_folds.png"):
        assert (kfold_run / name).exists(), name
    assert (kfold_run / "refit" / "metrics.json").exists()
    # folds are scored at their last epoch by default: choosing the epoch on the validation fold would bias it
    fold = json.loads((kfold_run / "fold_1" / "metrics.json").read_text())
    assert fold["best_epoch"] == fold["epochs"]  # counted from 1: the last of 2 epochs is epoch 2


def test_summary_is_the_aggregate_of_folds_csv(kfold_run: Path) -> None:
    rows = csv_rows(kfold_run / "folds.csv")
    summary = json.loads((kfold_run / "summary.json").read_text())
    assert [int(r["fold"]) for r in rows] == [0, 1, 2]
    for key in ("val/acc", "val/loss", "val/f1", "val/auroc", "train/loss"):
        values = np.array([float(r[key]) for r in rows])
        mean, std = values.mean(), values.std(ddof=1)
        sem = std / math.sqrt(3)
        half = 4.302652729911275 * sem  # t(0.975, df=2)
        got = summary[key]
        assert got["mean"] == pytest.approx(mean) and got["std"] == pytest.approx(std)
        assert got["sem"] == pytest.approx(sem)
        assert got["ci95"] == pytest.approx([mean - half, mean + half])
    assert summary["folds/test/acc"]["mean"] == pytest.approx(np.mean([float(r["test/acc"]) for r in rows]))
    refit = json.loads((kfold_run / "refit" / "metrics.json").read_text())
    assert summary["refit/test/acc"] == pytest.approx(refit["test/acc"])


def test_pooled_oof_metrics_match_sklearn_on_oof_csv(kfold_run: Path) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    rows = csv_rows(kfold_run / "oof.csv")
    summary = json.loads((kfold_run / "summary.json").read_text())
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    labels = [classes.index(r["label"]) for r in rows]
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    predicted = [classes.index(r["predicted"]) for r in rows]
    assert summary["oof/acc"] == pytest.approx(accuracy_score(labels, predicted))
    probs = probs / probs.sum(1, keepdims=True)  # oof.csv rounds to 6 decimals
    expected = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert summary["oof/auroc"] == pytest.approx(expected, abs=1e-4)


def test_oof_covers_every_non_test_sample_once(kfold_run: Path) -> None:
    rows = csv_rows(kfold_run / "oof.csv")
    summary = json.loads((kfold_run / "summary.json").read_text())
    assert len(rows) == summary["run"]["n_dev"] == len({r["id"] for r in rows})
    split = np.load(kfold_run / "split.npz")
    assert sorted(int(r["index"]) for r in rows) == sorted(split["dev"].tolist())
    probs = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    accuracy = np.mean([r["label"] == r["predicted"] for r in rows])
    assert summary["oof/acc"] == pytest.approx(accuracy)
    lo, hi = summary["oof/acc_ci95"]
    assert lo < accuracy < hi


def test_a_fold_alone_equals_the_same_fold_after_the_others(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    common = ("--data.split", "kfold", "--data.folds", "3", "--cv.engine", "sequential")
    after = _cv(tmp_path, "after", *common, "--cv.folds_to_run", "[0, 2]")
    alone = _cv(tmp_path, "alone", *common, "--cv.folds_to_run", "[2]")
    single = json.loads((alone / "fold_2" / "metrics.json").read_text())
    together = json.loads((after / "fold_2" / "metrics.json").read_text())
    for key in ("val/loss", "val/acc", "train/loss", "test/acc", "best_epoch"):
        assert single[key] == together[key], key  # bit for bit: nothing carries over between folds
    assert not (alone / "fold_0").exists()


def test_parallel_folds_equal_sequential_folds(kfold_run: Path, tmp_path: Path, monkeypatch) -> None:
    # the fixture ran the folds' heads together in one pass; one after another gives the same numbers
    monkeypatch.chdir(tmp_path)
    summary = json.loads((kfold_run / "summary.json").read_text())
    assert summary["run"]["engine"] == "parallel"
    alone = _cv(tmp_path, "seq", "--data.split", "kfold", "--data.folds", "3", "--cv.engine", "sequential")
    for fold in range(3):
        parallel = json.loads((kfold_run / f"fold_{fold}" / "metrics.json").read_text())
        sequential = json.loads((alone / f"fold_{fold}" / "metrics.json").read_text())
        for key in ("val/loss", "val/acc", "train/loss", "train/acc", "test/loss", "test/acc", "best_epoch"):
            assert parallel[key] == pytest.approx(sequential[key], rel=1e-5, abs=1e-6), (fold, key)


def test_loo_above_the_limit_is_refused_with_the_count(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["cv", *FAST, "--data.split", "loo", "--cv.loo_limit", "100"]) == 2
    err = capsys.readouterr().err
    assert "leave-one-out: 1437 folds" in err and "limit of 100" in err and "--data.subset" in err
    assert "≈" not in err  # estimates were 2-5 times the truth: none is printed
    assert not list((tmp_path / "lightning_logs").rglob("fold_*"))


def test_logo_over_near_duplicate_clusters_above_the_limit_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # without --data.groups every near-duplicate cluster (mostly one image) is a group
    assert main(["cv", *FAST, "--data.split", "logo", "--cv.loo_limit", "100"]) == 2
    err = capsys.readouterr().err
    assert "leave-one-group-out:" in err and "limit of 100" in err and "--data.groups" in err
    assert not list((tmp_path / "lightning_logs").rglob("fold_*"))


def test_loo_on_a_subset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = _cv(
        tmp_path,
        "loo",
        "--data.split",
        "loo",
        "--data.subset",
        "20",
        "--data.test_fraction",
        "0",
        "--trainer.max_epochs",
        "1",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["n_folds"] == 20 and summary["oof/n"] == 20
    assert len(summary["oof/acc_ci95"]) == 2 and "test/acc" not in summary
    assert math.isnan(json.loads((run / "fold_0" / "metrics.json").read_text())["val/auroc"])


def test_external_source_with_other_classes_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "train", {"A": 12, "B": 12})
    make_image_folder(tmp_path / "other", {"A": 4, "C": 4})
    args = ["--data.source", str(tmp_path / "train"), "--data.test_source", str(tmp_path / "other")]
    assert main(["fit", *FAST, *args]) == 2
    err = capsys.readouterr().err
    assert "test_source" in err and "missing: ['B']" in err and "unknown: ['C']" in err


def test_external_source_is_scored_by_every_fold_and_the_ensemble(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "train", {"A": 15, "B": 15}, size=8)
    make_image_folder(tmp_path / "other", {"B": 5, "A": 5}, size=8, seed=3)  # other class order on disk
    run = _cv(
        tmp_path,
        "ext",
        "--data.source",
        str(tmp_path / "train"),
        "--data.test_source",
        str(tmp_path / "other"),
        "--data.split",
        "kfold",
        "--data.folds",
        "2",
    )
    summary = json.loads((run / "summary.json").read_text())
    assert "external/acc" in summary and summary["folds/external/acc"]["n"] == 2
    # fold 0's external accuracy, recomputed from its checkpoint and the external images read independently
    import torch

    from medmnist_lit.data.cache import load_dataset
    from medmnist_lit.model.classifier import Classifier

    model = Classifier.load_from_checkpoint(run / "fold_0" / "checkpoints" / "last.ckpt", weights_only=True)
    other = load_dataset(str(tmp_path / "other"), cache_dir=str(tmp_path / "cache"))
    names = list(other.class_names)
    target = torch.tensor([model.hparams.class_names.index(names[label]) for label in other.labels])
    with torch.no_grad():
        pixels = torch.as_tensor(np.asarray(other.images), dtype=torch.float32) / 255
        predicted = model(pixels.reshape(len(target), 1, 8, 8)).argmax(1)
    fold = json.loads((run / "fold_0" / "metrics.json").read_text())
    assert fold["external/acc"] == pytest.approx((predicted == target).float().mean().item())


def test_binary_medmnist_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    npz = make_npz(tmp_path / "pneumonia.npz", n_train=40, n_val=12, n_test=12, num_classes=2)
    run = _cv(tmp_path, "bin", "--data.source", str(npz), "--data.split", "predefined")
    metrics = json.loads((run / "fold_0" / "metrics.json").read_text())
    assert metrics["n_test"] == 12 and metrics["n_val"] == 12 and 0 <= metrics["test/auroc"] <= 1


def test_describe_matches_scipy() -> None:
    from scipy import stats

    values = [0.91, 0.95, 0.93, 0.97, 0.9]
    got = describe(values)
    lo, hi = stats.t.interval(0.95, df=4, loc=np.mean(values), scale=stats.sem(values))
    assert got["ci95"] == pytest.approx([lo, hi]) and got["n"] == 5
