"""Task types: what a dataset's labels are, so the head, the loss, the scores and the metrics follow.

MedMNIST names four task types (``medmnist.INFO[name]["task"]``); :class:`TaskKind`'s values are those strings,
so ``TaskKind(INFO[name]["task"])`` reads one. A :class:`Task` is a small value built from an INFO entry (or from
class names, for the single-label sources that have no INFO): its kind, its label names, the number of outputs of
the head, the loss (cross-entropy, or BCE-with-logits for multi-label), how logits become scores (softmax or
sigmoid) and the shape its labels must have. It lives in the data layer because the data knows its task and
checks its labels; the model and the metrics above take it from there.

Binary tasks keep two outputs and a softmax (as every single-label task here): MedMNIST's binary ACC and AUC read
the positive column of such scores, and class weights and per-class metrics need no special case. Ordinal
regression (RetinaMNIST's five grades) is trained and scored as multi-class, as MedMNIST's own baselines and
``Evaluator`` do: :attr:`Task.note` says so wherever its metrics are reported.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medmnist_lit.data.layout import DataError

if TYPE_CHECKING:  # torch only where a loss is computed: `medmnist-lit prepare` never imports it
    from torch import Tensor

__all__ = ["Task", "TaskKind"]


class TaskKind(str, enum.Enum):
    """A task type; each value is MedMNIST's name for it (``INFO[name]["task"]``)."""

    BINARY = "binary-class"
    MULTICLASS = "multi-class"
    MULTILABEL = "multi-label, binary-class"
    ORDINAL = "ordinal-regression"

    @classmethod
    def parse(cls, value: str | TaskKind) -> TaskKind:
        """The kind named ``value`` (MedMNIST's string or a member's name, e.g. ``"multilabel"``).

        Raises:
            ValueError: An unknown name; the message lists the known ones.
        """
        if isinstance(value, cls):
            return value
        for kind in cls:
            if value in (kind.value, kind.name.lower()):
                return kind
        known = ", ".join(repr(k.value) for k in cls)
        raise ValueError(f"unknown task type {value!r}: use one of {known}")


#: Why ordinal grades are reported with multi-class metrics (shown beside them).
ORDINAL_NOTE = (
    "ordinal grades trained as multi-class (cross-entropy), scored as MedMNIST does: ACC by argmax, "
    "AUC the mean of one-vs-rest AUCs; neither rewards a near miss"
)


