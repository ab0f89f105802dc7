"""Which samples have a near-duplicate in the training part (medmnist_lit.splits.twins)."""

from __future__ import annotations

import numpy as np

from medmnist_lit.splits.twins import twin_mask


def test_a_sample_has_a_twin_when_its_cluster_has_a_member_in_training() -> None:
    clusters = np.array([0, 1, 1, 2, 3, 3, 4, 0])
    train = np.array([0, 1, 4])
    # 2 shares cluster 1 with training sample 1, 5 cluster 3 with 4, 7 cluster 0 with 0; 3 and 6 are alone
    assert twin_mask(clusters, np.array([2, 3, 5, 6, 7]), train).tolist() == [True, False, True, False, True]


def test_a_sample_is_not_its_own_twin_and_a_pair_in_one_part_does_not_count() -> None:
    clusters = np.array([0, 0, 1, 2])
    # 0 and 1 are twins of each other, both validated: neither has a twin in training
    assert twin_mask(clusters, np.array([0, 1]), np.array([2, 3])).tolist() == [False, False]
    # a part scored on its own training samples (a refit): only a different member makes a twin
    assert twin_mask(clusters, np.array([0, 2]), np.array([0, 1, 2, 2])).tolist() == [True, False]


def test_any_cluster_codes_and_empty_parts() -> None:
    clusters = np.array(["a", "b", "a"])
    assert twin_mask(clusters, np.array([2]), np.array([0])).tolist() == [True]
    assert twin_mask(clusters, np.array([], np.int64), np.array([0])).shape == (0,)
    assert twin_mask(clusters, np.array([1, 2]), np.array([], np.int64)).tolist() == [False, False]
