"""Decode once, memory-map afterwards: the dataset cache behind :func:`load_dataset` and :func:`prepare`.

A cache entry is a directory ``<cache_dir>/<name>-<kind>-<source key>-<fingerprint key>/`` holding
``images.npy`` (uint8, memory-mapped on load), ``labels.npy``, ``ids.npy`` (numpy unicode), optionally
``predefined.npy`` and ``manifest.json`` (which also keeps the task kind: a multi-label ``labels.npy`` is N×L). A
MedMNIST ``.npz`` is streamed into ``images.npy`` one block of bounded bytes at a time
(:func:`~medmnist_lit.data.arrays.read_npz`), so building the entry of a 16 GB file holds one block. Its name
changes with the source's fingerprint (:mod:`medmnist_lit.data.fingerprint`; folder: relative names, sizes and
``mtime_ns`` of the images; zip/npz: file size and central directory, which holds every member's CRC-32), the
conversion options and :data:`FORMAT_VERSION`, so any change to the source re-decodes. While the mtimes of a folder
source's directories are unchanged, a cached load takes the image names from the entry instead of listing the folders,
and only ``stat``-s the files (same fingerprint, less work).
An entry is built in a temporary directory inside ``cache_dir``, the manifest is written last and the
directory is renamed into place, so an interrupted build never leaves an entry that a later run trusts.
The build holds a lock inside its directory (:func:`medmnist_lit.utils.processes.claim`) while it lives, so the next
load removes the directories of killed builds at once and never touches a build that is still running.

Import weight matters (``medmnist-lit prepare`` on cached data must finish in well under 1.5 s): numpy and
the standard library at module level only; Pillow is imported when decoding, scikit-learn for the demo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.data.arrays import read_digits, read_npz
from medmnist_lit.data.fingerprint import folder_state, source_fingerprint, unchanged_folder_fingerprint, zip_digest
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.layout import DataError, check_options, source_kind
from medmnist_lit.data.medmnist_source import is_medmnist, locate
from medmnist_lit.data.serving import dataset_key, served, serving_any
from medmnist_lit.data.sources import decode_files
from medmnist_lit.data.tasks import TaskKind
from medmnist_lit.utils.processes import UNLOCKED_STALE_SECONDS, abandoned, claim, release

logger = logging.getLogger(__name__)

#: Bump when the cache layout or decoding changes; older entries are then ignored. 2: the manifest's ``task_kind``
#: (multi-label ``labels.npy`` shaped N×L).
FORMAT_VERSION = 2
#: Environment variable overriding the default cache directory.
CACHE_ENV = "MEDMNIST_LIT_CACHE"
#: Temporary build directories without a lock (older versions) are removed once this old; locked ones at once
#: when their owner is gone.
STALE_SECONDS = UNLOCKED_STALE_SECONDS
_LEFTOVERS = (".tmp-", ".trash-")  # name prefixes of build directories and of directories being deleted


def default_cache_dir() -> Path:
    """``$MEDMNIST_LIT_CACHE``, else the platform's user cache dir (``~/.cache/medmnist-lit`` on Linux)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("medmnist-lit"))


# ------------------------------------------------------------------------------------------- entries
def _source_prefix(path: Path, kind: str, channels: int, image_size: int | None) -> str:
    """Entry-name prefix shared by every version of one source with one set of options."""
    key = hashlib.blake2b(json.dumps([kind, str(path), channels, image_size]).encode(), digest_size=5).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", path.stem)[:40] or "data"
    return f"{slug}-{kind}-{key}-"


def _entry_name(prefix: str, fp: str) -> str:
    return prefix + hashlib.blake2b(f"{FORMAT_VERSION}\0{fp}".encode(), digest_size=8).hexdigest()


