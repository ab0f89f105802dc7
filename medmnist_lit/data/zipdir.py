"""A zip's central directory read with ``struct`` and numpy: what :mod:`zipfile` lists, about 10× faster.

:func:`read_members` returns each member's name, local-header offset, sizes, CRC-32, compression method and flags
exactly as ``zipfile.ZipFile(path).infolist()`` would, as lists and arrays (:class:`Members`). It exists for the
first decode of large zips: for Medical MNIST's 58,960 members ``zipfile`` takes 0.3–0.4 s in the parent process
before any decoder starts (a ``ZipInfo`` per member, cp437 name decoding, extra fields parsed one by one), this
~35 ms (``benchmarks/decode.py --listing``). It follows zipfile's own reading (``_EndRecData``,
``_RealGetContents``, ``ZipInfo._decodeExtra``) and returns ``None``, so that the caller uses zipfile, for
anything unusual: no end record where zipfile looks, data before the archive, several disks, a record or extra
field that does not add up, encrypted members, Info-ZIP Unicode Path fields (renamed by Python ≥ 3.12),
NUL or ``os.sep`` in names, undecodable names, versions zipfile refuses.

Standard library and numpy only.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["END_WINDOW", "Members", "ZipEnd", "read_end", "read_members"]

#: Bytes at the end of a file where zipfile looks for the end record (an archive comment is at most 65,535 bytes).
END_WINDOW = (1 << 16) + 22
_END = struct.Struct("<4s4H2LH")  # end of central directory: signature, disks, counts, size, offset, comment length
_LOCATOR = struct.Struct("<4sLQL")  # zip64 end-of-central-directory locator
_END64 = struct.Struct("<4sQ2H2L4Q")  # zip64 end of central directory
_SENTINEL = 0xFFFFFFFF  # a 32-bit field whose value is in the zip64 extra field
_MAX_EXTRACT_VERSION = getattr(zipfile, "MAX_EXTRACT_VERSION", 63)
#: The fixed 46 bytes of a central-directory record (zipfile's ``structCentralDir``).
_RECORD = np.dtype(
    [
        ("signature", "<u4"),
        ("create_version", "u1"),
        ("create_system", "u1"),
        ("extract_version", "u1"),
        ("reserved", "u1"),
        ("flags", "<u2"),
        ("method", "<u2"),
        ("time", "<u2"),
        ("date", "<u2"),
        ("crc", "<u4"),
        ("compressed", "<u4"),
        ("size", "<u4"),
        ("name_length", "<u2"),
        ("extra_length", "<u2"),
        ("comment_length", "<u2"),
        ("disk", "<u2"),
        ("internal", "<u2"),
        ("external", "<u4"),
        ("offset", "<u4"),
    ]
)
assert _RECORD.itemsize == 46


@dataclass(frozen=True)
class Members:
    """A zip's members in central-directory order, as ``ZipInfo`` spells them (int64 arrays, one value each).

    Attributes:
        names: ``ZipInfo.filename``.
        offsets: ``header_offset`` (of the local header).
        compressed: ``compress_size``.
        sizes: ``file_size``.
        crcs: ``CRC``.
        methods: ``compress_type``.
        flags: ``flag_bits``.
    """

    names: list[str]
    offsets: np.ndarray
    compressed: np.ndarray
    sizes: np.ndarray
    crcs: np.ndarray
    methods: np.ndarray
    flags: np.ndarray

    @classmethod
    def from_infos(cls, infos: Sequence[zipfile.ZipInfo]) -> Members:
        """The members of ``zipfile.ZipFile.infolist()``."""

        def column(attr: str) -> np.ndarray:
            return np.array([getattr(info, attr) for info in infos], dtype=np.int64)

        return cls(
            [info.filename for info in infos],
            column("header_offset"),
            column("compress_size"),
            column("file_size"),
            column("CRC"),
            column("compress_type"),
            column("flag_bits"),
        )


@dataclass(frozen=True)
class ZipEnd:
    """Bytes at the end of a zip, read once and shared by the fingerprint and the central-directory reader.

    Attributes:
        size: The file size.
        tail: The last ``min(size, END_WINDOW)`` bytes.
        start: Offset of ``rest`` in the file; -1 when ``rest`` is not kept.
        rest: The bytes from ``start`` to the end of the file (the central directory onwards).
    """

    size: int
    tail: bytes
    start: int = -1
    rest: bytes = b""

    def read(self, f: BinaryIO, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at the end of the file), from memory when they were read already."""
        if 0 <= self.start <= offset:
            return self.rest[offset - self.start : offset - self.start + length]
        tail_start = self.size - len(self.tail)
        if offset >= tail_start:
            return self.tail[offset - tail_start : offset - tail_start + length]
        f.seek(offset)
        return f.read(length)


