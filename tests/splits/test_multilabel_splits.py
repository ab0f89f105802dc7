"""Multi-label (N×L 0/1) targets through every split strategy, the class balance and the audit.

Property checks run over seeded random cases (sizes, label counts, prevalences, cluster structure): every split is a
partition that keeps groups whole and is the same for the same seed; iterative stratification keeps each label's
per-fold prevalence within a small bound on a ChestMNIST-like 14-label set, where unstratified folds stray further.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import model_selection as ms

from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.tasks import TaskKind
from medmnist_lit.splits.audit import audit, format_audit
from medmnist_lit.splits.balance import class_balance, describe_balance
from medmnist_lit.splits.multilabel import label_text, weighted_iterative_stratification
from medmnist_lit.splits.split import EMPTY_INDEX, Split, SplitError, as_index
from medmnist_lit.splits.strategies import make_split, stratified_subset

# ChestX-ray14 prevalences (%), ChestMNIST's label order (as benchmarks/multilabel_stratification.py)
CHEST = [10.3, 2.5, 11.9, 17.7, 5.2, 5.6, 1.3, 4.7, 4.2, 2.1, 2.2, 1.5, 3.0, 0.2]


def chest_like(n: int, seed: int) -> np.ndarray:
    """``(n, 14)`` 0/1 targets with about ChestX-ray14's prevalences, correlated through a shared factor."""
    rng = np.random.default_rng(seed)
    latent = 0.6 * rng.normal(size=(n, 1)) + 0.8 * rng.normal(size=(n, len(CHEST)))
    cut = np.array([np.quantile(latent[:, j], 1 - p / 100) for j, p in enumerate(CHEST)])
    return (latent > cut).astype(np.uint8)


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Random multi-label targets (1-6 labels) and, for odd seeds, clusters of 1-6 samples each."""
    rng = np.random.default_rng(seed)
    n, n_labels = int(rng.integers(40, 121)), int(rng.integers(1, 7))
    y = (rng.random((n, n_labels)) < rng.uniform(0.05, 0.6, n_labels)).astype(np.uint8)
    if seed % 2 == 0:
        return y, None
    sizes = rng.integers(1, 7, n)
    groups = rng.permutation(np.repeat(np.arange(n), sizes)[:n])
    return y, groups


def assert_partition(split: Split, n: int, groups: np.ndarray | None) -> None:
    """Test and dev partition the samples; every val fold and training part lies in dev; groups stay whole."""
    assert len(np.intersect1d(split.test, split.dev)) == 0
    assert np.array_equal(np.union1d(split.test, split.dev), np.arange(n))
    for fold in range(split.n_folds):
        val, train = split.val[fold], split.train(fold)
        assert len(val) and len(train) and np.isin(val, split.dev).all() and np.isin(train, split.dev).all()
        assert len(np.intersect1d(val, train)) == 0
        if groups is not None:
            assert not np.isin(groups[train], groups[val]).any()
            assert not np.isin(groups[train], groups[split.test]).any()
    if groups is not None:
        assert not np.isin(groups[split.dev], groups[split.test]).any()
    if split.strategy in ("kfold", "group_kfold") and split.params["repeats"] == 1:
        assert np.array_equal(np.sort(np.concatenate(split.val)), split.dev)  # the folds partition dev


CASES = [
    dict(strategy="holdout"),
    dict(strategy="holdout", train_fraction=0.7),
    dict(strategy="kfold", folds=3),
    dict(strategy="kfold", folds=3, repeats=2),
    dict(strategy="kfold", folds=3, stratify=False),
    dict(strategy="loo", test_fraction=0.5),
    dict(strategy="group_kfold", folds=3),
    dict(strategy="logo", test_fraction=0.5),
]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("options", CASES, ids=lambda o: "-".join(f"{v}" for v in o.values()))
def test_multilabel_splits_are_seeded_partitions_that_keep_groups_whole(options: dict, seed: int) -> None:
    y, groups = random_case(seed)
    if options["strategy"] in ("group_kfold", "logo") and groups is None:
        groups = np.arange(len(y)) // 3
    split = make_split(y, groups=groups, seed=seed, **options)
    assert_partition(split, len(y), groups)
    again = make_split(y.copy(), groups=None if groups is None else groups.copy(), seed=seed, **options)
    assert np.array_equal(split.test, again.test)
    assert all(np.array_equal(a, b) for a, b in zip(split.val, again.val, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(split.excluded, again.excluded, strict=True))


def test_other_seeds_give_other_multilabel_splits() -> None:
    y = chest_like(200, 0)
    splits = [make_split(y, strategy="kfold", folds=5, seed=seed) for seed in range(4)]
    assert len({s.test.tobytes() for s in splits}) == 4
    assert len({s.val[0].tobytes() for s in splits}) == 4


def _worst_images(y: np.ndarray, folds: list[np.ndarray]) -> float:
    """The largest distance, in images, of a label's positives in a fold from its even share."""
    return float(max(np.abs(y[v].sum(0) - y.sum(0) * len(v) / len(y)).max() for v in folds))


