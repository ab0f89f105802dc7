"""Decoder processes: how many, fork or spawn, and a pool that dies with its parent and stops at once on Ctrl-C.

:func:`run_chunks` runs one task per chunk of the work in a process pool and returns the results in chunk order;
the decoder (:mod:`medmnist_lit.data.decode`) gives it the task and a per-process initializer. Processes are
forked when that is safe (Linux, one thread, torch not imported: start-up takes milliseconds) and spawned
otherwise.

Standard library only at module level (multiprocessing is imported when a pool starts).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

__all__ = ["MIN_IMAGES_PER_WORKER", "available_cpus", "fork_is_safe", "resolve_workers", "run_chunks"]

logger = logging.getLogger(__name__)

#: Below this many images per worker, extra processes cost more than they save (``workers=None``): a forked
#: worker starts in milliseconds, a spawned one re-imports numpy, Pillow and the main module (~0.5 s or more).
MIN_IMAGES_PER_WORKER = {"fork": 1000, "spawn": 20000}

T = TypeVar("T")


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


def run_chunks(
    task: Callable[..., T],
    chunks: Sequence[tuple[Any, ...]],
    *,
    workers: int,
    method: str,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
) -> list[T] | None:
    """``task(*chunk)`` for every chunk in ``workers`` processes, in chunk order; ``None`` when no pool can start.

    Each process runs ``initializer(*initargs)`` first, dies with this one (even on SIGKILL) and ignores
    SIGINT: Ctrl-C reaches the whole process group, and this process turns it into one ``KeyboardInterrupt``
    and stops the workers mid-task. A task that raises stops the others too.
    """
    import multiprocessing as mp  # imported here: a cached load never needs it
    import signal
    from concurrent.futures import ProcessPoolExecutor

    pool = None
    # Workers start with SIGINT blocked (a mask survives fork and exec) until they ignore it in _start_worker.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context(method),
            initializer=_start_worker,
            initargs=(os.getpid(), initializer, initargs),
        )
        with warnings.catch_warnings():  # Python 3.12+ warns about forking with numpy's idle BLAS threads
            warnings.filterwarnings("ignore", message=r".*multi-threaded, use of fork\(\)", category=DeprecationWarning)
            futures: list[Future[T]] = [pool.submit(task, *chunk) for chunk in chunks]
    except (OSError, ImportError, NotImplementedError) as exc:  # no semaphores/fork here (sandboxes, some CI)
        logger.warning("Cannot start %d worker processes (%s); decoding in this process", workers, exc)
        if pool is not None:
            _stop_pool(pool)
        return None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C pressed meanwhile is delivered here
    try:
        results = [future.result() for future in futures]
        pool.shutdown()
    except BaseException:  # Ctrl-C, or a worker that died: stop the others now, mid-task (the output is discarded)
        _stop_pool(pool)
        raise
    return results


def _start_worker(parent_pid: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    import signal

    from medmnist_lit.utils.processes import die_with_parent

    die_with_parent(parent_pid)  # no orphan keeps decoding if the parent is killed, even by SIGKILL
    # Ctrl-C reaches the whole process group: the parent turns it into one message and stops us. SIGINT was
    # blocked across the fork (see run_chunks) so that none lands before it is ignored here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    initializer(*initargs)


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