def read_end(f: BinaryIO) -> ZipEnd:
    """Read the last :data:`END_WINDOW` bytes of an open file."""
    size = f.seek(0, os.SEEK_END)
    f.seek(max(size - END_WINDOW, 0))
    return ZipEnd(size, f.read())


def read_members(path: str | os.PathLike[str], end: ZipEnd | None = None) -> Members | None:
    """What ``zipfile.ZipFile(path).infolist()`` lists, or ``None`` where zipfile must read it (see the module).

    Args:
        path: The zip file.
        end: Its end as already read (:func:`read_end`, or the fingerprint's), so nothing is read twice.
    """
    with open(Path(path), "rb") as f:
        if end is None:
            end = read_end(f)
        located = _locate(f, end)
        if located is None:
            return None
        start, size, count = located
        directory = end.read(f, start, size)
    if len(directory) != size:
        return None
    return _parse(directory, count)


def _locate(f: BinaryIO, end: ZipEnd) -> tuple[int, int, int] | None:
    """Offset, size and entry count of the central directory, found as zipfile finds it."""
    tail = end.tail
    if end.size < _END.size:
        return None
    if tail[-_END.size : -_END.size + 4] == b"PK\x05\x06" and tail[-2:] == b"\0\0":  # no archive comment
        pos = len(tail) - _END.size
    else:  # zipfile takes the last signature in the window, even one inside a comment
        pos = tail.rfind(b"PK\x05\x06")
        if pos < 0 or pos + _END.size > len(tail):
            return None
    _, disk, disk_start, entries_here, entries, size, offset, _ = _END.unpack_from(tail, pos)
    location = end.size - len(tail) + pos
    zip64 = False
    locator = end.read(f, location - _LOCATOR.size, _LOCATOR.size) if location >= _LOCATOR.size else b""
    if len(locator) == _LOCATOR.size and locator[:4] == b"PK\x06\x07":
        _, locator_disk, _, disks = _LOCATOR.unpack(locator)
        if locator_disk != 0 or disks > 1 or location < _LOCATOR.size + _END64.size:
            return None  # zipfile raises: several disks, or no room for the zip64 record
        record = end.read(f, location - _LOCATOR.size - _END64.size, _END64.size)
        if record[:4] == b"PK\x06\x06":  # zipfile assumes it right before the locator, as it writes it
            _, _, _, _, disk, disk_start, entries_here, entries, size, offset = _END64.unpack(record)
            zip64 = True
    if disk or disk_start or entries_here != entries:
        return None  # a multi-disk archive
    if location - size - offset - (_LOCATOR.size + _END64.size if zip64 else 0) != 0:
        return None  # data before the archive: zipfile shifts every offset by its length
    return offset, size, entries


def _record_starts(directory: bytes, buf: np.ndarray, count: int) -> np.ndarray | None:
    """Start of each of the ``count`` records; ``None`` unless they tile the directory exactly, as zipfile walks it.

    Every record starts with the signature (bytes ``50 4B 01 02``): when its occurrences chain from the first
    byte to the last through the records' lengths, they are the records (a record's length is fixed by its own
    bytes, so a chain that starts at 0 is zipfile's walk). Otherwise (e.g. a name that holds the signature) the
    lengths are walked one record at a time.
    """
    if count == 0 or count * 46 > len(directory):
        return np.empty(0, np.int64) if count == len(directory) == 0 else None
    marks = buf[:-3]
    starts = np.flatnonzero((marks == 0x50) & (buf[1:-2] == 0x4B) & (buf[2:-1] == 1) & (buf[3:] == 2))
    if len(starts) == count and starts[0] == 0 and (_record_ends(buf, starts) == np.append(starts[1:], len(buf))).all():
        return starts
    starts = np.empty(count, np.int64)
    lengths = struct.Struct("<HHH").unpack_from
    pos, end = 0, len(directory)
    for i in range(count):
        if pos + 46 > end:
            return None
        starts[i] = pos
        name, extra, comment = lengths(directory, pos + 28)
        pos += 46 + name + extra + comment
    if pos != end or (buf[starts[:, None] + np.arange(4)] != (0x50, 0x4B, 1, 2)).any():
        return None
    return starts