def _read_manifest(entry: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format_version") == FORMAT_VERSION else None


def _load_entry(
    entry: Path,
    fp: str,
    skip_bad: bool,
    from_cache: bool = True,
    manifest: dict[str, Any] | None = None,
    ids: np.ndarray | None = None,
) -> ImageSet | None:
    """Open a finished entry (images memory-mapped); ``None`` if it is missing, stale or damaged."""
    manifest = manifest or _read_manifest(entry)
    if manifest is None or manifest.get("fingerprint") != fp:
        return None
    try:
        images = np.load(entry / "images.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy")
        ids = np.load(entry / "ids.npy") if ids is None else ids
        predefined = np.load(entry / "predefined.npy") if manifest.get("predefined") else None
        if list(images.shape) != manifest["shape"] or len(labels) != len(images) or len(ids) != len(images):
            return None
        skipped, kind, class_names = manifest["skipped"], manifest["kind"], tuple(manifest["class_names"])
        task_kind = TaskKind.parse(manifest["task_kind"]) if manifest.get("task_kind") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if skipped and not skip_bad:
        shown = "; ".join(f"{s['id']} ({s['error']})" for s in skipped[:5])
        raise DataError(
            f"{len(skipped)} images in {manifest['source']} could not be decoded (recorded in the cache at "
            f"{entry}): {shown}. Fix or remove them, or pass --data.skip_bad true to skip them."
        )
    meta = {"kind": kind, "cache_path": str(entry), "from_cache": from_cache, "skipped": skipped}
    return ImageSet(
        images=images,
        labels=labels,
        class_names=class_names,
        ids=ids,
        predefined=predefined,
        source=manifest["source"],
        meta=meta,
        task_kind=task_kind,
    )


def _load_unchanged_folder(entry: Path, path: Path, skip_bad: bool) -> ImageSet | None:
    """Open a folder source's entry if its folders' mtimes still hold (see :func:`unchanged_folder_fingerprint`)."""
    manifest = _read_manifest(entry)
    if manifest is None or not manifest.get("folder_state"):
        return None
    try:
        ids = np.load(entry / "ids.npy")
    except (OSError, ValueError):
        return None
    fp = unchanged_folder_fingerprint(path, manifest, ids)
    return _load_entry(entry, fp, skip_bad, manifest=manifest, ids=ids) if fp else None


def _discard(path: Path) -> None:
    """Remove a directory by first renaming it aside, so nobody can mistake a half-deleted one for an entry."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(root: Path, names: list[str]) -> None:
    """Remove trash, and the build directories of processes that are gone (killed, crashed, interrupted)."""
    for name in names:
        path = root / name
        if name.startswith(".trash-"):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".tmp-") and abandoned(path, STALE_SECONDS):
            logger.info("Removing %s, left behind by a build that did not finish", path)
            _discard(path)


def _tidy(root: Path, prefix: str, keep: str) -> None:
    """Drop superseded entries of the same source and options, and leftovers of killed builds."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    _remove_leftovers(root, [name for name in names if name.startswith(_LEFTOVERS)])
    for name in names:
        if name.startswith(prefix) and name != keep:
            _discard(root / name)


def _build(
    path: Path,
    kind: str,
    root: Path,
    prefix: str,
    *,
    channels: int,
    image_size: int | None,
    skip_bad: bool,
    workers: int | None,
) -> tuple[Path, str]:
    """Decode the source into a new entry; returns the entry and the fingerprint it was built from."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{prefix}", dir=root))
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache ($MEDMNIST_LIT_CACHE) from other users
    except OSError as exc:
        raise DataError(
            f"cannot create the cache directory {str(root)!r} ({exc}); set --data.cache_dir or ${CACHE_ENV}"
        ) from exc
    t0 = time.perf_counter()
    lock = claim(tmp)  # held until the build is in place or removed; freed by the kernel if we are killed
    try:
        state = None  # folder mtimes for unchanged_folder_fingerprint
        if kind == "npz":
            fp = zip_digest(path)  # taken before reading: a change made meanwhile re-decodes next time
            # streamed into images.npy one block at a time: the build holds one block, not the dataset
            data = read_npz(path, channels=channels, image_size=image_size, out_path=tmp / "images.npy")
        else:
            state = folder_state(path) if kind == "folder" else None
            data = decode_files(
                path,
                kind,
                channels=channels,
                image_size=image_size,
                skip_bad=skip_bad,
                workers=workers,
                out_path=tmp / "images.npy",
            )
            fp = data.meta["fingerprint"]
            if state is not None and folder_state(path) != state:
                state = None  # the folders changed while listing: the next load lists them again
        np.save(tmp / "labels.npy", data.labels)
        np.save(tmp / "ids.npy", data.ids)
        if data.predefined is not None:
            np.save(tmp / "predefined.npy", data.predefined)
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": str(path),
            "kind": kind,
            "class_names": list(data.class_names),
            "task_kind": None if data.task_kind is None else data.task_kind.value,
            "counts": data.counts(),
            "num_images": len(data),
            "shape": list(data.images.shape),
            "options": {"channels": channels, "image_size": image_size},
            "fingerprint": fp,
            "predefined": data.predefined is not None,
            "skipped": data.meta.get("skipped", []),
            "folder_state": state,
            "workers": data.meta.get("workers", 1),
            "seconds": round(time.perf_counter() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        del data  # release the memory map of images.npy before the directory is renamed
        # Written last: an entry directory without a valid manifest is never trusted.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        release(tmp, lock)  # the lock file must not travel into the entry
        lock = None
        entry = root / _entry_name(prefix, fp)
        _commit(tmp, entry, fp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # still locked: no other process's tidy races this removal
        raise
    finally:
        release(tmp, lock)
    _tidy(root, prefix, entry.name)
    return entry, fp


def _commit(tmp: Path, entry: Path, fp: str) -> None:
    """Rename the finished build into place; if another process got there first, keep theirs."""
    for _ in range(2):
        try:
            os.rename(tmp, entry)
            return
        except OSError:
            if not entry.exists():
                raise
            if _load_entry(entry, fp, skip_bad=True) is not None:
                logger.debug("Another process built %s first; discarding this build", entry)
                shutil.rmtree(tmp, ignore_errors=True)
                return
            _discard(entry)  # a damaged entry (files deleted by hand, disk full ...): replace it
    raise DataError(f"cannot move the decoded cache into place at {entry}")


# ------------------------------------------------------------------------------------------- public
def load_dataset(
    source: str | os.PathLike[str] | None = None,
    *,
    channels: int = 1,
    image_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> ImageSet:
    """Load a dataset, decoding it on first use into a cache that later runs memory-map.

    Args:
        source: A folder with one sub-folder per class (optionally inside one wrapping folder), a ``.zip``
            of one (read in place), a MedMNIST ``.npz``, or ``medmnist:NAME`` (a 2D MedMNIST dataset at
            ``image_size``, downloaded when missing: :mod:`~medmnist_lit.data.medmnist_source`). ``None`` loads the
            bundled 8×8 digits demo.
        channels: 1 (grayscale, ``Image.convert("L")``) or 3 (RGB).
        image_size: Resize every image to ``image_size×image_size`` (bilinear); ``None`` keeps the size,
            which must then be the same for all images. For ``medmnist:NAME``, which published size to read.
        cache_dir: Cache directory (default: :func:`default_cache_dir`).
        skip_bad: Skip unreadable images (logged, listed in ``meta["skipped"]``) instead of failing.
        workers: Decoding processes (default: one per CPU for large sets).

    Returns:
        The images (a read-only memory map for cached sources), labels, class names and ids; ``meta`` holds
        ``kind``, ``cache_path``, ``from_cache`` and ``skipped``. Inside :func:`~medmnist_lit.data.serving.serving`
        the dataset registered for these arguments, as it is.

    Raises:
        DataError: The source is missing, of an unknown type, or malformed (the message says which file).
    """
    check_options(channels, image_size)
    if serving_any():  # a Ray task's dataset, from the object store
        ready = served(dataset_key(source, channels, image_size, skip_bad))
        if ready is not None:
            return ready
    if source is None:
        return read_digits(channels=channels, image_size=image_size)
    if is_medmnist(source):  # located (downloaded when missing), then cached like any .npz
        named = locate(str(source), image_size)
        return named.label(
            load_dataset(
                named.download(), channels=channels, image_size=named.size, cache_dir=cache_dir, skip_bad=skip_bad
            )
        )
    path = Path(source).expanduser()
    kind = source_kind(path)
    path = path.resolve()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    prefix = _source_prefix(path, kind, channels, image_size)
    t0 = time.perf_counter()
    # Only fingerprint when some entry of this source exists: on a first run the listing computes it anyway.
    names = os.listdir(root) if root.is_dir() else []
    candidates = sorted(n for n in names if n.startswith(prefix))
    leftovers = [n for n in names if n.startswith(_LEFTOVERS)]
    if leftovers:  # rare: a killed build; removed now, even when the data itself comes from the cache
        _remove_leftovers(root, leftovers)
    data = None
    if kind == "folder":  # normally one candidate: superseded entries are removed after each build
        for name in candidates:
            data = _load_unchanged_folder(root / name, path, skip_bad)
            if data is not None:
                break
    if data is None and candidates:
        fp = source_fingerprint(path, kind)
        data = _load_entry(root / _entry_name(prefix, fp), fp, skip_bad)
    if data is not None:
        logger.debug("Loaded %d cached images of %s in %.3f s", len(data), path, time.perf_counter() - t0)
        return data
    logger.info("Decoding %s into the cache (first use only)", path)
    entry, fp = _build(
        path, kind, root, prefix, channels=channels, image_size=image_size, skip_bad=skip_bad, workers=workers
    )
    data = _load_entry(entry, fp, skip_bad, from_cache=False)
    if data is None:  # pragma: no cover - only if the entry is deleted between build and load
        raise DataError(f"the cache entry {entry} vanished right after it was built; try again")
    logger.info("Decoded %d images of %s in %.2f s; cached at %s", len(data), path, time.perf_counter() - t0, entry)
    return data


@dataclass(frozen=True)
class PrepareResult:
    """What :func:`prepare` did, for ``medmnist-lit prepare`` to print.

    Attributes:
        source: The source path (or the demo's description).
        kind: ``"folder"``, ``"zip"``, ``"npz"`` or ``"digits"``.
        counts: Images per class, in class order.
        num_images: Total images.
        image_shape: Shape of one image: ``(H, W)`` or ``(H, W, 3)``.
        cache_path: The cache entry (``None`` for the demo, which is not cached).
        from_cache: Whether the images came from an existing cache entry.
        seconds: Wall time of the load.
        skipped: Unreadable images skipped (``skip_bad``).
    """

    source: str
    kind: str
    counts: dict[str, int]
    num_images: int
    image_shape: tuple[int, ...]
    cache_path: Path | None
    from_cache: bool
    seconds: float
    skipped: int = 0

    def format(self) -> str:
        """A human-readable summary with the count per class."""
        shape = "×".join(str(d) for d in self.image_shape[:2])
        colour = "RGB" if len(self.image_shape) == 3 else "grayscale"
        lines = [
            f"{self.source} ({self.kind}): {self.num_images:,} images, {shape} {colour}, {len(self.counts)} classes"
        ]
        width = max(len("total"), *(len(name) for name in self.counts))
        digits = len(f"{self.num_images:,}")
        lines += [f"  {name:<{width}}  {count:>{digits},}" for name, count in self.counts.items()]
        lines.append(f"  {'total':<{width}}  {self.num_images:>{digits},}")
        if self.skipped:
            lines.append(f"  skipped {self.skipped:,} unreadable image(s) (see the cache manifest)")
        how = "loaded from the cache" if self.from_cache else "decoded" if self.cache_path else "loaded"
        where = f": {self.cache_path}" if self.cache_path else " (not cached)"
        lines.append(f"{how.capitalize()} in {self.seconds:.2f} s{where}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def prepare(
    source: str | os.PathLike[str] | None,
    *,
    channels: int = 1,
    image_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    workers: int | None = None,
) -> PrepareResult:
    """Decode ``source`` into the cache now (or confirm it is cached) and summarise it; see :func:`load_dataset`."""
    t0 = time.perf_counter()
    data = load_dataset(
        source, channels=channels, image_size=image_size, cache_dir=cache_dir, skip_bad=skip_bad, workers=workers
    )
    seconds = time.perf_counter() - t0
    cache_path = data.meta.get("cache_path")
    return PrepareResult(
        source=data.source,
        kind=str(data.meta.get("kind", "")),
        counts=data.counts(),
        num_images=len(data),
        image_shape=tuple(data.images.shape[1:]),
        cache_path=Path(cache_path) if cache_path else None,
        from_cache=bool(data.meta.get("from_cache", False)),
        seconds=seconds,
        skipped=len(data.meta.get("skipped", [])),
    )
