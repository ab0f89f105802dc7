"""Leakage-stratified scores and the majority-class baseline, from probabilities a run already computed.

A stage's samples (validation fold, test part, pooled out-of-fold) split in two: those whose near-duplicate cluster
has a member in the training part that scored them (``<stage>/with_twin/…``) and the rest
(``<stage>/without_twin/…``). The "without" numbers are the ones to believe; ``<stage>/leak_inflation`` is how much
the near-duplicates add to the accuracy of all samples. ``<stage>/majority_acc`` is the accuracy of always predicting
the training part's most common class: a model that does not beat it has learnt nothing useful. Given the task,
the stage also gets MedMNIST's official ACC/AUC beside the baseline's (:mod:`.official_scores`).

Multi-label stages (``N×L`` 0/1 targets, per-label probabilities) score as the multi-label
:class:`~medmnist_lit.model.metrics.EpochMetrics` does (loss: the mean binary cross-entropy); their majority answer
is one 0/1 row per label, and ``majority_acc`` is its mean per-label accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from medmnist_lit.data.tasks import Task
from medmnist_lit.training.official_scores import official_scores
from medmnist_lit.utils.bootstrap import weighted_multilabel_scores, weighted_scores

__all__ = [
    "SCORES",
    "TWIN_PARTS",
    "baseline_warning",
    "leakage_line",
    "majority_class",
    "probability_scores",
    "stage_scores",
]

#: The two halves of a stage.
TWIN_PARTS = ("with_twin", "without_twin")
#: The scores of each half.
SCORES = ("acc", "loss", "f1", "auroc")


def probability_scores(probs: Any, targets: Any, weights: np.ndarray) -> list[dict[str, float]]:
    """Accuracy, loss (negative log-likelihood of the probabilities), macro-F1 and AUROC of each row of ``weights``.

    A row of 0/1 weights selects a subset (one half of a stage); an empty subset scores NaN. The metrics are those
    of :class:`~medmnist_lit.model.metrics.EpochMetrics` (torchmetrics), computed for all subsets at once by
    :func:`~medmnist_lit.utils.bootstrap.weighted_scores` (equal to torchmetrics when every class occurs). One
    deliberate difference: a subset that lacks some classes (twins are mostly CT and MRI slices, never X-rays)
    averages AUROC over the classes it has, where torchmetrics would count each missing class as 0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    multilabel = targets.ndim == 2
    if multilabel:  # binary cross-entropy, averaged over the labels
        clipped = np.clip(probs, 1e-12, 1 - 1e-12)
        nll = -(targets * np.log(clipped) + (1 - targets) * np.log(1 - clipped)).mean(1)
    elif len(targets):
        nll = -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None))
    else:
        nll = np.zeros(0)
    results = []
    filled = weights.sum(1) > 0
    scorer = weighted_multilabel_scores if multilabel else weighted_scores
    scored = scorer(probs, targets, weights[filled]) if filled.any() and len(targets) else {}
    row = 0
    for weight, present in zip(weights, filled, strict=True):
        if not present:
            results.append(dict.fromkeys(SCORES, math.nan))
            continue
        values = {name: float(scored[name][row]) for name in ("acc", "f1", "auroc")}
        values["loss"] = float(weight @ nll / weight.sum())
        results.append({key: values[key] for key in SCORES})
        row += 1
    return results


def majority_class(train_labels: np.ndarray, num_classes: int) -> int:
    """The most common class of a training part (the lowest index among ties); 0 for an empty part."""
    counts = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=num_classes)
    return int(counts.argmax())


