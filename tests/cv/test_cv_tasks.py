"""Cross-validation of every task type: summary keys, MedMNIST's official metrics, the fold-parallel engine."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from medmnist_lit.cv.fold_parallel import FoldParallelClassifier
from medmnist_lit.cv.folds import TrainerRecipe
from medmnist_lit.cv.runner import CVOptions, CVResult, cross_validate
from medmnist_lit.cv.summary import format_summary
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.tasks import Task, TaskKind
from medmnist_lit.model.classifier import Classifier
from medmnist_lit.model.heads import LogisticRegression
from medmnist_lit.model.official_metrics import majority_baseline, official_metrics
from medmnist_lit.splits.split import Split

N, SIZE, N_TEST, FOLDS = 150, 8, 30, 3
NAMES = {
    TaskKind.BINARY: ("normal", "pneumonia"),
    TaskKind.MULTICLASS: ("a", "b", "c"),
    TaskKind.ORDINAL: ("grade0", "grade1", "grade2", "grade3"),
    TaskKind.MULTILABEL: ("effusion", "mass", "nodule"),
}
SGD = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1, "momentum": 0.9}}
OFFICIAL = ("official_acc", "official_auc", "majority_official_acc", "majority_official_auc")


def planted(kind: TaskKind, n: int = N, seed: int = 0) -> ImageSet:
    """Noise images with a bright row per class (or per positive label): learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    names = NAMES[kind]
    images = rng.integers(0, 100, (n, SIZE, SIZE), dtype=np.uint8)
    if kind is TaskKind.MULTILABEL:
        labels: np.ndarray = (rng.random((n, len(names))) < np.array([0.5, 0.3, 0.2])).astype(np.uint8)
        labels[0] = 0  # every label has both outcomes in every part of a small split
        labels[1] = 1
        for j in range(len(names)):
            images[labels[:, j] == 1, j] = 220
    else:
        labels = rng.integers(0, len(names), n).astype(np.int64)
        for c in range(len(names)):
            images[labels == c, c] = 220
    ids = np.array([f"train/{i:06d}" for i in range(n)])
    return ImageSet(images, labels, names, ids, source="planted", task_kind=kind)


def kfold(n: int = N, n_test: int = N_TEST, folds: int = FOLDS) -> Split:
    """A plain k-fold split (the last ``n_test`` samples held out) that needs no label stratification."""
    dev, test = np.arange(n - n_test), np.arange(n - n_test, n)
    val = tuple(np.sort(part) for part in np.array_split(np.random.default_rng(0).permutation(dev), folds))
    empty = tuple(np.zeros(0, np.int64) for _ in range(folds))
    return Split("kfold", n, test, dev, val, empty, seed=0, params={"folds": folds})


def datamodule(data: ImageSet) -> MedMNISTDataModule:
    return MedMNISTDataModule.around(
        data, {"source": "planted.npz", "split": "kfold", "batch_size": 16}, split=kfold(len(data)), fingerprint="x"
    )


def template(data: ImageSet) -> Classifier:
    task = data.task
    extra: dict[str, Any] = {"task": task.kind.value} if task.multilabel else {}
    return Classifier(
        num_classes=task.num_outputs,
        input_shape=(1, SIZE, SIZE),
        class_names=list(task.label_names),
        optimizer=SGD,
        **extra,
    )


def run(data: ImageSet, directory: Path, engine: str = "auto", epochs: int = 3) -> CVResult:
    recipe = TrainerRecipe(
        {"max_epochs": epochs, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}
    )
    dm = datamodule(data)
    return cross_validate(template(data), dm, recipe, directory, CVOptions(engine=engine), seed=0)  # type: ignore[arg-type]


