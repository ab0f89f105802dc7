"""The in-memory result every source reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medmnist_lit.data.layout import DataError
from medmnist_lit.data.tasks import Task, TaskKind

#: Codes of the official split of a MedMNIST ``.npz`` (see :attr:`ImageSet.predefined`).
PREDEFINED_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images with their labels, class names and stable sample ids.

    Attributes:
        images: ``uint8`` array shaped ``N×H×W`` (grayscale) or ``N×H×W×C``; often a read-only memory map.
        labels: ``int64`` class index per sample, shaped ``N``; for a multi-label task ``0/1`` per sample and label,
            shaped ``N×L``.
        class_names: Name of each class index (of each label, for a multi-label task).
        ids: Stable sample id per sample (a relative file path such as ``"CXR/000123.jpeg"``, or
            ``"train/000123"`` for ``.npz`` sources), shaped ``N``.
        groups: Optional group code per sample (subject, patient, duplicate cluster), shaped ``N``.
        near_clusters: Optional near-duplicate cluster code per sample (Pearson r >= 0.98 of thumbnails, exact
            copies included; :mod:`medmnist_lit.splits.near_duplicates`), shaped ``N``: which samples are twins of
            one another, whatever the split groups; the leakage-stratified metrics read it.
        predefined: Optional official split per sample, coded by :data:`PREDEFINED_CODES`.
        source: Human-readable description of where the data came from.
        meta: Free-form extras (cache path, skipped files, ...); JSON-serialisable.
        task_kind: The task type (:class:`~medmnist_lit.data.tasks.TaskKind`); ``None`` for a single-label source
            without one (binary with two classes, else multi-class): see :attr:`task`.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ids: np.ndarray
    groups: np.ndarray | None = None
    near_clusters: np.ndarray | None = None
    predefined: np.ndarray | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    task_kind: TaskKind | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(
                f"images must be uint8 shaped N×H×W or N×H×W×C, got {self.images.dtype} {self.images.shape}"
            )
        for name in ("labels", "ids", "groups", "near_clusters", "predefined"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries but there are {n} images")
        if self.task_kind is not None:
            object.__setattr__(self, "task_kind", TaskKind.parse(self.task_kind))
        if self.task_kind is TaskKind.MULTILABEL:
            if self.labels.ndim != 2 or self.labels.shape[1] != len(self.class_names):
                raise ValueError(
                    f"multi-label labels must be shaped N×{len(self.class_names)} (one 0/1 column per label "
                    f"{list(self.class_names)}), got {self.labels.shape}"
                )
            if n and (self.labels.min() < 0 or self.labels.max() > 1):
                raise ValueError("multi-label labels must be 0 or 1")
        elif self.labels.ndim != 1:
            raise ValueError(f"single-label labels must be shaped N (one class index each), got {self.labels.shape}")
        elif n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}) for classes {list(self.class_names)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """Number of classes (of labels, for a multi-label task): the outputs of a head."""
        return len(self.class_names)

    @property
    def task(self) -> Task:
        """The task: :attr:`task_kind` with :attr:`class_names`, or the single-label task those names imply."""
        if self.task_kind is None:
            return Task.single_label(self.class_names)
        return Task(self.task_kind, self.class_names)

    @property
    def multilabel(self) -> bool:
        """Whether each sample has a 0/1 target per label (:attr:`labels` shaped ``N×L``)."""
        return self.task_kind is TaskKind.MULTILABEL

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Channels-first shape of one image, ``(C, H, W)``."""
        shape = self.images.shape
        return (1, shape[1], shape[2]) if len(shape) == 3 else (shape[3], shape[1], shape[2])

    def counts(self) -> dict[str, int]:
        """Number of samples per class name (positives per label, for a multi-label task), in class order."""
        labels = np.asarray(self.labels)
        if self.multilabel:
            counts = labels.sum(axis=0, dtype=np.int64).tolist()
        else:
            counts = np.bincount(labels, minlength=len(self.class_names)).tolist()
        return dict(zip(self.class_names, counts, strict=True))

    def plain(self) -> ImageSet:
        """The same samples with plain arrays instead of the cache's memory maps (for Ray's object store)."""
        return replace(self, images=np.asarray(self.images), labels=np.asarray(self.labels))

    def take(self, index: np.ndarray) -> ImageSet:
        """Return the samples at ``index`` (loaded into memory)."""
        index = np.asarray(index)
        return replace(
            self,
            images=np.ascontiguousarray(self.images[index]),
            labels=self.labels[index],
            ids=self.ids[index],
            groups=None if self.groups is None else self.groups[index],
            near_clusters=None if self.near_clusters is None else self.near_clusters[index],
            predefined=None if self.predefined is None else self.predefined[index],
        )


def match_classes(other: ImageSet, reference: ImageSet) -> ImageSet:
    """``other`` with labels re-coded to ``reference``'s class order, matched by class name.

    Multi-label sets have their label columns re-ordered by name. Single-label data of no declared task type fits
    any single-label reference (and takes its task type).

    Raises:
        DataError: If the task types differ, or the class names, or the image shapes.
    """
    mine, theirs = other.task.kind, reference.task.kind
    undeclared = other.task_kind is None or reference.task_kind is None
    if mine is not theirs and not (undeclared and not other.multilabel and not reference.multilabel):
        raise DataError(
            f"data.test_source {other.source} is a {mine.value} task but the training data is a {theirs.value} "
            "task; an external test set needs the same task type (and label names)"
        )
    if sorted(other.class_names) != sorted(reference.class_names):
        missing = sorted(set(reference.class_names) - set(other.class_names))
        extra = sorted(set(other.class_names) - set(reference.class_names))
        raise DataError(
            f"data.test_source {other.source} has classes {list(other.class_names)}, but the training data has "
            f"{list(reference.class_names)} (missing: {missing}, unknown: {extra}); an external test set needs the "
            "same class names"
        )
    if other.input_shape != reference.input_shape:
        raise DataError(
            f"data.test_source {other.source} has images of shape {other.input_shape} (C, H, W) but the training "
            f"data has {reference.input_shape}; set data.image_size (and data.channels) so both convert alike"
        )
    kind = reference.task_kind if other.task_kind is None else other.task_kind
    if other.multilabel:  # column j of the result is the reference's label j
        columns = np.array([other.class_names.index(name) for name in reference.class_names], dtype=np.int64)
        labels = np.asarray(other.labels)[:, columns]
    else:
        order = np.array([reference.class_names.index(name) for name in other.class_names], dtype=np.int64)
        labels = order[other.labels]
    return replace(other, labels=labels, class_names=reference.class_names, task_kind=kind)
