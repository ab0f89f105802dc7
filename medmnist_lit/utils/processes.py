"""Process lifetimes: child processes that die with their parent, temporary folders that outlive no owner.

Worker processes call :func:`die_with_parent` first thing, so that even a SIGKILL of their parent (which runs
no cleanup) takes them down at once instead of leaving orphans.

A temporary folder (a cache build, a partial download) is *claimed* by its owner: :func:`claim` holds an
exclusive ``flock`` on ``<folder>/.lock`` for as long as the owner keeps the returned descriptor open. The
kernel drops the lock when the owner exits, however it exits, so :func:`abandoned` can tell a leftover of a
dead process from a live one at once, without trusting PIDs (reused) or ages. Folders without a lock (made by
an older version, or where locks are not supported) fall back to an age limit.

Standard library only (``ctypes`` is imported when needed): the cache imports this module on every load.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, temporary folders fall back to the age limit
    fcntl = None  # type: ignore[assignment]

#: Name of the lock file inside a claimed folder.
LOCK = ".lock"
#: A temporary folder without a usable lock is presumed abandoned after this many seconds.
UNLOCKED_STALE_SECONDS = 24 * 3600

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Make this child process exit when its parent ``parent_pid`` dies, even by SIGKILL.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (free at run time); elsewhere, or if that fails, a daemon
    thread polls the parent once a second. Exits at once if the parent is already gone.
    """
    armed = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    if os.getppid() != parent_pid:  # the parent died before the signal was armed: nobody would send it now
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def claim(folder: Path) -> int | None:
    """Lock ``folder`` for this process until :func:`release`; ``None`` if locks are not available there.

    The lock file is locked under a temporary name and then renamed to :data:`LOCK`, so that nobody can find
    the lock file before it is locked (and mistake a starting owner for a dead one).
    """
    if fcntl is None:  # pragma: no cover - Windows
        return None
    pending = folder / f"{LOCK}-pending"
    try:
        fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people wondering whose folder it is; not trusted
        os.rename(pending, folder / LOCK)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            pending.unlink()
        return None
    return fd


def release(folder: Path, fd: int | None) -> None:
    """Drop a :func:`claim` (removing the lock file, so it does not travel with a folder renamed into place)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        (folder / LOCK).unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def abandoned(folder: Path, max_age: float = UNLOCKED_STALE_SECONDS) -> bool:
    """Whether the owner of the temporary ``folder`` (or of a temporary file) is gone, so that it may be removed.

    True when its lock is free (the owner exited, however it exited), or when it has no usable lock and was
    last modified more than ``max_age`` seconds ago. False for a folder that a live process holds.
    """
    try:
        if fcntl is None:  # pragma: no cover - Windows
            raise FileNotFoundError
        fd = os.open(folder / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):  # an older version's leftover (or a file), or a new owner
        return _older_than(folder, max_age)  # not yet past mkdtemp and claim: young, so kept
    except OSError:
        return False  # not ours to judge (permissions) or already gone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False  # held: the owner is alive
        return _older_than(folder, max_age)  # locks unsupported here (some network file systems)
    finally:
        os.close(fd)
    return True


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except OSError:
        return False
