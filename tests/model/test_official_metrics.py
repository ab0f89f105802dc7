"""MedMNIST's official ACC/AUC equal the ``medmnist`` package's on the same predictions, for every task type."""

from __future__ import annotations

import importlib
import math
import warnings
from types import ModuleType

import numpy as np
import pytest

from medmnist_lit.data.tasks import Task, TaskKind
from medmnist_lit.model.official_metrics import label_aucs, majority_baseline, majority_scores, official_metrics

KINDS = list(TaskKind)


@pytest.fixture
def medmnist_evaluator(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # medmnist.info makes ~/.medmnist when first imported: let that happen in a temporary home
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    return importlib.import_module("medmnist.evaluator")


def reference(module: ModuleType, y_true: np.ndarray, y_score: np.ndarray, kind: TaskKind) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's "only one class present" for the undefined cases
        return module.getAUC(y_true, y_score, kind.value), module.getACC(y_true, y_score, kind.value)


def predictions(kind: TaskKind, rng: np.random.Generator, n: int = 60, width: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """MedMNIST-layout targets ((N, 1) or (N, L) uint8) and probabilities of ``width`` classes/labels."""
    if kind is TaskKind.MULTILABEL:
        y = (rng.random((n, width)) < 0.3).astype(np.uint8)
        return y, rng.random((n, width)).astype(np.float32)
    c = 2 if kind is TaskKind.BINARY else width
    y = rng.integers(0, c, (n, 1)).astype(np.uint8)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y[:, 0]]  # better than chance
    p = np.exp(logits)
    return y, (p / p.sum(1, keepdims=True)).astype(np.float32)


def assert_same(ours: tuple[float, float], theirs: tuple[float, float]) -> None:
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15, nan_ok=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_random_predictions_equal_medmnist(medmnist_evaluator: ModuleType, kind: TaskKind, seed: int) -> None:
    y, score = predictions(kind, np.random.default_rng(seed))
    ours = official_metrics(y, score, kind)
    assert_same(ours, reference(medmnist_evaluator, y, score, kind))
    assert 0.5 < ours.auc <= 1 or kind is TaskKind.MULTILABEL


@pytest.mark.parametrize("kind", KINDS)
def test_ties_and_threshold_equal_medmnist(medmnist_evaluator: ModuleType, kind: TaskKind) -> None:
    rng = np.random.default_rng(7)
    y, score = predictions(kind, rng, n=80)
    score = np.round(score * 4) / 4  # many tied scores, and scores of exactly 0.5
    if kind is not TaskKind.MULTILABEL:
        score[:10] = 1 / score.shape[1]  # argmax ties: the lowest class wins
    assert (score == 0.5).any()
    assert_same(official_metrics(y, score, kind), reference(medmnist_evaluator, y, score, kind))


@pytest.mark.parametrize("kind", [TaskKind.MULTICLASS, TaskKind.ORDINAL, TaskKind.MULTILABEL, TaskKind.BINARY])
def test_absent_class_or_label_gives_nan_like_medmnist(medmnist_evaluator: ModuleType, kind: TaskKind) -> None:
    y, score = predictions(kind, np.random.default_rng(3))
    if kind is TaskKind.MULTILABEL:
        y[:, 2] = 0
    elif kind is TaskKind.BINARY:
        y[:] = 1
    else:
        y[y == 4] = 0
    ours = official_metrics(y, score, kind)
    theirs = reference(medmnist_evaluator, y, score, kind)
    assert_same(ours, theirs)
    assert math.isnan(ours.auc) and not math.isnan(ours.acc)
    aucs = label_aucs(y, score, kind)
    assert np.isnan(aucs).sum() == 1  # only the absent class/label has no AUC


def test_score_layouts_medmnist_accepts(medmnist_evaluator: ModuleType) -> None:
    y, score = predictions(TaskKind.BINARY, np.random.default_rng(5))
    for s in (score, score[:, 1], score[:, 1:]):  # two columns, the positive column, (N, 1)
        for t in (y, y[:, 0]):
            assert_same(official_metrics(t, s, "binary-class"), reference(medmnist_evaluator, t, s, TaskKind.BINARY))
    y, score = predictions(TaskKind.MULTICLASS, np.random.default_rng(5))
    assert_same(
        official_metrics(y[:, 0], score, "multiclass"), reference(medmnist_evaluator, y, score, TaskKind.MULTICLASS)
    )


@pytest.mark.parametrize("kind", KINDS)
def test_evaluator_on_a_tiny_npz(medmnist_evaluator: ModuleType, kind: TaskKind, tmp_path) -> None:
    flag, width = {
        TaskKind.BINARY: ("pneumoniamnist", 2),
        TaskKind.MULTICLASS: ("bloodmnist", 8),
        TaskKind.ORDINAL: ("retinamnist", 5),
        TaskKind.MULTILABEL: ("chestmnist", 14),
    }[kind]
    y, score = predictions(kind, np.random.default_rng(11), n=40, width=width)
    np.savez(tmp_path / f"{flag}.npz", test_labels=y, train_labels=y[:0], val_labels=y[:0])
    evaluator = medmnist_evaluator.Evaluator(flag, "test", root=str(tmp_path))
    assert evaluator.info["task"] == kind.value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from 40 samples
        auc, acc = evaluator.evaluate(score)
    assert_same(official_metrics(y, score, kind), (auc, acc))


def test_multilabel_acc_is_per_label_not_exact_match() -> None:
    y = np.array([[1, 0, 0], [0, 1, 1]])
    score = np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.7]])
    assert official_metrics(y, score, "multilabel").acc == pytest.approx(5 / 6)  # exact-match accuracy: 1/2


def test_majority_baseline() -> None:
    pneumonia = Task.from_info({"task": "binary-class", "label": {"0": "normal", "1": "pneumonia"}})
    train = np.array([[1], [1], [0]], dtype=np.uint8)
    test = np.array([1] * 390 + [0] * 234)  # PneumoniaMNIST's test set: 62.5% pneumonia
    assert majority_baseline(train, test, pneumonia) == (0.5, 0.625)
    chest = Task(TaskKind.MULTILABEL, ("a", "b"))
    scores = majority_scores(np.array([[1, 0], [1, 0], [0, 1]]), 2, chest)
    assert scores.tolist() == [[1.0, 0.0], [1.0, 0.0]]
    grades = Task(TaskKind.ORDINAL, tuple("01234"))
    assert majority_baseline(np.array([0, 2, 2, 4]), np.array([2, 2, 1, 0, 3, 4]), grades) == (0.5, 1 / 3)


def test_bad_shapes_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"^3 rows of scores for 2 targets"):
        official_metrics(np.zeros(2), np.zeros((3, 2)), "multi-class")
    with pytest.raises(ValueError, match="multi-label scores"):
        official_metrics(np.zeros(4), np.zeros((4, 2)), "multi-label, binary-class")
    with pytest.raises(ValueError, match="unknown task type 'regression'"):
        official_metrics(np.zeros(4), np.zeros((4, 2)), "regression")
