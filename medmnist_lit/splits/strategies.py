"""Train/val/test splitting strategies as pure index logic on top of :mod:`sklearn.model_selection`.

Every strategy first carves out a test set (``predefined`` uses the official one instead), then splits
the remaining *dev* indices into (train, val) folds. With ``groups`` every strategy keeps each group on
one side, which is how duplicate- and subject-aware splits prevent leakage. Splitter per case:

* fixed-size parts (test carve-out, ``holdout`` val, ``train_fraction``, :func:`stratified_subset`):
  ``StratifiedShuffleSplit`` / ``ShuffleSplit``; with groups, whole groups drawn to a sample count, class by
  class (unstratified: ``GroupShuffleSplit``), see :mod:`.draw`. ``StratifiedGroupKFold`` was not used
  here: it only gives 1/k fractions and takes seconds per call on ~50,000 duplicate-groups.
* ``kfold``: ``StratifiedKFold`` / ``KFold`` (``Repeated*`` when ``repeats > 1``); with groups, and for
  ``group_kfold``: ``StratifiedGroupKFold`` / ``GroupKFold(shuffle=True)`` (scikit-learn >= 1.6).
* ``loo`` / ``logo``: the folds of ``LeaveOneOut`` / ``LeaveOneGroupOut``, built directly because those
  splitters also materialise one train array per fold (quadratic for thousands of folds). With groups, ``loo``
  still validates on one sample per fold and leaves its group's other members out of that fold's training part
  (the fold's ``excluded`` indices), so no fold trains on a twin of the sample it is scored on.

Multi-label targets (``labels`` shaped ``N×L``, 0/1) take the same paths, stratified by iterative stratification
instead of by class (:mod:`.multilabel`); grouped, whole groups are dealt out by their sizes and positives, so parts
count samples as the single-label draws do.

When every group is a singleton (no twins found), ``holdout``, ``kfold`` and ``loo`` split exactly as without
groups (same indices), and ``params["grouped"]`` is false; ``params["groups"]`` says how many groups were given and
the largest one's size.

Errors name classes by name (``class_names``), and :func:`make_split` suggests only remedies it has tried on the
same data and seen work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import model_selection as ms

from medmnist_lit.splits.draw import UNSTRATIFY, Part, class_name, drop_class, held_count, hold_out, units
from medmnist_lit.splits.multilabel import is_multilabel, multilabel_folds
from medmnist_lit.splits.split import EMPTY_INDEX, STRATEGIES, Codes, Fix, Split, SplitError, as_index

log = logging.getLogger(__name__)

_GROUP_HINT = "provide them with `--data.groups FILE.csv` (columns id,group) or `--data.group_by duplicates`"


def _check_codes(name: str, codes: Codes, n: int) -> Codes:
    if codes is None:
        return None
    codes = np.asarray(codes)
    if codes.ndim != 1 or len(codes) != n:
        raise SplitError(f"{name} has {len(codes)} entries but labels has {n}; give one per sample")
    return codes


def _check_labels(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2 and (y.dtype == bool or np.issubdtype(y.dtype, np.integer)) and y.shape[1]:
        if y.size and (y.min() < 0 or y.max() > 1):
            raise SplitError(f"multi-label labels must be 0 or 1, found values in [{y.min()}, {y.max()}]")
    elif y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise SplitError(
            f"labels must be a 1-D integer array of class indices or an N×L 0/1 multi-label array, got {y.dtype} "
            f"{y.shape}"
        )
    if not len(y):
        raise SplitError("labels is empty: there is nothing to split")
    return y


def _check_options(strategy: str, test_f: float, val_f: float, folds: int, repeats: int, train_f: float):
    if strategy not in STRATEGIES:
        raise SplitError(f"unknown split strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    for name, value in (("test_fraction", test_f), ("val_fraction", val_f)):
        if not 0 <= value < 1:
            raise SplitError(f"{name}={value} is outside [0, 1); e.g. 0.2 holds out a fifth of the data")
    if not 0 < train_f <= 1:
        raise SplitError(f"train_fraction={train_f} is outside (0, 1]; use 1.0 to train on the whole fold")
    if strategy == "holdout" and test_f + val_f >= 1:
        raise SplitError(
            f"test_fraction={test_f} and val_fraction={val_f} are fractions that do not fit: together they "
            f"take {test_f + val_f:.0%} of the data, leaving nothing to train on; keep their sum below 1"
        )
    if strategy == "holdout" and val_f == 0:
        raise SplitError("val_fraction=0 makes the holdout val set empty; use e.g. 0.2, or strategy kfold")
    if strategy in ("kfold", "group_kfold") and folds < 2:
        raise SplitError(f"folds={folds} is too few: k-fold needs at least 2 folds (5 or 10 are usual)")
    if repeats < 1 or (repeats > 1 and strategy not in ("kfold", "group_kfold")):
        raise SplitError(f"repeats={repeats} is invalid for {strategy}; repeats > 1 is for kfold/group_kfold")


def _whole_dev(folds: int | None, most: int, what: str) -> Fix:
    """Remedy: no test set, so all of the data is dev (and at most ``most`` folds)."""
    fewer = f" --data.folds {most}" if folds is not None and most < folds else ""
    changes = {"test_fraction": 0.0, **({"folds": most} if fewer else {})}
    return f"use --data.test_fraction 0{fewer} (no test set: {what} in dev)", changes


def _kfold(
    dev: np.ndarray,
    y: np.ndarray,
    g: Codes,
    folds: int,
    repeats: int,
    strat: bool,
    seed: int,
    names: Sequence[str] | None = None,
) -> list:
    yd = y[dev]
    carved = len(dev) < len(y)  # a test set was carved out first
    multilabel = strat and is_multilabel(y)
    if strat and not multilabel:
        classes, counts = np.unique(yd, return_counts=True)
        if len(classes) < 2:
            raise SplitError(
                f"stratified k-fold needs 2+ classes, dev holds only {class_name(names, classes[0])}", [UNSTRATIFY]
            )
        if counts.min() < folds:
            least, small = int(counts.min()), classes[counts.argmin()]
            fixes: list[Fix] = [(f"use --data.folds {least}", {"folds": least})] if least >= 2 else []
            if carved and least < 2:  # folds=1 is no k-fold: keep every class whole in dev instead
                fixes.append(_whole_dev(folds, int(np.bincount(y)[np.unique(y)].min()), "every class whole"))
            raise SplitError(
                f"folds={folds} is more than the {least} dev sample{'s' * (least != 1)} of {class_name(names, small)}, "
                "so stratified k-fold cannot put one in each fold",
                [*fixes, drop_class(names, small), UNSTRATIFY],
            )
    if g is None:
        if folds > len(dev):
            fixes = [(f"use --data.folds {len(dev)}", {"folds": len(dev)})] if len(dev) >= 2 else []
            fixes += [_whole_dev(folds, len(y), "all samples")] if carved else []
            raise SplitError(f"folds={folds} is more than the {len(dev)} dev samples", fixes)
        if multilabel:
            return [dev[v] for v in multilabel_folds(yd, None, folds, repeats, seed)]
        if repeats > 1:
            rep = ms.RepeatedStratifiedKFold if strat else ms.RepeatedKFold
            cv: Any = rep(n_splits=folds, n_repeats=repeats, random_state=seed)
        else:
            cv = (ms.StratifiedKFold if strat else ms.KFold)(n_splits=folds, shuffle=True, random_state=seed)
        return [dev[v] for _, v in cv.split(dev, yd)]
    n_groups, total = len(np.unique(g[dev])), len(np.unique(g))
    if folds > n_groups:
        fixes = [(f"use --data.folds {n_groups}", {"folds": n_groups})] if n_groups >= 2 else []
        fixes += [_whole_dev(folds, total, f"all {total} groups")] if carved and n_groups < 2 else []
        fixes += [] if total >= 2 else [("use finer groups", None)]
        raise SplitError(f"folds={folds} is more than the {n_groups} group{'s' * (n_groups != 1)} in dev", fixes)
    if multilabel:  # whole groups, iteratively stratified by their sizes and positives
        return [dev[v] for v in multilabel_folds(yd, units(dev, g)[0], folds, repeats, seed)]
    # Like Repeated*KFold, one RandomState drives every repeat, so repeat 0 equals random_state=seed.
    rng, out = np.random.RandomState(seed), []
    for _ in range(repeats):
        cv = (ms.StratifiedGroupKFold if strat else ms.GroupKFold)(folds, shuffle=True, random_state=rng)
        out += [dev[np.asarray(v, dtype=np.int64)] for _, v in cv.split(dev, yd, g[dev])]
    return out


def _predefined(codes: Codes, g: Codes) -> tuple[np.ndarray, np.ndarray, list]:
    if codes is None:
        raise SplitError(
            "strategy predefined needs the official train/val/test codes, which only exist for MedMNIST "
            ".npz sources; use holdout or kfold for other data"
        )
    bad = np.setdiff1d(codes, [0, 1, 2])
    if bad.size:
        raise SplitError(f"predefined codes must be 0 (train), 1 (val) or 2 (test); found {bad[:5].tolist()}")
    test, dev, val = np.flatnonzero(codes == 2), np.flatnonzero(codes != 2), np.flatnonzero(codes == 1)
    if not len(dev):
        raise SplitError("the dev set is empty: the predefined codes mark every sample as test (code 2)")
    if not len(val) or len(val) == len(dev):
        side = "validation (code 1)" if not len(val) else "training (code 0)"
        raise SplitError(f"the predefined split has no {side} samples; use strategy holdout or kfold instead")
    if g is not None:
        pairs = np.unique(np.c_[np.unique(g, return_inverse=True)[1].ravel(), codes], axis=0)
        crossing = np.count_nonzero(np.bincount(pairs[:, 0]) > 1)
        if crossing:
            raise SplitError(
                f"the official split puts {crossing} group(s) on more than one side and predefined cannot "
                "move samples; drop the groups, or use holdout/kfold with groups for a leakage-free split"
            )
    return test, dev, [val]


def _group_mates(dev: np.ndarray, g: np.ndarray) -> list[np.ndarray]:
    """Per sample of ``dev``, the other dev samples of its group (leave-one-out's per-fold ``excluded``)."""
    order = np.argsort(g[dev], kind="stable")
    sorted_g = g[dev][order]
    bounds = np.flatnonzero(np.r_[True, sorted_g[1:] != sorted_g[:-1], True])
    mates = [EMPTY_INDEX] * len(dev)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        block = dev[order[a:b]]
        for position, sample in zip(order[a:b].tolist(), block.tolist(), strict=True) if b - a > 1 else ():
            mates[position] = as_index(block[block != sample])
    return mates


def _logo(dev: np.ndarray, g: np.ndarray) -> list:
    """LeaveOneGroupOut's val folds, in its (sorted group) order."""
    gd = g[dev]
    order = np.argsort(gd, kind="stable")
    starts = np.flatnonzero(np.r_[True, gd[order][1:] != gd[order][:-1]])
    if len(starts) < 2:
        total = len(np.unique(g))
        fix = _whole_dev(None, total, f"all {total} groups") if total >= 2 else ("use finer groups", None)
        raise SplitError(f"strategy logo needs at least 2 groups in the dev set, found {len(starts)}", [fix])
    return list(np.split(dev[order], starts[1:]))


def make_split(
    labels: np.ndarray,
    *,
    strategy: str = "holdout",
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    folds: int = 5,
    repeats: int = 1,
    stratify: bool = True,
    groups: np.ndarray | None = None,
    predefined: np.ndarray | None = None,
    train_fraction: float = 1.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Split:
    """Split sample indices into a test set and (train, val) folds (see the module docstring).

    Args:
        labels: Integer class index per sample, or ``N×L`` 0/1 multi-label targets.
        strategy: One of :data:`STRATEGIES`.
        test_fraction: Part of the whole dataset held out first (``predefined`` ignores it).
        val_fraction: ``holdout`` only: validation part of the *whole* dataset (``predefined`` ignores it).
        folds: ``kfold``/``group_kfold``: number of folds.
        repeats: ``kfold``/``group_kfold``: reshuffled repetitions (``n_folds = folds * repeats``).
        stratify: Keep class proportions (multi-label: each label's prevalence) in every random part
            (``loo``/``logo`` folds are not random).
        groups: Optional group code per sample; every part then holds whole groups only.
        predefined: Official codes (0 train, 1 val, 2 test); required by ``predefined``.
        train_fraction: Per fold, keep this seeded part of the training units (stratified, whole groups).
        seed: Seed for every random choice; the same arguments give identical indices.
        class_names: Name of each class index, so errors name classes (``class 'Hand'``, not ``class 4``).

    Raises:
        SplitError: Invalid or unsatisfiable options; the message says what to change.
    """
    options: dict[str, Any] = {
        "strategy": strategy,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "folds": folds,
        "repeats": repeats,
        "stratify": stratify,
        "groups": groups,
        "predefined": predefined,
        "train_fraction": train_fraction,
        "seed": seed,
    }
    try:
        split = _make_split(labels, **options, class_names=class_names)
    except SplitError as err:
        if not err.fixes:
            raise
        # suggest only what works: each remedy is tried on the same data
        working = [fix for fix in err.fixes if fix[1] is None or _works(labels, options, fix[1])]
        raise SplitError(err.problem, working) from None
    sizes = (len(split.test), len(split.dev), split.n_folds, len(split.val[0]), len(split.train(0)))
    log.info("%s split of %d samples (seed %d): %d test, %d dev in %d fold(s); fold 0: %d val, %d train",
             strategy, split.n_samples, split.seed, *sizes)  # fmt: skip
    return split


def _works(labels: np.ndarray, options: dict[str, Any], changes: dict[str, Any]) -> bool:
    """Whether :func:`make_split` succeeds with ``changes`` applied to ``options``."""
    trial = {**options, **{k: v for k, v in changes.items() if k != "_drop_class"}}
    if "_drop_class" in changes:
        keep = np.asarray(labels) != changes["_drop_class"]
        labels = np.asarray(labels)[keep]
        trial.update({k: np.asarray(trial[k])[keep] for k in ("groups", "predefined") if trial[k] is not None})
    try:
        _make_split(labels, **trial)
    except SplitError:
        return False
    return True


def _make_split(
    labels: np.ndarray,
    *,
    strategy: str = "holdout",
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    folds: int = 5,
    repeats: int = 1,
    stratify: bool = True,
    groups: np.ndarray | None = None,
    predefined: np.ndarray | None = None,
    train_fraction: float = 1.0,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Split:
    y = _check_labels(labels)
    n = len(y)
    _check_options(strategy, test_fraction, val_fraction, folds, repeats, train_fraction)
    if not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise SplitError(f"seed={seed!r} must be an integer in [0, 2**32)")
    seed = int(seed)
    g, p = _check_codes("groups", groups, n), _check_codes("predefined", predefined, n)
    if strategy in ("group_kfold", "logo") and g is None:
        raise SplitError(f"strategy {strategy} needs groups; {_GROUP_HINT}")
    sizes = None if g is None else np.unique(g, return_counts=True)[1]
    if sizes is not None and sizes.max() == 1 and strategy in ("holdout", "kfold", "loo"):
        log.info("every one of the %d groups is a single sample: splitting as without groups", len(sizes))
        g = None  # identical indices to the ungrouped split, not merely equivalent ones
    mates: list[np.ndarray] | None = None  # loo with groups: each fold's val sample's group mates
    if strategy == "predefined":
        test, dev, vals = _predefined(p, g)
    else:
        everything, n_units = np.arange(n), units(np.arange(n), g)[1]
        test = EMPTY_INDEX
        if test_fraction > 0:
            size = held_count(test_fraction, n_units)
            part = Part(f"test_fraction={test_fraction}", "test_fraction", n_units, class_names)
            test = hold_out(everything, y, g, size, stratify, seed, part, held_count(test_fraction, n))
        dev = np.setdiff1d(everything, test, assume_unique=True)
        if strategy == "holdout":
            size = held_count(val_fraction, n_units)  # a fraction of the whole dataset, not of dev
            part = Part(f"val_fraction={val_fraction}", "val_fraction", n_units, class_names)
            vals = [hold_out(dev, y, g, size, stratify, seed, part, held_count(val_fraction, n))]
        elif strategy in ("kfold", "group_kfold"):
            vals = _kfold(dev, y, g, folds, repeats, stratify, seed, class_names)
        elif strategy == "loo":  # LeaveOneOut's val folds
            vals = [dev[i : i + 1] for i in range(len(dev))]
            mates = None if g is None else _group_mates(dev, g)
        else:
            vals = _logo(dev, g)  # type: ignore[arg-type]  # logo without groups is rejected above
    val_t, excluded = tuple(as_index(v) for v in vals), []
    for fold, val in enumerate(val_t):
        left_out = EMPTY_INDEX if mates is None else mates[fold]
        if len(val) + len(left_out) >= len(dev):  # every val fold is a subset of dev without repeats
            fixes = [_whole_dev(None, n, "all samples")] if len(dev) < n and strategy != "predefined" else []
            raise SplitError(f"fold {fold} has no training samples (dev holds {len(dev)})", fixes)
        if train_fraction == 1.0:  # nothing to drop: skip the per-fold set difference (quadratic for loo/logo)
            excluded.append(left_out)
            continue
        train = np.setdiff1d(dev, np.concatenate([val, left_out]), assume_unique=True)
        n_units = units(train, g)[1]
        drop, samples = (k - max(1, round(train_fraction * k)) for k in (n_units, len(train)))
        # Independent per-fold streams: a fold's subsample does not depend on the folds before it.
        fold_seed = int(np.random.SeedSequence([seed, fold]).generate_state(1)[0])
        part = Part(f"train_fraction={train_fraction} (fold {fold})", "train_fraction", n_units, class_names)
        drawn = hold_out(train, y, g, drop, stratify, fold_seed, part, samples) if drop else EMPTY_INDEX
        excluded.append(as_index(np.concatenate([left_out, drawn])))
    kfold, holdout = strategy in ("kfold", "group_kfold"), strategy == "holdout"
    params = {
        "strategy": strategy,
        "test_fraction": None if strategy == "predefined" else float(test_fraction),
        "val_fraction": float(val_fraction) if holdout else None,
        "folds": int(folds) if kfold else None,
        "repeats": int(repeats) if kfold else None,
        "stratify": bool(stratify),
        "grouped": g is not None,
        "groups": None if sizes is None else {"n_groups": len(sizes), "largest": int(sizes.max())},
        "train_fraction": float(train_fraction),
    }
    return Split(strategy, n, as_index(test), as_index(dev), val_t, tuple(excluded), seed, params)


def stratified_subset(
    labels: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    groups: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Sorted indices of a seeded, stratified subsample of ``n`` samples (e.g. for teaching-scale LOO).

    Args:
        labels: Integer class index per sample, or ``N×L`` 0/1 multi-label targets.
        n: Subsample size; ``n >= len(labels)`` returns every index (logged), so a cap above the data
            size is harmless.
        seed: Seed of the draw.
        groups: Optional group codes; whole groups are drawn, so the size is then approximately ``n``.
        class_names: Name of each class index, for messages.

    Raises:
        SplitError: ``n < 1``, fewer than one sample per class, or a class too small to stratify.
    """
    y = _check_labels(labels)
    g = _check_codes("groups", groups, len(y))
    if n < 1:
        raise SplitError(f"subset n={n} must be at least 1")
    if n >= len(y):
        log.info("subset n=%d covers all %d samples; using every sample", n, len(y))
        return as_index(np.arange(len(y)))
    n_classes = 1 if is_multilabel(y) else len(np.unique(y))  # multi-label: iterative stratification does its best
    if n < n_classes:
        raise SplitError(f"subset n={n} is fewer than the {n_classes} classes; use --data.subset {n_classes} "
                         "or more, so every class is represented")  # fmt: skip
    everything = np.arange(len(y))
    n_units = units(everything, g)[1]
    size = n if g is None else max(1, round(n * n_units / len(y)))
    # always stratified (--data.stratify does not apply); a subset as large as the data is the unstratified way out
    part = Part(f"subset n={n}", "subset", None, class_names)
    return hold_out(everything, y, g, size, True, seed, part, n)
