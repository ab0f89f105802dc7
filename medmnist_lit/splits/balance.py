"""Class balance of a split: each part's class shares and how far they stray from the whole data's.

A grouped split keeps clusters whole, so its parts can only be as stratified as the clusters allow; this says how
close they came. Deviations are in percentage points: a part holding 18.0% AbdomenCT where the data holds 17.0%
deviates by +1.0 point. For multi-label targets (``N×L``, 0/1) the shares are each label's prevalence in the part
(a part where 12.0% of the images show Effusion, the data 11.9%, deviates by +0.1 point); they need not sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medmnist_lit.splits.split import Split

__all__ = ["UNBALANCED_POINTS", "class_balance", "describe_balance"]

#: A part whose class share strays this many points or more is badly unbalanced (:func:`describe_balance` says what
#: to do). On the full Medical MNIST, 5 grouped folds stay within 0.23 point; 10 folds put the 1,626-image
#: AbdomenCT cluster in one validation fold, 29.3% AbdomenCT where the data has 17.0% (+12.4 points).
UNBALANCED_POINTS = 5.0

#: Strategies whose validation parts are one sample (``loo``) or one group (``logo``): no class balance to speak of.
_FIXED_VAL = ("loo", "logo")


def _part(name: str, counts: np.ndarray, n: int, whole: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    shares = counts / max(n, 1)
    points = (shares - whole) * 100
    worst = int(np.argmax(np.abs(points)))
    return {
        "part": name,
        "n": n,
        "shares": [round(float(s), 4) for s in shares],
        "points": round(float(points[worst]), 2),
        "class": classes[worst],
    }


def class_balance(
    labels: np.ndarray, split: Split, class_names: Sequence[str] | None = None, *, max_folds: int = 20
) -> dict[str, Any]:
    """Per part (test; each fold's val and train), the class shares and the largest deviation from the data's.

    Multi-label targets (``labels`` shaped ``N×L``): the shares are the labels' prevalences (``measure`` says which).

    Linear in the data plus the folds' held-out indices: a fold's training counts are dev's minus what it holds
    out, so leave-one-out on thousands of samples costs no more than one pass per fold over its held-out part.

    Args:
        labels: Class index of every sample the split indexes, or ``N×L`` 0/1 multi-label targets.
        split: The split.
        class_names: Name of each class index, or of each label (default: the indices as text).
        max_folds: Parts of at most this many folds are listed (``largest`` covers every fold).

    Returns:
        A JSON-able dict: ``measure`` (``"class share"``, or ``"label prevalence"`` for multi-label targets);
        ``classes``; ``whole`` (the data's class shares, or label prevalences); ``parts``, a list of ``{part, n, shares,
        points, class}`` (``part`` is ``test``, ``fold_<i>/val`` or ``fold_<i>/train``; ``points`` the largest
        deviation in percentage points, signed, and ``class`` the class it is for), empty parts left out, and the
        validation parts of ``loo``/``logo`` too (one sample or one group each); ``largest``, the part of all with
        the largest deviation (``None`` when there is none); ``folds_listed``.
    """
    y = np.asarray(labels)
    multilabel = y.ndim == 2
    k = y.shape[1] if multilabel else int(max(y.max() + 1 if len(y) else 0, len(class_names or ())))
    classes = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]

    def counts(index: np.ndarray) -> np.ndarray:
        """Samples per class, or positives per label (the shares' numerators)."""
        return y[index].sum(axis=0, dtype=np.int64) if multilabel else np.bincount(y[index], minlength=k)

    whole = counts(np.arange(len(y))) / max(len(y), 1)
    parts = [_part("test", counts(split.test), len(split.test), whole, classes)] if len(split.test) else []
    dev, n_dev = counts(split.dev), len(split.dev)
    for fold in range(split.n_folds):
        val, held = split.val[fold], split.excluded[fold]
        in_val = counts(val)
        if split.strategy not in _FIXED_VAL:
            parts.append(_part(f"fold_{fold}/val", in_val, len(val), whole, classes))
        train = dev - in_val - counts(held)
        parts.append(_part(f"fold_{fold}/train", train, n_dev - len(val) - len(held), whole, classes))
    largest = max(parts, key=lambda p: abs(p["points"]), default=None)
    listed = [p for p in parts if not p["part"].startswith("fold_") or int(p["part"][5:].split("/")[0]) < max_folds]
    return {
        "measure": "label prevalence" if multilabel else "class share",
        "classes": classes,
        "whole": [round(float(s), 4) for s in whole],
        "parts": listed,
        "largest": None if largest is None else {key: largest[key] for key in ("part", "class", "points")},
        "folds_listed": min(split.n_folds, max_folds),
    }


def describe_balance(balance: dict[str, Any]) -> str:
    """One line: the largest deviation of :func:`class_balance` (part, class, points, the two shares)."""
    largest = balance["largest"]
    if largest is None:
        return "class balance: the split has no parts to compare"
    part = next(p for p in balance["parts"] + [largest] if p["part"] == largest["part"])
    index = balance["classes"].index(largest["class"])
    whole = balance["whole"][index]
    share = f" ({part['shares'][index]:.2%} vs {whole:.2%})" if "shares" in part else ""
    measure = balance.get("measure", "class share")
    remedy = ""
    if abs(largest["points"]) >= UNBALANCED_POINTS:  # a group larger than the part's share of its class
        remedy = "; groups too large to share out evenly" + (
            ": use fewer --data.folds" if largest["part"].startswith("fold_") else " at this size"
        )
    return (
        f"{'label' if measure == 'label prevalence' else 'class'} balance of the grouped split: the largest deviation "
        f"from the data's {measure}s is {largest['points']:+.2f} points, {largest['class']} in {largest['part']}"
        f"{share}{remedy}"
    )
