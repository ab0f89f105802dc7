"""Sources that already hold pixel arrays: MedMNIST ``.npz`` files and scikit-learn's digits demo.

Neither needs decoding or caching of decoded files: the arrays are converted to the requested ``channels`` and
``image_size`` with Pillow's own arithmetic (:func:`convert_array`), matching what decoding a folder gives.
Pillow and scikit-learn are imported only when used.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from medmnist_lit.data.imageset import PREDEFINED_CODES, ImageSet
from medmnist_lit.data.layout import DataError, check_options
from medmnist_lit.data.npz_stream import NpyHeader, NpzStream
from medmnist_lit.data.tasks import Task, TaskKind
from medmnist_lit.utils.chunks import CHUNK_BYTES, rows_per_chunk

logger = logging.getLogger(__name__)

#: Keys a MedMNIST ``.npz`` must hold.
NPZ_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------- conversions
def to_luma(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 ``...×3`` → grayscale with Pillow's exact ``convert("L")`` arithmetic (ITU-R 601-2 luma)."""
    r, g, b = (rgb[..., c].astype(np.uint32) for c in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def convert_array(images: np.ndarray, channels: int, image_size: int | None) -> np.ndarray:
    """Convert uint8 ``N×H×W`` / ``N×H×W×3`` images to ``channels`` and optionally resize them (Pillow).

    Raises:
        DataError: ``images`` is not uint8 (other dtypes go through :func:`to_uint8` first, never a wrapping cast).
    """
    if images.dtype != np.uint8:
        raise DataError(f"convert_array needs uint8 images, got {images.dtype}; convert them with to_uint8 first")
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


def to_uint8(images: np.ndarray, what: str) -> np.ndarray:
    """Pixels of any integer dtype → uint8, exactly, or :class:`DataError` naming ``what`` and the dtype.

    uint8 is kept; uint16 is scaled like a 16-bit PNG, ``round(v / 257)`` (65535 → 255, the same for every
    array, never clipped); other integer dtypes are read only when every value already lies in 0..255 (an int64
    array of 8-bit values is common); floats have no defined range and are refused.
    """
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind == "u" and images.dtype.itemsize == 2:
        return ((images.astype(np.uint32) + 128) // 257).astype(np.uint8)  # 257 is odd: no ties to round
    if images.dtype.kind not in "iu":
        raise DataError(
            f"{what} is {images.dtype}; expected uint8 (or uint16) pixels: {images.dtype} pixels have no defined "
            "0..255 range, so scale the array to 0..255 and cast it to uint8 before saving"
        )
    if images.size and (images.min() < 0 or images.max() > 255):
        raise DataError(
            f"{what} is {images.dtype} with values {images.min()}..{images.max()}, outside 0..255; expected uint8 "
            "pixels (or uint16, scaled to 8 bits): scale the array to 0..255 and cast it to uint8 before saving"
        )
    return images.astype(np.uint8)


# --------------------------------------------------------------------------------------------- npz
def _image_header(npz: NpzStream, split: str) -> tuple[NpyHeader, bool]:
    """The header of ``{split}_images``, checked before any pixel is read; whether a trailing axis of 1 is dropped."""
    head = npz.header(f"{split}_images")
    where = f"in {str(npz.path)!r}"
    shape = head.shape
    squeeze = len(shape) == 4 and shape[-1] == 1
    if squeeze:
        shape = shape[:-1]
    if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] == 3)):
        raise DataError(f"key '{split}_images' {where} has shape {shape}; expected N×H×W or N×H×W×3")
    to_uint8(np.zeros(0, head.dtype), f"key '{split}_images' {where}")  # refuses float/bool dtypes up front
    return head, squeeze


def _npz_labels(npz: NpzStream, split: str, n_images: int) -> np.ndarray:
    """One split's labels: 1-D integral and non-negative (still in the file's dtype), or N×L for multi-label."""
    labels = npz.read(f"{split}_labels")
    where = f"in {str(npz.path)!r}"
    if labels.ndim == 2 and labels.shape[1] != 1 and labels.dtype.kind in "biuf":
        if len(labels) != n_images:
            raise DataError(f"'{split}_labels' has {len(labels)} entries but '{split}_images' has {n_images} {where}")
        names = tuple(str(i) for i in range(labels.shape[1]))
        return Task(TaskKind.MULTILABEL, names).check_labels(labels, f"key '{split}_labels' {where}")
    labels = labels[:, 0] if labels.ndim == 2 else labels
    if labels.ndim != 1 or labels.dtype.kind not in "biuf":
        raise DataError(
            f"key '{split}_labels' {where} is {labels.dtype} {labels.shape}; expected integer class indices "
            "0..K-1 shaped N or N×1 (or 0/1 labels shaped N×L for a multi-label task)"
        )
    if len(labels) != n_images:
        raise DataError(f"'{split}_labels' has {len(labels)} entries but '{split}_images' has {n_images} {where}")
    if labels.dtype.kind == "f":
        wrong = ~np.isfinite(labels)
        wrong[~wrong] = labels[~wrong] != np.floor(labels[~wrong])
        if wrong.any():
            count = _images(int(np.count_nonzero(wrong)))
            raise DataError(
                f"key '{split}_labels' {where} holds non-integer label {labels[wrong][0].item()!r} ({count} with "
                "non-integer labels); class labels must be whole numbers 0..K-1: fix the labels"
            )
    if labels.size and labels.min() < 0:
        negative = labels < 0
        raise DataError(
            f"key '{split}_labels' {where} holds negative label {_values(np.unique(labels[negative]).tolist())} "
            f"({_images(int(np.count_nonzero(negative)))}); class labels must be non-negative integers 0..K-1: "
            "fix the labels"
        )
    return labels


