"""Bytes to pixels: decoding a listed source, in one process or in parallel into a shared file.

:func:`decode_listing` decodes a :class:`~medmnist_lit.data.sources.Listing` into one uint8 array with public Pillow
API (``Image.open``, ``convert``, ``resize``, ``np.asarray``), or libjpeg-turbo for plain JPEGs (below), whose
pixels are Pillow's bit for bit. Worker processes write straight into the ``.npy`` file (made by
``np.lib.format.open_memmap``), so pixels never travel back through pipes; each worker only returns the indices
of bad or mis-sized images. Processes are forked when that is safe (Linux, one thread, torch not imported:
start-up takes milliseconds) and spawned otherwise.

Conversion is explicit and follows Pillow: ``channels`` 1 is ``Image.convert("L")`` (ITU-R 601-2 luma), 3 is
``Image.convert("RGB")``; ``image_size`` resizes to a square with ``Image.Resampling.BILINEAR`` (Pillow's
default ``reducing_gap=None``) after the conversion. Modes Pillow would convert lossily or not at all (16-bit,
alpha, float, multi-frame files, EXIF-rotated photos) go through :func:`to_mode`: exact, or a bad image with
its reason. Plain baseline JPEGs take a libjpeg-turbo fast path (``simplejpeg``;
:func:`~medmnist_lit.data.convert.decode_plain_jpeg`), about 3× faster on 64×64 files; :data:`FAST_JPEG` turns it off.

Keep this module light to import: numpy and the standard library (Pillow is imported when decoding).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medmnist_lit.data.convert import (
    UnsupportedImage,
    decode_plain_jpeg,
    exif_orientation,
    jpeg_codec,
    plain_jpeg,
    to_mode,
)
from medmnist_lit.data.layout import LINK_REMEDY, DataError, link_problem

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

    from medmnist_lit.data.listing import EntryReader, Listing

logger = logging.getLogger(__name__)

#: Below this many images per worker, extra processes cost more than they save (``workers=None``): a forked
#: worker starts in milliseconds, a spawned one re-imports numpy, Pillow and the main module (~0.5 s or more).
MIN_IMAGES_PER_WORKER = {"fork": 1000, "spawn": 20000}
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


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fork_is_safe() -> bool:
    """Whether forking this process is cheap and safe: Linux, one Python thread, no torch/TF/JAX state."""
    return (
        sys.platform == "linux"
        and threading.active_count() == 1
        and not any(name in sys.modules for name in ("torch", "tensorflow", "jax"))
    )


def resolve_workers(workers: int | None, n: int, method: str = "fork") -> int:
    """Number of processes for ``n`` images: ``None`` picks one per CPU, fewer for small sets."""
    if workers is None:
        workers = min(available_cpus(), n // MIN_IMAGES_PER_WORKER.get(method, MIN_IMAGES_PER_WORKER["spawn"]))
    return max(1, min(int(workers), n))


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

    Plain baseline JPEGs are decoded by libjpeg-turbo (:func:`~medmnist_lit.data.convert.decode_plain_jpeg`);
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
                if codec is not None and plain_jpeg(data):
                    done = decode_plain_jpeg(data, flat[at : at + row], mode, size, resize, codec, max_pixels)
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


def _init_worker(
    parent_pid: int,
    reader: EntryReader,
    out_path: str,
    mode: str,
    size: tuple[int, int],
    resize: bool,
    fast_jpeg: bool,
) -> None:
    import signal

    from medmnist_lit.utils.processes import die_with_parent

    die_with_parent(parent_pid)  # no orphan keeps decoding if the parent is killed, even by SIGKILL
    # Ctrl-C reaches the whole process group: the parent turns it into one message and stops us. SIGINT was
    # blocked across the fork (see _decode_parallel) so that none lands before it is ignored here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    out = np.load(out_path, mmap_mode="r+")
    # Rows are decoded into a small private buffer and written with os.pwrite: a first write to each page of
    # the shared map costs a page fault, ~5 µs per 64×64 image here, a third of a fast-path decode.
    fd = os.open(out_path, os.O_WRONLY) if hasattr(os, "pwrite") else None  # not on Windows: write to the map
    buffer = np.empty((max(1, min(len(out), WRITE_BLOCK_BYTES // max(1, out[0].nbytes))), *out.shape[1:]), np.uint8)
    _WORKER.update(reader=reader, out=out, fd=fd, buffer=buffer, options=(mode, size, resize, fast_jpeg))


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
    mode: str,
    size: tuple[int, int],
    resize: bool,
    workers: int,
    method: str,
    fast_jpeg: bool,
) -> _Report | None:
    """Decode with a process pool; ``None`` when no pool can be started."""
    import multiprocessing as mp  # imported here: a cached load never needs it
    import signal
    from concurrent.futures import ProcessPoolExecutor

    # A few chunks per worker balance the load on a noisy machine; contiguous chunks keep writes local.
    bounds = np.linspace(0, n, min(n, workers * 4) + 1).astype(int)
    bad: list[tuple[int, str]] = []
    mismatched: list[tuple[int, tuple[int, int]]] = []
    pool = None
    # Workers start with SIGINT blocked (a mask survives fork and exec) until they ignore it in _init_worker.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context(method),
            initializer=_init_worker,
            initargs=(os.getpid(), reader, str(out_path), mode, size, resize, fast_jpeg),
        )
        with warnings.catch_warnings():  # Python 3.12+ warns about forking with numpy's idle BLAS threads
            warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)", category=DeprecationWarning)
            futures: list[Future[_Report]] = [
                pool.submit(_run_chunk, a, b) for a, b in itertools.pairwise(bounds.tolist()) if b > a
            ]
    except (OSError, ImportError, NotImplementedError) as exc:  # no semaphores/fork here (sandboxes, some CI)
        logger.warning("Cannot start %d worker processes (%s); decoding in this process", workers, exc)
        if pool is not None:
            _stop_pool(pool)
        return None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C pressed meanwhile is delivered here
    try:
        for future in futures:
            chunk_bad, chunk_mismatched = future.result()
            bad += chunk_bad
            mismatched += chunk_mismatched
        pool.shutdown()
    except BaseException:  # Ctrl-C, or a worker that died: stop the others now, mid-image (the output is discarded)
        _stop_pool(pool)
        raise
    return bad, mismatched


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel queued chunks and end the workers at once, instead of letting them finish their chunks."""
    import contextlib

    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+ (also shuts the pool down)
    if terminate is not None:
        with contextlib.suppress(Exception):  # never mask the Ctrl-C or error that got us here
            terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:  # older Pythons: the pool's own table of its processes (stable since 3.2)
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(5.0)


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
        report = _decode_parallel(listing.reader, out_path, n, mode, size, resize, workers, method, fast)
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
