"""Source fingerprints: cheap digests that change whenever a source's images are added, removed or modified.

A folder's fingerprint covers the class root's place below the source, each class folder's image names with
their sizes and ``mtime_ns``, and any sub-folder or stray image that makes the layout invalid; ``stat`` is
its cost (~0.1 s for Medical MNIST's 59k files). A zip's (or ``.npz``'s) covers the file size and the
central directory, which holds every member's name, sizes and CRC-32.

:func:`unchanged_folder_fingerprint` is the cached-entry check for folders: a directory's mtime changes
whenever an entry is added, removed or renamed in it, so while the mtimes recorded by :func:`folder_state`
hold, the image names stored in a cache entry are still the folder's and only ``stat`` is needed.

Standard library and numpy only (``medmnist-lit prepare`` on cached data must start fast).
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.data.layout import DataError, DirNode, find_class_root, unreadable
from medmnist_lit.data.zipdir import ZipEnd, read_end

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- folders
def class_dir_digest(path: str, names: list[str], subdirs: Sequence[str] = ()) -> bytes:
    """Digest one class folder: its image names, their sizes and ``mtime_ns``, and any sub-folder names.

    ``stat`` is the cost of a folder fingerprint (~1.6 µs per file even from C on a small VM, so ~0.1 s for
    Medical MNIST); a relative ``stat`` against a directory fd at least skips re-resolving the folder path.
    """
    try:
        if os.stat in os.supports_dir_fd:
            dir_fd = os.open(path, os.O_RDONLY)
            try:
                stats = [os.stat(name, dir_fd=dir_fd) for name in names]
            finally:
                os.close(dir_fd)
        else:  # pragma: no cover - Windows
            stats = [os.stat(os.path.join(path, name)) for name in names]
    except OSError as exc:  # a dangling or looping symlink, a file removed meanwhile: name the file
        culprit = os.path.join(path, exc.filename) if isinstance(exc.filename, str) else path
        raise DataError(unreadable(culprit, exc)) from exc
    h = hashlib.blake2b("\0".join(names).encode(), digest_size=16)
    h.update(array("q", [st.st_size for st in stats]).tobytes())
    h.update(array("q", [st.st_mtime_ns for st in stats]).tobytes())
    if subdirs:  # only in invalid layouts; folded in so that the fingerprint changes when one appears
        h.update(("/" + "\0".join(subdirs)).encode())
    return h.digest()


def scan_class_dir(path: str) -> bytes:
    """List one class folder and digest it (what :func:`~medmnist_lit.data.sources.list_folder` digests)."""
    node = DirNode(path)
    return class_dir_digest(path, node.images(), sorted(node.subdirs()))


def folder_digest(
    class_root: str, top: Path, classes: list[str], digests: list[bytes], stray: Sequence[str] = ()
) -> str:
    """Combine per-class digests into the folder's fingerprint."""
    h = hashlib.blake2b(b"folder\0" + os.path.relpath(class_root, top).encode(), digest_size=16)
    for name, digest in zip(classes, digests, strict=True):
        h.update(b"\0" + name.encode() + b"\0" + digest)
    if stray:  # images beside the class folders: invalid, but must change the fingerprint
        h.update(("/" + "\0".join(stray)).encode())
    return h.hexdigest()


def _class_root(path: Path) -> DirNode:
    root = find_class_root(DirNode(str(path)))
    assert isinstance(root, DirNode)
    return root


# ---------------------------------------------------------------------------------------------- zip
def zip_digest(path: Path) -> str:
    """Hash a zip's size and central directory (every member's name, sizes and CRC-32) without parsing it."""
    return zip_fingerprint(path)[0]