@pytest.mark.parametrize("seed", range(3))
def test_iterative_stratification_keeps_every_label_prevalence_per_fold(seed: int) -> None:
    y = chest_like(1000, seed)
    split = make_split(y, strategy="kfold", folds=5, test_fraction=0, seed=seed)
    unstratified = make_split(y, strategy="kfold", folds=5, test_fraction=0, seed=seed, stratify=False)
    reference = [v for _, v in ms.KFold(5, shuffle=True, random_state=seed).split(y)]
    assert all(np.array_equal(a, np.sort(b)) for a, b in zip(unstratified.val, reference, strict=True))
    ours, theirs = _worst_images(y, list(split.val)), _worst_images(y, list(unstratified.val))
    assert ours <= 2.0 < theirs  # every label within 2 images of its even share of 200 (0.2 point of prevalence)
    balance = class_balance(y, split)
    assert balance["measure"] == "label prevalence"
    assert abs(balance["largest"]["points"]) <= 1.0  # also the training parts (800 images)
    # the rarest label (0.2%: 2 positives) is never left out of a fold for want of stratification
    hernia = y[:, -1].sum()
    assert sum(int(y[v, -1].sum() > 0) for v in split.val) == min(5, hernia)


@pytest.mark.parametrize("seed", range(3))
def test_hold_out_parts_keep_every_label_prevalence(seed: int) -> None:
    y = chest_like(1000, seed)
    split = make_split(y, strategy="holdout", test_fraction=0.2, val_fraction=0.2, seed=seed)
    loose = make_split(y, strategy="holdout", test_fraction=0.2, val_fraction=0.2, seed=seed, stratify=False)
    assert len(split.test) == len(split.val[0]) == 200
    ours = _worst_images(y, [split.test, split.val[0]])
    assert ours <= 2.0 < _worst_images(y, [loose.test, loose.val[0]])


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ChestMNIST-like targets in clusters of 300, 150 and 80 images, the rest of 1-3 (like near-duplicate groups)."""
    sizes = np.r_[300, 150, 80, np.random.default_rng(seed).integers(1, 4, n)]
    return chest_like(n, seed), np.repeat(np.arange(len(sizes)), sizes)[:n]


@pytest.mark.parametrize("seed", range(3))
def test_grouped_multilabel_parts_count_samples_and_keep_prevalences(seed: int) -> None:
    y, groups = clustered(2000, seed)
    split = make_split(y, strategy="holdout", test_fraction=0.2, val_fraction=0.2, groups=groups, seed=seed)
    loose = make_split(y, strategy="holdout", test_fraction=0.2, val_fraction=0.2, groups=groups, seed=seed,
                       stratify=False)  # fmt: skip
    assert split.params["grouped"] is True
    assert_partition(split, len(y), groups)
    assert abs(len(split.test) - 400) <= 2 and abs(len(split.val[0]) - 400) <= 2  # samples, whatever the clusters
    assert _worst_images(y, [split.test, split.val[0]]) <= 2.0 < _worst_images(y, [loose.test, loose.val[0]])


def test_grouped_multilabel_folds_count_samples_and_keep_prevalences() -> None:
    worst: dict[bool, list[float]] = {True: [], False: []}
    for seed in range(6):
        y, groups = clustered(2000, seed)
        for strat in (True, False):
            split = make_split(y, strategy="kfold", folds=5, test_fraction=0, groups=groups, seed=seed, stratify=strat)
            assert_partition(split, len(y), groups)
            worst[strat].append(_worst_images(y, list(split.val)))
            if strat:
                assert max(abs(len(v) - 400) for v in split.val) <= 2  # samples, whatever the clusters
                again = make_split(y, strategy="group_kfold", folds=5, test_fraction=0, groups=groups, seed=seed)
                assert all(np.array_equal(a, b) for a, b in zip(again.val, split.val, strict=True))
    # a 300-image cluster in a 400-image fold limits any draw; stratified, the worst label strays half as far
    assert np.mean(worst[True]) < 0.6 * np.mean(worst[False])


def test_weighted_iterative_stratification_with_unit_sizes_is_iterstrat_up_to_ties() -> None:
    y = chest_like(500, 0).astype(np.int64)
    parts = weighted_iterative_stratification(y, np.ones(500, np.int64), np.full(5, 0.2), np.random.RandomState(0))
    assert np.bincount(parts).tolist() == [100] * 5
    assert _worst_images(y, [np.flatnonzero(parts == k) for k in range(5)]) <= 1.0


def test_one_label_and_all_negative_labels_split() -> None:
    y = (np.arange(60) % 4 == 0).astype(np.uint8)[:, None]  # one label, 15 positives
    split = make_split(y, strategy="kfold", folds=5, test_fraction=0.2)
    assert int(y[split.test].sum()) == 3  # 20%
    assert sorted(int(y[v].sum()) for v in split.val) == [2, 2, 2, 3, 3]  # the other 12, as even as can be
    none = np.zeros((30, 3), np.uint8)
    assert_partition(make_split(none, strategy="kfold", folds=3), 30, None)


def test_too_many_folds_for_the_groups_suggests_what_works() -> None:
    y = chest_like(40, 0)
    with pytest.raises(SplitError, match=r"folds=5 is more than the 4 groups in dev; use --data.folds 4"):
        make_split(y, strategy="group_kfold", folds=5, test_fraction=0, groups=np.arange(40) // 10)


def test_invalid_multilabel_values_are_refused() -> None:
    with pytest.raises(SplitError, match=r"multi-label labels must be 0 or 1, found values in \[0, 2\]"):
        make_split(np.array([[0, 1], [2, 0], [1, 1]] * 5))


def test_stratified_subset_of_multilabel_targets() -> None:
    y = chest_like(500, 1)
    subset = stratified_subset(y, 100, seed=0)
    assert len(subset) == 100 and len(np.unique(subset)) == 100
    assert np.abs(y[subset].mean(0) - y.mean(0)).max() <= 0.02
    groups = np.arange(500) // 2
    grouped = stratified_subset(y, 100, seed=0, groups=groups)
    assert not np.isin(groups[np.setdiff1d(np.arange(500), grouped)], groups[grouped]).any()


def test_predefined_multilabel_split_is_the_official_one() -> None:
    y = chest_like(60, 0)
    codes = np.repeat([0, 1, 2], 20)
    split = make_split(y, strategy="predefined", predefined=codes)
    assert np.array_equal(split.test, np.arange(40, 60)) and np.array_equal(split.val[0], np.arange(20, 40))


def test_class_balance_of_multilabel_targets_reads_prevalences() -> None:
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [1, 0], [0, 0], [1, 1], [0, 0]], np.uint8)
    val = (as_index([2, 3, 4]), as_index([5, 6, 7]))
    split = Split("kfold", 8, as_index([0, 1]), as_index(range(2, 8)), val, (EMPTY_INDEX, EMPTY_INDEX), 0)
    balance = class_balance(y, split, ["A", "B"])
    assert balance["measure"] == "label prevalence" and balance["whole"] == [0.5, 0.375]
    parts = {p["part"]: p for p in balance["parts"]}
    assert parts["test"]["n"] == 2 and parts["test"]["shares"] == [1.0, 0.5]
    assert parts["fold_0/val"]["shares"] == [round(1 / 3, 4), round(1 / 3, 4)]
    assert parts["fold_0/train"]["n"] == 3  # the other fold's val
    assert balance["largest"] == {"part": "test", "class": "A", "points": 50.0}
    line = describe_balance(balance)
    assert line.startswith("label balance of the grouped split: the largest deviation from the data's label "
                           "prevalences is +50.00 points, A in test (100.00% vs 50.00%)")  # fmt: skip


def test_label_text_names_a_class_or_the_positive_labels() -> None:
    names = ["Atelectasis", "Effusion", "Mass"]
    assert label_text(np.int64(1), names) == "Effusion"
    assert label_text(np.array([0, 1, 1]), names) == "Effusion+Mass"
    assert label_text(np.array([0, 0, 0]), names) == "no label"
    assert label_text(np.array([1, 0, 1]), None) == "0+2"


def test_audit_reports_label_conflicts_of_multilabel_copies() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    images[1], images[3] = images[0], images[2]  # two exact copies: 0-1 disagree, 2-3 agree
    labels = rng.integers(0, 2, (12, 3)).astype(np.uint8)
    labels[0], labels[1] = [1, 0, 0], [1, 1, 0]
    labels[3] = labels[2]
    data = ImageSet(images, labels, ("A", "B", "C"), np.array([f"s{i}" for i in range(12)]),
                    task_kind=TaskKind.MULTILABEL)  # fmt: skip
    split = make_split(labels, strategy="kfold", folds=3, test_fraction=0, groups=np.r_[0, 0, 1, 1, 2:10])
    report = audit(data, split)
    conflicts = report["label_conflicts"]
    assert conflicts["n_clusters"] == 1 and conflicts["n_images"] == 2
    assert conflicts["examples"][0] == {"ids": ["s0", "s1"], "labels": ["A", "A+B"]}
    assert "s0 (A), s1 (A+B)" in format_audit(report)
    assert report["split"]["totals"]["val_in_train"]["exact"]["total"] == 0
