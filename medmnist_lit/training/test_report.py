"""What a run reports about its test part beyond the scores: intervals and the per-sample predictions.

Intervals (flat floats in ``metrics.json``): the exact binomial (Clopper-Pearson) interval of the accuracy,
``test/acc_binom95_low|high``, and stratified bootstrap percentile intervals (:mod:`medmnist_lit.utils.bootstrap`)
of accuracy, macro-F1 and AUROC, ``test/<metric>_boot95_low|high``. ``test_predictions.csv`` (``index,id,label,
predicted``, then ``p_<class>`` probabilities when known) lets two runs that share a test set be compared sample by
sample (McNemar's test), and any score be computed again (MedMNIST's ``Evaluator`` included).

Multi-label test parts (``N×L`` 0/1 targets) get the bootstrap intervals only (plain resampling, see
:mod:`medmnist_lit.utils.bootstrap`): their accuracy averages ``N×L`` correlated outcomes, which no binomial interval
describes. Their ``test_predictions.csv`` has, per label, the true 0/1 (``label_<name>``) and the probability
(``p_<name>``): ``index,id,label_<a>,…,p_<a>,…``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.utils.bootstrap import bootstrap_intervals
from medmnist_lit.utils.files import atomic_path
from medmnist_lit.utils.stats import binomial_interval

__all__ = ["PREDICTIONS_FILE", "interval_scores", "interval_text", "write_predictions"]

#: Per-sample test predictions of a run (a fit's run directory, a cross-validation's root for its fold ensemble).
PREDICTIONS_FILE = "test_predictions.csv"


def interval_scores(
    probs: Any, targets: Any, *, stage: str = "test", resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Binomial interval of the accuracy and stratified bootstrap intervals of accuracy, macro-F1 and AUROC.

    Multi-label targets (``N×L``): the bootstrap intervals only (see the module doc).
    """
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    result: dict[str, float] = {}
    if targets.ndim == 1:
        correct = int((probs.argmax(1) == targets).sum()) if len(targets) else 0
        low, high = binomial_interval(correct, len(targets))
        result.update({f"{stage}/acc_binom95_low": low, f"{stage}/acc_binom95_high": high})
    for name, (lo, hi) in bootstrap_intervals(probs, targets, resamples=resamples, seed=seed).items():
        result[f"{stage}/{name}_boot95_low"], result[f"{stage}/{name}_boot95_high"] = lo, hi
    return result


def interval_text(metrics: Mapping[str, float], stage: str = "test", *, percent: bool = True) -> tuple[str, str]:
    """``(" (95% CI …)" after the accuracy, "Test macro-F1 …, AUROC …" line)``; empty strings without intervals.

    ``percent`` shows the accuracy bounds as percentages (a fit's console), else as fractions (a cv summary).
    """
    binomial = not math.isnan(metrics.get(f"{stage}/acc_binom95_low", math.nan))
    if not binomial and math.isnan(metrics.get(f"{stage}/acc_boot95_low", math.nan)):
        return "", ""
    scale, unit, digits = (100, " %", 2) if percent else (1, "", 4)

    def bounds(name: str, kind: str) -> str:
        low, high = metrics[f"{stage}/{name}_{kind}95_low"], metrics[f"{stage}/{name}_{kind}95_high"]
        return f"{scale * low:.{digits}f}–{scale * high:.{digits}f}{unit}" if name == "acc" else f"{low:.4f}–{high:.4f}"

    if binomial:
        accuracy = f" (95% CI {bounds('acc', 'binom')} exact binomial, {bounds('acc', 'boot')} stratified bootstrap)"
    else:  # multi-label: no binomial interval, and the resamples are not stratified
        accuracy = f" (95% CI {bounds('acc', 'boot')} bootstrap)"
    others = [
        f"{label} {metrics[f'{stage}/{name}']:.4f} (95% CI {bounds(name, 'boot')})"
        for name, label in (("f1", "macro-F1"), ("auroc", "AUROC"))
        if not math.isnan(metrics.get(f"{stage}/{name}", math.nan))
        and not math.isnan(metrics.get(f"{stage}/{name}_boot95_low", math.nan))
    ]
    method = "stratified bootstrap" if binomial else "bootstrap"
    return accuracy, (f"Test {', '.join(others)}, {method}" if others else "")


def write_predictions(
    path: Path, index: np.ndarray, data: Any, predicted: np.ndarray | None, *, probs: Any = None
) -> Path:
    """Write ``index,id,label,predicted`` (dataset index, sample id, true and predicted class index) atomically.

    With ``probs`` (``len(index)×C``), one ``p_<class>`` column per class follows. Multi-label data (``N×L``
    labels) writes ``index,id,label_<name>…,p_<name>…`` from ``probs`` instead (the per-label probabilities,
    ``len(index)×L``); ``predicted`` is not used.

    Raises:
        ValueError: Multi-label data without ``probs``.
    """
    index = np.asarray(index, dtype=np.int64)
    labels = np.asarray(data.labels)[index]
    ids = np.asarray(data.ids)[index].astype(str)
    names = [str(n) for n in data.class_names]
    probabilities = [f"p_{n}" for n in names] if probs is not None else []
    scores = np.asarray(probs if probs is not None else np.zeros((len(index), 0)), dtype=np.float64)
    if labels.ndim == 2:
        if probs is None:
            raise ValueError("multi-label test predictions need the per-label probabilities: pass probs")
        header = ["index", "id", *[f"label_{n}" for n in names], *probabilities]
        rows: Any = (
            [int(i), sample, *map(int, label), *[f"{p:.6f}" for p in score]]
            for i, sample, label, score in zip(index, ids, labels, scores, strict=True)
        )
    else:
        header = ["index", "id", "label", "predicted", *probabilities]
        predicted = np.asarray(predicted, dtype=np.int64)
        rows = (
            [int(i), sample, int(label), int(guess), *[f"{p:.6f}" for p in score]]
            for i, sample, label, guess, score in zip(index, ids, labels, predicted, scores, strict=True)
        )
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
