"""What a checkpoint keeps of its data: enough to predict without it, and to refuse scoring other data.

Lightning stores a DataModule's ``state_dict()`` in every checkpoint (under the class name) and hands it back to
``load_state_dict`` when one is restored; the MedMNISTDataModule's is a :class:`DataProvenance` as plain strings,
numbers and lists (loadable weights-only). It holds the task type (multi-label outputs are not class scores), the
class names and image shape the model takes, the pixel statistics its inputs were standardised with, the absolute
source path with its fingerprint, and a digest of the split. So ``predict --predict.source IMAGES`` needs only the
checkpoint, and commands that do need the training data (``test``, ``validate``, ``predict`` of the test split, a
resumed ``fit``) check they got the same data:

- another split (other sample names or indices in any part) is an error: the "test" images could be training ones;
- another fingerprint is a warning only: it covers modification times, so an exact copy (``cp -r``, an unzip, a
  download) differs although every image is the same; the split digest, from sample names, decides.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.data.fingerprint import source_fingerprint
from medmnist_lit.data.fold import PixelStats, pixel_transform
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.layout import DataError, source_kind
from medmnist_lit.data.loaders import PixelTransform
from medmnist_lit.data.tasks import Task, TaskKind
from medmnist_lit.splits.split import Split

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "DataProvenance", "fingerprint_of", "pending_record", "restoring", "split_digest"]

#: Layout version of the stored record; a record of a newer version is refused.
FORMAT = 1
_RESTORING: ContextVar[Mapping[str, Any] | None] = ContextVar("medmnist_lit_restoring", default=None)


@contextmanager
def restoring(record: Mapping[str, Any] | None) -> Iterator[None]:
    """DataModules made inside start restored from ``record`` (a checkpoint's; ``None``: not restored).

    For LightningCLI, which links the data's classes and shape to the model while it instantiates both: a
    DataModule restored as it is made answers from the checkpoint, without its data.
    """
    token = _RESTORING.set(record)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def pending_record() -> Mapping[str, Any] | None:
    """The record a DataModule made now starts from (see :func:`restoring`)."""
    return _RESTORING.get()


def fingerprint_of(source: str | None) -> str | None:
    """The fingerprint of the source at ``source`` (``None``: the digits demo, which has none)."""
    if source is None:
        return None
    path = Path(source)
    return source_fingerprint(path, source_kind(path))


def split_digest(split: Split, ids: np.ndarray) -> str:
    """SHA-256 of a split's identity: the sample ids it indexes and every part's indices (test, dev, folds)."""
    h = hashlib.sha256("".join(f"{value}\0" for value in np.asarray(ids).tolist()).encode())
    for part in (split.test, split.dev, *split.val, *split.excluded):
        # each part prefixed with its length: no two different splits concatenate to the same bytes
        h.update(np.int64(len(part)).tobytes() + np.ascontiguousarray(part, dtype="<i8").tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class DataProvenance:
    """The data a model was trained on, as its checkpoint records it.

    Attributes:
        source: Absolute path of the training source (``None``: the bundled digits demo).
        fingerprint: The source's fingerprint when the model was trained (see
            :mod:`~medmnist_lit.data.fingerprint`); ``None`` for the demo.
        class_names: Class names in label order (the model's outputs).
        input_shape: ``(C, H, W)`` of the images the model takes.
        split: :func:`split_digest` of the split.
        fold: The fold the model was trained on; ``None`` for a refit on all development data.
        stats: Per-channel pixel mean and std (on the [0, 1] scale) of the fold's training part, with which the
            inputs were standardised; ``None`` without standardisation.
        task_kind: The task type the model was trained for (with :attr:`class_names`, its :attr:`task`); ``None``
            in records written before task types were kept: single-label, as everything was then.
    """

    source: str | None
    fingerprint: str | None
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    split: str
    fold: int | None
    stats: PixelStats | None
    task_kind: TaskKind | None = None

    @property
    def task(self) -> Task:
        """The model's task: :attr:`task_kind` with :attr:`class_names` (single-label when the record has no kind)."""
        if self.task_kind is None:
            return Task.single_label(self.class_names)
        return Task(self.task_kind, self.class_names)

    def to_state(self) -> dict[str, Any]:
        """The record as plain values, for ``LightningDataModule.state_dict``."""
        return {
            "format": FORMAT,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "class_names": list(self.class_names),
            "input_shape": list(self.input_shape),
            "split": self.split,
            "fold": self.fold,
            "mean": None if self.stats is None else list(self.stats.mean),
            "std": None if self.stats is None else list(self.stats.std),
            "task": None if self.task_kind is None else self.task_kind.value,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DataProvenance:
        """Read a record written by :meth:`to_state`.

        Raises:
            DataError: The record is damaged, or written by a newer medmnist-lit.
        """
        try:
            version = int(state["format"])
            if version > FORMAT:
                raise DataError(
                    f"the checkpoint's data record has format {version}, newer than this medmnist-lit reads "
                    f"({FORMAT}); upgrade medmnist-lit"
                )
            mean, std, task = state["mean"], state["std"], state.get("task")
            shape = tuple(int(n) for n in state["input_shape"])
            if len(shape) != 3:
                raise ValueError(f"input_shape {list(shape)}")
            return cls(
                source=None if state["source"] is None else str(state["source"]),
                fingerprint=None if state["fingerprint"] is None else str(state["fingerprint"]),
                class_names=tuple(str(name) for name in state["class_names"]),
                input_shape=(shape[0], shape[1], shape[2]),
                split=str(state["split"]),
                fold=None if state["fold"] is None else int(state["fold"]),
                stats=None if mean is None else PixelStats(tuple(map(float, mean)), tuple(map(float, std))),
                task_kind=None if task is None else TaskKind.parse(str(task)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(
                f"the checkpoint's data record is damaged ({type(exc).__name__}: {exc}); re-train the model"
            ) from None

    @property
    def transform(self) -> PixelTransform:
        """The pixel conversion the model's inputs went through (with the stored statistics)."""
        return pixel_transform(self.input_shape[0], self.stats)

    def require_source(self, source: str | None) -> None:
        """Refuse in one line when ``source`` is the checkpoint's own training source and it has gone.

        Raises:
            DataError: The source no longer exists where the checkpoint says it was.
        """
        if source is None or self.source is None or Path(source).exists() or Path(source) != Path(self.source):
            return
        raise DataError(
            f"the checkpoint's data source {self.source} no longer exists; pass --data.source NEW_PATH (the same "
            "images, moved) or, to predict other images, --predict.source IMAGES"
        )

    def check_data(self, data: ImageSet, source: str | None, fingerprint: str | None) -> None:
        """Check that ``data`` (loaded from ``source``) is what the model was trained on.

        Raises:
            DataError: Another task type, other classes, or images of another shape.
        """
        where = f"--data.source {source}" if source else "the digits demo"
        self.check_task(data, where)
        if tuple(data.class_names) != self.class_names:
            raise DataError(
                f"{where} has the classes {list(data.class_names)} but the checkpoint's model was trained on "
                f"{list(self.class_names)}; pass its training data, or --predict.source IMAGES to predict other images"
            )
        if tuple(data.input_shape) != self.input_shape:
            raise DataError(
                f"{where} has images of shape {tuple(data.input_shape)} (C, H, W) but the checkpoint's model takes "
                f"{self.input_shape}; leave out the --data.channels/--data.image_size given"
            )
        if fingerprint != self.fingerprint:
            log.warning(
                "WARNING: %s differs from the source the checkpoint was trained on (%s) in its files' names, sizes "
                "or modification times (files changed since, or a copy); the split is checked by sample names",
                where,
                self.source,
            )

    def check_task(self, data: ImageSet, where: str) -> None:
        """Check that ``data``'s task type is the model's.

        Single-label data of no declared type (``task_kind`` ``None``: a plain ``.npz`` or folder) fits any
        single-label model, whose kind (e.g. ordinal regression) then holds; so does any single-label data a record
        without a kind (written before task types were kept) was trained on.

        Raises:
            DataError: The kinds differ (multi-label and single-label, or two declared single-label kinds).
        """
        model = self.task
        undeclared = data.task_kind is None or self.task_kind is None
        if undeclared and not data.multilabel and not model.multilabel:
            return
        if data.task.kind is model.kind:
            return
        raise DataError(
            f"{where} is a {data.task.kind.value} task but the checkpoint's model was trained for a "
            f"{model.kind.value} task; pass data of the checkpoint's task (its training data), or train a model for "
            "this data"
        )

    def check_split(self, digest: str, source: str | None) -> None:
        """Check that a split (its :func:`split_digest`) is the one the model was trained on.

        Raises:
            DataError: The split differs: its test or validation part could hold the model's training images.
        """
        if digest == self.split:
            return
        where = f"--data.source {source}" if source else "the digits demo"
        raise DataError(
            f"the split of {where} is not the one the checkpoint was trained on (other images or other --data "
            "split options), so its test images could be training images; pass the checkpoint's data and leave "
            "the split options as they were"
        )