def stage_scores(
    stage: str,
    probs: Any,
    targets: Any,
    *,
    twin: np.ndarray | None,
    majority: int | np.ndarray,
    task: Task | None = None,
) -> dict[str, float]:
    """Scores ``<stage>/with_twin/…`` and ``…/without_twin/…`` (with ``/n``), ``…/leak_inflation``, ``…/majority_acc``.

    Args:
        stage: ``val``, ``test``, ``oof`` ...
        probs: Class probabilities of the stage's samples, ``N×C`` (multi-label: per-label ``N×L``).
        targets: Their true classes (multi-label: 0/1 labels ``N×L``).
        twin: Per sample, whether it has a near-duplicate in its training part (:func:`~medmnist_lit.splits.twins.
            twin_mask`); ``None`` (clusters unknown): the baseline only.
        majority: The training part's most common class (per sample, when samples come from different folds);
            multi-label: its 0/1 row per label (``L``, or ``N×L``), see
            :func:`~medmnist_lit.training.official_scores.majority_target`.
        task: The data's task: adds MedMNIST's official scores and the baseline's
            (:func:`~medmnist_lit.training.official_scores.official_scores`).
    """
    probs_np = np.asarray(probs, dtype=np.float64)
    targets_np = np.asarray(targets, dtype=np.int64)
    # multi-label: the mean over samples and labels, i.e. the mean of the per-label accuracies
    result: dict[str, float] = {
        f"{stage}/majority_acc": float(np.mean(targets_np == majority)) if len(targets_np) else math.nan
    }
    if task is not None:
        result.update(official_scores(stage, probs_np, targets_np, task, majority=majority))
    if twin is None:
        return result
    twin = np.asarray(twin, dtype=bool)
    halves = probability_scores(probs_np, targets_np, np.stack([twin, ~twin]))
    for part, mask, scores in zip(TWIN_PARTS, (twin, ~twin), halves, strict=True):
        result.update({f"{stage}/{part}/{key}": value for key, value in scores.items()})
        result[f"{stage}/{part}/n"] = float(mask.sum())
    if not len(targets_np):
        acc = math.nan
    elif targets_np.ndim == 2:
        acc = float(((probs_np > 0.5) == targets_np).mean())
    else:
        acc = float((probs_np.argmax(1) == targets_np).mean())
    result[f"{stage}/leak_inflation"] = acc - result[f"{stage}/without_twin/acc"]
    return result


def leakage_line(stage: str, metrics: Mapping[str, float], label: str | None = None) -> str | None:
    """One console line: the stage's accuracy, on the samples with and without a twin, and the inflation.

    ``label`` names the accuracy (default ``"<stage> acc"``); ``None`` when the stage has no stratified scores.
    """
    with_n, without_n = metrics.get(f"{stage}/with_twin/n"), metrics.get(f"{stage}/without_twin/n")
    acc = metrics.get(f"{stage}/acc")
    if with_n is None or without_n is None or acc is None:
        return None
    label = label or f"{stage} acc"
    if not with_n:
        count = f"{int(without_n):,}"
        return f"Leakage: {label} {100 * acc:.2f} %: none of the {count} images has a near-duplicate in training."
    with_acc = 100 * metrics[f"{stage}/with_twin/acc"]
    if not without_n:
        return (
            f"Leakage: {label} {100 * acc:.2f} %: all {int(with_n):,} images have a near-duplicate in training, so "
            "it may be memorised; nothing here measures generalisation."
        )
    without_acc = 100 * metrics[f"{stage}/without_twin/acc"]
    inflation = 100 * metrics[f"{stage}/leak_inflation"]
    verb = "inflate it by" if inflation >= 0 else "lower it by"
    return (
        f"Leakage: {label} {100 * acc:.2f} % = {with_acc:.2f} % on the {int(with_n):,} images with a near-duplicate "
        f"in training, {without_acc:.2f} % on the {int(without_n):,} without (believe this one): near-duplicates "
        f"{verb} {abs(inflation):.2f} points."
    )


def _not_beaten(acc: float | None, majority: float | None) -> bool:
    # float32 metrics against a float64 baseline: equal within rounding counts as not beating it
    return not (acc is None or majority is None or math.isnan(acc) or math.isnan(majority) or acc > majority + 1e-6)


def baseline_warning(stage: str, metrics: Mapping[str, float], label: str | None = None) -> str | None:
    """A warning when the stage's accuracy, or its MedMNIST ACC, does not beat the majority-class baseline's.

    ``None`` when both beat it (or are not there).
    """
    for key, name in (("acc", "acc"), ("official_acc", "MedMNIST ACC")):
        acc, majority = metrics.get(f"{stage}/{key}"), metrics.get(f"{stage}/majority_{key}")
        if _not_beaten(acc, majority):
            assert acc is not None and majority is not None
            what = label or f"{stage} {name}"
            if key == "official_acc" and label:
                what = f"{label} (MedMNIST ACC)"
            return (
                f"{what} {100 * acc:.2f} % does not beat the majority-class baseline {100 * majority:.2f} % "
                "(always predicting the training part's most common class): the model has learnt nothing useful"
            )
    return None
