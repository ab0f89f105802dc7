"""Property and equivalence tests for medmnist_lit.splits.strategies."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from sklearn import model_selection as ms

from medmnist_lit.splits.split import STRATEGIES, Split, SplitError
from medmnist_lit.splits.strategies import make_split, stratified_subset

SEEDS = (0, 1, 7)
DISTRIBUTIONS = {
    "balanced": [0.25, 0.25, 0.25, 0.25],
    "skewed": [0.55, 0.25, 0.12, 0.08],
    "binary": [0.7, 0.3],
}


def labels_for(dist: str, seed: int, n: int = 160) -> np.ndarray:
    """Random labels where every class has at least 6 members (so 5 stratified folds always fit)."""
    rng = np.random.default_rng(seed)
    probs = DISTRIBUTIONS[dist]
    y = np.concatenate([np.repeat(np.arange(len(probs)), 6), rng.choice(len(probs), n - 6 * len(probs), p=probs)])
    return rng.permutation(y).astype(np.int64)


def groups_for(n: int, seed: int) -> np.ndarray:
    """Random groups of 1-4 samples, shuffled and coded by arbitrary (non-contiguous) integers."""
    rng = np.random.default_rng(seed + 100)
    sizes = rng.integers(1, 5, n)
    codes = np.repeat(np.arange(n) * 7 + 3, sizes)[:n]
    return rng.permutation(codes)


def grouped_labels(groups: np.ndarray, dist: str, seed: int) -> np.ndarray:
    """Labels that are constant within a group (as for exact duplicates)."""
    rng = np.random.default_rng(seed + 200)
    unique, inverse = np.unique(groups, return_inverse=True)
    probs = DISTRIBUTIONS[dist]
    per_group = rng.choice(len(probs), len(unique), p=probs)
    per_group[: 8 * len(probs)] = np.repeat(np.arange(len(probs)), 8)  # every class in enough groups
    return per_group[inverse].astype(np.int64)


def predefined_for(n: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed + 300)
    if groups is None:
        return rng.choice(3, n, p=[0.6, 0.2, 0.2])
    unique, inverse = np.unique(groups, return_inverse=True)
    return rng.choice(3, len(unique), p=[0.6, 0.2, 0.2])[inverse]


def assert_valid(split: Split, n: int) -> None:
    """Train, val, test (and excluded) are sorted, pairwise disjoint and cover every sample in every fold."""
    assert split.n_samples == n
    for arr in (split.test, split.dev, *split.val, *split.excluded):
        assert arr.dtype == np.int64
        assert np.all(np.diff(arr) > 0), "indices must be sorted and unique"
    assert np.array_equal(np.sort(np.concatenate([split.test, split.dev])), np.arange(n))
    assert len(split.excluded) == split.n_folds
    for fold in range(split.n_folds):
        train, val = split.fold(fold)
        assert np.all(np.diff(train) > 0)
        parts = [train, val, split.test, split.excluded[fold]]
        joined = np.concatenate(parts)
        assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n)), f"fold {fold} not a partition"
        assert len(val) > 0 and len(train) > 0
        assert np.all(np.isin(val, split.dev)) and np.all(np.isin(split.excluded[fold], split.dev))


def assert_groups_whole(split: Split, groups: np.ndarray) -> None:
    """Every group lies entirely in one of train/val/test/excluded, in every fold."""
    for fold in range(split.n_folds):
        part = np.full(split.n_samples, -1)
        train, val = split.fold(fold)
        for code, idx in enumerate((train, val, split.test, split.excluded[fold])):
            part[idx] = code
        _, g_inv = np.unique(groups, return_inverse=True)
        pairs = np.unique(np.c_[g_inv, part], axis=0)
        assert len(pairs) == len(np.unique(g_inv)), f"fold {fold} splits a group"


def all_arrays(split: Split) -> list[np.ndarray]:
    return [split.test, split.dev, *split.val, *split.excluded]


def same(a: Split, b: Split) -> bool:
    xs, ys = all_arrays(a), all_arrays(b)
    return len(xs) == len(ys) and all(np.array_equal(x, y) for x, y in zip(xs, ys, strict=True))


def expected_folds(split: Split, strategy: str, groups: np.ndarray | None, folds: int, repeats: int) -> int:
    if strategy in ("holdout", "predefined"):
        return 1
    if strategy in ("kfold", "group_kfold"):
        return folds * repeats
    if strategy == "loo":
        return len(split.dev)
    assert groups is not None
    return len(np.unique(groups[split.dev]))


# --------------------------------------------------------------------------------------------------------
# Properties of every strategy
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize(
    ("strategy", "kwargs"),
    [
        ("holdout", {}),
        ("holdout", {"stratify": False, "test_fraction": 0.0}),
        ("kfold", {}),
        ("kfold", {"folds": 3, "repeats": 2, "stratify": False}),
        ("kfold", {"train_fraction": 0.5}),
        ("loo", {"train_fraction": 0.8}),
        ("predefined", {}),
    ],
)
def test_ungrouped_strategies_partition(strategy: str, kwargs: dict, dist: str, seed: int) -> None:
    n = 40 if strategy == "loo" else 160
    y = labels_for(dist, seed, n)
    pre = predefined_for(n, seed) if strategy == "predefined" else None
    split = make_split(y, strategy=strategy, predefined=pre, seed=seed, **kwargs)
    assert_valid(split, n)
    assert split.strategy == strategy and split.seed == seed and split.params["strategy"] == strategy
    assert split.n_folds == expected_folds(split, strategy, None, kwargs.get("folds", 5), kwargs.get("repeats", 1))
    json.dumps(split.params)  # serialisable
    if kwargs.get("train_fraction", 1.0) == 1.0:
        assert all(len(e) == 0 for e in split.excluded)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize(
    ("strategy", "kwargs"),
    [
        ("holdout", {}),
        ("holdout", {"stratify": False}),
        ("kfold", {"folds": 4}),
        ("group_kfold", {"repeats": 2}),
        ("group_kfold", {"stratify": False, "train_fraction": 0.6}),
        ("logo", {"train_fraction": 0.7}),
        ("predefined", {"train_fraction": 0.5}),
    ],
)
def test_grouped_strategies_never_split_groups(strategy: str, kwargs: dict, dist: str, seed: int) -> None:
    n = 100 if strategy == "logo" else 200
    groups = groups_for(n, seed)
    y = grouped_labels(groups, dist, seed)
    pre = predefined_for(n, seed, groups) if strategy == "predefined" else None
    split = make_split(y, strategy=strategy, groups=groups, predefined=pre, seed=seed, **kwargs)
    assert_valid(split, n)
    assert_groups_whole(split, groups)
    assert split.params["grouped"] is True
    assert split.n_folds == expected_folds(split, strategy, groups, kwargs.get("folds", 5), kwargs.get("repeats", 1))


@pytest.mark.parametrize("strategy", ["holdout", "kfold", "group_kfold", "logo", "loo"])
def test_same_seed_same_indices_other_seed_differs(strategy: str) -> None:
    n = 50 if strategy == "loo" else 150
    groups = None if strategy in ("holdout", "kfold", "loo") else groups_for(n, 3)
    y = labels_for("skewed", 3, n) if groups is None else grouped_labels(groups, "skewed", 3)
    kwargs = {"strategy": strategy, "groups": groups, "train_fraction": 0.7}
    a, b, c = (make_split(y, seed=s, **kwargs) for s in (5, 5, 6))
    assert same(a, b)
    assert not same(a, c)
    assert not np.array_equal(a.test, c.test)
    # Different seeds should also give different folds (and not only a different test set).
    if strategy in ("holdout", "kfold", "group_kfold"):
        assert not np.array_equal(a.val[0], c.val[0])


def test_holdout_sizes_use_fractions_of_the_whole_dataset() -> None:
    y = labels_for("balanced", 0, 200)
    split = make_split(y, test_fraction=0.2, val_fraction=0.2)
    assert (len(split.test), len(split.val[0]), len(split.train(0))) == (40, 40, 120)
    split = make_split(y, test_fraction=0.1, val_fraction=0.3, stratify=False)
    assert (len(split.test), len(split.val[0]), len(split.train(0))) == (20, 60, 120)
    split = make_split(y, test_fraction=0.0)
    assert len(split.test) == 0 and len(split.dev) == 200


# --------------------------------------------------------------------------------------------------------
# Stratification (what StratifiedShuffleSplit / StratifiedKFold guarantee: within one sample per class)
# --------------------------------------------------------------------------------------------------------


def per_class(y: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(y[idx], minlength=n_classes)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_holdout_is_stratified(dist: str, seed: int) -> None:
    y = labels_for(dist, seed, 300)
    k = y.max() + 1
    split = make_split(y, test_fraction=0.25, val_fraction=0.15, seed=seed)
    totals = per_class(y, np.arange(len(y)), k)
    share = totals * len(split.test) / len(y)
    assert np.all(np.abs(per_class(y, split.test, k) - share) <= 1)
    dev_counts = per_class(y, split.dev, k)
    share = dev_counts * len(split.val[0]) / len(split.dev)
    assert np.all(np.abs(per_class(y, split.val[0], k) - share) <= 1)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
@pytest.mark.parametrize("repeats", [1, 2])
def test_kfold_is_stratified_and_partitions_dev(dist: str, seed: int, repeats: int) -> None:
    y = labels_for(dist, seed, 250)
    k, folds = y.max() + 1, 5
    split = make_split(y, strategy="kfold", folds=folds, repeats=repeats, seed=seed)
    dev_counts = per_class(y, split.dev, k)
    for fold in range(split.n_folds):
        assert np.all(np.abs(per_class(y, split.val[fold], k) - dev_counts / folds) <= 1)
    for r in range(repeats):
        vals = np.concatenate(split.val[r * folds : (r + 1) * folds])
        assert np.array_equal(np.sort(vals), split.dev), f"repeat {r} val sets do not partition dev"


def test_grouped_kfold_val_sets_partition_dev() -> None:
    groups = groups_for(200, 4)
    y = grouped_labels(groups, "balanced", 4)
    split = make_split(y, strategy="group_kfold", folds=4, repeats=3, groups=groups, seed=4)
    for r in range(3):
        vals = np.concatenate(split.val[r * 4 : (r + 1) * 4])
        assert np.array_equal(np.sort(vals), split.dev)
    assert not np.array_equal(split.val[0], split.val[4]), "repeats should reshuffle"


# --------------------------------------------------------------------------------------------------------
# Equivalence with scikit-learn
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stratify", [True, False])
def test_kfold_equals_sklearn(seed: int, stratify: bool) -> None:
    y = labels_for("skewed", seed, 200)
    split = make_split(y, strategy="kfold", folds=5, stratify=stratify, seed=seed)
    cv = (ms.StratifiedKFold if stratify else ms.KFold)(n_splits=5, shuffle=True, random_state=seed)
    expected = [split.dev[v] for _, v in cv.split(split.dev, y[split.dev])]
    assert all(np.array_equal(a, b) for a, b in zip(split.val, expected, strict=True))

    split = make_split(y, strategy="kfold", folds=3, repeats=2, stratify=stratify, seed=seed)
    rep = ms.RepeatedStratifiedKFold if stratify else ms.RepeatedKFold
    cv = rep(n_splits=3, n_repeats=2, random_state=seed)
    expected = [split.dev[v] for _, v in cv.split(split.dev, y[split.dev])]
    assert all(np.array_equal(a, b) for a, b in zip(split.val, expected, strict=True))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stratify", [True, False])
def test_grouped_kfold_equals_sklearn(seed: int, stratify: bool) -> None:
    groups = groups_for(200, seed)
    y = grouped_labels(groups, "balanced", seed)
    split = make_split(y, strategy="group_kfold", folds=4, stratify=stratify, groups=groups, seed=seed)
    cv = (ms.StratifiedGroupKFold if stratify else ms.GroupKFold)(n_splits=4, shuffle=True, random_state=seed)
    dev = split.dev
    expected = [np.sort(dev[v]) for _, v in cv.split(dev, y[dev], groups[dev])]
    assert all(np.array_equal(a, b) for a, b in zip(split.val, expected, strict=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_carve_outs_equal_sklearn_shuffle_splits(seed: int) -> None:
    y = labels_for("skewed", seed, 200)
    everything = np.arange(len(y))
    split = make_split(y, test_fraction=0.2, val_fraction=0.25, seed=seed)
    _, test = next(ms.StratifiedShuffleSplit(1, test_size=40, random_state=seed).split(everything, y))
    assert np.array_equal(split.test, np.sort(test))
    dev = split.dev
    _, val = next(ms.StratifiedShuffleSplit(1, test_size=50, random_state=seed).split(dev, y[dev]))
    assert np.array_equal(split.val[0], np.sort(dev[val]))
    # Grouped and unstratified: exactly GroupShuffleSplit, counting groups.
    groups = groups_for(200, seed)
    split = make_split(y, test_fraction=0.2, stratify=False, groups=groups, seed=seed)
    n_test_groups = math.ceil(0.2 * len(np.unique(groups)))
    _, test = next(ms.GroupShuffleSplit(1, test_size=n_test_groups, random_state=seed).split(y, groups=groups))
    assert np.array_equal(split.test, np.sort(test))


def test_loo_has_one_val_sample_per_fold_covering_dev() -> None:
    y = labels_for("balanced", 2, 45)
    split = make_split(y, strategy="loo", seed=2)
    assert split.n_folds == len(split.dev)
    assert all(len(v) == 1 for v in split.val)
    assert np.array_equal(np.concatenate(split.val), split.dev)
    expected = [split.dev[v] for _, v in ms.LeaveOneOut().split(split.dev)]
    assert all(np.array_equal(a, b) for a, b in zip(split.val, expected, strict=True))


def test_logo_has_one_group_per_fold_like_sklearn() -> None:
    rng = np.random.default_rng(5)
    groups = rng.choice(["site-b", "site-a", "site-c", "site-d", "site-e"], 120)
    y = rng.integers(0, 3, 120)
    split = make_split(y, strategy="logo", groups=groups, test_fraction=0.0)
    assert split.n_folds == 5
    for val in split.val:
        assert len(np.unique(groups[val])) == 1
    assert sorted(np.unique(groups[v])[0] for v in split.val) == sorted(np.unique(groups))
    dev = split.dev
    expected = [dev[v] for _, v in ms.LeaveOneGroupOut().split(dev, groups=groups[dev])]
    assert all(np.array_equal(a, b) for a, b in zip(split.val, expected, strict=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_predefined_reproduces_official_codes(seed: int) -> None:
    y = labels_for("skewed", seed, 150)
    codes = predefined_for(150, seed)
    split = make_split(y, strategy="predefined", predefined=codes, test_fraction=0.5, val_fraction=0.5)
    assert np.array_equal(split.test, np.flatnonzero(codes == 2))
    assert np.array_equal(split.val[0], np.flatnonzero(codes == 1))
    assert np.array_equal(split.train(0), np.flatnonzero(codes == 0))
    assert split.params["test_fraction"] is None and split.params["val_fraction"] is None


# --------------------------------------------------------------------------------------------------------
# train_fraction and stratified_subset
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_train_fraction_keeps_a_stratified_part(fraction: float, dist: str) -> None:
    y = labels_for(dist, 1, 400)
    k = y.max() + 1
    full = make_split(y, strategy="kfold", folds=4, seed=1)
    part = make_split(y, strategy="kfold", folds=4, seed=1, train_fraction=fraction)
    assert same_folds(full, part)
    for fold in range(4):
        whole = full.train(fold)
        kept = part.train(fold)
        assert len(kept) == round(fraction * len(whole))
        assert np.array_equal(np.sort(np.concatenate([kept, part.excluded[fold]])), whole)
        share = per_class(y, whole, k) * len(kept) / len(whole)
        assert np.all(np.abs(per_class(y, kept, k) - share) <= 1)
    assert part.params["train_fraction"] == fraction


def test_train_fraction_subsample_follows_the_seed() -> None:
    # predefined folds do not depend on the seed, so any difference comes from the subsample alone
    y = labels_for("balanced", 0, 300)
    codes = predefined_for(300, 0)
    a, b, c = (make_split(y, strategy="predefined", predefined=codes, train_fraction=0.5, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.val[0], c.val[0]) and np.array_equal(a.test, c.test)
    assert np.array_equal(a.excluded[0], b.excluded[0])
    assert not np.array_equal(a.excluded[0], c.excluded[0])


def same_folds(a: Split, b: Split) -> bool:
    return np.array_equal(a.test, b.test) and all(np.array_equal(x, y) for x, y in zip(a.val, b.val, strict=True))


def test_train_fraction_with_groups_subsamples_whole_groups() -> None:
    groups = groups_for(300, 2)
    y = grouped_labels(groups, "balanced", 2)
    split = make_split(y, strategy="holdout", groups=groups, train_fraction=0.5, seed=2)
    assert_groups_whole(split, groups)
    # stratified grouped draws count samples (splits.draw): half the training samples, within a group of 1-4
    whole = len(split.train(0)) + len(split.excluded[0])
    assert abs(len(split.train(0)) - round(0.5 * whole)) <= 3


@pytest.mark.parametrize("seed", SEEDS)
def test_stratified_subset(seed: int) -> None:
    y = labels_for("skewed", seed, 500)
    k = y.max() + 1
    sub = stratified_subset(y, 100, seed=seed)
    assert len(sub) == 100 and np.all(np.diff(sub) > 0) and sub.dtype == np.int64
    share = per_class(y, np.arange(500), k) * 100 / 500
    assert np.all(np.abs(per_class(y, sub, k) - share) <= 1)
    assert np.array_equal(sub, stratified_subset(y, 100, seed=seed))
    assert not np.array_equal(sub, stratified_subset(y, 100, seed=seed + 1))
    assert np.array_equal(stratified_subset(y, 500), np.arange(500))
    assert np.array_equal(stratified_subset(y, 10_000), np.arange(500))


def test_stratified_subset_with_groups_takes_whole_groups() -> None:
    groups = groups_for(400, 1)
    y = grouped_labels(groups, "balanced", 1)
    sub = stratified_subset(y, 100, seed=1, groups=groups)
    inside = np.isin(groups, groups[sub])
    assert np.array_equal(np.flatnonzero(inside), sub), "a group was cut by the subset"
    assert 60 <= len(sub) <= 140


# --------------------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "kwargs"),
    [
        ("holdout", {"train_fraction": 0.5}),
        ("kfold", {"repeats": 2, "folds": 3}),
        ("loo", {"test_fraction": 0.0}),
        ("logo", {"stratify": False}),
        ("predefined", {}),
    ],
)
def test_save_load_round_trip(tmp_path, strategy: str, kwargs: dict) -> None:
    n = 60
    y = labels_for("balanced", 0, n)
    groups = np.arange(n) % 4 if strategy == "logo" else None
    pre = predefined_for(n, 0) if strategy == "predefined" else None
    ids = np.array([f"img/{i:04d}.png" for i in range(n)])
    split = make_split(y, strategy=strategy, groups=groups, predefined=pre, seed=3, **kwargs)
    path = tmp_path / "sub" / "split.npz"
    split.save(path, ids=ids)
    assert os.listdir(path.parent) == ["split.npz"], "temporary file left behind"
    with np.load(path, allow_pickle=False) as data:  # no object arrays inside
        assert set(data.files) >= {
            "test",
            "dev",
            "val",
            "val_offsets",
            "excluded",
            "excluded_offsets",
            "meta",
        }
    loaded = Split.load(path, n_samples=n, ids=ids)
    assert same(split, loaded) and loaded.n_folds == split.n_folds
    assert (loaded.strategy, loaded.n_samples, loaded.seed) == (split.strategy, split.n_samples, split.seed)
    assert loaded.params == split.params
    assert all(np.array_equal(a.train(f), loaded.train(f)) for a in (split,) for f in range(split.n_folds))


def test_load_rejects_other_datasets(tmp_path) -> None:
    y = labels_for("balanced", 0, 80)
    ids = np.array([f"s{i}" for i in range(80)], dtype=object)
    path = tmp_path / "split.npz"
    make_split(y).save(path, ids=ids)
    with pytest.raises(SplitError, match=r"split\.npz was made for a different dataset: it covers 80 samples.*81"):
        Split.load(path, n_samples=81)
    with pytest.raises(SplitError, match="made for a different dataset: same size but different sample ids"):
        Split.load(path, ids=ids[::-1])
    with pytest.raises(SplitError, match="made for a different dataset: it covers 80 samples"):
        Split.load(path, ids=ids[:-1])
    assert Split.load(path, ids=ids.astype(str)).n_samples == 80  # dtype of ids does not matter
    make_split(y).save(path)  # overwrite without ids: cannot check, but loads
    assert Split.load(path, n_samples=80, ids=ids).n_samples == 80


def test_load_rejects_foreign_files(tmp_path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, x=np.arange(3))
    with pytest.raises(SplitError, match=r"other\.npz is not a split file written by Split.save"):
        Split.load(path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SplitError, match="not a split file"):
        Split.load(text)


def test_save_rejects_wrong_number_of_ids(tmp_path) -> None:
    split = make_split(labels_for("balanced", 0, 40))
    with pytest.raises(SplitError, match="got 39 ids for a split of 40 samples"):
        split.save(tmp_path / "s.npz", ids=np.arange(39))
    assert not list(tmp_path.iterdir())


def test_fold_index_out_of_range() -> None:
    split = make_split(labels_for("balanced", 0, 100), strategy="kfold")
    with pytest.raises(SplitError, match=r"fold 5 is out of range for this kfold split; use 0\.\.4"):
        split.fold(5)
    with pytest.raises(SplitError, match="fold -1 is out of range"):
        split.train(-1)


def test_split_arrays_are_read_only() -> None:
    split = make_split(labels_for("balanced", 0, 100))
    with pytest.raises(ValueError, match="read-only"):
        split.val[0][0] = 3


# --------------------------------------------------------------------------------------------------------
# Validation messages
# --------------------------------------------------------------------------------------------------------

Y = np.repeat(np.arange(4), 25)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"strategy": "bogus"},
            r"unknown split strategy 'bogus'; choose one of: holdout, kfold, loo, group_kfold, logo",
        ),
        ({"test_fraction": 1.0}, r"test_fraction=1.0 is outside \[0, 1\)"),
        ({"test_fraction": -0.1}, r"test_fraction=-0.1 is outside \[0, 1\)"),
        ({"val_fraction": 1.5}, r"val_fraction=1.5 is outside \[0, 1\)"),
        (
            {"test_fraction": 0.5, "val_fraction": 0.5},
            (
                r"test_fraction=0.5 and val_fraction=0.5 are fractions that do not fit"
                r".*100%.*below 1"
            ),
        ),
        ({"val_fraction": 0.0}, "val_fraction=0 makes the holdout val set empty"),
        ({"train_fraction": 0.0}, r"train_fraction=0.0 is outside \(0, 1\]"),
        ({"train_fraction": 1.5}, r"train_fraction=1.5 is outside \(0, 1\]"),
        ({"strategy": "kfold", "folds": 1}, "folds=1 is too few: k-fold needs at least 2 folds"),
        ({"strategy": "holdout", "repeats": 2}, "repeats=2 is invalid for holdout; repeats > 1 is for kfold"),
        ({"strategy": "kfold", "repeats": 0}, "repeats=0 is invalid"),
        ({"seed": -1}, r"seed=-1 must be an integer in \[0, 2\*\*32\)"),
        (
            {"strategy": "group_kfold"},
            (
                r"strategy group_kfold needs groups"
                r".*--data\.groups FILE\.csv.*--data\.group_by duplicates"
            ),
        ),
        ({"strategy": "logo"}, r"strategy logo needs groups.*--data\.groups FILE\.csv"),
        ({"strategy": "predefined"}, r"only exist for MedMNIST \.npz sources"),
        ({"groups": np.arange(5)}, "groups has 5 entries but labels has 100"),
        (
            {"strategy": "predefined", "predefined": np.zeros(99)},
            "predefined has 99 entries but labels has 100",
        ),
    ],
)
def test_option_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(SplitError, match=message):
        make_split(Y, **kwargs)


def test_more_folds_than_smallest_class() -> None:
    y = np.r_[np.zeros(40, int), np.ones(40, int), np.full(5, 2)]
    with pytest.raises(
        SplitError, match=r"folds=5 is more than the 4 dev samples of class 2.*--data.folds 4.*--data.stratify false"
    ):
        make_split(y, strategy="kfold", folds=5)  # the test carve-out leaves 4 of class 2
    assert make_split(y, strategy="kfold", folds=5, stratify=False).n_folds == 5


def test_more_folds_than_groups_or_samples() -> None:
    groups = np.arange(100) % 3
    with pytest.raises(SplitError, match=r"folds=5 is more than the 3 groups in dev; use --data\.folds 3"):
        make_split(Y, strategy="group_kfold", groups=groups, folds=5, test_fraction=0, stratify=False)
    with pytest.raises(SplitError, match="folds=8 is more than the 6 dev samples"):
        make_split(np.arange(8) % 2, strategy="kfold", folds=8, stratify=False, test_fraction=0.2)


def test_single_class_cannot_be_stratified() -> None:
    y = np.zeros(50, dtype=int)
    with pytest.raises(SplitError, match=r"stratifying test_fraction=0.2 needs 2\+ classes.*--data.stratify false"):
        make_split(y)
    with pytest.raises(SplitError, match=r"stratified k-fold needs 2\+ classes.*--data.stratify false"):
        make_split(y, strategy="kfold", test_fraction=0.0)
    assert make_split(y, stratify=False).n_folds == 1


def test_class_with_one_sample_cannot_be_stratified() -> None:
    y = np.r_[np.zeros(30, int), np.ones(30, int), [2]]
    with pytest.raises(SplitError, match=r"class 2 has only 1 sample: too few to stratify test_fraction=0\.2"):
        make_split(y)


def test_stratified_part_needs_one_per_class_on_each_side() -> None:
    y = np.repeat(np.arange(10), 3)
    with pytest.raises(SplitError, match=r"test_fraction=0.1 splits 30 samples into 3 and 27.*10\) on each side"):
        make_split(y, test_fraction=0.1)


def test_fraction_that_leaves_nothing() -> None:
    with pytest.raises(SplitError, match=r"test_fraction=0\.9 would hold out 3 of 3 samples, leaving none"):
        make_split(np.array([0, 1, 0]), test_fraction=0.9, stratify=False, strategy="loo")


def test_empty_dev_and_empty_official_parts() -> None:
    with pytest.raises(SplitError, match="the dev set is empty"):
        make_split(Y, strategy="predefined", predefined=np.full(100, 2))
    with pytest.raises(SplitError, match=r"no validation \(code 1\) samples"):
        make_split(Y, strategy="predefined", predefined=np.r_[np.zeros(80, int), np.full(20, 2)])
    with pytest.raises(SplitError, match=r"no training \(code 0\) samples"):
        make_split(Y, strategy="predefined", predefined=np.r_[np.ones(80, int), np.full(20, 2)])
    with pytest.raises(SplitError, match=r"predefined codes must be 0 \(train\), 1 \(val\) or 2 \(test\); found \[3\]"):
        make_split(Y, strategy="predefined", predefined=np.r_[np.zeros(99, int), [3]])


def test_predefined_refuses_groups_that_cross_the_official_split() -> None:
    codes = np.r_[np.zeros(60, int), np.ones(20, int), np.full(20, 2)]
    groups = (np.arange(100) + 1) // 2  # pairs; (59, 60) straddles train/val and (79, 80) val/test
    with pytest.raises(SplitError, match=r"puts 2 group.* on more than one side.*use holdout/kfold with groups"):
        make_split(Y, strategy="predefined", predefined=codes, groups=groups)
    assert make_split(Y, strategy="predefined", predefined=codes, groups=np.arange(100)).n_folds == 1


def test_logo_needs_two_groups_in_dev() -> None:
    groups = np.r_[np.zeros(80, int), np.ones(20, int)]
    y = np.arange(100) % 2
    with pytest.raises(SplitError, match="strategy logo needs at least 2 groups in the dev set, found 1"):
        make_split(y, strategy="logo", groups=groups, test_fraction=0.2, stratify=False, seed=0)


def test_labels_must_be_integer_and_non_empty() -> None:
    with pytest.raises(SplitError, match="labels must be a 1-D integer array"):
        make_split(np.linspace(0, 1, 10))
    with pytest.raises(SplitError, match="labels is empty"):
        make_split(np.zeros(0, dtype=np.int64))


def test_stratified_subset_errors() -> None:
    with pytest.raises(SplitError, match="subset n=0 must be at least 1"):
        stratified_subset(Y, 0)
    with pytest.raises(SplitError, match=r"subset n=3 is fewer than the 4 classes; use --data\.subset 4 or more"):
        stratified_subset(Y, 3)


def test_strategies_constant_lists_all() -> None:
    assert STRATEGIES == ("holdout", "kfold", "loo", "group_kfold", "logo", "predefined")
