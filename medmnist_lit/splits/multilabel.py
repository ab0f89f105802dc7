"""Multi-label splits: parts and folds that keep every label's prevalence, as far as multi-label targets allow.

A multi-label sample (ChestMNIST: 14 findings, 0/1 each) belongs to no single class, so the class-by-class draws of
:mod:`.draw` and ``StratifiedKFold`` do not apply. Iterative stratification (Sechidis et al. 2011; package
``iterative-stratification``, ``iterstrat``) deals samples out label by label, rarest label first, each to the part
that still wants most of that label. ``benchmarks/multilabel_stratification.py`` measured it on ChestX-ray14-like
targets: every label within one image of its even share of 5 folds (2,000 and 78,468 samples), where unstratified
folds strayed up to 4.3 points and keying ``StratifiedKFold`` by one label per sample still left folds without a
rare label's positives (an undefined official AUC).

Grouped splits keep each group whole, and their parts count *samples*, as the size-aware single-label draws of
:mod:`.draw` do: iterstrat cannot weigh a sample, so :func:`weighted_iterative_stratification` runs the same
algorithm over the groups, each weighing its size and carrying its members' positives, larger groups first within
a label so that small ones fill what large ones leave. On 2,000 ChestMNIST-like images in clusters of 300, 150 and 80
images, the rest 1-3 (10 seeds, 5 folds): every fold held exactly 400 images, and the worst label strayed 4.8 images
from its even share on average (12.4 at worst, where the 300-image cluster fills most of a fold); iterstrat over the
groups' label unions (counting groups, as ``GroupShuffleSplit`` does) strayed 8.2 (11.9) with folds up to 284 images
off their size, unstratified group folds 11.2 (14.4) and up to 412 off. A 20% grouped hold-out part of 5,000 such
images held exactly 1,000 over three seeds, where counting groups held 873-983 (the large clusters go to the larger,
training side). ``benchmarks/multilabel_grouped_splits.py`` measures both.

A label with fewer positive units than parts cannot reach every part: the split is made anyway (there is no
single-label class to drop), and :func:`~medmnist_lit.splits.balance.class_balance` reports each part's prevalences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

from medmnist_lit.splits.split import SplitError, as_index

__all__ = [
    "is_multilabel",
    "label_text",
    "multilabel_folds",
    "multilabel_hold_out",
    "unit_labels",
    "weighted_iterative_stratification",
]


def is_multilabel(labels: np.ndarray) -> bool:
    """Whether ``labels`` are multi-label targets (``N×L`` 0/1) rather than class indices (``N``)."""
    return np.ndim(labels) == 2


def label_text(label: Any, names: Sequence[str] | None) -> str:
    """How a sample's label reads: a class name, or a multi-label row's positive labels (``Effusion+Mass``)."""
    row = np.asarray(label)
    if row.ndim == 0:
        return names[int(row)] if names is not None else str(int(row))
    positives = np.flatnonzero(row)
    if not len(positives):
        return "no label"
    return "+".join(names[i] if names is not None else str(i) for i in positives.tolist())


def unit_labels(y: np.ndarray, unit_of: np.ndarray, n_units: int) -> np.ndarray:
    """Per unit (group), its members' positives per label: ``int64`` shaped ``n_units × L``."""
    out = np.zeros((n_units, y.shape[1]), dtype=np.int64)
    np.add.at(out, unit_of, np.asarray(y, dtype=np.int64))
    return out


def weighted_iterative_stratification(
    positives: np.ndarray, sizes: np.ndarray, shares: np.ndarray, rng: np.random.RandomState
) -> np.ndarray:
    """The part of each unit: iterative stratification (iterstrat's algorithm) of units that weigh their sizes.

    Label by label, the one with the fewest positives left first (ties at random), every unit left holding it goes
    to the part that still wants most of that label's positives, ties to the part that wants most samples, then at
    random; units without a positive then go, one by one, to the part that wants most samples. Within each step
    larger units go first. With every size 1 this is iterstrat's ``IterativeStratification``, but for the order.

    Args:
        positives: ``U × L`` positives per unit and label.
        sizes: Samples per unit.
        shares: The parts' shares of the samples (summing to 1).
        rng: Source of the unit order and of the ties.

    Returns:
        ``int64`` part index (into ``shares``) of every unit.
    """
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]  # larger units first, at random among equal sizes
    wanted = shares * float(sizes.sum())
    wanted_labels = np.outer(shares, positives.sum(axis=0)).astype(np.float64)
    part = np.full(len(sizes), -1, dtype=np.int64)
    left = np.ones(len(sizes), dtype=bool)

    def pick(want: np.ndarray) -> int:
        best = np.flatnonzero(want == want.max())
        if len(best) > 1:  # ties: the part that wants most samples, then at random
            best = best[wanted[best] == wanted[best].max()]
        return int(best[rng.randint(len(best))]) if len(best) > 1 else int(best[0])

    while True:
        remaining = (positives[left] > 0).sum(axis=0)
        if not remaining.any():
            break
        rarest = np.flatnonzero(remaining == remaining[remaining > 0].min())
        label = int(rarest[rng.randint(len(rarest))]) if len(rarest) > 1 else int(rarest[0])
        for unit in order[left[order] & (positives[order, label] > 0)].tolist():
            k = pick(wanted_labels[:, label])
            part[unit], left[unit] = k, False
            wanted_labels[k] -= positives[unit]
            wanted[k] -= sizes[unit]
    for unit in order[left[order]].tolist():
        k = pick(wanted)
        part[unit] = k
        wanted[k] -= sizes[unit]
    return part


