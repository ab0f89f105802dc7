"""Listing a folder or zip source: class names, sample ids, labels, fingerprint, and a reader of each file's bytes.

:func:`list_folder` and :func:`list_zip` return a :class:`Listing`; its :class:`EntryReader` fetches one file's
encoded bytes and is picklable, so decoder processes (:mod:`medmnist_lit.data.decode`) can use it. A zip's
central directory is read once (:mod:`medmnist_lit.data.zipdir`, shared with its fingerprint), and its members at
their offsets with ``os.pread``, checked against their CRC (about 10× faster per member than ``zipfile`` here;
``benchmarks/decode.py``); other compression methods go through ``zipfile``.

This module must stay light to import (no torch, torchvision, lightning or sklearn at module level).
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Protocol

import numpy as np

from medmnist_lit.data.fingerprint import class_dir_digest, folder_digest, zip_fingerprint
from medmnist_lit.data.layout import DataError, DirNode, ZipNode, resolve_class_root, zip_tree
from medmnist_lit.data.zipdir import Members, read_members

__all__ = ["EntryReader", "FolderEntries", "Listing", "ZipEntries", "list_folder", "list_zip"]


# ------------------------------------------------------------------------------------- entry readers
class EntryReader(Protocol):
    """Fetches the encoded bytes of entry ``i``; must be picklable so worker processes can use it."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> bytes:
        """Return the raw file bytes of entry ``i``."""
        ...