def oof_arrays(path: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of ``oof.csv``."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    index = np.array([int(r["index"]) for r in rows])
    probs = np.array([[float(r[f"p_{name}"]) for name in names] for r in rows])
    return index, probs


SINGLE = [TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.ORDINAL]


@pytest.mark.parametrize("kind", SINGLE, ids=lambda k: k.name.lower())
def test_cv_reports_official_metrics_of_every_single_label_task(kind: TaskKind, tmp_path: Path) -> None:
    data = planted(kind)
    result = run(data, tmp_path / "run")
    summary, task = result.summary, data.task
    assert summary["run"]["task"] == kind.value
    for key in ("val/official_acc", "val/official_auc", "val/majority_official_acc"):
        assert set(summary[key]) >= {"mean", "std", "ci95"}, key  # fold mean ± spread
        assert all(key in row for row in result.folds), key
    for stage in ("oof", "test"):
        for name in OFFICIAL:
            assert isinstance(summary[f"{stage}/{name}"], float), (stage, name)
    # pooled out-of-fold official metrics are those of the pooled probabilities in oof.csv
    index, probs = oof_arrays(result.run_dir / "oof.csv", task.label_names)
    expected = official_metrics(data.labels[index], probs, task)
    assert summary["oof/official_acc"] == pytest.approx(expected.acc, abs=1e-9)
    assert summary["oof/official_auc"] == pytest.approx(expected.auc, abs=1e-4)
    # the ensemble's test baseline fits the whole development set
    split = kfold()
    base = majority_baseline(data.labels[split.dev], data.labels[split.test], task)
    assert summary["test/majority_official_acc"] == pytest.approx(base.acc)
    assert summary["test/majority_official_auc"] == pytest.approx(0.5)
    assert summary["test/official_acc"] > summary["test/majority_official_acc"]  # the planted rows are learnt
    # single-label ACC is the product's accuracy
    assert summary["oof/official_acc"] == pytest.approx(summary["oof/acc"], abs=1e-6)
    text = format_summary(summary, note=task.note)
    assert "MedMNIST metrics: val ACC" in text and "(majority class: ACC" in text
    assert ("Note: ordinal grades" in text) is (kind is TaskKind.ORDINAL)


def test_multilabel_cv_trains_and_scores_each_label(tmp_path: Path) -> None:
    data = planted(TaskKind.MULTILABEL)
    result = run(data, tmp_path / "run", engine="sequential")
    summary, task = result.summary, data.task
    assert summary["run"]["task"] == TaskKind.MULTILABEL.value
    for stage in ("oof", "test"):
        for name in OFFICIAL:
            assert math.isfinite(summary[f"{stage}/{name}"]), (stage, name)
    index, probs = oof_arrays(result.run_dir / "oof.csv", task.label_names)
    assert probs.shape == (N - N_TEST, 3)
    expected = official_metrics(data.labels[index], probs, task)
    assert summary["oof/official_acc"] == pytest.approx(expected.acc, abs=1e-9)
    assert summary["oof/official_auc"] == pytest.approx(expected.auc, abs=1e-4)
    # the product's multi-label accuracy is MedMNIST's ACC (mean per-label accuracy at 0.5)
    assert summary["oof/acc"] == pytest.approx(summary["oof/official_acc"], abs=1e-6)
    assert summary["oof/auroc"] == pytest.approx(summary["oof/official_auc"], abs=1e-4)
    assert summary["test/official_auc"] > 0.8  # each bright row marks its label
    assert summary["test/acc_boot95_low"] <= summary["test/acc"] <= summary["test/acc_boot95_high"]
    assert "test/acc_binom95_low" not in summary and "oof/acc_ci95" not in summary  # correlated label decisions
    assert {f"val/auroc_{name}" for name in task.label_names} <= result.folds[0].keys()
    with (result.run_dir / "oof.csv").open(newline="") as handle:
        first = next(csv.DictReader(handle))
    positive = [name for name, y in zip(task.label_names, data.labels[int(first["index"])], strict=True) if y]
    assert first["label"] == "|".join(positive)
    with (result.run_dir / "test_predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == N_TEST and {"label_mass", "p_mass"} <= rows[0].keys()
    text = format_summary(summary)
    pooled = next(line for line in text.splitlines() if line.startswith("pooled out-of-fold acc:"))
    assert "MedMNIST metrics: pooled out-of-fold ACC" in text and "95% CI" not in pooled


def test_multilabel_permutation_test_runs_the_same_cv_on_shuffled_rows(tmp_path: Path) -> None:
    from medmnist_lit.cv.permutation import permutation_test

    data = planted(TaskKind.MULTILABEL)
    dm, model = datamodule(data), template(data)
    recipe = TrainerRecipe({"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False})
    options = CVOptions(permutations=2)
    real = cross_validate(model, dm, recipe, tmp_path / "run", options, seed=0)
    score = real.summary["val/acc"]["mean"]
    test = permutation_test(cross_validate, model, dm, recipe, tmp_path / "run", options, seed=0, score=score)
    assert len(test.scores) == 2 and all(0 < s < score for s in test.scores)  # the planted rows no longer match
    assert (tmp_path / "run" / "permutations.csv").is_file()


def test_multilabel_fold_parallel_equals_sequential(tmp_path: Path) -> None:
    data = planted(TaskKind.MULTILABEL)
    parallel = run(data, tmp_path / "parallel", engine="parallel")
    sequential = run(data, tmp_path / "sequential", engine="sequential")
    assert parallel.summary["run"]["engine"] == "parallel" and sequential.summary["run"]["engine"] == "sequential"
    for a, b in zip(parallel.folds, sequential.folds, strict=True):
        for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/auroc", "val/official_auc", "test/acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    for a, b in zip(parallel.histories, sequential.histories, strict=True):
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("pos_weight", [None, [1.0, 3.0, 0.5]])
def test_fold_parallel_multilabel_loss_is_task_loss_per_fold(smoothing: float, pos_weight: list | None) -> None:
    task = Task(TaskKind.MULTILABEL, NAMES[TaskKind.MULTILABEL])
    weight = None if pos_weight is None else torch.tensor(pos_weight)
    model = SimpleNamespace(label_smoothing=smoothing, class_weight=weight)
    heads = [LogisticRegression(4, 3) for _ in range(2)]
    run = FoldParallelClassifier(model, heads, [], task)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 10, 3, generator=generator)
    y = (torch.rand(10, 3, generator=generator) < 0.5).long()
    keep = torch.rand(2, 10, generator=generator) < 0.6
    losses, kept = run._losses(logits, y, keep)
    for k in range(2):
        expected = task.loss(logits[k][keep[k]], y[keep[k]], weight, smoothing)
        torch.testing.assert_close(losses[k], expected)
        assert kept[k] == keep[k].sum()
    right = run._correct(logits, y)
    torch.testing.assert_close(right[0], ((logits[0].sigmoid() > 0.5) == y.bool()).float().mean(-1))


def test_ordinal_note_is_printed_once() -> None:
    summary: dict[str, Any] = {"run": {"task": TaskKind.ORDINAL.value}, "test/official_acc": 0.5}
    summary.update({"test/official_auc": 0.7, "test/majority_official_acc": 0.4, "test/majority_official_auc": 0.5})
    note = Task(TaskKind.ORDINAL, NAMES[TaskKind.ORDINAL]).note
    assert note is not None
    text = format_summary(summary, note=note)
    expected = "MedMNIST metrics: test (fold ensemble) ACC 0.500 AUC 0.700 (majority class: ACC 0.400 AUC 0.500)"
    assert text.count(note) == 1 and expected in text


def test_multilabel_permutation_shuffles_whole_label_rows() -> None:
    from medmnist_lit.cv.permutation import permuted_labels

    labels = planted(TaskKind.MULTILABEL).labels
    dev = kfold().dev
    shuffled = permuted_labels(labels, dev, seed=3)
    assert shuffled.shape == labels.shape
    np.testing.assert_array_equal(shuffled[kfold().test], labels[kfold().test])
    rows = {tuple(r) for r in labels[dev]}
    assert all(tuple(r) in rows for r in shuffled[dev]) and not np.array_equal(shuffled[dev], labels[dev])
    assert sorted(map(tuple, shuffled[dev])) == sorted(map(tuple, labels[dev]))


def test_cli_cv_of_an_ordinal_medmnist_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cliruns import run_in
    from datagen import make_npz

    from medmnist_lit.data.medmnist_source import ROOT_ENV

    root = tmp_path / "medmnist"
    root.mkdir()
    make_npz(root / "retinamnist.npz", n_train=40, n_val=10, n_test=10, num_classes=5, size=28, rgb=True)
    monkeypatch.setenv(ROOT_ENV, str(root))
    cwd = tmp_path / "run"
    cwd.mkdir()
    args = ["cv", "--data.source", "medmnist:retinamnist", "--data.split", "kfold", "--data.folds", "3"]
    run_in(cwd, [*args, "--data.batch_size", "8", "--trainer.max_epochs", "1", "--trainer.logger.init_args.name", "t"])
    captured = capsys.readouterr()
    err = captured.out + captured.err
    note = Task(TaskKind.ORDINAL, ("0", "1")).note
    assert note is not None and err.count(note) == 1
    assert "MedMNIST metrics: val ACC" in err and "test (fold ensemble) ACC" in err
    summary = json.loads((cwd / "lightning_logs" / "t" / "version_0" / "summary.json").read_text())
    assert summary["run"]["task"] == TaskKind.ORDINAL.value and "test/majority_official_auc" in summary


def test_fold_parallel_refuses_a_model_built_for_another_task(tmp_path: Path) -> None:
    data = planted(TaskKind.MULTICLASS)
    names = list(NAMES[TaskKind.MULTICLASS])
    model = Classifier(num_classes=3, input_shape=(1, SIZE, SIZE), class_names=names, task="ordinal-regression")
    recipe = TrainerRecipe({"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False})
    with pytest.raises(ValueError, match=r"built for a ordinal-regression task but the data's task is multi-class"):
        cross_validate(model, datamodule(data), recipe, tmp_path / "run", CVOptions(engine="parallel"))