def _indicator(y: np.ndarray) -> np.ndarray:
    """``y`` as iterstrat takes it: a bool indicator matrix of 2+ columns (one label gains its complement)."""
    y = np.asarray(y, dtype=bool)
    return np.c_[y, ~y] if y.shape[1] == 1 else y


def multilabel_hold_out(
    y: np.ndarray, unit_of: np.ndarray | None, size: int, samples: int, seed: int, what: str
) -> np.ndarray:
    """Positions in ``y`` of a seeded, iteratively stratified part (of whole groups, when grouped).

    Args:
        y: ``N×L`` 0/1 labels of the samples drawn from.
        unit_of: Group (``0..G-1``) of each of those samples; ``None``: ungrouped, every sample a unit.
        size: Samples to draw when ungrouped (``0 < size < N``, checked by the caller).
        samples: Samples to draw when grouped: whole groups are drawn to about this many.
        seed: Seed of the draw.
        what: The option asking for the part, for messages (``test_fraction=0.2``).

    Raises:
        SplitError: The draw took no unit or every unit (iterative stratification prefers balance to exact sizes).
    """
    if unit_of is None:
        n_units = len(y)
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
        held = next(splitter.split(np.zeros((n_units, 1)), _indicator(y)))[1]
    else:
        n_units = int(unit_of.max()) + 1
        sizes = np.bincount(unit_of, minlength=n_units)
        shares = np.array([len(y) - samples, samples], dtype=np.float64) / len(y)
        parts = weighted_iterative_stratification(unit_labels(y, unit_of, n_units), sizes, shares, _rng(seed))
        held = np.flatnonzero(parts[unit_of] == 1)
    if not 0 < len(held) < len(y):
        raise SplitError(f"stratifying {what} over {n_units} units left one side empty; use --data.stratify false")
    return as_index(held)


def _rng(seed: int | np.random.RandomState) -> np.random.RandomState:
    return seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)


def multilabel_folds(
    y: np.ndarray, unit_of: np.ndarray | None, folds: int, repeats: int, seed: int
) -> list[np.ndarray]:
    """Positions in ``y`` of the validation parts of ``folds × repeats`` iteratively stratified k-fold folds.

    Like ``RepeatedStratifiedKFold``, one ``RandomState`` drives every repeat, so repeat 0 equals one k-fold with
    ``random_state=seed``.

    Args:
        y: ``N×L`` 0/1 labels.
        unit_of: Group (``0..G-1``) of each sample; ``None``: ungrouped (``MultilabelStratifiedKFold``).
        folds: Folds per repeat.
        repeats: Repeats.
        seed: Seed of the folds.
    """
    rng, out = np.random.RandomState(seed), []
    if unit_of is None:
        for _ in range(repeats):
            cv = MultilabelStratifiedKFold(folds, shuffle=True, random_state=rng)
            out += [as_index(v) for _, v in cv.split(np.zeros((len(y), 1)), _indicator(y))]
        return out
    n_units = int(unit_of.max()) + 1
    positives, sizes = unit_labels(y, unit_of, n_units), np.bincount(unit_of, minlength=n_units)
    for _ in range(repeats):
        parts = weighted_iterative_stratification(positives, sizes, np.full(folds, 1 / folds), rng)
        out += [as_index(np.flatnonzero(parts[unit_of] == k)) for k in range(folds)]
    empty = [k for k, v in enumerate(out) if not len(v)]
    if empty:
        raise SplitError(f"folds={folds} leaves fold {empty[0]} without a group of these sizes; use fewer --data.folds")
    return out
