"""Bytes to pixels: decoding a listed source, in one process or in parallel into a shared file.

:func:`decode_listing` decodes a :class:`~medmnist_lit.data.sources.Listing` into one uint8 array with public Pillow
API (``Image.open``, ``convert``, ``resize``, ``np.asarray``), or libjpeg-turbo for plain JPEGs (below), whose
pixels are Pillow's bit for bit. Worker processes write straight into the ``.npy`` file (made by
``np.lib.format.open_memmap``), so pixels never travel back through pipes; each worker only returns the indices
of bad or mis-sized images. The processes themselves (how many, fork or spawn, Ctrl-C) live in
:mod:`medmnist_lit.data.workers`.

Conversion is explicit and follows Pillow: ``channels`` 1 is ``Image.convert("L")`` (ITU-R 601-2 luma), 3 is
``Image.convert("RGB")``; ``image_size`` resizes to a square with ``Image.Resampling.BILINEAR`` (Pillow's
default ``reducing_gap=None``) after the conversion. Modes Pillow would convert lossily or not at all (16-bit,
alpha, float, multi-frame files, EXIF-rotated photos) go through :func:`to_mode`: exact, or a bad image with
its reason. Plain baseline JPEGs take a libjpeg-turbo fast path (``simplejpeg``; :mod:`medmnist_lit.data.fast_jpeg`),
about 3× faster on 64×64 files; :data:`FAST_JPEG` turns it off.

Keep this module light to import: numpy and the standard library (Pillow is imported when decoding).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medmnist_lit.data.convert import UnsupportedImage, exif_orientation, to_mode
from medmnist_lit.data.fast_jpeg import JpegHeaders, decode_plain_jpeg, jpeg_codec
from medmnist_lit.data.layout import LINK_REMEDY, DataError, link_problem
from medmnist_lit.data.workers import fork_is_safe, resolve_workers, run_chunks

if TYPE_CHECKING:
    from medmnist_lit.data.listing import EntryReader, Listing

logger = logging.getLogger(__name__)

#: Bad files listed in an error message.
SHOW_BAD = 5
#: Decode plain baseline JPEGs with libjpeg-turbo (``simplejpeg``), same pixels as Pillow, when a call passes no
#: ``fast_jpeg``; ``False`` sends every file through Pillow (the reference of the tests and the benchmark).
FAST_JPEG = True
#: Bytes a worker decodes into its private buffer before writing them to the output file (os.pwrite).
WRITE_BLOCK_BYTES = 1 << 20

# (index, "ErrorType: message") per unreadable image, and (index, (width, height)) per mis-sized one.
_Report = tuple[list[tuple[int, str]], list[tuple[int, tuple[int, int]]]]


@dataclass
class Decoded:
    """Result of :func:`decode_listing`.

    Attributes:
        images: uint8 ``N×H×W`` or ``N×H×W×3`` (a read-only memory map when decoded to a file).
        keep: Indices of the listing's entries that were decoded (``None``: all of them).
        skipped: ``{"id", "error"}`` per unreadable image skipped with ``skip_bad``.
        workers: Processes used.
    """

    images: np.ndarray
    keep: np.ndarray | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    workers: int = 1


def decode_range(
    reader: EntryReader,
    out: np.ndarray,
    start: int,
    stop: int,
    mode: str,
    size: tuple[int, int],
    resize: bool,
    fast_jpeg: bool | None = None,
    offset: int = 0,
) -> _Report:
    """Decode entries ``start:stop`` into ``out`` (the hot loop: keep per-image Python work minimal).

    Plain baseline JPEGs are decoded by libjpeg-turbo (:func:`~medmnist_lit.data.fast_jpeg.decode_plain_jpeg`);
    the rest by Pillow, where JPEGs already in ``mode`` need three attribute checks and every other image goes
    through :func:`to_mode`, which converts it exactly or refuses it with a reason. Pillow's decompression-bomb
    warnings are raised as errors, so an oversized image is one bad file, not a warning per worker.

    Args:
        reader: Source of encoded bytes.
        out: Destination: entry ``i`` goes to row ``i - offset``.
        start: First entry.
        stop: One past the last entry.
        mode: Pillow mode to convert to (``"L"`` or ``"RGB"``).
        size: Expected ``(width, height)``.
        resize: Resize to ``size`` (bilinear) instead of reporting other sizes.
        fast_jpeg: Use the libjpeg-turbo fast path where it applies (``None``: :data:`FAST_JPEG`).
        offset: Entry written to the first row of ``out`` (0: ``out`` is indexed like the listing).

    Returns:
        Unreadable entries with their error, and mis-sized entries with their size.
    """
    from PIL import Image

    codec = jpeg_codec() if (FAST_JPEG if fast_jpeg is None else fast_jpeg) else None
    jpeg_header = JpegHeaders(codec[1]) if codec is not None else None
    max_pixels = Image.MAX_IMAGE_PIXELS  # read per call: a caller may have changed Pillow's guard
    bad: list[tuple[int, str]] = []
    mismatched: list[tuple[int, tuple[int, int]]] = []
    open_image, bytes_io, read, bilinear = Image.open, io.BytesIO, reader.read, Image.Resampling.BILINEAR
    # Rows are copied as bytes into a flat view of ``out``: ``Image.tobytes()`` straight into the row is about
    # 10% cheaper per image than ``out[i] = np.asarray(img)`` (which calls tobytes() and then copies again).
    flat, row = out.data.cast("B"), out[0].nbytes if len(out) else 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i in range(start, stop):
            at = (i - offset) * row
            try:
                data = read(i)
                if codec is not None and jpeg_header is not None and (header := jpeg_header(data)) is not None:
                    done = decode_plain_jpeg(
                        data, header, flat[at : at + row], mode, size, resize, codec[0], max_pixels
                    )
                    if done is True:
                        continue
                    if done:  # another size, not resized
                        mismatched.append((i, done))
                        continue
                img: Any = open_image(bytes_io(data))  # ImageFile, then possibly a converted Image
                if img.mode != mode or img.format != "JPEG" or "exif" in img.info:
                    img = to_mode(img, mode)
                if img.size != size:
                    if not resize:
                        mismatched.append((i, img.size))
                        continue
                    img = img.resize(size, bilinear)
                flat[at : at + row] = img.tobytes()
            except Exception as exc:  # Pillow raises many types for corrupt data: all mean a bad file
                bad.append((i, _describe(exc)))
    return bad, mismatched


def _describe(exc: Exception) -> str:
    """Short error text; Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" loses the repr."""
    text = str(exc)
    if isinstance(exc, UnsupportedImage):
        return text
    if isinstance(exc, OSError) and isinstance(exc.filename, str) and (problem := link_problem(exc.filename)):
        return f"{problem}; {LINK_REMEDY}"  # the link broke after the listing
    if type(exc).__name__ == "UnidentifiedImageError":
        text = "not a recognised image format"
    elif type(exc).__name__.startswith("DecompressionBomb"):
        text = f"{text.rstrip('.')} (Pillow's guard against decompression bombs, PIL.Image.MAX_IMAGE_PIXELS)"
    return f"{type(exc).__name__}: {text}"


