"""A second dataset to score trained models on ("train in source 1, use in source 2"), in the training classes."""

from __future__ import annotations

from pathlib import Path

from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.imageset import ImageSet, match_classes
from medmnist_lit.data.layout import require_source
from medmnist_lit.data.medmnist_source import is_medmnist

__all__ = ["load_external"]


def load_external(
    source: str,
    reference: ImageSet,
    channels: int,
    image_size: int | None,
    *,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> ImageSet:
    """The dataset at ``source`` (``--data.test_source``), converted like ``reference``, labels in its class order.

    Raises:
        DataError: The source is missing or malformed, or its classes are not among ``reference``'s.
    """
    what = "a class-folder tree with the training data's classes, a .zip of one, a .npz, or medmnist:NAME"
    if not is_medmnist(source):  # a name is located (or downloaded) by load_dataset
        require_source(Path(source).expanduser(), "--data.test_source", what)
    other = load_dataset(source, channels=channels, image_size=image_size, cache_dir=cache_dir, skip_bad=skip_bad)
    return match_classes(other, reference)
