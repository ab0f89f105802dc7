"""Stratified bootstrap intervals (medmnist_lit.utils.bootstrap): torchmetrics' definitions, coverage, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from medmnist_lit.utils.bootstrap import bootstrap_intervals, weighted_scores


def _sample(n: int, k: int, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a noisy classifier: logits are normal, the true class shifted up by ``shift``."""
    targets = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), targets] += shift
    return torch.tensor(logits).softmax(-1).numpy(), targets


def _torchmetrics(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    p, y = torch.tensor(probs), torch.tensor(targets)
    k = probs.shape[1]
    auroc = binary_auroc(p[:, 1], y) if k == 2 else multiclass_auroc(p, y, k, average="macro")
    return {
        "acc": float(multiclass_accuracy(p, y, k, average="micro")),
        "f1": float(multiclass_f1_score(p, y, k, average="macro")),
        "auroc": float(auroc),
    }


@pytest.mark.parametrize("k", [2, 3, 6])
def test_weighted_scores_equal_torchmetrics_unweighted_and_with_repeated_samples(k: int) -> None:
    rng = np.random.default_rng(k)
    probs, targets = _sample(400, k, 1.0, rng)
    probs = np.round(probs, 2)  # ties in the scores, which AUROC counts one half
    probs[:5, :] = 1 / k  # and an argmax tie (the first class wins, as in torch)
    counts = rng.integers(0, 3, len(targets))  # integer weights are repeated samples
    scores = weighted_scores(probs, targets, np.stack([np.ones(len(targets)), counts]))
    repeated = np.repeat(np.arange(len(targets)), counts)
    for row, index in enumerate((np.arange(len(targets)), repeated)):
        expected = _torchmetrics(probs[index], targets[index])
        for name, value in expected.items():
            assert scores[name][row] == pytest.approx(value, abs=1e-5), (k, row, name)


def test_f1_leaves_out_a_class_never_seen_nor_predicted_as_torchmetrics_does() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    targets = np.array([0, 1, 1, 1])
    expected = float(multiclass_f1_score(torch.tensor(probs), torch.tensor(targets), 3, average="macro"))
    assert weighted_scores(probs, targets, np.ones((1, 4)))["f1"][0] == pytest.approx(expected)


def test_intervals_are_seeded_ordered_and_contain_the_estimate() -> None:
    probs, targets = _sample(300, 3, 1.5, np.random.default_rng(0))
    first = bootstrap_intervals(probs, targets, resamples=300, seed=4)
    assert first == bootstrap_intervals(probs, targets, resamples=300, seed=4)
    assert first != bootstrap_intervals(probs, targets, resamples=300, seed=5)
    point = _torchmetrics(probs, targets)
    for name, (low, high) in first.items():
        assert low < point[name] < high, name


def test_resamples_keep_the_class_counts() -> None:
    # a classifier right on every sample of class 0 and wrong on every other: with the class counts fixed, the
    # accuracy is the same in every resample, so a stratified interval has no width
    targets = np.array([0] * 30 + [1] * 70)
    probs = np.tile([[1.0, 0.0]], (100, 1))
    low, high = bootstrap_intervals(probs, targets, resamples=200)["acc"]
    assert low == high == pytest.approx(0.3)


def test_empty_and_one_class_sets_give_nan_bounds() -> None:
    empty = bootstrap_intervals(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert all(math.isnan(v) for bounds in empty.values() for v in bounds)
    one_class = bootstrap_intervals(np.tile([[0.7, 0.3]], (10, 1)), np.zeros(10, np.int64), resamples=50)
    assert all(math.isnan(v) for v in one_class["auroc"]) and one_class["acc"] == [1.0, 1.0]


def test_intervals_cover_the_true_value_at_about_the_nominal_rate() -> None:
    """200 test sets of 150 samples from one known classifier: a 95% interval should hold the truth ~95% of the time."""
    rng = np.random.default_rng(2026)
    k, shift, per_class = 3, 1.2, 50
    # the population's values, from one very large sample of the same classifier (classes are symmetric: balanced)
    truth_probs, truth_targets = _sample(300_000, k, shift, rng)
    population = weighted_scores(truth_probs, truth_targets, np.ones((1, len(truth_targets))))
    truth = {name: float(values[0]) for name, values in population.items()}
    covered = {name: 0 for name in truth}
    trials = 200
    for trial in range(trials):
        targets = np.repeat(np.arange(k), per_class)
        logits = rng.normal(0, 1, (len(targets), k))
        logits[np.arange(len(targets)), targets] += shift
        probs = torch.tensor(logits).softmax(-1).numpy()
        for name, (low, high) in bootstrap_intervals(probs, targets, resamples=400, seed=trial).items():
            covered[name] += low <= truth[name] <= high
    rates = {name: count / trials for name, count in covered.items()}
    assert all(0.88 <= rate <= 0.99 for rate in rates.values()), rates