def _images(count: int) -> str:
    return f"{count:,} image" + ("" if count == 1 else "s")


def _values(values: list[float] | list[int], shown: int = 5) -> str:
    """``"-1"``, ``"-3, -1"``, ``"7, 8, 9, 10, 11 and 4 more"``: label values for a message."""
    text = ", ".join(str(int(v)) for v in values[:shown])
    return text + (f" and {len(values) - shown:,} more" if len(values) > shown else "")


def _span(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def check_label_values(path: Path, labels: dict[str, np.ndarray]) -> int:
    """The number of classes of integral, non-negative labels by key, which must be exactly 0..K-1.

    Only the distinct values are gathered (``np.unique``), so nothing is sized by a label's value: a stray label
    of 10**9 costs what a label of 2 does.

    Raises:
        DataError: Some class between 0 and the largest label has no image; the message names the keys and the
            values that leave classes empty, their image counts, and the empty classes.
    """
    counts: dict[int, int] = {}
    present: dict[str, set[int]] = {}
    for key, values in labels.items():
        distinct, number = np.unique(values, return_counts=True)
        ints = [int(v) for v in distinct.tolist()]  # Python ints: exact for uint64 and integral floats
        present[key] = set(ints)
        for value, count in zip(ints, number.tolist(), strict=True):
            counts[value] = counts.get(value, 0) + count
    ordered = sorted(counts)
    k = len(ordered)
    if not k or ordered[-1] == k - 1:
        return k
    empty = [(a + 1, b - 1) for a, b in itertools.pairwise([-1, *ordered]) if b > a + 1]
    gaps = ", ".join(_span(lo, hi) for lo, hi in empty[:3]) + (", ..." if len(empty) > 3 else "")
    n_empty = ordered[-1] + 1 - k
    would_be = f"class {gaps} would be empty" if n_empty == 1 else f"{n_empty:,} classes would be empty ({gaps})"
    run = next(i for i, value in enumerate(ordered) if value != i)  # labels 0..run-1 are consecutive
    if run == 0:
        shift = f" (subtract {ordered[0]} from every label)" if ordered[-1] - ordered[0] == k - 1 else ""
        raise DataError(
            f"{str(path)!r}: the labels are {_values(ordered)} with no label 0: {would_be}; "
            f"fix the labels so they run 0..{k - 1}{shift}"
        )
    stray = ordered[run:]
    keys = [repr(key) for key, values in present.items() if not values.isdisjoint(stray)]
    held = ", ".join(f"{value} ({_images(counts[value])})" for value in stray[:5])
    held += f" and {len(stray) - 5:,} more values" if len(stray) > 5 else ""
    raise DataError(
        f"{str(path)!r}: {' and '.join(keys)} hold{'s' if len(keys) == 1 else ''} {held} but the other labels are "
        f"{_span(0, run - 1)}: {would_be}; fix the labels (classes must be numbered 0..K-1 with none empty)"
    )


def read_npz(
    path: str | os.PathLike[str],
    *,
    channels: int = 1,
    image_size: int | None = None,
    out_path: str | os.PathLike[str] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> ImageSet:
    """Read a MedMNIST ``.npz`` (``{train,val,test}_{images,labels}``) with its official split.

    The splits are concatenated (train, val, test) and :attr:`ImageSet.predefined` records each sample's
    split; ids are ``"train/000123"``; class names are ``"0"..."k-1"``. Labels shaped ``N×L`` (``L > 1``) make a
    multi-label task (0/1 values, label names ``"0"..."L-1"``). Every header and label is checked before any pixel
    is read; the images are then streamed ``chunk_bytes`` at a time (:class:`NpzStream`: no pickles, no
    whole-file copy) and converted block by block into the result.

    Args:
        path: The ``.npz`` file.
        channels: 1 (grayscale) or 3 (RGB).
        image_size: Resize every image to ``image_size×image_size``; ``None`` keeps the size.
        out_path: Write the converted images to this ``.npy`` (memory-mapped: memory use stays one block, whatever
            the file's size) instead of into memory.
        chunk_bytes: Bytes of images read and converted at a time.
    """
    check_options(channels, image_size)
    path = Path(path)
    with NpzStream(path) as npz:
        keys = [f"{split}_{part}" for split in NPZ_SPLITS for part in ("images", "labels")]
        missing = [key for key in keys if key not in npz.files]
        if missing:
            raise DataError(
                f"{str(path)!r} lacks key(s) {', '.join(missing)}; a MedMNIST .npz holds {', '.join(keys)} "
                f"(found: {', '.join(sorted(npz.files)) or 'nothing'})"
            )
        heads, splits = {}, {}
        for split in NPZ_SPLITS:
            heads[split] = _image_header(npz, split)
            splits[split] = _npz_labels(npz, split, heads[split][0].shape[0])
        shapes = {split: head.shape[1 : len(head.shape) - squeeze] for split, (head, squeeze) in heads.items()}
        if len(set(shapes.values())) > 1:
            raise DataError(f"the splits of {str(path)!r} have different image shapes {shapes}")
        counts = [len(labels) for labels in splits.values()]
        if not sum(counts):
            raise DataError(f"{str(path)!r} holds no images: the dataset is empty")
        labels, class_names, task_kind = _gather_labels(path, splits)
        shape = shapes["train"]
        side = (shape[0], shape[1]) if image_size is None else (image_size, image_size)
        out_shape = (sum(counts), *side, *((3,) if channels == 3 else ()))
        out_row = math.prod(out_shape[1:])
        blocks = (
            block
            for head, squeeze in heads.values()
            for block in _converted_blocks(npz, head, squeeze, out_row, channels, image_size, chunk_bytes)
        )
        if out_path is None:
            images = np.empty(out_shape, np.uint8)
            offset = 0
            for block in blocks:
                images[offset : offset + len(block)] = block
                offset += len(block)
        else:
            _write_npy(Path(out_path), out_shape, blocks)
            images = np.load(out_path, mmap_mode="r")
    ids = [f"{split}/{i:06d}" for split, count in zip(NPZ_SPLITS, counts, strict=True) for i in range(count)]
    predefined = np.repeat(np.array([PREDEFINED_CODES[s] for s in NPZ_SPLITS], np.int64), counts)
    return ImageSet(
        images=images,
        labels=labels,
        class_names=class_names,
        ids=np.array(ids),
        predefined=predefined,
        source=str(path),
        meta={"kind": "npz"},
        task_kind=task_kind,
    )


def _gather_labels(path: Path, splits: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...], TaskKind | None]:
    """The concatenated labels, the class (label) names and the task kind (``None``: single-label)."""
    widths = {split: (labels.shape[1] if labels.ndim == 2 else 0) for split, labels in splits.items()}
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"'{s}_labels' {labels.shape}" for s, labels in splits.items())
        raise DataError(
            f"the splits of {str(path)!r} disagree on the task: {shown}; a multi-label file has N×L labels in every "
            "split, a single-label one N or N×1"
        )
    if widths["train"]:  # multi-label: checked 0/1 by Task.check_labels
        width = widths["train"]
        return np.concatenate(list(splits.values())), tuple(str(i) for i in range(width)), TaskKind.MULTILABEL
    # Before anything is sized by the labels: class names, counts.
    num_classes = check_label_values(path, {f"{s}_labels": labels for s, labels in splits.items()})
    if num_classes < 2:
        raise DataError(f"{str(path)!r} has only one class (label 0); a classifier needs at least two")
    labels = np.concatenate([labels.astype(np.int64) for labels in splits.values()])  # all < num_classes: exact
    return labels, tuple(str(i) for i in range(num_classes)), None


