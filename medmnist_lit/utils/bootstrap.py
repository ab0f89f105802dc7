"""Stratified bootstrap intervals of accuracy, macro-F1 and AUROC, vectorised over resamples.

Each resample draws, within every true class, as many samples as the class has (with replacement), so the class
balance of the test set is kept. A resample is a vector of integer weights (multinomial counts per class); the
metrics of all resamples come from weighted confusion counts (accuracy, F1) and, for AUROC, from one sort per class
with cumulative weight sums, so 1,000 resamples of 10,000 samples take well under a second. The metrics are defined
as torchmetrics defines them for :class:`~medmnist_lit.model.metrics.EpochMetrics`: micro accuracy; macro-F1 over
the classes present in the targets or the predictions; macro one-vs-rest AUROC (binary: the AUROC of class 1).

Multi-label targets (``N×L`` 0/1, with sigmoid probabilities) have their own definitions, those of the multi-label
:class:`~medmnist_lit.model.metrics.EpochMetrics`: the mean of the per-label accuracies at 0.5 (MedMNIST's ACC),
macro-F1 at 0.5 (a label with no positive and no positive call counts 0, as torchmetrics counts it), and the mean
AUROC of the labels with both outcomes. Their resamples draw samples with replacement from the whole set (a sample
has several labels, so there is no class to stratify by).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["bootstrap_intervals", "weighted_multilabel_scores", "weighted_scores"]

#: Resamples processed at a time (bounds the memory of the weight matrix: chunk × samples float64).
_CHUNK = 200


def _auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted binary AUROC (ties count one half) for each row of ``weights``; NaN without both classes.

    One sort of the negatives' scores; each positive finds how much negative weight lies below and level with it
    from the cumulative weight sums (``searchsorted`` on the sorted scores), for all rows at once.
    """
    neg = np.flatnonzero(~positive)
    pos = np.flatnonzero(positive)
    order = neg[np.argsort(scores[neg], kind="stable")]
    ranked = scores[order]
    cum = np.zeros((len(weights), len(order) + 1))
    np.cumsum(weights[:, order], axis=1, out=cum[:, 1:])
    left = np.searchsorted(ranked, scores[pos], side="left")
    right = np.searchsorted(ranked, scores[pos], side="right")
    below, level = cum[:, left], cum[:, right] - cum[:, left]
    w_pos = weights[:, pos]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("bp,bp->b", w_pos, below + 0.5 * level) / (w_pos.sum(1) * cum[:, -1])


def weighted_scores(probs: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 and AUROC of ``probs`` against ``targets`` for each row of sample ``weights``.

    Args:
        probs: Class probabilities, ``N×C``.
        targets: True class per sample, ``N``.
        weights: Non-negative sample weights, ``B×N`` (a row of ones is the plain metric).

    Returns:
        ``{"acc", "f1", "auroc"}``, each shaped ``B``.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    k = probs.shape[1]
    predicted = probs.argmax(1)
    correct = predicted == targets
    eye = np.eye(k)
    # weighted confusion counts per class: true positives, support (tp + fn) and predictions (tp + fp)
    tp = weights @ (eye[targets] * correct[:, None])
    support = weights @ eye[targets]
    called = weights @ eye[predicted]
    acc = tp.sum(1) / weights.sum(1)
    present = support + called > 0  # torchmetrics leaves out classes with no tp, fp or fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(present, 2 * tp / (support + called), 0.0)
    f1 = per_class.sum(1) / np.maximum(present.sum(1), 1)
    if k == 2:
        auroc = _auroc(probs[:, 1], targets == 1, weights)
    else:
        per_auroc = np.stack([_auroc(probs[:, c], targets == c, weights) for c in range(k)], 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (one class only) stay NaN
            auroc = np.nanmean(per_auroc, 1)
    return {"acc": acc, "f1": f1, "auroc": auroc}


def weighted_multilabel_scores(
    probs: np.ndarray, targets: np.ndarray, weights: np.ndarray, threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """Multi-label accuracy, macro-F1 and AUROC (see the module doc) for each row of sample ``weights``.

    Args:
        probs: Per-label probabilities, ``N×L``.
        targets: 0/1 labels, ``N×L``.
        weights: Non-negative sample weights, ``B×N``.
        threshold: Where a probability turns positive (strictly above; MedMNIST's 0.5).

    Returns:
        ``{"acc", "f1", "auroc"}``, each shaped ``B``.
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    called, positive = (probs > threshold).astype(np.float64), targets.astype(np.float64)
    total = weights.sum(1, keepdims=True)
    tp = weights @ (called * positive)
    fp = weights @ (called * (1 - positive))
    fn = weights @ ((1 - called) * positive)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (weights @ (called == positive).astype(np.float64) / total).mean(1)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0).mean(1)
    per_auroc = np.stack([_auroc(probs[:, i], targets[:, i] == 1, weights) for i in range(probs.shape[1])], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows where no label has both outcomes stay NaN
        auroc = np.nanmean(per_auroc, 1)
    return {"acc": acc, "f1": f1, "auroc": auroc}


def bootstrap_intervals(
    probs: np.ndarray,
    targets: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Stratified bootstrap percentile intervals of accuracy, macro-F1 and AUROC.

    Args:
        probs: Class probabilities, ``N×C`` (multi-label: per-label probabilities ``N×L``).
        targets: True class per sample, ``N`` (multi-label: 0/1 labels ``N×L``, resampled without strata).
        resamples: Number of bootstrap resamples.
        confidence: Coverage of the intervals.
        seed: Seed of the resampling (the same seed gives the same intervals).

    Returns:
        ``{"acc": [lo, hi], "f1": [lo, hi], "auroc": [lo, hi]}``; NaN bounds for an empty set (AUROC: for a set
        with one class).
    """
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if n == 0 or resamples < 1:
        return {name: [math.nan, math.nan] for name in ("acc", "f1", "auroc")}
    rng = np.random.default_rng(seed)
    multilabel = targets.ndim == 2
    scorer = weighted_multilabel_scores if multilabel else weighted_scores
    members = [np.arange(n)] if multilabel else [np.flatnonzero(targets == c) for c in np.unique(targets)]
    values: dict[str, list[np.ndarray]] = {"acc": [], "f1": [], "auroc": []}
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        weights = np.zeros((b, n))
        rows = np.arange(b)[:, None]
        for index in members:
            m = len(index)
            # m draws with replacement within the class, per resample, as counts (multinomial weights)
            draws = rows * m + rng.integers(0, m, size=(b, m))
            weights[:, index] = np.bincount(draws.ravel(), minlength=b * m).reshape(b, m)
        for name, scores in scorer(probs, targets, weights).items():
            values[name].append(scores)
    tail = (1 - confidence) / 2
    intervals = {}
    for name, parts in values.items():
        scores = np.concatenate(parts)
        scores = scores[~np.isnan(scores)]
        intervals[name] = (
            [float(q) for q in np.quantile(scores, [tail, 1 - tail])] if len(scores) else [math.nan, math.nan]
        )
    return intervals
