"""Executing batch runs: one run as a job returning its record, and the local executor that runs many at once.

A run directory is wiped before its run starts, so a restarted run is identical to an uninterrupted one. The
job returns its record (status, metrics, curves, wall time, error) and the batch process alone writes it to
``record.json`` (atomically), so a run is either recorded completely or not at all, whichever executor ran it.

``--workers N`` runs on the standard library's :class:`~concurrent.futures.ProcessPoolExecutor`: N spawned
processes that import torch and Lightning once (a fresh process per run costs that import, 3–8 s, every run),
take one GPU each when there are GPUs, and die with the batch process (``PR_SET_PDEATHSIG`` on Linux, a parent
watcher elsewhere). A worker that dies mid-run breaks the pool: the runs it took down with it are tried again,
one at a time, and a run that kills its worker alone is recorded as failed, so one run's crash does not stop
the batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medmnist_lit.batch.spec import Run
from medmnist_lit.jobs import RunJob, run_job
from medmnist_lit.utils.processes import die_with_parent

log = logging.getLogger("medmnist_lit")

#: What a run that killed its worker process is recorded with.
WORKER_DIED = "worker process died while running (a crash or out of memory; see the run's console.log)"


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

    def failure(self, error: str) -> dict[str, Any]:
        """The record of this run when it never returned one (its worker died), with the reason."""
        run = self.run
        record = {**self.labels(), "command": run.command, "seed": run.seed, "config": run.config}
        record.update(status="failed", seconds=0.0, error=error)
        return record


def execute(task: Task) -> dict[str, Any]:
    """Run one batch run as a :class:`~medmnist_lit.jobs.RunJob` in its own directory; returns its record.

    The record carries the run's batch fields next to the job's; the caller writes it (the batch process).
    """
    run = task.run
    job = RunJob(run.command, run.config, task.run_dir, run.seed, quiet=task.quiet, labels=task.labels())
    return run_job(job, write_record=False)


# ----------------------------------------------------------------------------------------------- workers
def _init_worker(parent_pid: int, threads: int, gpus: Any) -> None:
    """Initializer of every worker process: die with the batch, its GPU and threads, torch and Lightning once."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the batch process's to handle; it stops us
    gpu = gpus.get() if gpus is not None else None  # one id per worker, handed out by the batch process
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch is imported
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    import torch

    torch.set_num_threads(threads)
    import medmnist_lit.lightning_cli  # noqa: F401  (torch, Lightning and jsonargparse once, for every run)
    from medmnist_lit.utils.console import setup_console

    setup_console()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return ids or [str(i) for i in range(torch.cuda.device_count())]


def _executor(workers: int, threads: int, gpus: list[str]) -> cf.ProcessPoolExecutor:
    ctx = mp.get_context("spawn")  # fork after torch is imported is unsafe (threads, CUDA)
    ids = None
    if gpus:
        ids = ctx.Queue()
        for worker in range(workers):
            ids.put(gpus[worker % len(gpus)])
    return cf.ProcessPoolExecutor(workers, ctx, _init_worker, (os.getpid(), threads, ids))


def _stop(executor: cf.ProcessPoolExecutor) -> None:
    """Shut ``executor`` down now: queued runs cancelled, running ones killed (they are not recorded)."""
    for child in mp.active_children():  # the executor's workers are this process's only multiprocessing children
        child.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


def run_pool(tasks: list[Task], workers: int, on_done: Callable[[dict[str, Any]], None]) -> None:
    """Run ``tasks`` on ``workers`` processes at once; ``on_done(record)`` as each finishes.

    At most ``workers`` runs are submitted at a time, so the runs in flight are known. A worker that dies breaks
    the pool and takes the other runs in flight with it: they are retried one at a time, and a run whose worker
    died while it ran alone is recorded as failed.
    """
    gpus, threads = _gpus(), max(1, _cores() // workers)
    if gpus and workers > len(gpus):
        log.warning("%d workers share %d GPU(s)", workers, len(gpus))
    queue = list(reversed(tasks))  # pop() takes the spec's order
    retry: list[Task] = []  # runs a dying worker took down: tried again one at a time
    running: dict[cf.Future[dict[str, Any]], Task] = {}
    executor = _executor(workers, threads, gpus)

    def submit(task: Task) -> None:
        running[executor.submit(execute, task)] = task

    def collect(futures: set[cf.Future[dict[str, Any]]]) -> list[Task]:
        """Report finished runs; those the broken pool took down are returned."""
        broken = []
        for future in futures:
            task = running.pop(future)
            error = future.exception()
            if isinstance(error, cf.process.BrokenProcessPool):
                broken.append(task)
            elif error is not None:  # run_job records what a run raises: this is the executor's own error
                on_done(task.failure(f"{type(error).__name__}: {error}"))
            else:
                on_done(future.result())
        return broken

    try:
        while queue or retry or running:
            if retry and not running:
                submit(retry.pop())
            while queue and not retry and len(running) < workers:
                submit(queue.pop())
            broken = collect(cf.wait(running, return_when=cf.FIRST_COMPLETED)[0])
            if broken:
                broken += collect(cf.wait(running)[0])  # a broken pool fails every run still in it
                if len(broken) == 1:  # it ran alone: its own crash
                    log.warning("%s: %s", broken[0].run.name, WORKER_DIED)
                    on_done(broken[0].failure(WORKER_DIED))
                else:
                    retry.extend(reversed(broken))
                executor.shutdown(wait=True)
                executor = _executor(workers, threads, gpus)
    except BaseException:  # Ctrl-C, or on_done failing: nothing may keep running
        _stop(executor)
        raise
    executor.shutdown(wait=True)  # idle workers exit on their own (terminated ones would leak semaphores)
