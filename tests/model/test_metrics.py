"""Epoch metrics agree with scikit-learn, for multiclass and binary tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, recall_score, roc_auc_score

from medmnist_lit.model.metrics import EpochMetrics


@pytest.mark.parametrize("num_classes", [2, 4])
def test_epoch_metrics_match_sklearn(num_classes: int) -> None:
    torch.manual_seed(num_classes)
    logits = torch.randn(203, num_classes) + torch.eye(num_classes)[torch.arange(203) % num_classes] * 1.5
    target = torch.arange(203) % num_classes
    metrics = EpochMetrics(num_classes, [f"c{i}" for i in range(num_classes)])
    for part in range(0, 203, 50):  # several batches, as in an epoch
        chunk = slice(part, part + 50)
        loss = torch.nn.functional.cross_entropy(logits[chunk], target[chunk])
        metrics.update(logits[chunk], target[chunk], loss)
    scalars, confmat, probs, targets = metrics.compute()
    p, y = logits.softmax(-1).numpy(), target.numpy()
    predicted = p.argmax(1)
    assert scalars["acc"] == pytest.approx(accuracy_score(y, predicted), abs=1e-6)
    assert scalars["f1"] == pytest.approx(f1_score(y, predicted, average="macro"), abs=1e-6)
    assert scalars["loss"] == pytest.approx(log_loss(y, p), abs=1e-5)
    expected_auroc = roc_auc_score(y, p[:, 1]) if num_classes == 2 else roc_auc_score(y, p, multi_class="ovr")
    assert scalars["auroc"] == pytest.approx(expected_auroc, abs=1e-5)
    recalls = recall_score(y, predicted, average=None)
    for i in range(num_classes):
        assert scalars[f"acc_c{i}"] == pytest.approx(recalls[i], abs=1e-6)
    assert np.array_equal(confmat.numpy(), confusion_matrix(y, predicted))
    assert torch.allclose(probs, logits.softmax(-1)) and torch.equal(targets, target)
    assert metrics.num_samples == 0  # compute() resets


def test_undefined_metrics_are_nan_not_zero() -> None:
    metrics = EpochMetrics(3)
    logits, target = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0])
    metrics.update(logits, target, torch.nn.functional.cross_entropy(logits, target))
    scalars = metrics.compute()[0]
    assert scalars["acc"] == 1.0 and math.isnan(scalars["auroc"])  # one sample: no ranking
    assert math.isnan(scalars["acc_1"]) and math.isnan(scalars["acc_2"])  # absent classes