def _converted_blocks(
    npz: NpzStream,
    head: NpyHeader,
    squeeze: bool,
    out_row: int,
    channels: int,
    image_size: int | None,
    chunk_bytes: int,
) -> Iterator[np.ndarray]:
    """Member ``head.key`` block by block, each converted to uint8 and the options (``out_row`` bytes per image)."""
    what = f"key '{head.key}' in {str(npz.path)!r}"
    rows = rows_per_chunk(max(head.row_bytes, out_row), chunk_bytes)  # the larger of input and output bounds a block
    for _, block in npz.chunks(head.key, rows * head.row_bytes):
        yield convert_array(to_uint8(block[..., 0] if squeeze else block, what), channels, image_size)


def _write_npy(path: Path, shape: tuple[int, ...], blocks: Iterable[np.ndarray]) -> None:
    """A uint8 ``.npy`` of ``shape`` written block by block with plain writes.

    Writes rather than a writable memory map: written pages then stay in the page cache, outside the process's
    resident set, instead of accumulating in it as dirty mapped pages until the map is flushed.
    """
    written = 0
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for block in blocks:
            fh.write(np.ascontiguousarray(block).data)
            written += len(block)
    if written != shape[0]:  # pragma: no cover - the headers were checked against the labels before
        raise DataError(f"wrote {written:,} images to {path} where {shape[0]:,} were expected")


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
