"""Atomic file writes: a result is either complete on disk or absent, never half-written.

A write that cannot happen (a parent that is a file, a folder without write permission, a full disk) raises
:class:`WriteError`, one line naming the path and the problem.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# mkstemp creates files readable by the owner only; results should get the usual permissions
_UMASK = os.umask(0)
os.umask(_UMASK)


#: Errors of the writer itself that are about where it writes, not what (reported as a :class:`WriteError`).
_PLACE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR)


class WriteError(OSError):
    """A file that cannot be written where asked; the message names the path, the problem and the remedy."""


def _obstacle(target: Path) -> str | None:
    """What on disk keeps ``target`` from being written: a folder in its place, a file as a parent, no permission."""
    if target.is_dir():
        return f"{target} is a folder"
    for parent in target.parents:  # nearest first; the first one that exists decides
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"permission denied: {parent} is not writable"
            return None
    return None


def _write_error(target: Path, err: OSError) -> WriteError:
    reason = _obstacle(target) or err.strerror or str(err)
    return WriteError(f"cannot write {target}: {reason}; choose another path")


def check_writable(path: str | os.PathLike[str], option: str | None = None) -> None:
    """Fail early, before any work, if ``path`` could not be written (its parents are created on write).

    Args:
        path: A file to be written.
        option: The option that named it (``--output``), for the message.

    Raises:
        WriteError: A folder is in its place, a parent is a file, or the nearest existing parent is not writable.
    """
    target = Path(path)
    reason = _obstacle(target)
    if reason is not None:
        raise WriteError(f"cannot write {target}: {reason}; choose another {option or 'path'}")


def make_dirs(path: str | os.PathLike[str], option: str | None = None) -> Path:
    """``mkdir -p path``, with a :class:`WriteError` naming ``path``, the obstacle and ``option`` on failure."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = _obstacle(directory / "x") or err.strerror or str(err)  # the folder itself, then its parents
        raise WriteError(f"cannot create folder {directory}: {reason}; choose another {option or 'path'}") from err
    return directory


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed.

    The temporary name keeps the suffix, so writers that look at it (``savefig``, ``np.savez``) still work.

    Raises:
        WriteError: ``path`` cannot be written there (the message says why).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as err:
        raise _write_error(target, err) from err
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError) and err.errno in _PLACE_ERRORS:
            raise _write_error(target, err) from err
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON atomically (NaN is written as ``NaN``, as Python's json does)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file if it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def read_user_text(path: Path, what: str, remedy: str, error: type[ValueError], encoding: str = "utf-8") -> str:
    """The text of a file a user named, or ``error`` with one line: ``what`` (its role), the path, the problem.

    Args:
        path: The file.
        what: What the file is for, e.g. ``"config file"``, ``"group file"``.
        remedy: What to do when the path is wrong, e.g. ``"check the path given to --data.groups"``.
        error: The exception type to raise.
        encoding: Text encoding (``"utf-8-sig"`` accepts a byte-order mark).
    """
    try:
        with path.open(newline="", encoding=encoding) as handle:  # newline="": CSV readers want the raw line ends
            return handle.read()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {remedy}") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file; {remedy}") from None
    except PermissionError:
        raise error(f"{what} {path} is not readable (permission denied); make it readable") from None
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as err:
        raise error(f"{what} {path} cannot be read: {err.strerror or err}") from None
