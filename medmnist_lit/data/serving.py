"""Datasets already loaded elsewhere, served to :func:`~medmnist_lit.data.cache.load_dataset` in this process.

A Ray task of ``batch --executor ray`` gets its dataset from the object store (the driver loaded and put it once);
registered with :func:`serving`, a ``load_dataset`` with the same arguments returns that object as it is: no
decoding, no cache read, no copy of the arrays (Ray maps them read-only from its node's shared memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from medmnist_lit.data.imageset import ImageSet

__all__ = ["DatasetKey", "dataset_key", "served", "serving", "serving_any"]

#: ``(absolute source path or None for the demo, channels, image_size, skip_bad)``: what decides a loaded dataset.
DatasetKey = tuple[str | None, int, int | None, bool]

_served: dict[DatasetKey, ImageSet] = {}


def dataset_key(
    source: str | os.PathLike[str] | None, channels: int = 1, image_size: int | None = None, skip_bad: bool = False
) -> DatasetKey:
    """The key of what ``load_dataset(source, channels=, image_size=, skip_bad=)`` loads (whatever the cache dir)."""
    # absolute, not resolved: a broken link or a symlink loop is load_dataset's to report, with its remedy
    path = None if source is None else os.path.abspath(Path(source).expanduser())
    return path, int(channels), None if image_size is None else int(image_size), bool(skip_bad)


def served(key: DatasetKey) -> ImageSet | None:
    """The dataset registered under ``key`` by an enclosing :func:`serving`, else ``None``."""
    return _served.get(key)


@contextmanager
def serving(datasets: Mapping[DatasetKey, ImageSet]) -> Iterator[None]:
    """While inside, ``load_dataset`` returns these datasets for their keys (:func:`dataset_key`) in this process."""
    saved = {key: _served[key] for key in datasets if key in _served}
    _served.update(datasets)
    try:
        yield
    finally:
        for key in datasets:
            _served.pop(key, None)
        _served.update(saved)


def serving_any() -> bool:
    """Whether any dataset is registered (outside a Ray task: never, so ``load_dataset`` skips the lookup)."""
    return bool(_served)
