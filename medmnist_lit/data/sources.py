"""Folder and zip sources: list what they hold, read each file's bytes, and decode them into an ImageSet.

A source is first *listed* (:func:`list_folder`, :func:`list_zip`): class names, sample ids, labels, its
fingerprint and an :class:`EntryReader` that fetches one file's bytes. :func:`decode_files` then decodes the
listing with :mod:`medmnist_lit.data.decode`, in memory (:func:`read_folder`, :func:`read_zip`) or into the ``.npy``
file that :func:`medmnist_lit.data.cache.load_dataset` memory-maps. The layout rules and :class:`DataError` live in
:mod:`medmnist_lit.data.layout`, the digests in :mod:`medmnist_lit.data.fingerprint`, and the ``.npz`` reader and the
digits demo in :mod:`medmnist_lit.data.arrays`.

This module must stay light to import (no torch, torchvision, lightning or sklearn at module level).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medmnist_lit.data.decode import decode_listing
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.layout import (
    DataError,
    check_options,
    source_kind,
)
from medmnist_lit.data.listing import list_folder, list_zip


# -------------------------------------------------------------------------------------------- decoding
def read_folder(
    path: str | os.PathLike[str], *, channels: int = 1, image_size: int | None = None, skip_bad: bool = False
) -> ImageSet:
    """Decode a class-folder tree into memory (one process; :func:`~medmnist_lit.data.cache.load_dataset` caches)."""
    return _read("folder", path, channels, image_size, skip_bad)


def read_zip(
    path: str | os.PathLike[str], *, channels: int = 1, image_size: int | None = None, skip_bad: bool = False
) -> ImageSet:
    """Decode a zip of a class-folder tree into memory, reading it in place (nothing is extracted)."""
    return _read("zip", path, channels, image_size, skip_bad)


def decode_files(
    path: Path,
    kind: str,
    *,
    channels: int = 1,
    image_size: int | None = None,
    skip_bad: bool = False,
    workers: int | None = 1,
    out_path: Path | None = None,
) -> ImageSet:
    """List a ``"folder"`` or ``"zip"`` source and decode it (see :func:`~medmnist_lit.data.decode.decode_listing`).

    ``meta`` holds ``kind``, ``skipped``, ``workers`` and ``fingerprint`` (taken from the listing, before any
    pixel is read, so a change made while decoding shows up as a different fingerprint next time).
    """
    listing = list_folder(path) if kind == "folder" else list_zip(path)
    decoded = decode_listing(
        listing, channels=channels, image_size=image_size, skip_bad=skip_bad, workers=workers, out_path=out_path
    )
    keep = decoded.keep
    ids = np.array(listing.ids)
    return ImageSet(
        images=decoded.images,
        labels=listing.labels if keep is None else listing.labels[keep],
        class_names=listing.class_names,
        ids=ids if keep is None else ids[keep],
        source=str(path),
        meta={
            "kind": kind,
            "skipped": decoded.skipped,
            "workers": decoded.workers,
            "fingerprint": listing.fingerprint,
        },
    )


def _read(kind: str, path: str | os.PathLike[str], channels: int, image_size: int | None, skip_bad: bool) -> ImageSet:
    check_options(channels, image_size)
    resolved = Path(path).expanduser()
    if source_kind(resolved) != kind:
        raise DataError(f"{str(resolved)!r} is not a {kind} source")
    return decode_files(resolved, kind, channels=channels, image_size=image_size, skip_bad=skip_bad)