_WORKER: dict[str, Any] = {}


def _init_worker(reader: EntryReader, out_path: str, options: tuple[str, tuple[int, int], bool, bool]) -> None:
    out = np.load(out_path, mmap_mode="r+")
    # Rows are decoded into a small private buffer and written with os.pwrite: a first write to each page of
    # the shared map costs a page fault, ~5 µs per 64×64 image here, a third of a fast-path decode.
    fd = os.open(out_path, os.O_WRONLY) if hasattr(os, "pwrite") else None  # not on Windows: write to the map
    buffer = np.empty((max(1, min(len(out), WRITE_BLOCK_BYTES // max(1, out[0].nbytes))), *out.shape[1:]), np.uint8)
    _WORKER.update(reader=reader, out=out, fd=fd, buffer=buffer, options=options)


def _run_chunk(start: int, stop: int) -> _Report:
    w = _WORKER
    reader, out, fd, buffer = w["reader"], w["out"], w["fd"], w["buffer"]
    mode, size, resize, fast_jpeg = w["options"]
    if fd is None:
        return decode_range(reader, out, start, stop, mode, size, resize, fast_jpeg)
    bad: list[tuple[int, str]] = []
    mismatched: list[tuple[int, tuple[int, int]]] = []
    view, row = buffer.data.cast("B"), buffer[0].nbytes
    for a in range(start, stop, len(buffer)):
        b = min(a + len(buffer), stop)
        block_bad, block_mismatched = decode_range(reader, buffer, a, b, mode, size, resize, fast_jpeg, a)
        bad += block_bad  # rows of bad or mis-sized images hold stale bytes: dropped, or the decode fails
        mismatched += block_mismatched
        done, end, pos = 0, (b - a) * row, out.offset + a * row
        while done < end:  # a regular file takes it in one call; loop for the rule's sake
            done += os.pwrite(fd, view[done:end], pos + done)
    return bad, mismatched


def _decode_parallel(
    reader: EntryReader,
    out_path: Path,
    n: int,
    options: tuple[str, tuple[int, int], bool, bool],
    workers: int,
    method: str,
) -> _Report | None:
    """Decode with a process pool (:func:`~medmnist_lit.data.workers.run_chunks`); ``None`` when none starts."""
    # A few chunks per worker balance the load on a noisy machine; contiguous chunks keep writes local.
    bounds = np.linspace(0, n, min(n, workers * 4) + 1).astype(int).tolist()
    chunks = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    reports = run_chunks(
        _run_chunk,
        chunks,
        workers=workers,
        method=method,
        initializer=_init_worker,
        initargs=(reader, str(out_path), options),
    )
    if reports is None:
        return None
    bad = [item for chunk_bad, _ in reports for item in chunk_bad]
    return bad, [item for _, chunk_mismatched in reports for item in chunk_mismatched]


def _probe_size(reader: EntryReader) -> tuple[int, tuple[int, int]]:
    """Index and ``(width, height)`` (after EXIF rotation) of the first readable image; ``(-1, (1, 1))`` if none."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # reported by the decode pass
        for i in range(len(reader)):
            try:
                with Image.open(io.BytesIO(reader.read(i))) as img:
                    w, h = img.size
                    return i, ((h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h))
            except Exception:  # a bad image is reported by the decode pass
                continue
    return -1, (1, 1)


def decode_listing(
    listing: Listing,
    *,
    channels: int = 1,
    image_size: int | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
    out_path: Path | None = None,
    start_method: str | None = None,
    fast_jpeg: bool | None = None,
) -> Decoded:
    """Decode every image of ``listing``, into memory or into the ``.npy`` file ``out_path``.

    Args:
        listing: What to decode.
        channels: 1 (``convert("L")``) or 3 (``convert("RGB")``).
        image_size: Resize every image to ``image_size×image_size`` (bilinear); ``None`` requires one size.
        skip_bad: Skip unreadable images (listed in :attr:`Decoded.skipped`) instead of raising.
        workers: Processes (``None``: one per CPU for large sets). Parallel decoding needs ``out_path``.
        out_path: Write a ``.npy`` file here (memory-mapped, shared with the workers).
        start_method: Force a multiprocessing start method (default: fork when :func:`fork_is_safe`).
        fast_jpeg: Decode plain baseline JPEGs with libjpeg-turbo (``None``: :data:`FAST_JPEG`); ``False``
            sends every file through Pillow. The pixels are the same either way.

    Raises:
        DataError: Unreadable images (unless ``skip_bad``), or images of different sizes without ``image_size``.
    """
    n = len(listing)
    mode = "L" if channels == 1 else "RGB"
    ref, size = _probe_size(listing.reader)
    if image_size is not None:
        size = (image_size, image_size)
    shape = (n, size[1], size[0]) if channels == 1 else (n, size[1], size[0], 3)
    method = start_method or ("fork" if fork_is_safe() else "spawn")
    workers = resolve_workers(workers, n, method) if out_path is not None else 1
    resize = image_size is not None
    # Decided here, once, and handed to the workers: spawned ones would not see a FAST_JPEG changed at run time.
    fast = (FAST_JPEG if fast_jpeg is None else fast_jpeg) and jpeg_codec() is not None
    t0 = time.perf_counter()
    if out_path is None:
        out = np.empty(shape, np.uint8)
    else:
        out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=shape)
    report = None
    if workers > 1 and out_path is not None:
        report = _decode_parallel(listing.reader, out_path, n, (mode, size, resize, fast), workers, method)
    if report is None:
        workers = 1
        report = decode_range(listing.reader, out, 0, n, mode, size, resize, fast)
    bad, mismatched = report
    bad.sort()
    seconds = time.perf_counter() - t0
    logger.debug("Decoded %d images with %d process(es) in %.2f s (fast JPEG path: %s)", n, workers, seconds, fast)
    _check(listing, bad, mismatched, ref, size, skip_bad)
    skipped = [{"id": listing.ids[i], "error": error} for i, error in bad]
    keep = None
    if bad:
        logger.warning(
            "Skipped %d unreadable image(s) in %s (first: %s); they are listed in the dataset's meta['skipped']",
            len(bad),
            listing.path,
            skipped[0]["id"],
        )
        keep = np.setdiff1d(np.arange(n), [i for i, _ in bad])
        out = _compact(out, keep, out_path)
    elif out_path is not None:
        del out
        out = np.load(out_path, mmap_mode="r")
    return Decoded(out, keep, skipped, workers)


def _check(
    listing: Listing,
    bad: list[tuple[int, str]],
    mismatched: list[tuple[int, tuple[int, int]]],
    ref: int,
    size: tuple[int, int],
    skip_bad: bool,
) -> None:
    """Raise the :class:`DataError` that bad or mis-sized images call for (``bad`` sorted by index)."""
    n, source = len(listing), str(listing.path)
    if bad and (not skip_bad or len(bad) == n):
        shown = "; ".join(f"{listing.ids[i]} ({error})" for i, error in bad[:SHOW_BAD])
        more = f" (first {SHOW_BAD} shown)" if len(bad) > SHOW_BAD else ""
        if len(bad) == n:
            raise DataError(f"none of the {n} images in {source} could be decoded: {shown}{more}")
        raise DataError(
            f"{len(bad)} of {n} images in {source} could not be decoded: {shown}{more}. "
            "Fix or remove them, or pass --data.skip_bad true to skip them."
        )
    if mismatched:
        mismatched.sort()
        i, (w, h) = mismatched[0]
        raise DataError(
            f"images in {source} have different sizes: {listing.ids[ref]} is {size[0]}×{size[1]} but "
            f"{listing.ids[i]} is {w}×{h} ({len(mismatched)} of {n} images differ from {size[0]}×{size[1]}); "
            "pass --data.image_size N to resize every image to N×N"
        )


def _compact(out: np.ndarray, keep: np.ndarray, out_path: Path | None) -> np.ndarray:
    """Drop the rows of skipped images (rare path: copies the array once)."""
    if out_path is None:
        return out[keep]
    tmp = out_path.with_name(out_path.stem + ".compact.npy")
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), *out.shape[1:]))
    for j in range(0, len(keep), 8192):
        dst[j : j + 8192] = out[keep[j : j + 8192]]
    dst.flush()
    del dst, out
    os.replace(tmp, out_path)
    return np.load(out_path, mmap_mode="r")
