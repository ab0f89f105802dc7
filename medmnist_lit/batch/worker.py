"""Executing batch runs: one run with its record, and a pool of worker processes that run many.

A run directory is wiped before its run starts, so a restarted run is identical to an uninterrupted one; its
``record.json`` (status, metrics, curves, wall time, error) is written atomically after the run, so a run is
either recorded completely or not at all. Workers are spawned processes that import torch and Lightning once;
they die with the batch process (``PR_SET_PDEATHSIG`` on Linux, a parent watcher elsewhere).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmnist_lit.batch.spec import Run
from medmnist_lit.jobs import RECORD, RunJob, run_job
from medmnist_lit.utils.files import write_json
from medmnist_lit.utils.processes import die_with_parent

log = logging.getLogger("medmnist_lit")


@dataclass
class Task:
    """What a worker needs to execute one run (picklable)."""

    run: Run
    run_dir: str
    attempt: int = 1
    quiet: bool = False

    def labels(self) -> dict[str, Any]:
        """The batch's fields of this run's record (the job adds command, seed, config and the outcome)."""
        run = self.run
        return {
            "name": run.name,
            "variant": run.variant,
            "varied": run.varied,
            "config_hash": run.config_hash,
            "attempt": self.attempt,
        }


def execute(task: Task) -> dict[str, Any]:
    """Run one batch run as a :class:`~medmnist_lit.jobs.RunJob` in its own directory; returns its record.

    The record (also ``record.json`` in the run directory) carries the run's batch fields next to the job's.
    """
    run = task.run
    return run_job(RunJob(run.command, run.config, task.run_dir, run.seed, quiet=task.quiet, labels=task.labels()))


# ----------------------------------------------------------------------------------------------- workers
def worker_main(worker: int, env: dict[str, str], threads: int, tasks: Any, results: Any, parent_pid: int) -> None:
    """Body of a worker process: set devices and threads, import torch once, run tasks until a ``None``."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the batch process's to handle; it stops us
    os.environ.update(env)  # CUDA_VISIBLE_DEVICES must be set before torch is imported
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    import torch

    torch.set_num_threads(threads)
    import medmnist_lit.lightning_cli  # noqa: F401  (torch, Lightning and jsonargparse once, for every run)
    from medmnist_lit.utils.console import setup_console

    setup_console()
    results.put(("ready", worker, os.getpid()))
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put(("start", worker, task.run.name))
        results.put(("done", worker, task.run.name, execute(task)))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def run_pool(tasks: list[Task], workers: int, on_done: Callable[[dict[str, Any]], None]) -> None:
    """Run ``tasks`` on ``workers`` spawned processes; ``on_done(record)`` as each finishes.

    A worker that dies mid-run (out of memory, a crash) gets its run recorded as failed and is replaced.
    """
    ctx = mp.get_context("spawn")  # fork after torch is imported is unsafe (threads, CUDA)
    pending, results = ctx.Queue(), ctx.Queue()
    for task in tasks:
        pending.put(task)
    gpus, threads = _gpus(), max(1, _cores() // workers)
    if gpus and workers > len(gpus):
        log.warning("%d workers share %d GPU(s)", workers, len(gpus))
    procs: dict[int, Any] = {}
    ready: set[int] = set()
    in_flight: dict[int, str] = {}
    by_name = {t.run.name: t for t in tasks}

    def start(worker: int) -> None:
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[worker % len(gpus)]
        args = (worker, env, threads, pending, results, os.getpid())
        procs[worker] = ctx.Process(target=worker_main, args=args, name=f"batch-worker-{worker}", daemon=True)
        procs[worker].start()

    remaining = len(tasks)

    def receive(timeout: float) -> bool:
        """Handle one message from a worker; False if none came within ``timeout``."""
        nonlocal remaining
        try:
            message = results.get(timeout=timeout)
        except queue.Empty:
            return False
        kind, worker = message[0], message[1]
        if kind == "ready":
            ready.add(worker)
        elif kind == "start":
            in_flight[worker] = message[2]
        else:
            in_flight.pop(worker, None)
            remaining -= 1
            on_done(message[3])
        return True

    for worker in range(workers):
        start(worker)
        pending.put(None)  # one stop sign per worker, after the tasks
    try:
        while remaining:
            if receive(0.5):
                continue
            for worker, proc in list(procs.items()):
                if proc.exitcode is None or (proc.exitcode == 0 and worker not in in_flight):
                    continue
                while receive(0.2):  # its last messages may still be in the pipe
                    pass
                if worker not in ready:
                    raise RuntimeError(f"batch worker {worker} could not start (exit code {proc.exitcode})")
                name = in_flight.pop(worker, None)
                if name is not None:
                    task = by_name[name]
                    run = task.run
                    record = {**task.labels(), "command": run.command, "seed": run.seed, "config": run.config}
                    record.update(status="failed", seconds=0.0)
                    record["error"] = f"worker process died (exit code {proc.exitcode}) while running"
                    write_json(Path(task.run_dir) / RECORD, record)
                    remaining -= 1
                    on_done(record)
                del procs[worker]
                if remaining:
                    ready.discard(worker)
                    start(worker)
                    pending.put(None)
            if remaining and all(proc.exitcode is not None for proc in procs.values()):
                while remaining and receive(0.5):  # the last "done" may still be in the pipe
                    pass
                if remaining:
                    raise RuntimeError(f"all batch workers exited with {remaining} run(s) left; run the batch again")
    finally:
        # after the last run the workers are exiting on their stop signs: let them finish, since a worker
        # terminated during its own shutdown leaves its semaphores (e.g. tqdm's multiprocessing lock) to the
        # resource tracker, which then warns about leaks
        deadline = time.monotonic() + (10.0 if not remaining else 0.0)
        for proc in procs.values():
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in procs.values():
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        for q in (pending, results):
            q.cancel_join_thread()  # unsent tasks of a stopped batch must not block the exit
            q.close()