def zip_fingerprint(path: Path) -> tuple[str, ZipEnd]:
    """:func:`zip_digest`, and the bytes it read (:class:`~medmnist_lit.data.zipdir.ZipEnd`) for listing the zip.

    Reads only the end of the file, so it is cheap even for large archives; falls back to hashing the whole
    file when the end-of-central-directory records cannot be followed (e.g. data prepended to the archive).
    The central directory onwards is kept in the returned ``ZipEnd``, so the listing does not read it again.
    """
    with open(path, "rb") as f:
        end = read_end(f)
        size = end.size
        h = hashlib.blake2b(f"zip\0{size}\0".encode(), digest_size=16)
        tail = end.tail[-(22 + 65535) :]  # the window this digest has always searched (zipfile's is a byte longer)
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or pos + 22 > len(tail):
            raise DataError(
                f"{str(path)!r} is not a valid {path.suffix or 'zip'} archive (no zip end-of-central-directory "
                "record; truncated download?)"
            )
        cd_size, cd_end = struct.unpack_from("<L", tail, pos + 12)[0], size - len(tail) + pos
        if cd_size == 0xFFFFFFFF and pos >= 20 and tail[pos - 20 : pos - 16] == b"PK\x06\x07":  # zip64
            (z64,) = struct.unpack_from("<Q", tail, pos - 12)
            f.seek(z64)
            record = f.read(56)
            if record[:4] == b"PK\x06\x06":
                cd_size, cd_end = struct.unpack_from("<Q", record, 40)[0], z64
        start = cd_end - cd_size
        f.seek(max(start, 0))
        if start < 0 or (cd_size and f.read(4) != b"PK\x01\x02"):
            logger.debug("Could not locate the central directory of %s; hashing the whole file", path)
            start = 0
        f.seek(start)
        if start == 0:  # possibly the whole archive: hashed in pieces, not kept
            while chunk := f.read(1 << 22):
                h.update(chunk)
            return h.hexdigest(), end
        rest = f.read()
    h.update(rest)
    return h.hexdigest(), ZipEnd(size, end.tail, start, rest)


# ---------------------------------------------------------------------------------------- any source
def source_fingerprint(path: Path, kind: str) -> str:
    """The fingerprint of a source, equal to :attr:`~medmnist_lit.data.sources.Listing.fingerprint` of a valid one.

    Never raises for a bad folder layout: any layout change makes the fingerprint differ instead.
    """
    if kind != "folder":
        return zip_digest(path)  # an .npz is a zip too
    root = _class_root(path)
    classes = sorted(root.subdirs())
    digests = [scan_class_dir(os.path.join(root.path, name)) for name in classes]
    return folder_digest(root.path, path, classes, digests, root.images())


def folder_state(path: Path) -> dict[str, Any]:
    """The class root and the ``mtime_ns`` of every folder that defines the layout (source, wrappers, classes).

    Stored in the cache manifest for :func:`unchanged_folder_fingerprint`; take it before listing the source and
    keep it only if a second snapshot after the listing is equal (nothing changed meanwhile).
    """
    root = _class_root(path)
    rel = os.path.relpath(root.path, path)
    chain = [str(path)]
    for part in [] if rel == os.curdir else rel.split(os.sep):
        chain.append(os.path.join(chain[-1], part))
    dirs = chain + [os.path.join(root.path, name) for name in sorted(root.subdirs())]
    return {"class_root": rel, "dirs": {os.path.relpath(d, path): os.stat(d).st_mtime_ns for d in dirs}}


def unchanged_folder_fingerprint(path: Path, manifest: dict[str, Any], ids: np.ndarray) -> str | None:
    """The folder's fingerprint computed from a cache entry's image names, or ``None`` if they may be stale.

    ``None`` when the manifest has no :func:`folder_state`, any recorded folder mtime changed, or images were
    skipped (then the cached ids miss some names). Otherwise equal to :func:`source_fingerprint` at less cost:
    the class folders are not listed, only their files ``stat``-ed, so in-place edits still show.
    """
    state = manifest.get("folder_state")
    if not state or manifest.get("skipped"):
        return None
    try:
        if any(os.stat(os.path.join(path, rel)).st_mtime_ns != mtime for rel, mtime in state["dirs"].items()):
            return None
        class_root = os.path.normpath(os.path.join(path, state["class_root"]))
        classes, start, digests = manifest["class_names"], 0, []
        for name in classes:  # ids are "<class>/<file name>", in class order
            count = manifest["counts"][name]
            names = [sample_id[len(name) + 1 :] for sample_id in ids[start : start + count].tolist()]
            digests.append(class_dir_digest(os.path.join(class_root, name), names))
            start += count
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return folder_digest(class_root, path, classes, digests)
