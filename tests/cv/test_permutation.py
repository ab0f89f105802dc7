"""``cv --cv.permutations N``: the permutation test of a cross-validation (issue 14, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import make_npz
from runfiles import csv_rows

from medmnist_lit.cli import main
from medmnist_lit.cv.permutation import PermutationTest, p_value, permuted_datamodule, permuted_labels
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.jobs import cv_metrics
from medmnist_lit.training.hparams import read_trial

FAST = ["--trainer.max_epochs", "2", "--data.batch_size", "32", "--optimizer.lr", "0.1", "--data.split", "kfold"]
KEYS = ("perm/n", "perm/mean", "perm/std", "perm/p_value")


def _cv(name: str, *args: str) -> Path:
    assert main(["cv", *FAST, "--trainer.logger.init_args.name", name, *args]) == 0
    return Path("lightning_logs") / name / "version_0"


def test_p_value_is_sklearns_permutation_test_score() -> None:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import permutation_test_score
    from sklearn.naive_bayes import GaussianNB

    x, y = load_iris(return_X_y=True)
    x = x + np.random.default_rng(0).normal(0, 1.5, x.shape)  # noisy: some permutations score near the real one
    for n in (1, 7, 30):
        score, scores, expected = permutation_test_score(GaussianNB(), x, y, cv=3, n_permutations=n, random_state=0)
        assert p_value(score, scores) == pytest.approx(expected)
    # ties count as "at least as good"; the smallest p N permutations can give is 1 / (N + 1)
    assert p_value(0.5, [0.5, 0.4, 0.6, 0.1]) == pytest.approx(3 / 5)
    assert p_value(0.9, [0.1] * 19) == pytest.approx(1 / 20)


def test_permutations_shuffle_development_labels_only_and_share_the_loaded_images() -> None:
    datamodule = MedMNISTDataModule(split="kfold", folds=3, batch_size=64)
    images, labels = datamodule.tensors("cpu")
    split, original = datamodule.split, np.asarray(datamodule.dataset.labels)
    shuffled = permuted_labels(original, split.dev, seed=3)
    assert np.array_equal(shuffled, permuted_labels(original, split.dev, seed=3))  # seeded
    assert np.array_equal(shuffled[split.test], original[split.test])
    assert sorted(shuffled[split.dev]) == sorted(original[split.dev])
    assert (shuffled[split.dev] != original[split.dev]).mean() > 0.5
    module = permuted_datamodule(datamodule, shuffled)
    assert module.split is split and module.dataset.images is datamodule.dataset.images
    new_images, new_labels = module.tensors("cpu")
    assert new_images is images  # nothing decoded or copied again
    assert np.array_equal(new_labels.numpy(), shuffled) and np.array_equal(labels.numpy(), original)


def test_separable_data_beats_every_permutation_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = _cv("separable", "--data.subset", "400", "--data.folds", "2", "--cv.permutations", "20")
    summary = json.loads((run / "summary.json").read_text())
    rows = csv_rows(run / "permutations.csv")
    assert [int(r["permutation"]) for r in rows] == list(range(20)) and len({r["seed"] for r in rows}) == 20
    scores = [float(r["score"]) for r in rows]
    assert summary["perm/scores"] == pytest.approx(scores)
    assert summary["perm/n"] == 20 and summary["perm/mean"] == pytest.approx(np.mean(scores))
    assert summary["perm/std"] == pytest.approx(np.std(scores, ddof=1))
    assert summary["perm/p_value"] == pytest.approx(1 / 21) and summary["perm/p_value"] < 0.05
    assert max(scores) < 0.25 < summary["val/acc"]["mean"]  # ten digit classes: chance is about 0.1
    assert not (run / "permutations").exists()  # the permuted runs leave no folders, events or checkpoints
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("fold_")) == ["fold_0", "fold_1"]
    # batches record the scalars, not the list
    metrics = cv_metrics(summary, [])
    assert all(key in metrics for key in KEYS) and "perm/scores" not in metrics
    trial = read_trial(run)  # the root's HParams row, rewritten once the permutations are scored
    assert trial is not None
    assert trial[1]["perm/p_value"] == pytest.approx(1 / 21) and trial[1]["val/acc"] == pytest.approx(
        summary["val/acc"]["mean"]
    )


def test_label_free_data_scores_at_chance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # images that carry nothing (faint noise around one grey level): every model predicts the majority class
    rng = np.random.default_rng(0)
    sizes = {"train": 72, "val": 24, "test": 24}
    arrays = {f"{k}_labels": (rng.random((n, 1)) < 0.25).astype(np.uint8) for k, n in sizes.items()}
    arrays.update({f"{k}_images": (120 + rng.integers(0, 16, (n, 8, 8))).astype(np.uint8) for k, n in sizes.items()})
    npz = make_npz(tmp_path / "flat.npz", 72, 24, 24, num_classes=2, **arrays)
    monkeypatch.chdir(tmp_path)
    run = _cv("flat", "--data.source", str(npz), "--data.folds", "3", "--cv.permutations", "5")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["perm/p_value"] > 0.2
    labels = [r["label"] for r in csv_rows(run / "oof.csv")]  # every development sample, once
    majority = max(labels.count(name) for name in set(labels)) / len(labels)
    assert summary["perm/mean"] == pytest.approx(majority, abs=0.05)  # chance: the majority class
    out = capsys.readouterr().out
    assert "Permutation test (5 label permutations): val/acc" in out
    assert "WARNING: Permutation test: val/acc" in out and "not distinguishable from chance" in out
    assert out.count("Fold 0,") == 1 and out.count("permutation 5/5: val/acc") == 1  # one line per permuted cv


def test_negative_permutations_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["cv", *FAST, "--data.folds", "2", "--cv.permutations", "-1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--cv.permutations must be 0 (off) or a number of label permutations, got -1" in err[0]
    assert not list(tmp_path.glob("lightning_logs/*/*/fold_0"))  # refused before any training


def test_warning_names_the_permutations_needed_when_every_one_scores_lower() -> None:
    test = PermutationTest(0.9, [0.1] * 5, list(range(5)))
    assert test.p_value == pytest.approx(1 / 6)
    assert "use --cv.permutations 20 or more" in (test.warning() or "")
    assert PermutationTest(0.9, [0.1] * 20, list(range(20))).warning() is None