class FolderEntries:
    """Reads files of a folder source by index (one ``open``/``read`` per file, no buffering layer)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> bytes:
        """Return the bytes of file ``i``."""
        fd = os.open(self.paths[i], os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            # One 64 KiB read covers these images; a huge fixed buffer would cost a large malloc per file.
            data = os.read(fd, 65536)
            if len(data) == 65536:
                parts = [data]
                while chunk := os.read(fd, 1 << 20):
                    parts.append(chunk)
                data = b"".join(parts)
        finally:
            os.close(fd)
        return data


class ZipEntries:
    """Reads members of a zip in place with ``os.pread`` from the central-directory offsets.

    Exists for speed, against :mod:`zipfile`'s per-member overhead: ``ZipFile.read`` costs ~28 µs per
    64×64 JPEG member here against ~2.5 µs with this reader, next to ~15 µs to decode the image, so zip
    sources would decode far slower than folders. One ``pread`` fetches the local header with the data after
    it (a second one only for a header longer than :data:`HEADER_SLACK`). It also avoids re-parsing the whole
    central directory in every worker. Stored and deflated members are read directly and CRC-checked, other
    compression methods go through :mod:`zipfile`.
    """

    #: Bytes read beyond the 30-byte local header for its name and extra field, in the same call as the data.
    HEADER_SLACK = 512

    def __init__(self, path: str, members: Members, rows: Sequence[int]) -> None:
        """Read ``members``' entries ``rows``, in that order (entry ``i`` is member ``rows[i]``)."""
        self.path = path
        picked = np.asarray(rows, dtype=np.int64)
        self.names = [members.names[r] for r in rows] if len(rows) < 2 else list(itemgetter(*rows)(members.names))
        # One flat array of 5 ints per entry: built in a millisecond (a list of tuples takes ~30 ms for 59k in
        # the parent, before any worker starts) and still indexed for ~0.1 µs per image.
        columns = (members.offsets, members.compressed, members.sizes, members.methods, members.crcs)
        self.table = array("q", np.stack([column[picked] for column in columns], axis=1).tobytes())
        self._fd: int | None = None
        self._zip: zipfile.ZipFile | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "names": self.names, "table": self.table, "_fd": None, "_zip": None}

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def read(self, i: int) -> bytes:
        """Return the uncompressed bytes of member ``i`` (raises on a corrupt member)."""
        k = 5 * i
        offset, csize, size, method, crc = self.table[k : k + 5]
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.path)
            return self._zip.read(self.names[i])
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        chunk = _pread(self._fd, 30 + self.HEADER_SLACK + csize, offset)
        if len(chunk) < 30 or chunk[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile("bad local file header")
        name_len, extra_len = struct.unpack_from("<HH", chunk, 26)
        start = 30 + name_len + extra_len
        raw = chunk[start : start + csize]
        if len(raw) != csize and start > 30 + self.HEADER_SLACK:  # a long local header: read the data alone
            raw = _pread(self._fd, csize, offset + start)
        if len(raw) != csize:
            raise zipfile.BadZipFile(f"member truncated ({len(raw)} of {csize} bytes)")
        data = zlib.decompress(raw, -15) if method == zipfile.ZIP_DEFLATED else raw
        if len(data) != size or zlib.crc32(data) != crc:
            raise zipfile.BadZipFile("CRC or size mismatch (corrupt member)")
        return data


def _pread(fd: int, size: int, offset: int) -> bytes:
    """``os.pread`` (offset-free, so forked workers can share the descriptor), or seek+read on Windows."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows: each worker opens its own descriptor
    return os.read(fd, size)  # pragma: no cover


# ------------------------------------------------------------------------------------------- listings
@dataclass
class Listing:
    """What a folder or zip source holds, before decoding.

    Attributes:
        kind: ``"folder"`` or ``"zip"``.
        path: The source path.
        class_names: Sorted class names.
        ids: Sample ids (``"<class>/<file name>"``), in class then file-name order.
        labels: Class index per sample (int64).
        reader: Fetches the bytes of each sample.
        fingerprint: Hex digest that changes whenever the source's images change.
    """

    kind: str
    path: Path
    class_names: tuple[str, ...]
    ids: list[str]
    labels: np.ndarray
    reader: EntryReader
    fingerprint: str

    def __len__(self) -> int:
        return len(self.ids)


def list_folder(path: Path) -> Listing:
    """List a class-folder tree (``<root>/<class>/<image>``, optionally inside one wrapping folder)."""
    root, classes = resolve_class_root(DirNode(str(path)), str(path))
    assert isinstance(root, DirNode)
    ids: list[str] = []
    paths: list[str] = []
    counts = []
    digests = []
    for name in classes:
        images = root.subdirs()[name].images()
        folder = os.path.join(root.path, name)
        digests.append(class_dir_digest(folder, images))
        ids.extend(f"{name}/{image}" for image in images)
        paths.extend(os.path.join(folder, image) for image in images)
        counts.append(len(images))
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    fingerprint = folder_digest(root.path, path, classes, digests)
    return Listing("folder", path, tuple(classes), ids, labels, FolderEntries(paths), fingerprint)


def list_zip(path: Path) -> Listing:
    """List a zip holding a class-folder tree, in place; entries outside the layout are an error.

    The central directory is read once, for the fingerprint and for the members (:func:`read_members`, or
    :mod:`zipfile` where that declines), and the folder tree is checked folder by folder (:func:`zip_tree`).
    """
    try:
        fingerprint, end = zip_fingerprint(path)
        members, unreadable = read_members(path, end), None
    except (DataError, OSError) as exc:  # reported after zipfile's own verdict on the file, which comes first
        members, unreadable = None, exc
    if members is None:
        try:
            with zipfile.ZipFile(path) as zf:
                members = Members.from_infos(zf.infolist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"cannot read {str(path)!r} as a zip file: {exc}") from exc
    source = str(path)
    root, classes = resolve_class_root(zip_tree(members.names, (members.flags & 1).tolist(), source), source)
    assert isinstance(root, ZipNode)
    ids: list[str] = []
    rows: list[int] = []
    counts = []
    for name in classes:
        node = root.dirs[name]
        images = node.images()
        ids.extend(map(f"{name}/".__add__, images))
        rows.extend(map(node.files.__getitem__, images))
        counts.append(len(images))
    if unreadable is not None:
        raise unreadable
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    return Listing("zip", path, tuple(classes), ids, labels, ZipEntries(source, members, rows), fingerprint)
