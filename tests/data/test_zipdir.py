"""The struct/numpy central-directory reader: exactly zipfile's members, or ``None`` for anything unusual."""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medmnist_lit.data.fingerprint import zip_digest, zip_fingerprint
from medmnist_lit.data.layout import DataError
from medmnist_lit.data.listing import list_zip
from medmnist_lit.data.zipdir import Members, read_members

FIELDS = ("offsets", "compressed", "sizes", "crcs", "methods", "flags")
UT_EXTRA = b"UT\x05\x00\x01" + struct.pack("<L", 1_700_000_000)  # an extended-timestamp field, as Info-ZIP writes


def zipfiles_members(path: Path) -> Members:
    with zipfile.ZipFile(path) as zf:
        return Members.from_infos(zf.infolist())


def assert_like_zipfile(path: Path) -> Members:
    """``read_members`` reads ``path`` itself and gives zipfile's names, offsets, sizes, CRCs, methods, flags."""
    ours, reference = read_members(path), zipfiles_members(path)
    assert ours is not None
    assert ours.names == reference.names
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(ours, name), getattr(reference, name), err_msg=name)
    _, end = zip_fingerprint(path)  # and from the bytes the fingerprint read
    shared = read_members(path, end)
    assert shared is not None and shared.names == reference.names
    return ours


def write(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED, **options: object) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression, **options) as zf:  # type: ignore[arg-type]
        for name, data in members.items():
            zf.writestr(name, data)
    return path


SAMPLE = {"A/": b"", "A/x.jpeg": b"x" * 300, "A/y.jpeg": bytes(range(256)) * 3, "B/z.png": b"", "top.txt": b"hi"}


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_members_equal_zipfiles(tmp_path: Path, compression: int) -> None:
    path = write(tmp_path / "a.zip", SAMPLE, compression)
    assert assert_like_zipfile(path).names == list(SAMPLE)


def test_comments_extra_fields_and_directories(tmp_path: Path) -> None:
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.comment = b"an archive comment"
        for i, name in enumerate(["d/", "d/e/", "d/e/f.jpeg", "g.jpeg"]):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 2, 3, 4, 6))
            info.comment = f"member {i}".encode()
            info.extra = UT_EXTRA * (i % 3)  # none, one, two fields
            zf.writestr(info, b"data" * i)
    assert assert_like_zipfile(path).names == ["d/", "d/e/", "d/e/f.jpeg", "g.jpeg"]


def test_names_with_the_central_directory_signature_are_walked(tmp_path: Path) -> None:
    path = write(tmp_path / "s.zip", {"PK\x01\x02.jpeg": b"a", "x/PK\x01\x02PK\x01\x02": b"b", "y": b"c"})
    assert_like_zipfile(path)