@dataclass(frozen=True)
class Task:
    """A dataset's task type and what follows from it.

    Args:
        kind: The task type.
        label_names: One name per class (single-label) or per label (multi-label), in output order.
    """

    kind: TaskKind
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TaskKind.parse(self.kind))
        object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        if self.kind is TaskKind.BINARY and len(self.label_names) != 2:
            raise ValueError(f"a binary task has 2 classes, not {len(self.label_names)}: {list(self.label_names)}")
        if len(self.label_names) < 2 and self.kind is not TaskKind.MULTILABEL:
            raise ValueError(f"a {self.kind.value} task needs 2+ classes, not {list(self.label_names)}")
        if not self.label_names:
            raise ValueError("a multi-label task needs 1+ labels")

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Task:
        """The task of a ``medmnist.INFO`` entry (its ``task`` and its ``label`` names, keyed ``"0"``, ``"1"``...).

        Raises:
            ValueError: The entry lacks ``task`` or ``label``, names an unknown task, or its label keys are not
                ``0..n-1``.
        """
        try:
            kind, labels = info["task"], info["label"]
        except KeyError as missing:
            raise ValueError(f"a MedMNIST INFO entry needs 'task' and 'label', this one has no {missing}") from None
        keys = sorted(labels, key=int)
        if [int(k) for k in keys] != list(range(len(keys))):
            raise ValueError(f"MedMNIST label keys must be 0..{len(keys) - 1}, found {keys}")
        return cls(TaskKind.parse(kind), tuple(labels[k] for k in keys))

    @classmethod
    def single_label(cls, class_names: Sequence[str]) -> Task:
        """The task of a single-label source without INFO: binary with 2 classes, else multi-class."""
        return cls(TaskKind.BINARY if len(class_names) == 2 else TaskKind.MULTICLASS, tuple(class_names))

    # ------------------------------------------------------------------------------ what follows
    @property
    def multilabel(self) -> bool:
        """Whether each sample has a 0/1 target per label (sigmoid outputs) rather than one class (softmax)."""
        return self.kind is TaskKind.MULTILABEL

    @property
    def num_outputs(self) -> int:
        """Outputs of the head: one per class, or one per label (a binary task keeps 2, see the module doc)."""
        return len(self.label_names)

    @property
    def loss_name(self) -> str:
        """``"cross_entropy"`` (single-label) or ``"bce_with_logits"`` (multi-label)."""
        return "bce_with_logits" if self.multilabel else "cross_entropy"

    @property
    def activation(self) -> str:
        """How logits become scores: ``"softmax"`` (single-label) or ``"sigmoid"`` (multi-label)."""
        return "sigmoid" if self.multilabel else "softmax"

    @property
    def note(self) -> str | None:
        """A caveat to print beside this task's metrics, or ``None``."""
        return ORDINAL_NOTE if self.kind is TaskKind.ORDINAL else None

    def scores(self, logits: Tensor) -> Tensor:
        """Scores in [0, 1] of ``(N, num_outputs)`` logits: class probabilities, or per-label probabilities."""
        return logits.sigmoid() if self.multilabel else logits.softmax(-1)

    def loss(
        self, logits: Tensor, target: Tensor, weight: Tensor | None = None, label_smoothing: float = 0.0
    ) -> Tensor:
        """The mean training loss of a batch.

        Args:
            logits: ``(N, num_outputs)`` logits.
            target: ``(N,)`` class indices, or ``(N, num_outputs)`` 0/1 labels (multi-label).
            weight: Per-class weights (cross-entropy), or per-label weights of the positives (BCE ``pos_weight``).
            label_smoothing: Cross-entropy's smoothing; multi-label targets move by the same amount towards 0.5.
        """
        from torch import nn

        if not self.multilabel:
            return nn.functional.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
        soft = target.to(logits.dtype) * (1 - label_smoothing) + label_smoothing / 2
        return nn.functional.binary_cross_entropy_with_logits(logits, soft, pos_weight=weight)

    @property
    def label_shape(self) -> tuple[int, ...]:
        """The shape of one sample's label: ``()`` (a class index) or ``(num_outputs,)`` (0/1 per label)."""
        return (self.num_outputs,) if self.multilabel else ()

    def check_labels(self, labels: np.ndarray, where: str = "labels") -> np.ndarray:
        """``labels`` in this task's shape: ``(N,)`` int64 class indices, or ``(N, L)`` uint8 0/1 labels.

        MedMNIST stores single-label targets as ``(N, 1)``; that column is dropped.

        Args:
            labels: The labels as stored.
            where: What they are, for the message (e.g. ``"chestmnist.npz: train_labels"``).

        Raises:
            DataError: A shape or value that does not fit the task.
        """
        labels = np.asarray(labels)
        n = self.num_outputs
        if self.multilabel:
            if labels.ndim != 2 or labels.shape[1] != n:
                raise DataError(
                    f"{where} has shape {labels.shape}, but a multi-label task with {n} labels needs (N, {n}): "
                    "check the file matches the dataset named"
                )
            if labels.size and not np.isin(labels, (0, 1)).all():
                raise DataError(f"{where} holds values other than 0 and 1: multi-label targets must be 0/1")
            return labels.astype(np.uint8, copy=False)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise DataError(
                f"{where} has shape {labels.shape}, but a {self.kind.value} task needs (N,) or (N, 1) class "
                "indices: a multi-label file needs a multi-label task"
            )
        if labels.size and not (np.issubdtype(labels.dtype, np.integer) or np.array_equal(labels, labels.round())):
            raise DataError(f"{where} holds non-integer values: class indices must be whole numbers")
        if labels.size and (labels.min() < 0 or labels.max() >= n):
            raise DataError(
                f"{where} holds class {int(labels.min()) if labels.min() < 0 else int(labels.max())}, outside "
                f"0..{n - 1} of the {n} classes: check the file matches the dataset named"
            )
        return labels.astype(np.int64, copy=False)
