"""Which samples of a part have a near-duplicate twin in a training part: the mask behind leakage-stratified metrics.

A sample "has a twin" when its near-duplicate cluster (:attr:`~medmnist_lit.data.imageset.ImageSet.near_clusters`,
exact copies included) has a member among the samples a model trained on. Scores on samples with a twin can be
earned by memorising; scores on the others cannot, so they are the ones to believe.
"""

from __future__ import annotations

import numpy as np

__all__ = ["twin_mask"]


def twin_mask(clusters: np.ndarray, part: np.ndarray, training: np.ndarray) -> np.ndarray:
    """Boolean mask over ``part``: does the sample's cluster have a member in ``training`` (other than itself)?

    Args:
        clusters: Near-duplicate cluster code of every sample of the dataset.
        part: Indices of the samples scored (a validation fold, the test part).
        training: Indices of the samples the model trained on.

    Returns:
        ``bool`` array shaped like ``part``.
    """
    clusters = np.asarray(clusters)
    part, training = np.asarray(part, dtype=np.int64), np.asarray(training, dtype=np.int64)
    if not len(part) or not len(training):
        return np.zeros(len(part), dtype=bool)
    # a sample that is itself in the training part (a refit scored on its own data) is not its own twin
    if np.issubdtype(clusters.dtype, np.integer) and clusters.min() >= 0:
        codes = clusters  # near_duplicate_groups' codes 0..G-1: no sort, once per fold of a leave-one-out run
    else:
        codes = np.unique(clusters, return_inverse=True)[1].ravel()  # any other codes (e.g. strings) as 0..G-1
    counts = np.bincount(codes[np.unique(training)], minlength=int(codes.max()) + 1)
    self_in_training = np.isin(part, training)
    return counts[codes[part]] - self_in_training.astype(np.int64) > 0