def _record_ends(buf: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """One past the last byte of the records at ``starts`` (46 bytes, then name, extra field and comment)."""
    ends = starts + 46
    for at in (28, 30, 32):
        ends += buf[starts + at].astype(np.int64) | buf[starts + at + 1].astype(np.int64) << 8
    return ends


def _parse(directory: bytes, count: int) -> Members | None:
    """The members of a central directory that holds ``count`` records and nothing else."""
    buf = np.frombuffer(directory, np.uint8)
    starts = _record_starts(directory, buf, count)
    if starts is None:
        return None
    records = buf[starts[:, None] + np.arange(46)].view(_RECORD).ravel()
    flags = records["flags"].astype(np.int64)
    if (records["extract_version"] > _MAX_EXTRACT_VERSION).any() or (flags & 0x1).any():
        return None  # zipfile refuses the version; encrypted members are refused by the listing
    name_start = starts + 46
    extra_start = name_start + records["name_length"]
    names = _names(directory, name_start.tolist(), extra_start.tolist(), flags)
    if names is None:
        return None
    zip64 = _extra_fields(buf, extra_start, extra_start + records["extra_length"])
    if zip64 is None:
        return None
    offsets = records["offset"].astype(np.int64)
    compressed = records["compressed"].astype(np.int64)
    sizes = records["size"].astype(np.int64)
    wide = np.flatnonzero((zip64 >= 0) & ((offsets == _SENTINEL) | (compressed == _SENTINEL) | (sizes == _SENTINEL)))
    for i in wide.tolist():  # values too large for 32 bits: in the zip64 field, in zipfile's order
        length = int(buf[zip64[i] + 2]) | int(buf[zip64[i] + 3]) << 8
        data = directory[zip64[i] + 4 : zip64[i] + 4 + length]
        for column in (sizes, compressed, offsets):
            if column[i] == _SENTINEL:
                value = int.from_bytes(data[:8], "little")
                if len(data) < 8 or value >= 1 << 63:
                    return None  # zipfile: "Corrupt zip64 extra field"; or beyond an int64 column
                column[i] = value
                data = data[8:]
    return Members(
        names,
        offsets,
        compressed,
        sizes,
        records["crc"].astype(np.int64),
        records["method"].astype(np.int64),
        flags,
    )


def _names(directory: bytes, starts: list[int], stops: list[int], flags: np.ndarray) -> list[str] | None:
    """Decode the member names as zipfile does: UTF-8 when flag bit 11 is set, cp437 otherwise."""
    raw = [directory[a:b] for a, b in zip(starts, stops, strict=True)]
    joined = b"\0".join(raw)
    if joined.isascii() and joined.count(b"\0") == len(raw) - 1:  # the common case: one decode for all names
        names = joined.decode("ascii").split("\0")
    else:
        try:
            utf8 = (flags & 0x800).astype(bool).tolist()
            names = [name.decode("utf-8" if u else "cp437") for name, u in zip(raw, utf8, strict=True)]
        except UnicodeDecodeError:
            return None
        if any("\0" in name for name in names):
            return None  # zipfile cuts the name at the NUL
    for sep in (os.sep, os.altsep):  # zipfile turns these into "/" (Windows)
        if sep and sep != "/" and any(sep in name for name in names):
            return None
    return names


def _extra_fields(buf: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray | None:
    """Walk every member's extra fields at once: the offset of its zip64 field (-1: none), ``None`` when unusual.

    As ``ZipInfo._decodeExtra``: fields follow each other while 4 header bytes remain; one that overruns the
    block is corrupt (zipfile raises). An Info-ZIP Unicode Path field (0x7075) may rename the member on Python
    ≥ 3.12, and a second zip64 field would be applied again: both are left to zipfile.
    """
    zip64 = np.full(len(start), -1, np.int64)
    pos = start.astype(np.int64)
    while True:
        active = np.flatnonzero(pos + 4 <= stop)
        if not len(active):
            return zip64
        at = pos[active]
        kind = buf[at].astype(np.int64) | buf[at + 1].astype(np.int64) << 8
        length = buf[at + 2].astype(np.int64) | buf[at + 3].astype(np.int64) << 8
        if (at + 4 + length > stop[active]).any() or (kind == 0x7075).any():
            return None
        is_zip64 = active[kind == 1]
        if (zip64[is_zip64] >= 0).any():
            return None
        zip64[is_zip64] = at[kind == 1]
        pos[active] = at + 4 + length
