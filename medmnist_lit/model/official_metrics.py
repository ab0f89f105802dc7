"""MedMNIST's official ACC and AUC, defined exactly as ``medmnist.evaluator.getACC`` / ``getAUC`` (3.0.x) define them.

They are what MedMNIST's papers and leaderboards report, so a number here compares with theirs; the product's own
metrics (:mod:`.metrics`) are reported beside them. Their definitions, quirks included (the tests check equality
with the ``medmnist`` package on the same predictions for every task type):

* **Scores are probabilities.** Binary and multi-label ACC threshold the scores at 0.5 (strictly greater is
  positive), so logits would be misread: pass softmax / sigmoid outputs (:meth:`Task.scores`).
* **Binary**: the positive score is the *last* column of 2-D scores (or the scores themselves when 1-D); ACC
  thresholds it at 0.5, which on two softmax columns equals the argmax (a 0.5 tie goes to class 0 either way).
* **Multi-class and ordinal**: ACC is the argmax's accuracy (a tie goes to the lowest class); AUC is the unweighted
  mean of the one-vs-rest AUCs of the score *columns* (not scikit-learn's ``multi_class="ovr"``, which also
  requires rows summing to 1). Ordinal grades get no credit for a near miss.
* **Multi-label**: ACC is the mean of the per-label accuracies at 0.5, i.e. 1 - Hamming loss, *not* the share of
  samples with every label right (which is far lower on ChestMNIST); AUC is the mean of the per-label AUCs.
* **Undefined AUC**: a class or label that is absent (or the only one present) has no AUC; MedMNIST then gets NaN
  from scikit-learn (which warns; older versions raised instead) and so its mean is NaN. The same here,
  without the warning: :func:`label_aucs` shows which term is missing.
* Single-label targets may be ``(N,)`` or MedMNIST's ``(N, 1)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import roc_auc_score

from medmnist_lit.data.tasks import Task, TaskKind

__all__ = ["OfficialMetrics", "label_aucs", "majority_baseline", "majority_scores", "official_metrics"]

#: MedMNIST's threshold for binary and multi-label scores.
THRESHOLD = 0.5


class OfficialMetrics(NamedTuple):
    """MedMNIST's two metrics (``medmnist.Evaluator.evaluate``'s ``Metrics(AUC, ACC)``), in [0, 1]."""

    auc: float
    acc: float


def _kind(task: Task | TaskKind | str) -> TaskKind:
    return task.kind if isinstance(task, Task) else TaskKind.parse(task)


def _arrays(y_true: np.ndarray, y_score: np.ndarray, kind: TaskKind) -> tuple[np.ndarray, np.ndarray]:
    """Targets and scores in the shapes each definition reads; the positive column of binary scores."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    if len(y_true) != len(y_score):
        raise ValueError(f"{len(y_score)} rows of scores for {len(y_true)} targets: pass one score row per sample")
    if kind is TaskKind.MULTILABEL:
        if y_true.ndim != 2 or y_score.shape != y_true.shape:
            raise ValueError(f"multi-label scores {y_score.shape} and targets {y_true.shape} must both be (N, labels)")
        return y_true, y_score
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]  # MedMNIST's (N, 1) targets
    if y_true.ndim != 1:
        raise ValueError(f"{kind.value} targets must be (N,) or (N, 1), not {y_true.shape}")
    if kind is TaskKind.BINARY:
        if y_score.ndim == 2:
            y_score = y_score[:, -1]  # the positive class is the last column, as MedMNIST reads it
        if y_score.ndim != 1:
            raise ValueError(f"binary scores must be (N,) or (N, columns), not {y_score.shape}")
    elif y_score.ndim != 2:
        raise ValueError(f"{kind.value} scores must be (N, classes), not {y_score.shape}")
    return y_true, y_score


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of one binary target; NaN when it holds one value (recent scikit-learn returns that, warning)."""
    if np.unique(y).size < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def label_aucs(y_true: np.ndarray, y_score: np.ndarray, task: Task | TaskKind | str) -> np.ndarray:
    """The AUCs MedMNIST's AUC averages: one per score column (one-vs-rest) or per label; a single one for binary.

    Args:
        y_true: Class indices ``(N,)`` / ``(N, 1)``, or 0/1 labels ``(N, L)`` (multi-label).
        y_score: Probabilities ``(N, C)``; binary also ``(N,)``.
        task: The task (a :class:`Task`, a :class:`TaskKind` or MedMNIST's task string).

    Returns:
        Float64 AUCs, NaN for a class or label without both outcomes.
    """
    kind = _kind(task)
    y_true, y_score = _arrays(y_true, y_score, kind)
    if kind is TaskKind.BINARY:
        return np.array([_auc(y_true, y_score)])
    if kind is TaskKind.MULTILABEL:
        return np.array([_auc(y_true[:, i], y_score[:, i]) for i in range(y_score.shape[1])])
    return np.array([_auc(y_true == i, y_score[:, i]) for i in range(y_score.shape[1])])


def official_metrics(
    y_true: np.ndarray, y_score: np.ndarray, task: Task | TaskKind | str, threshold: float = THRESHOLD
) -> OfficialMetrics:
    """MedMNIST's AUC and ACC of probabilities ``y_score`` for targets ``y_true`` (see :func:`label_aucs`).

    Args:
        y_true: Class indices ``(N,)`` / ``(N, 1)``, or 0/1 labels ``(N, L)`` (multi-label).
        y_score: Probabilities ``(N, C)``; binary also ``(N,)``.
        task: The task (a :class:`Task`, a :class:`TaskKind` or MedMNIST's task string).
        threshold: Where binary and multi-label scores turn positive (strictly above; MedMNIST's 0.5).

    Raises:
        ValueError: Shapes that do not fit the task, or an unknown task.
    """
    kind = _kind(task)
    y_true, y_score = _arrays(y_true, y_score, kind)
    auc = float(np.mean(label_aucs(y_true, y_score, kind)))  # one NaN term makes it NaN, as in MedMNIST
    if kind is TaskKind.MULTILABEL:
        acc = float(np.mean([np.mean(y_true[:, i] == (y_score[:, i] > threshold)) for i in range(y_true.shape[1])]))
    elif kind is TaskKind.BINARY:
        acc = float(np.mean(y_true == (y_score > threshold)))
    else:
        acc = float(np.mean(y_true == np.argmax(y_score, axis=-1)))
    return OfficialMetrics(auc, acc)


def majority_scores(train_labels: np.ndarray, n: int, task: Task) -> np.ndarray:
    """Scores of the majority-class predictor fitted on ``train_labels``, for ``n`` samples.

    Every sample gets the one-hot score of the training part's most common class (the lowest on a tie), or, per
    label, 1 where that label is positive in over half the training samples. Its AUC is 0.5 (a constant ranks
    nothing) and its ACC is the share of the majority: the floor a model must clear (62.5% on PneumoniaMNIST's test
    set).
    """
    labels = task.check_labels(train_labels, "training labels")
    if task.multilabel:
        row = (labels.mean(axis=0) > 0.5).astype(np.float64) if len(labels) else np.zeros(task.num_outputs)
    else:
        row = np.zeros(task.num_outputs)
        row[int(np.argmax(np.bincount(labels, minlength=task.num_outputs)))] = 1.0
    return np.tile(row, (n, 1))


def majority_baseline(train_labels: np.ndarray, eval_labels: np.ndarray, task: Task) -> OfficialMetrics:
    """Official AUC and ACC on ``eval_labels`` of the majority-class predictor fitted on ``train_labels``."""
    return official_metrics(eval_labels, majority_scores(train_labels, len(eval_labels), task), task)
