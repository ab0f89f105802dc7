"""Leak-aware splits: singleton groups split as without groups, size-aware grouped draws, leave-one-out with groups,
and the class balance of a split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import model_selection as ms

from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.splits.audit import LeakageWarning, audit
from medmnist_lit.splits.balance import UNBALANCED_POINTS, class_balance, describe_balance
from medmnist_lit.splits.split import EMPTY_INDEX, Split, as_index
from medmnist_lit.splits.strategies import make_split


def skewed_labels(n: int = 120, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(3, n, p=[0.5, 0.3, 0.2]).astype(np.int64)


@pytest.mark.parametrize("seed", [0, 3])
def test_singleton_groups_split_exactly_as_sklearn_without_groups(seed: int) -> None:
    y = skewed_labels(seed=seed)
    singletons = np.random.default_rng(seed).permutation(len(y)) * 5 + 7  # one arbitrary code per sample
    split = make_split(y, strategy="kfold", folds=5, groups=singletons, seed=seed)
    # the reference: StratifiedShuffleSplit carves out the test part, StratifiedKFold folds the rest
    _, test = next(ms.StratifiedShuffleSplit(1, test_size=24, random_state=seed).split(np.zeros(len(y)), y))
    dev = np.setdiff1d(np.arange(len(y)), test)
    folds = ms.StratifiedKFold(5, shuffle=True, random_state=seed).split(dev, y[dev])
    assert np.array_equal(split.test, np.sort(test))
    assert all(np.array_equal(v, np.sort(dev[ref])) for v, (_, ref) in zip(split.val, folds, strict=True))
    assert split.params["grouped"] is False
    assert split.params["groups"] == {"n_groups": len(y), "largest": 1}
    for strategy in ("holdout", "loo"):
        with_groups = make_split(y, strategy=strategy, groups=singletons, seed=seed)
        without = make_split(y, strategy=strategy, seed=seed)
        assert np.array_equal(with_groups.test, without.test)
        assert all(np.array_equal(a, b) for a, b in zip(with_groups.val, without.val, strict=True))
        assert all(len(e) == 0 for e in with_groups.excluded)


@pytest.mark.parametrize("seed", range(6))
def test_grouped_parts_count_samples_whatever_the_cluster_sizes(seed: int) -> None:
    # class 0: one chained cluster of 50 images and 50 singletons; class 1: 100 singletons
    y = np.r_[np.zeros(100, np.int64), np.ones(100, np.int64)]
    groups = np.r_[np.zeros(50, np.int64), np.arange(1, 151)]
    split = make_split(y, strategy="holdout", test_fraction=0.2, val_fraction=0.2, groups=groups, seed=seed)
    for part in (split.test, split.val[0]):
        assert np.bincount(y[part], minlength=2).tolist() == [20, 20]  # 20% of the images, class by class
    assert split.params["grouped"] is True
    assert split.params["groups"] == {"n_groups": 151, "largest": 50}
    side = [np.isin(np.arange(50), part).all() or not np.isin(np.arange(50), part).any() for part in split.val]
    assert all(side) and not np.isin(np.arange(50), split.test).any()  # the cluster never fits 20: it trains


def twins_data(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups where samples 0-1, 2-3 and 4-6 are planted twins (same class), the rest singletons."""
    y = np.arange(n, dtype=np.int64) % 3
    y[[1, 3, 5, 6]] = y[[0, 2, 4, 4]]
    groups = np.arange(n)
    groups[[1, 3, 5, 6]] = [0, 2, 4, 4]
    return y, groups


