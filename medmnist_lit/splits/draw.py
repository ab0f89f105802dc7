"""Randomly drawn parts of a given size (the test carve-out, a hold-out val set, ``train_fraction``, a subset).

Ungrouped parts are ``StratifiedShuffleSplit`` / ``ShuffleSplit`` draws of samples. Grouped parts hold whole
groups. Unstratified, that is exactly ``GroupShuffleSplit`` (a number of groups). Stratified, the draw is
*size-aware*: each group counts as its most common label, the part's sample count is shared among those strata in
proportion to their samples, and each stratum walks its groups in a seeded random order, taking every group that
still fits its target, then (a second walk) one that brings it closer. Small groups fill what large ones leave, so
every class ends within about half its smallest group of its share.

Why not draw a number of groups, stratified by group counts (what this did until near-duplicate grouping became
the default)? On the full Medical MNIST (58,954 images, 38,350 near-duplicate clusters, the largest 1,626, 1,307,
770 and 608 images, all AbdomenCT) the classes differ wildly in how clustered they are (AbdomenCT's 10,000 images
form few, large clusters; CXR and Hand have none), so drawing 20% of the *groups* per class put between 18.4% and
22.8% of the *images* in the test part over seeds 0-9, and AbdomenCT's share of the test part (17.0% of the data)
ranged from 10.5% to 29.5% (+12.6 points at seed 0, where the two largest clusters went to test); hold-out
validation parts were off by up to 10.1 points. Size-aware draws hold exactly 11,791 images (20.0%) in the test
part and in a hold-out validation part for every one of those seeds, every class within 0.01 point of its share.
The 5-fold ``StratifiedGroupKFold`` folds of the rest (kept) then stay within 0.23 point of the data's shares
(9,425-9,458 validation images per fold). No cap on cluster sizes: the largest cluster is 2.8% of the data (16%
of AbdomenCT), and cutting a chain at its weakest links would put adjacent slices of one scan on both sides, the
leak grouping is there to prevent. Where a cluster is larger than a part's share of its class no draw can balance
it: with 10 folds (about 800 AbdomenCT images each) one validation fold holds the 1,626-image cluster, 29.3%
AbdomenCT (+12.4 points); the DataModule then warns (:data:`~medmnist_lit.splits.balance.UNBALANCED_POINTS`) and
suggests fewer folds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import model_selection as ms

from medmnist_lit.splits.multilabel import is_multilabel, multilabel_hold_out
from medmnist_lit.splits.split import Codes, Fix, SplitError, as_index

__all__ = ["UNSTRATIFY", "Part", "class_name", "drop_class", "held_count", "hold_out", "units"]


def units(index: np.ndarray, groups: Codes) -> tuple[np.ndarray, int]:
    """Unit (group, or sample when ungrouped) of each position in ``index``, and the number of units."""
    if groups is None:
        return np.arange(len(index)), len(index)
    unique, unit_of = np.unique(groups[index], return_inverse=True)
    return unit_of.ravel(), len(unique)


def held_count(fraction: float, n: int) -> int:
    """Held-out size the way scikit-learn rounds a float ``test_size`` (ceil), robust to float noise."""
    return math.ceil(round(fraction * n, 9))


def class_name(names: Sequence[str] | None, label: Any) -> str:
    """``class 'Hand'`` (by name when the names are known, else by index)."""
    label = int(label)
    return f"class {names[label]!r}" if names is not None and 0 <= label < len(names) else f"class {label}"


UNSTRATIFY: Fix = ("use --data.stratify false", {"stratify": False})


def drop_class(names: Sequence[str] | None, label: Any) -> Fix:
    """Remedy: remove the samples of class ``label``."""
    return (f"remove {class_name(names, label)} from the data", {"_drop_class": int(label)})


@dataclass(frozen=True)
class Part:
    """A randomly drawn part as the user asked for it, so errors can name the option and a value that works.

    Attributes:
        label: How messages name the request (``test_fraction=0.2``, ``subset n=10``).
        key: The option (``test_fraction`` for ``--data.test_fraction``).
        base: Units the option's fraction is a fraction of; ``None`` when the option counts samples (subset).
        names: Class names by label, for messages.
    """

    label: str
    key: str
    base: int | None
    names: Sequence[str] | None = None

    def fix(self, size: int) -> Fix | None:
        """The option value (fewest decimals) that makes the drawn part ``size`` units."""
        value: float | None = size if self.base is None else None
        base = self.base or 1
        for digits in range(2, 7) if self.base is not None else ():
            if self.key == "train_fraction":  # the part drawn is the one left out: base - round(f * base)
                f = round((base - size) / base, digits)
                ok = 0 < f <= 1 and base - max(1, round(f * base)) == size
            else:
                f = math.ceil(round(size / base * 10**digits, 9)) / 10**digits
                ok = 0 < f < 1 and held_count(f, base) == size
            if ok:
                value = f
                break
        return None if value is None else (f"use --data.{self.key} {value:g}", {self.key: value})

    def unstratified(self) -> Fix:
        """The remedy that drops stratification (the subset is always stratified: leave it out instead)."""
        return ("leave out --data.subset (use all the data)", None) if self.key == "subset" else UNSTRATIFY


def _size_aware(sizes: np.ndarray, strata: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Units drawn so that each stratum holds its share of ``samples`` as closely as its unit sizes allow.

    Every stratum has 2+ units (checked by the caller) and keeps at least one on each side.
    """
    order = np.random.RandomState(seed).permutation(len(sizes))
    classes, stratum = np.unique(strata, return_inverse=True)
    totals = np.bincount(stratum, weights=sizes, minlength=len(classes))
    exact = samples * totals / totals.sum()
    targets = np.floor(exact).astype(np.int64)
    targets[np.argsort(targets - exact, kind="stable")[: samples - int(targets.sum())]] += 1  # largest remainders
    held = np.zeros(len(sizes), dtype=bool)
    carry = 0  # what a stratum missed by (a tie: half a group) passes to the next, so the total stays on target
    for c in range(len(classes)):
        members = order[stratum[order] == c]
        left = int(targets[c]) + carry
        for unit in members.tolist():  # first what fits, so a large group taken late cannot overshoot
            if sizes[unit] <= left:
                held[unit], left = True, left - int(sizes[unit])
        for unit in members.tolist() if left > 0 else ():  # then what brings the stratum closer to its target
            if not held[unit] and 2 * left > sizes[unit]:
                held[unit], left = True, left - int(sizes[unit])
        carry, taken = left, held[members]
        if not taken.any():  # every unit overshoots: the one closest to the target
            held[members[np.argmin(np.abs(sizes[members] - targets[c]))]], carry = True, 0
        elif taken.all():  # keep one unit on the other side: the smallest
            held[members[np.argmin(sizes[members])]], carry = False, 0
    return np.flatnonzero(held)