def test_zip64_with_more_than_65535_members(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(65_600):
            zf.writestr(f"{'AB'[i % 2]}/{i:05d}.png", b"")
    assert path.read_bytes().find(b"PK\x06\x06") > 0  # zipfile wrote the zip64 end records
    assert len(assert_like_zipfile(path).names) == 65_600


def test_forced_zip64_members(tmp_path: Path) -> None:
    path = tmp_path / "z64.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("A/a.jpeg", "B/b.jpeg"):
            with zf.open(name, "w", force_zip64=True) as f:
                f.write(name.encode() * 50)
    assert_like_zipfile(path)


def rewrite_directory(path: Path, out: Path, change: Callable[[bytearray, bytes], tuple[bytearray, bytes]]) -> Path:
    """Copy a zip written by zipfile with each central-directory record passed through ``change(fixed, rest)``."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir
    end = data.rindex(b"PK\x05\x06")
    records, pos = [], start
    while pos < end:
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        fixed, rest = change(bytearray(data[pos : pos + 46]), data[pos + 46 : pos + 46 + n + m + k])
        records.append(bytes(fixed) + rest)
        pos += 46 + n + m + k
    directory = b"".join(records)
    eocd = bytearray(data[end : end + 22])
    struct.pack_into("<LL", eocd, 12, len(directory), start)
    out.write_bytes(data[:start] + directory + bytes(eocd) + data[end + 22 :])
    return out


def test_zip64_extra_fields_in_the_central_directory(tmp_path: Path) -> None:
    """As zipfile writes members over 4 GiB: sizes and offset 0xFFFFFFFF, their values in a zip64 field."""

    def to_zip64(fixed: bytearray, rest: bytes) -> tuple[bytearray, bytes]:
        csize, size = struct.unpack_from("<LL", fixed, 20)
        (offset,) = struct.unpack_from("<L", fixed, 42)
        n, m = struct.unpack_from("<HH", fixed, 28)
        field = struct.pack("<HHQQQ", 1, 24, size, csize, offset)
        struct.pack_into("<LL", fixed, 20, 0xFFFFFFFF, 0xFFFFFFFF)
        struct.pack_into("<L", fixed, 42, 0xFFFFFFFF)
        struct.pack_into("<H", fixed, 30, m + len(field))
        return fixed, rest[: n + m] + field + rest[n + m :]

    source = write(tmp_path / "a.zip", SAMPLE)
    path = rewrite_directory(source, tmp_path / "b.zip", to_zip64)
    ours = assert_like_zipfile(path)
    np.testing.assert_array_equal(ours.offsets, zipfiles_members(source).offsets)


def test_non_ascii_names_with_and_without_the_utf8_flag(tmp_path: Path) -> None:
    source = write(tmp_path / "u.zip", {"Schädel/ß.jpeg": b"a", "CXR/x.jpeg": b"b", "Ωmega/é.png": b"c"})
    assert assert_like_zipfile(source).names[0] == "Schädel/ß.jpeg"

    def clear_utf8_flag(fixed: bytearray, rest: bytes) -> tuple[bytearray, bytes]:
        fixed[9] &= ~0x08  # flag bit 11: zipfile then decodes the name as cp437
        return fixed, rest

    cp437 = assert_like_zipfile(rewrite_directory(source, tmp_path / "cp437.zip", clear_utf8_flag))
    assert cp437.names[0] == "Schädel/ß.jpeg".encode().decode("cp437")


def test_data_descriptors(tmp_path: Path) -> None:
    class Unseekable(io.RawIOBase):
        def __init__(self, sink: io.BytesIO) -> None:
            self.sink = sink

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            return self.sink.write(b)

    sink = io.BytesIO()
    with zipfile.ZipFile(Unseekable(sink), "w", zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        for name, data in SAMPLE.items():
            zf.writestr(name, data)
    path = tmp_path / "dd.zip"
    path.write_bytes(sink.getvalue())
    assert (assert_like_zipfile(path).flags[1:] & 0x08).all()  # sizes and CRC after the data


def test_empty_zip(tmp_path: Path) -> None:
    assert assert_like_zipfile(write(tmp_path / "e.zip", {})).names == []


# -------------------------------------------------------------------------------- left to zipfile
def patched(path: Path, out: Path, find: bytes, replace: bytes, *, last: bool = False) -> Path:
    data = path.read_bytes()
    at = data.rindex(find) if last else data.index(find, data.index(b"PK\x01\x02"))
    out.write_bytes(data[:at] + replace + data[at + len(find) :])
    return out


def test_unusual_archives_are_left_to_zipfile(tmp_path: Path) -> None:
    source = write(tmp_path / "a.zip", SAMPLE)
    data = source.read_bytes()
    prepended = tmp_path / "sfx.zip"
    prepended.write_bytes(b"#!/bin/sh\nexit 0\n" + data)  # zipfile shifts every offset
    eocd = data.rindex(b"PK\x05\x06")
    two_disks = tmp_path / "disks.zip"
    two_disks.write_bytes(data[: eocd + 4] + b"\x01\x00" + data[eocd + 6 :])
    encrypted = rewrite_directory(source, tmp_path / "enc.zip", lambda f, r: (f[:8] + b"\x01" + f[9:], r))
    for path in (prepended, two_disks, encrypted):
        assert read_members(path) is None
        assert zipfiles_members(path).names == list(SAMPLE)  # zipfile reads them, and the listing uses it


def test_odd_extra_fields_and_names_are_left_to_zipfile(tmp_path: Path) -> None:
    def with_extra(field: bytes) -> Callable[[bytearray, bytes], tuple[bytearray, bytes]]:
        def change(fixed: bytearray, rest: bytes) -> tuple[bytearray, bytes]:
            n, m = struct.unpack_from("<HH", fixed, 28)
            struct.pack_into("<H", fixed, 30, m + len(field))
            return fixed, rest[: n + m] + field + rest[n + m :]

        return change

    source = write(tmp_path / "a.zip", {"A/x.jpeg": b"a", "B/y.jpeg": b"b"})
    overrun = rewrite_directory(source, tmp_path / "overrun.zip", with_extra(b"UT\x09\x00\x01abcd"))
    with pytest.raises(zipfile.BadZipFile):  # zipfile: "Corrupt extra field"
        zipfiles_members(overrun)
    name_crc = struct.pack("<L", 0)  # a stale Unicode Path field: Python >= 3.12 checks the CRC of the name
    unicode_path = rewrite_directory(source, tmp_path / "up.zip", with_extra(b"up\x06\x00\x01" + name_crc + b"Z"))
    with_nul = patched(source, tmp_path / "nul.zip", b"A/x.jpeg", b"A/x\0jpeg")  # zipfile cuts the name there
    for path in (overrun, unicode_path, with_nul):
        assert read_members(path) is None
    with pytest.raises(DataError, match=r"cannot read .*overrun\.zip.* as a zip file: Corrupt extra field"):
        list_zip(overrun)


def test_no_end_record_or_truncated_directory(tmp_path: Path) -> None:
    source = write(tmp_path / "a.zip", SAMPLE)
    data = source.read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[:-30])  # the end record is gone
    start = data.index(b"PK\x01\x02")
    (tmp_path / "short.zip").write_bytes(data[:start] + data[start + 10 :])  # the directory is shorter than said
    for name in ("cut.zip", "short.zip"):
        assert read_members(tmp_path / name) is None
        with pytest.raises(DataError, match=rf"{name}"):
            list_zip(tmp_path / name)


# ------------------------------------------------------------------------------------- fingerprint
def test_fingerprint_hashes_the_central_directory_onwards(tmp_path: Path) -> None:
    """Unchanged by sharing its bytes with the listing: cache entries made before keep their names."""
    path = write(tmp_path / "a.zip", SAMPLE)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir
    expected = hashlib.blake2b(f"zip\0{len(data)}\0".encode() + data[start:], digest_size=16).hexdigest()
    digest, end = zip_fingerprint(path)
    assert digest == zip_digest(path) == expected
    assert end.start == start and end.rest == data[start:]
