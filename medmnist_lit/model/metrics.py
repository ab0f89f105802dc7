"""Per-stage classification metrics (torchmetrics), accumulated cheaply per step and computed per epoch."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)


class EpochMetrics(nn.Module):
    """Loss, accuracy, macro-F1, AUROC, per-class accuracy and the confusion matrix of one stage.

    A training step only stores its detached logits, targets and summed loss (a few microseconds);
    torchmetrics computes everything once per epoch from the concatenated outputs, so per-step cost
    does not grow with the number of metrics and there is no per-step device synchronisation.
    With several processes, torchmetrics synchronises the states when computing.

    Args:
        num_classes: Number of classes; 2 reports AUROC of class 1 (binary AUROC).
        class_names: Names used for the per-class accuracy keys ``acc_<name>``.
        sync: Gather the states of all processes when computing (``False``: this process's samples only).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, sync: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {num_classes} classes")
        options: dict[str, Any] = {"validate_args": False, "sync_on_compute": sync}
        self.labels = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro", **options),
                "f1": MulticlassF1Score(num_classes, average="macro", **options),
                "class_acc": MulticlassAccuracy(num_classes, average=None, **options),
                "confmat": MulticlassConfusionMatrix(num_classes, **options),
            },
            compute_groups=True,
        )
        self.auroc = (
            BinaryAUROC(**options) if num_classes == 2 else MulticlassAUROC(num_classes, average="macro", **options)
        )
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
            ``auroc``, ``acc_<class>``; probabilities and targets of every recorded sample, in order.
        """
        if not self._targets:
            raise RuntimeError("no batches were recorded for this stage")
        logits = torch.cat(self._logits).float()
        target = torch.cat(self._targets)
        probs = logits.softmax(-1)
        sizes = torch.tensor(self._sizes, dtype=torch.float32, device=target.device)
        total = (torch.stack(self._losses).float() * sizes).sum()  # the batches' mean losses, weighted by size
        self.loss.update(total / len(target), weight=len(target))
        self.labels.update(probs, target)
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

    def reset(self) -> None:
        """Forget everything recorded."""
        self._logits.clear()
        self._targets.clear()
        self._losses.clear()
        self._sizes.clear()
        self.labels.reset()
        self.auroc.reset()
        self.loss.reset()