def hold_out(
    index: np.ndarray, y: np.ndarray, g: Codes, size: int, strat: bool, seed: int, part: Part, samples: int
) -> np.ndarray:
    """Sorted part of ``index`` of ``size`` randomly drawn units (samples, or whole groups); see the module docstring.

    Args:
        index: Sample indices to draw from.
        y: Label of every sample: class indices, or ``N×L`` 0/1 multi-label targets.
        g: Group code of every sample, or ``None``.
        size: Units to draw (checked against the classes and units available).
        strat: Stratify by class (groups by their most common label); multi-label targets by iterative
            stratification (:mod:`.multilabel`).
        seed: Seed of the draw.
        part: What the user asked for, for messages.
        samples: Samples to draw, for a stratified grouped (size-aware) draw; ``size`` when ungrouped.
    """
    unit_of, n_units = units(index, g)
    noun = "sample" if g is None else "group"
    opt = part.label
    if size >= n_units:
        fixes = [f for f in [part.fix(n_units - 1) if n_units > 1 else None] if f]
        raise SplitError(f"{opt} would hold out {size} of {n_units} {noun}s, leaving none", fixes)
    if strat and is_multilabel(y):
        return as_index(index[multilabel_hold_out(y[index], None if g is None else unit_of, size, samples, seed, opt)])
    splitter: Any = ms.ShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    strata = y[index] if strat else np.zeros(n_units, dtype=np.int64)
    if strat and g is not None:  # stratify groups by their most common label
        classes, y_inv = np.unique(strata, return_inverse=True)
        per_unit = np.zeros((n_units, len(classes)), dtype=np.int64)
        np.add.at(per_unit, (unit_of, y_inv.ravel()), 1)
        strata = classes[per_unit.argmax(axis=1)]
    if strat:
        classes, counts = np.unique(strata, return_counts=True)
        if len(classes) < 2:
            only = class_name(part.names, classes[0])
            raise SplitError(f"stratifying {opt} needs 2+ classes, found only {only}", [part.unstratified()])
        if counts.min() < 2:
            small = classes[counts.argmin()]
            unit = "sample" if g is None else "group (by its most common label)"
            problem = f"{class_name(part.names, small)} has only 1 {unit}: too few to stratify {opt}"
            raise SplitError(problem, [drop_class(part.names, small), part.unstratified()])
        k = len(classes)
        if min(size, n_units - size) < k:
            nearest = part.fix(k if size < k else n_units - k) if 2 * k <= n_units else None
            raise SplitError(
                f"{opt} splits {n_units} {noun}s into {size} and {n_units - size}, but stratifying needs one "
                f"per class ({k}) on each side",
                [f for f in (nearest, part.unstratified()) if f],
            )
        if g is not None:
            sizes = np.bincount(unit_of, minlength=n_units)
            return as_index(index[np.isin(unit_of, _size_aware(sizes, strata, samples, seed))])
        splitter = ms.StratifiedShuffleSplit(n_splits=1, test_size=size, random_state=seed)
    try:
        _, held = next(splitter.split(np.zeros((n_units, 1)), strata))
    except ValueError as exc:  # safety net for a constraint the checks above missed
        raise SplitError(f"cannot split for {opt}: {exc}") from exc
    return as_index(index[np.isin(unit_of, held)])
