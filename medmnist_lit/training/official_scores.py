"""MedMNIST's official ACC and AUC of a stage, beside the majority-class baseline scored the same way.

From probabilities a run already has (a stage's softmax or per-label sigmoid outputs): ``<stage>/official_acc`` and
``<stage>/official_auc`` are :func:`~medmnist_lit.model.official_metrics.official_metrics` (MedMNIST's
``Evaluator``), and ``<stage>/majority_official_acc|auc`` the same two numbers of the predictor that always answers
the training part's most common class (per label, for multi-label: positive where over half the training samples
are). A model whose ACC does not beat that baseline has learnt nothing the class balance did not already give
(``baseline_warning`` in :mod:`.twin_scores` says so on the console).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from medmnist_lit.data.tasks import Task
from medmnist_lit.model.official_metrics import majority_scores, official_metrics

__all__ = ["OFFICIAL_KEYS", "majority_target", "official_line", "official_scores", "target_scores"]

#: The keys :func:`official_scores` adds after ``<stage>/``.
OFFICIAL_KEYS = ("official_acc", "official_auc", "majority_official_acc", "majority_official_auc")


def majority_target(train_labels: np.ndarray, task: Task) -> int | np.ndarray:
    """The majority-class predictor of a training part: a class index, or a 0/1 row per label (multi-label).

    The same predictor as :func:`~medmnist_lit.model.official_metrics.majority_scores` (the lowest class on a tie;
    a label is positive when over half the samples have it); 0 (or all-zero labels) for an empty part.
    """
    row = majority_scores(np.asarray(train_labels), 1, task)[0]
    return row.astype(np.int64) if task.multilabel else int(row.argmax())


def target_scores(majority: int | np.ndarray, n: int, task: Task) -> np.ndarray:
    """``n`` rows of one-hot (or per-label 0/1) scores of ``majority``: one answer, or one per sample."""
    majority = np.asarray(majority)
    if task.multilabel:
        return np.broadcast_to(majority.astype(np.float64), (n, task.num_outputs)).copy()
    return np.eye(task.num_outputs)[np.broadcast_to(majority.astype(np.int64), (n,))]


def official_scores(
    stage: str, probs: Any, targets: Any, task: Task, *, majority: int | np.ndarray
) -> dict[str, float]:
    """``<stage>/official_acc|auc`` of ``probs`` and ``<stage>/majority_official_acc|auc`` of ``majority``.

    Args:
        stage: ``val``, ``test``, ``oof`` ...
        probs: Probabilities of the stage's samples, ``N×C`` (softmax) or ``N×L`` (sigmoid per label).
        targets: Their classes ``N``, or 0/1 labels ``N×L``.
        task: The data's task.
        majority: The training part's majority answer (:func:`majority_target`), or one per sample when samples
            come from different folds.

    Returns:
        The four keys of :data:`OFFICIAL_KEYS` (NaN for an empty stage).
    """
    probs_np, targets_np = np.asarray(probs, dtype=np.float64), np.asarray(targets)
    if not len(targets_np):
        return {f"{stage}/{key}": math.nan for key in OFFICIAL_KEYS}
    model = official_metrics(targets_np, probs_np, task)
    baseline = official_metrics(targets_np, target_scores(majority, len(targets_np), task), task)
    return {
        f"{stage}/official_acc": model.acc,
        f"{stage}/official_auc": model.auc,
        f"{stage}/majority_official_acc": baseline.acc,
        f"{stage}/majority_official_auc": baseline.auc,
    }


def official_line(stage: str, metrics: Mapping[str, float], label: str | None = None) -> str | None:
    """``MedMNIST metrics: test ACC 0.854 AUC 0.944 (majority class: ACC 0.625 AUC 0.500)``; ``None`` without them."""
    values = [metrics.get(f"{stage}/{key}") for key in OFFICIAL_KEYS]
    if any(v is None for v in values):
        return None
    acc, auc, majority_acc, majority_auc = (float(v) for v in values)  # type: ignore[arg-type]
    return (
        f"MedMNIST metrics: {label or stage} ACC {acc:.3f} AUC {auc:.3f} "
        f"(majority class: ACC {majority_acc:.3f} AUC {majority_auc:.3f})"
    )
