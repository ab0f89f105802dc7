"""Executing batch runs: one run with its record, and a pool of worker processes that run many.

A run directory is wiped before its run starts, so a restarted run is identical to an uninterrupted one; its
``record.json`` (status, metrics, curves, wall time, error) is written atomically after the run, so a run is
either recorded completely or not at all. Workers are spawned processes that import torch and Lightning once;
they die with the batch process (``PR_SET_PDEATHSIG`` on Linux, a parent watcher elsewhere).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import math
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmnist_lit.batch.spec import Run, set_dotted
from medmnist_lit.utils.files import write_json
from medmnist_lit.utils.processes import die_with_parent

log = logging.getLogger("medmnist_lit")

RECORD = "record.json"
CONSOLE = "console.log"
#: Per-epoch curves kept in a record (fit: from the run's history; cv: mean over folds of the TensorBoard events).
HISTORY_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
_PER_CLASS = re.compile(r"/acc_")  # per-class accuracies: val/acc_3, val/acc_HeadCT

#: Set by the batch's SIGINT handler: a Lightning ``sys.exit(1)`` after Ctrl-C is an interruption, not a failure.
INTERRUPTED = threading.Event()


@dataclass
class Task:
    """What a worker needs to execute one run (picklable)."""

    run: Run
    run_dir: str
    attempt: int = 1
    quiet: bool = False


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def base_record(task: Task) -> dict[str, Any]:
    """The fields every record has, whatever the outcome."""
    run = task.run
    return {
        "name": run.name,
        "variant": run.variant,
        "seed": run.seed,
        "command": run.command,
        "varied": run.varied,
        "config_hash": run.config_hash,
        "config": run.config,
        "attempt": task.attempt,
    }


def failure(err: BaseException) -> dict[str, Any]:
    """Status, error (type and message) and full traceback of a failed run."""
    message = f"{type(err).__name__}: {err}".strip()
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip("\n")
    return {"status": "failed", "error": message, "traceback": text}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    # per-class accuracies stay in the run directory; records keep what the tables show
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not _PER_CLASS.search(k)}


def cv_metrics(summary: dict[str, Any], folds: list[dict[str, Any]]) -> dict[str, float]:
    """Fold means (``val/acc``) and spreads (``val/acc_std``), ensemble/OOF scores, mean sizes of a cv run."""
    metrics: dict[str, float] = {}
    for key, value in summary.items():
        if key == "run" or _PER_CLASS.search(key):
            continue
        if isinstance(value, dict) and "mean" in value:
            metrics[key], metrics[f"{key}_std"] = float(value["mean"]), float(value["std"])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = float(value)
    for key in ("n_train", "n_val", "n_test", "epochs"):
        values = [float(f[key]) for f in folds if key in f]
        if values:
            metrics[key] = sum(values) / len(values)
    metrics["n_folds"] = float(len(folds))
    return metrics


def cv_curves(run_dir: Path) -> dict[str, list[float]]:
    """Per-epoch curves of a cv run: the mean over folds of each fold's TensorBoard scalars.

    Folds train for the same epochs unless something stops them early; an epoch's mean covers the folds that
    reached it.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    sums: dict[str, list[list[float]]] = {}
    for fold_dir in sorted(run_dir.glob("fold_*")):
        curves: dict[str, dict[int, float]] = {}
        for path in sorted(fold_dir.glob("events.out.tfevents.*")):
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    if value.tag in HISTORY_KEYS:
                        number = (
                            tensor_util.make_ndarray(value.tensor).item()
                            if value.HasField("tensor")
                            else value.simple_value
                        )
                        curves.setdefault(value.tag, {})[int(event.step)] = float(number)
        for tag, points in curves.items():
            for step, number in points.items():
                per_step = sums.setdefault(tag, [])
                while len(per_step) <= step:
                    per_step.append([])
                per_step[step].append(number)
    return {tag: [math.fsum(v) / len(v) if v else math.nan for v in steps] for tag, steps in sorted(sums.items())}


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (Python and C level) to ``path`` while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a", encoding="utf-8", buffering=1) as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def execute(task: Task) -> dict[str, Any]:
    """Run one fit or cv from a clean directory and write its record; a run that raises is recorded as failed.

    Ctrl-C (``KeyboardInterrupt``, or Lightning's ``sys.exit`` after one) propagates and writes no record: the
    run counts as interrupted and is restarted next time.
    """
    from medmnist_lit.lightning_cli import run_cv, run_fit

    run_dir = Path(task.run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # leftovers of an interrupted or retried attempt would mix into this one
    run_dir.mkdir(parents=True)
    config = copy.deepcopy(task.run.config)
    if task.quiet:  # a worker's console is a file: no bar redrawing into it
        set_dotted(config, "trainer.enable_progress_bar", False)
    record = base_record(task)
    started = time.perf_counter()
    with console_to(run_dir / CONSOLE) if task.quiet else contextlib.nullcontext():
        try:
            if task.run.command == "fit":
                result = run_fit(config)
                history = {k: [float(v) for v in result.history[k]] for k in HISTORY_KEYS if k in result.history}
                record.update(status="ok", metrics=_scalars(result.metrics), history=history)
            else:
                cv = run_cv(config)
                record.update(status="ok", metrics=cv_metrics(cv.summary, cv.folds), history=cv_curves(run_dir))
        except SystemExit as err:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt from None
            record.update(failure(err))
        except Exception as err:
            record.update(failure(err))
        if record["status"] == "failed" and task.quiet:  # into the run's console.log; the batch prints one line
            log.error("run %s failed:\n%s", task.run.name, record["traceback"])
    record.update(seconds=time.perf_counter() - started, finished=_now())
    write_json(run_dir / RECORD, record)
    return record


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
                    record = {**base_record(task), "status": "failed", "seconds": 0.0}
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
