"""Multi-label epoch metrics, twin scores and bootstrap: MedMNIST's ACC/AUC, scikit-learn's F1, one definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from medmnist_lit.data.tasks import Task, TaskKind
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.model.official_metrics import label_aucs, majority_baseline, official_metrics
from medmnist_lit.training.official_scores import majority_target, official_scores
from medmnist_lit.training.twin_scores import baseline_warning, probability_scores, stage_scores
from medmnist_lit.utils.bootstrap import bootstrap_intervals, weighted_multilabel_scores

NAMES = ("effusion", "mass", "nodule", "hernia")
TASK = Task(TaskKind.MULTILABEL, NAMES)


def outputs(seed: int = 0, n: int = 157) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits better than chance for 0/1 targets of the four labels (every label has both outcomes)."""
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, len(NAMES), generator=g) < torch.tensor([0.5, 0.3, 0.2, 0.1])).long()
    return torch.randn(n, len(NAMES), generator=g) + 1.2 * target - 0.8, target


def computed(logits: torch.Tensor, target: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    metrics = EpochMetrics(len(NAMES), NAMES, task=TASK)
    for start in range(0, len(target), 40):  # several batches, as in an epoch
        chunk = slice(start, start + 40)
        metrics.update(logits[chunk], target[chunk], TASK.loss(logits[chunk], target[chunk]))
    scalars, confmat, probs, targets = metrics.compute()
    assert torch.equal(targets, target)
    return scalars, confmat, probs


def test_multilabel_acc_and_auroc_are_medmnists_on_the_same_predictions() -> None:
    logits, target = outputs()
    scalars, confmat, probs = computed(logits, target)
    assert torch.allclose(probs, logits.sigmoid())
    official = official_metrics(target.numpy(), probs.numpy(), TASK)
    assert scalars["acc"] == pytest.approx(official.acc, abs=1e-6)
    assert scalars["auroc"] == pytest.approx(official.auc, abs=1e-6)
    aucs = label_aucs(target.numpy(), probs.numpy(), TASK)
    y, called = target.numpy(), probs.numpy() > 0.5
    for i, name in enumerate(NAMES):
        assert scalars[f"auroc_{name}"] == pytest.approx(aucs[i], abs=1e-6)
        assert scalars[f"acc_{name}"] == pytest.approx(np.mean(y[:, i] == called[:, i]), abs=1e-6)
    assert scalars["f1"] == pytest.approx(f1_score(y, called, average="macro", zero_division=0), abs=1e-6)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float())
    assert scalars["loss"] == pytest.approx(float(bce), abs=1e-5)
    assert confmat.shape == (len(NAMES), 2, 2) and confmat.sum() == target.numel()  # per label, no C×C matrix


def test_a_label_without_positives_has_no_auroc_and_the_mean_skips_it() -> None:
    logits, target = outputs(1)
    target[:, 3] = 0
    scalars, _, probs = computed(logits, target)
    assert math.isnan(scalars["auroc_hernia"])
    defined = label_aucs(target.numpy(), probs.numpy(), TASK)[:3]
    assert scalars["auroc"] == pytest.approx(defined.mean(), abs=1e-6)
    assert math.isnan(official_metrics(target.numpy(), probs.numpy(), TASK).auc)  # MedMNIST's mean is NaN


def test_weighted_multilabel_scores_equal_the_epoch_metrics() -> None:
    logits, target = outputs(2)
    scalars, _, probs = computed(logits, target)
    ones = np.ones((1, len(target)))
    weighted = weighted_multilabel_scores(probs.numpy(), target.numpy(), ones)
    for name in ("acc", "f1", "auroc"):
        assert weighted[name][0] == pytest.approx(scalars[name], abs=1e-6), name
    # integer weights are repeated samples
    counts = np.random.default_rng(0).integers(0, 3, len(target))
    repeated = np.repeat(np.arange(len(target)), counts)
    by_weight = weighted_multilabel_scores(probs.numpy(), target.numpy(), counts[None].astype(float))
    by_repeat = computed(logits[repeated], target[repeated])[0]
    for name in ("acc", "f1", "auroc"):
        assert by_weight[name][0] == pytest.approx(by_repeat[name], abs=1e-6), name


def test_multilabel_twin_halves_bootstrap_and_official_stage_scores() -> None:
    logits, target = outputs(3)
    probs, y = logits.sigmoid().numpy(), target.numpy()
    train = (np.random.default_rng(1).random((300, len(NAMES))) < [0.6, 0.3, 0.2, 0.1]).astype(np.uint8)
    majority = majority_target(train, TASK)
    assert majority.tolist() == [1, 0, 0, 0]
    twin = np.arange(len(y)) % 3 == 0
    scores = stage_scores("test", probs, y, twin=twin, majority=majority, task=TASK)
    baseline = majority_baseline(train, y, TASK)
    assert scores["test/majority_acc"] == pytest.approx(baseline.acc)
    assert scores["test/majority_official_acc"] == pytest.approx(baseline.acc)
    assert scores["test/majority_official_auc"] == pytest.approx(baseline.auc) == 0.5
    assert scores["test/official_acc"] == pytest.approx(official_metrics(y, probs, TASK).acc)
    for part, mask in (("with_twin", twin), ("without_twin", ~twin)):
        official = official_metrics(y[mask], probs[mask], TASK)
        assert scores[f"test/{part}/acc"] == pytest.approx(official.acc)
        assert scores[f"test/{part}/auroc"] == pytest.approx(official.auc)
        bce = torch.nn.functional.binary_cross_entropy(torch.from_numpy(probs[mask]).double(), target[mask].double())
        assert scores[f"test/{part}/loss"] == pytest.approx(float(bce), rel=1e-6)
    assert math.isnan(probability_scores(probs, y, np.zeros((1, len(y))))[0]["acc"])  # an empty half
    intervals = bootstrap_intervals(probs, y, resamples=200)
    for name, value in (("acc", scores["test/official_acc"]), ("auroc", scores["test/official_auc"])):
        low, high = intervals[name]
        assert low < value < high


@pytest.mark.parametrize("kind", [TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.ORDINAL])
def test_single_label_official_stage_scores(kind: TaskKind) -> None:
    k = 2 if kind is TaskKind.BINARY else 5
    task = Task(kind, tuple(f"c{i}" for i in range(k)))
    rng = np.random.default_rng(4)
    y = rng.integers(0, k, 90)
    logits = rng.normal(size=(90, k)) + 1.5 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    train = np.r_[np.zeros(30, int), rng.integers(0, k, 50)]
    scores = official_scores("val", probs, y, task, majority=majority_target(train, task))
    assert (scores["val/official_auc"], scores["val/official_acc"]) == official_metrics(y, probs, task)
    baseline = majority_baseline(train, y, task)
    assert (scores["val/majority_official_auc"], scores["val/majority_official_acc"]) == baseline
    assert scores["val/majority_official_acc"] == pytest.approx(np.mean(y == 0))


def test_the_warning_names_medmnists_acc_when_only_it_does_not_beat_the_baseline() -> None:
    metrics = {
        "test/acc": 0.9,
        "test/majority_acc": 0.5,
        "test/official_acc": 0.947,
        "test/majority_official_acc": 0.947,
    }
    warning = baseline_warning("test", metrics)
    assert warning is not None and warning.startswith("test MedMNIST ACC 94.70 % does not beat")
    assert baseline_warning("test", {**metrics, "test/official_acc": 0.95}) is None