def test_leave_one_out_leaves_the_twins_of_its_sample_out_of_training() -> None:
    y, groups = twins_data()
    split = make_split(y, strategy="loo", groups=groups, test_fraction=0.2, seed=0)
    assert split.n_folds == len(split.dev) and split.params["grouped"] is True
    for fold in range(split.n_folds):
        (sample,) = split.val[fold]
        mates = np.setdiff1d(np.flatnonzero(groups == groups[sample]), [sample])
        assert np.array_equal(split.excluded[fold], np.intersect1d(mates, split.dev))
        train = split.train(fold)
        assert not np.isin(groups[train], groups[sample]).any()
        assert len(train) == len(split.dev) - 1 - len(mates)
    for code in (0, 2, 4):  # every cluster whole on one side of the test carve-out
        members = np.flatnonzero(groups == code)
        assert np.isin(members, split.test).all() or not np.isin(members, split.test).any()
    planted = [fold for fold in range(split.n_folds) if split.val[fold][0] in (0, 1, 2, 3, 4, 5, 6)]
    assert planted and all(len(split.excluded[fold]) for fold in planted)
    # the audit honours excluded: no fold validates on a sample whose twin it trained on
    images = np.random.default_rng(0).integers(0, 256, (len(y), 8, 8), dtype=np.uint8)
    for a, b in ((0, 1), (2, 3), (4, 5), (4, 6)):
        images[b] = images[a]
    data = ImageSet(images, y, ("a", "b", "c"), np.arange(len(y)).astype(str))
    report = audit(data, split, max_fold_rows=0)
    totals = report["split"]["totals"]
    assert totals["val_in_train"]["exact"]["total"] == 0 and totals["val_in_train"]["near"]["total"] == 0
    with pytest.warns(LeakageWarning):
        random_loo = audit(data, make_split(y, strategy="loo", test_fraction=0.2, seed=0), max_fold_rows=0)
    assert random_loo["split"]["totals"]["val_in_train"]["exact"]["total"] > 0  # without groups they leak
    # train_fraction draws on top of the twins left out
    fraction = make_split(y, strategy="loo", groups=groups, test_fraction=0.2, train_fraction=0.5, seed=0)
    for fold in range(fraction.n_folds):
        assert np.isin(split.excluded[fold], fraction.excluded[fold]).all()


def test_leave_one_out_with_groups_is_cheap_for_thousands_of_folds() -> None:
    y = np.arange(3600, dtype=np.int64) % 6
    groups = np.arange(3600) // 18 * 6 + y  # 3 samples of each class per block of 18: clusters of 3, one class each
    split = make_split(y, strategy="loo", groups=groups, test_fraction=0.2, seed=1)
    assert split.n_folds == len(split.dev) == 2880
    assert all(len(e) == 2 for e in split.excluded)


def test_class_balance_on_a_hand_checked_split() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])  # 40% / 60%
    split = Split(
        "holdout",
        10,
        as_index([0, 4]),
        as_index([1, 2, 3, 5, 6, 7, 8, 9]),
        (as_index([1, 5, 6]),),
        (EMPTY_INDEX,),
        0,
        {"grouped": True},
    )
    balance = class_balance(y, split, ["A", "B"])
    assert balance["whole"] == [0.4, 0.6]
    parts = {p["part"]: p for p in balance["parts"]}
    assert parts["test"] == {"part": "test", "n": 2, "shares": [0.5, 0.5], "points": 10.0, "class": "A"}
    assert parts["fold_0/val"] == {"part": "fold_0/val", "n": 3, "shares": [0.3333, 0.6667], "points": -6.67,
                                   "class": "A"}  # fmt: skip
    assert parts["fold_0/train"]["shares"] == [0.4, 0.6] and parts["fold_0/train"]["points"] == 0.0
    assert balance["largest"] == {"part": "test", "class": "A", "points": 10.0}
    assert json.loads(json.dumps(balance)) == balance
    line = describe_balance(balance)
    assert "+10.00 points" in line and "A in test" in line and "50.00% vs 40.00%" in line
    # leave-one-out: the one-sample validation parts are no balance; training parts subtract what a fold excludes
    loo = Split("loo", 10, EMPTY_INDEX, as_index(range(10)), tuple(as_index([i]) for i in range(10)),
                (as_index([1]),) + (EMPTY_INDEX,) * 9, 0, {"grouped": True})  # fmt: skip
    parts = class_balance(y, loo, ["A", "B"], max_folds=2)
    assert [p["part"] for p in parts["parts"]] == ["fold_0/train", "fold_1/train"]
    assert parts["parts"][0]["n"] == 8 and parts["parts"][0]["shares"] == [0.25, 0.75]
    assert parts["largest"] == {"part": "fold_0/train", "class": "A", "points": -15.0}


def test_a_cluster_too_large_for_its_fold_is_called_out() -> None:
    # class 0: a cluster of 30 and 20 singletons; 5 folds can give each fold only 10 of class 0
    y = np.r_[np.zeros(50, np.int64), np.ones(50, np.int64)]
    groups = np.r_[np.zeros(30, np.int64), np.arange(1, 71)]
    split = make_split(y, strategy="kfold", folds=5, test_fraction=0.0, groups=groups, seed=0)
    balance = class_balance(y, split, ["A", "B"])
    assert abs(balance["largest"]["points"]) >= UNBALANCED_POINTS
    assert describe_balance(balance).endswith("groups too large to share out evenly: use fewer --data.folds")
    random = class_balance(y, make_split(y, strategy="kfold", folds=5, test_fraction=0.0, seed=0))
    assert random["largest"]["points"] == 0.0 and "too large" not in describe_balance(random)
