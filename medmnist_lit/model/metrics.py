"""Per-stage classification metrics (torchmetrics), accumulated cheaply per step and computed per epoch.

Single-label tasks (binary, multi-class, ordinal) score softmax probabilities; multi-label tasks score each label's
sigmoid probability at MedMNIST's threshold 0.5, so ``acc`` (the mean of the per-label accuracies) is MedMNIST's
ACC there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelAUROC,
    MultilabelConfusionMatrix,
    MultilabelF1Score,
)

from medmnist_lit.data.tasks import Task

__all__ = ["EpochMetrics"]


def _torchmetrics(num_classes: int, multilabel: bool, **options: Any) -> tuple[MetricCollection, Metric]:
    """The label metrics (accuracy, macro-F1, per-class accuracy, confusion) and the AUROC of a task."""
    labels: dict[str, Metric | MetricCollection]
    if multilabel:
        labels = {
            "acc": MultilabelAccuracy(num_classes, average="macro", **options),
            "f1": MultilabelF1Score(num_classes, average="macro", **options),
            "class_acc": MultilabelAccuracy(num_classes, average=None, **options),
            "confmat": MultilabelConfusionMatrix(num_classes, **options),
        }
        auroc: Metric = MultilabelAUROC(num_classes, average=None, **options)  # the mean skips undefined labels
    else:
        labels = {
            "acc": MulticlassAccuracy(num_classes, average="micro", **options),
            "f1": MulticlassF1Score(num_classes, average="macro", **options),
            "class_acc": MulticlassAccuracy(num_classes, average=None, **options),
            "confmat": MulticlassConfusionMatrix(num_classes, **options),
        }
        auroc = BinaryAUROC(**options) if num_classes == 2 else MulticlassAUROC(num_classes, average="macro", **options)
    return MetricCollection(labels, compute_groups=True), auroc


class EpochMetrics(nn.Module):
    """Loss, accuracy, macro-F1, AUROC, per-class accuracy and the confusion matrix of one stage.

    Multi-label (``task.multilabel``): ``acc`` is the mean of the per-label accuracies at 0.5 (MedMNIST's ACC),
    ``f1`` the macro F1 at 0.5, ``auroc`` the mean AUROC of the labels that have both outcomes in the stage,
    ``auroc_<label>`` and ``acc_<label>`` per label; the confusion matrices are per label, ``L×2×2``.

    A training step only stores its detached logits, targets and summed loss (a few microseconds);
    torchmetrics computes everything once per epoch from the concatenated outputs, so per-step cost
    does not grow with the number of metrics and there is no per-step device synchronisation.
    With several processes, torchmetrics synchronises the states when computing.

    Args:
        num_classes: Number of classes; 2 reports AUROC of class 1 (binary AUROC).
        class_names: Names used for the per-class accuracy keys ``acc_<name>``.
        sync: Gather the states of all processes when computing (``False``: this process's samples only).
        task: The task; ``None`` is single-label (binary or multi-class, which score alike here).
    """

    def __init__(
        self, num_classes: int, class_names: Sequence[str] | None = None, sync: bool = True, task: Task | None = None
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        if task is not None and task.num_outputs != num_classes:
            raise ValueError(f"a {task.kind.value} task with {task.num_outputs} outputs for {num_classes} classes")
        self.task = task
        self.multilabel = task is not None and task.multilabel
        self.labels, self.auroc = _torchmetrics(num_classes, self.multilabel, validate_args=False, sync_on_compute=sync)
        self.loss = MeanMetric(sync_on_compute=sync)
        self._logits: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._losses: list[Tensor] = []
        self._sizes: list[int] = []

    def update(self, logits: Tensor, target: Tensor, loss: Tensor) -> None:
        """Record one batch: its logits, targets and mean loss (no tensor arithmetic: it runs at every step)."""
        self._logits.append(logits.detach())
        self._targets.append(target)
        self._losses.append(loss.detach())
        self._sizes.append(len(target))

    @property
    def num_samples(self) -> int:
        """Samples recorded since the last reset."""
        return sum(len(t) for t in self._targets)

    def compute(self) -> tuple[dict[str, float], Tensor, Tensor, Tensor]:
        """Compute the epoch's metrics and reset.

        Returns:
            ``(scalars, confusion_matrix, probabilities, targets)``: scalars keyed ``loss``, ``acc``, ``f1``,
            ``auroc``, ``acc_<class>`` (multi-label also ``auroc_<label>``); probabilities (softmax, or sigmoid per
            label) and targets of every recorded sample, in order.
        """
        if not self._targets:
            raise RuntimeError("no batches were recorded for this stage")
        logits = torch.cat(self._logits).float()
        target = torch.cat(self._targets)
        probs = self.task.scores(logits) if self.task is not None else logits.softmax(-1)
        sizes = torch.tensor(self._sizes, dtype=torch.float32, device=target.device)
        total = (torch.stack(self._losses).float() * sizes).sum()  # the batches' mean losses, weighted by size
        self.loss.update(total / len(target), weight=len(target))
        self.labels.update(probs, target)
        if self.multilabel:
            return self._multilabel(probs, target)
        self.auroc.update(probs[:, 1] if self.num_classes == 2 else probs, target)
        values = self.labels.compute()
        # counts after synchronisation: every process takes the same branches (collectives must match)
        support = values["confmat"].sum(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics warns about classes absent from a small stage
            auroc = float(self.auroc.compute())
        if int((support > 0).sum()) < 2:
            auroc = math.nan  # a ranking needs two classes
        scalars = {
            "loss": float(self.loss.compute()),
            "acc": float(values["acc"]),
            "f1": float(values["f1"]),
            "auroc": auroc,
        }
        for name, acc, n in zip(self.class_names, values["class_acc"].tolist(), support.tolist(), strict=True):
            scalars[f"acc_{name}"] = acc if n else math.nan  # undefined for a class absent from this stage
        confmat = values["confmat"].cpu()
        self.reset()
        return scalars, confmat, probs.cpu(), target.cpu()

    def _multilabel(self, probs: Tensor, target: Tensor) -> tuple[dict[str, float], Tensor, Tensor, Tensor]:
        self.auroc.update(probs, target)
        values = self.labels.compute()
        # counts after synchronisation (every process takes the same branches): a label needs both outcomes
        confmat = values["confmat"]
        defined = (confmat[:, 1].sum(1) > 0) & (confmat[:, 0].sum(1) > 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics warns about labels without positives in a small stage
            aurocs = torch.where(defined, self.auroc.compute().float(), torch.nan)
        per_label = aurocs[defined]
        scalars = {
            "loss": float(self.loss.compute()),
            "acc": float(values["acc"]),
            "f1": float(values["f1"]),
            "auroc": float(per_label.mean()) if len(per_label) else math.nan,
        }
        for name, acc, auroc in zip(self.class_names, values["class_acc"].tolist(), aurocs.tolist(), strict=True):
            scalars[f"acc_{name}"] = acc
            scalars[f"auroc_{name}"] = auroc
        self.reset()
        return scalars, confmat.cpu(), probs.cpu(), target.cpu()

    def reset(self) -> None:
        """Forget everything recorded."""
        self._logits.clear()
        self._targets.clear()
        self._losses.clear()
        self._sizes.clear()
        self.labels.reset()
        self.auroc.reset()
        self.loss.reset()
