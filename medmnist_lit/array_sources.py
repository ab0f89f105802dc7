"""Sources that already hold pixel arrays: MedMNIST ``.npz`` files and scikit-learn's digits demo.

Neither needs decoding or caching of decoded files: the arrays are converted to the requested ``channels`` and
``image_size`` with Pillow's own arithmetic (:func:`convert_array`), matching what decoding a folder gives.
Pillow and scikit-learn are imported only when used.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from medmnist_lit.imageset import PREDEFINED_CODES, ImageSet
from medmnist_lit.layout import DataError, check_options

logger = logging.getLogger(__name__)

#: Keys a MedMNIST ``.npz`` must hold.
NPZ_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------- conversions
def to_luma(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 ``...×3`` → grayscale with Pillow's exact ``convert("L")`` arithmetic (ITU-R 601-2 luma)."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def convert_array(images: np.ndarray, channels: int, image_size: int | None) -> np.ndarray:
    """Convert uint8 ``N×H×W`` / ``N×H×W×3`` images to ``channels`` and optionally resize them (Pillow)."""
    from PIL import Image

    if channels == 1 and images.ndim == 4:
        images = to_luma(images)
    elif channels == 3 and images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        mode = "L" if images.ndim == 3 else "RGB"
        out = np.empty((len(images), image_size, image_size, *images.shape[3:]), np.uint8)
        for i, image in enumerate(images):
            resized = Image.fromarray(image, mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
            out[i] = np.asarray(resized)
        images = out
    return np.ascontiguousarray(images)


# --------------------------------------------------------------------------------------------- npz
def _npz_array(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except ValueError as exc:  # allow_pickle=False refuses object arrays with a ValueError
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(
                f"key {key!r} of {str(path)!r} holds a Python object array, which is not loaded "
                "(allow_pickle=False, for safety); re-save it as a plain uint8/int array"
            ) from exc
        raise DataError(f"cannot read key {key!r} of {str(path)!r}: {exc}") from exc


def _npz_split(npz: np.lib.npyio.NpzFile, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _npz_array(npz, path, f"{split}_images"), _npz_array(npz, path, f"{split}_labels")
    where = f"in {str(path)!r}"
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise DataError(f"key '{split}_images' {where} has shape {images.shape}; expected N×H×W or N×H×W×3")
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu" or (images.size and (images.min() < 0 or images.max() > 255)):
            raise DataError(
                f"key '{split}_images' {where} is {images.dtype}; expected uint8 pixels in 0..255 "
                "(scale and cast the array before saving)"
            )
        images = images.astype(np.uint8)
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DataError(
            f"key '{split}_labels' {where} has shape {labels.shape}: a multi-label task (one column per label), "
            "which this single-label classifier does not support; use a single-label MedMNIST set"
        )
    labels = labels[:, 0] if labels.ndim == 2 else labels
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise DataError(
            f"key '{split}_labels' {where} is {labels.dtype} {labels.shape}; expected non-negative integer class "
            "indices shaped N or N×1"
        )
    if len(labels) != len(images):
        raise DataError(f"'{split}_labels' has {len(labels)} entries but '{split}_images' has {len(images)} {where}")
    return images, labels.astype(np.int64)


def read_npz(path: str | os.PathLike[str], *, channels: int = 1, image_size: int | None = None) -> ImageSet:
    """Read a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``) with its official split.

    The splits are concatenated (train, val, test) and :attr:`ImageSet.predefined` records each sample's
    split; ids are ``"train/000123"``; class names are ``"0"..."k-1"``. Loaded with ``allow_pickle=False``.
    """
    check_options(channels, image_size)
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {str(path)!r} as a .npz file: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{str(path)!r} holds a single array, not a .npz archive of named arrays")
    with npz:
        keys = [f"{split}_{part}" for split in NPZ_SPLITS for part in ("images", "labels")]
        missing = [key for key in keys if key not in npz.files]
        if missing:
            raise DataError(
                f"{str(path)!r} lacks key(s) {', '.join(missing)}; a MedMNIST .npz holds {', '.join(keys)} "
                f"(found: {', '.join(sorted(npz.files)) or 'nothing'})"
            )
        splits = [_npz_split(npz, path, split) for split in NPZ_SPLITS]
    shapes = {split: images.shape[1:] for split, (images, _) in zip(NPZ_SPLITS, splits, strict=True)}
    if len(set(shapes.values())) > 1:
        raise DataError(f"the splits of {str(path)!r} have different image shapes {shapes}")
    images = np.concatenate([images for images, _ in splits])
    labels = np.concatenate([labels for _, labels in splits])
    if not len(images):
        raise DataError(f"{str(path)!r} holds no images: the dataset is empty")
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise DataError(f"{str(path)!r} has only one class (label 0); a classifier needs at least two")
    ids = [
        f"{split}/{i:06d}"
        for split, (split_images, _) in zip(NPZ_SPLITS, splits, strict=True)
        for i in range(len(split_images))
    ]
    predefined = np.repeat(
        np.array([PREDEFINED_CODES[s] for s in NPZ_SPLITS], np.int64), [len(labels) for _, labels in splits]
    )
    return ImageSet(
        images=convert_array(images, channels, image_size),
        labels=labels,
        class_names=tuple(str(i) for i in range(num_classes)),
        ids=np.array(ids),
        predefined=predefined,
        source=str(path),
        meta={"kind": "npz"},
    )


# -------------------------------------------------------------------------------------------- demo
def read_digits(*, channels: int = 1, image_size: int | None = None) -> ImageSet:
    """The bundled demo: scikit-learn's 8×8 digits (1,797 images, 10 classes), scaled from 0..16 to 0..255."""
    check_options(channels, image_size)
    from sklearn.datasets import load_digits  # heavy import, kept out of module import time

    logger.info(
        "No data source given: using scikit-learn's 8×8 digits demo. For real data pass --data.source PATH "
        "(a Medical MNIST folder or zip, or a MedMNIST .npz) or run `medmnist-lit download`."
    )
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    return ImageSet(
        images=convert_array(images, channels, image_size),
        labels=digits.target.astype(np.int64),
        class_names=tuple(str(i) for i in range(10)),
        ids=np.array([f"digits/{i:04d}" for i in range(len(images))]),
        source="sklearn.datasets.load_digits (demo)",
        meta={"kind": "digits"},
    )
