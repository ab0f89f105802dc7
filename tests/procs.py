"""Process-tree lookups in ``/proc`` for tests that watch workers (Linux only).

Processes and threads come and go while a tree is walked: a task listed by ``/proc/<pid>/task`` may be gone by the
time its ``children`` file is read, so every read treats a vanished entry as having no children.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:  # the thread or process ended between listing and reading
        return ""


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` started by any of its threads; empty once it is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    return [int(child) for task in tasks for child in _read(task / "children").split()]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` in the process tree, as far as it exists while walked."""
    found, todo = set(), [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_for_a_record(proc: subprocess.Popen[bytes], batch: Path, timeout: float = 120) -> None:
    """Wait until a batch subprocess has recorded its first run; fail with its stderr if it exits first."""
    deadline = time.monotonic() + timeout
    while not list(batch.glob("*/record.json")):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "no run finished in time"
        time.sleep(0.05)
