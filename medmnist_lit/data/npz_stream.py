"""Read the arrays of an ``.npz`` archive a bounded number of bytes at a time.

``np.load`` of an ``.npz`` member reads the whole array into memory (a compressed one through a second, whole
copy); at 224 pixels a MedMNIST file holds up to 16 GB of images. Here each member is opened with :mod:`zipfile`
(stored or deflated alike), its ``.npy`` header parsed with :mod:`numpy.lib.format`, and its rows handed out in
blocks of at most ``max_bytes``, so a reader holds one block at a time whatever the archive's size. Object arrays
are refused (never unpickled), and so are Fortran-ordered image arrays, whose rows are not contiguous on disk.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np

from medmnist_lit.data.layout import DataError
from medmnist_lit.utils.chunks import CHUNK_BYTES, rows_per_chunk

__all__ = ["NpyHeader", "NpzStream"]

_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class NpyHeader:
    """What the ``.npy`` header of one member says.

    Attributes:
        key: The member's name without ``.npy``.
        shape: The array's shape.
        dtype: Its dtype (byte order included).
        fortran_order: Whether the data is stored column-major.
    """

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (one image): the product of the trailing dimensions times the item size."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize


class NpzStream:
    """An open ``.npz`` archive whose members are read by header, whole (small arrays) or in row blocks.

    Use as a context manager. ``path`` names the file in every message.

    Raises:
        DataError: The file cannot be opened as a zip archive, or holds a single ``.npy`` array.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as raw:
                magic = raw.read(len(_NPY_MAGIC))
            if magic == _NPY_MAGIC:
                raise DataError(f"{str(self.path)!r} holds a single array, not a .npz archive of named arrays")
            self._zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
            raise DataError(f"cannot read {str(self.path)!r} as a .npz file: {exc}") from exc
        self.files = [name[: -len(".npy")] for name in self._zip.namelist() if name.endswith(".npy")]

    def __enter__(self) -> NpzStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the archive."""
        self._zip.close()

    # ----------------------------------------------------------------------------------- reading
    def _open(self, key: str) -> IO[bytes]:
        try:
            return self._zip.open(f"{key}.npy")
        except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
            raise DataError(f"cannot read key {key!r} of {str(self.path)!r}: {exc}") from exc

    def _header(self, key: str, stream: IO[bytes]) -> NpyHeader:
        where = f"key {key!r} of {str(self.path)!r}"
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise DataError(
                    f"{where} is a .npy of format version {version[0]}.{version[1]}, not read here (1.0 and 2.0 "
                    "are); re-save it with numpy.savez"
                )
        except (zipfile.BadZipFile, zlib.error, OSError) as exc:  # a CRC or deflate error, raised while reading
            raise DataError(f"{where} is damaged ({exc}); download or write the file again") from exc
        except (ValueError, EOFError) as exc:
            raise DataError(f"cannot read {where}: its .npy header is damaged ({exc})") from exc
        if dtype.hasobject:
            raise DataError(
                f"{where} holds a Python object array, which is not loaded (allow_pickle=False, for safety); "
                "re-save it as a plain uint8/int array"
            )
        return NpyHeader(key, tuple(int(d) for d in shape), dtype, bool(fortran))

    def header(self, key: str) -> NpyHeader:
        """The header of member ``key`` (reads a few hundred bytes).

        Raises:
            DataError: A damaged header, an unknown ``.npy`` version, or an object dtype.
        """
        with self._open(key) as stream:
            return self._header(key, stream)

    def read(self, key: str) -> np.ndarray:
        """Member ``key`` whole: for small arrays (labels). Fortran order is read as stored."""
        with self._open(key) as stream:
            head = self._header(key, stream)
            data = _read_exactly(stream, math.prod(head.shape) * head.dtype.itemsize, key, self.path)
            _finish(stream, key, self.path)
        return np.frombuffer(data, head.dtype).reshape(head.shape, order="F" if head.fortran_order else "C")

    def chunks(self, key: str, max_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, block)`` of member ``key``, in order, each block at most ``max_bytes`` (or one row).

        Blocks are read-only views of freshly read bytes; nothing else of the member is held meanwhile.

        Raises:
            DataError: A Fortran-ordered array (its rows are not contiguous), a truncated member or a CRC error.
        """
        with self._open(key) as stream:
            head = self._header(key, stream)
            if head.fortran_order and len(head.shape) > 1:
                raise DataError(
                    f"key {key!r} of {str(self.path)!r} is stored in Fortran (column-major) order, so its images "
                    "cannot be read one block at a time; re-save it with numpy.ascontiguousarray(array)"
                )
            n = head.shape[0] if head.shape else 0
            step = rows_per_chunk(head.row_bytes, max_bytes)
            for start in range(0, n, step):
                rows = min(step, n - start)
                data = _read_exactly(stream, rows * head.row_bytes, key, self.path)
                yield start, np.frombuffer(data, head.dtype).reshape((rows, *head.shape[1:]))
            _finish(stream, key, self.path)


def _read_exactly(stream: IO[bytes], size: int, key: str, path: Path) -> bytes:
    try:
        data = stream.read(size)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot read key {key!r} of {str(path)!r}: {exc}; download or write the file again") from exc
    if len(data) != size:
        raise DataError(
            f"key {key!r} of {str(path)!r} is truncated: {len(data):,} bytes where its header promises {size:,}; "
            "download or write the file again"
        )
    return data


def _finish(stream: IO[bytes], key: str, path: Path) -> None:
    """Read to the member's end, so that :mod:`zipfile` checks its CRC-32 (raised at end of data)."""
    try:
        stream.read(1)
    except (zipfile.BadZipFile, OSError, zlib.error) as exc:
        raise DataError(f"key {key!r} of {str(path)!r} is damaged ({exc}); download or write the file again") from exc
