"""``batch --executor ray``: every pending run as a Ray task with declared resources, on a local Ray or a cluster.

The batch process stays the driver and the single writer of records and tables: a task returns its run's
record, and :func:`run_on_ray` hands each to ``on_done`` as it arrives, as the local executor does. Ray retries
a task whose worker process or node died (``max_retries``); after that the run is recorded as failed with
Ray's reason. Each distinct dataset the runs read (same source, channels, image size, ``skip_bad``) is loaded
by the driver and put in Ray's object store once; a task serves it to its run's ``load_dataset``
(:func:`medmnist_lit.data.serving.serving`), so no task decodes, reads the cache or unpickles its own copy.
Ctrl-C cancels the tasks in flight (their runs are not recorded, so the next invocation reruns
them). Without an address a local Ray is started for the batch, talking over the loopback interface only (no
dashboard, no usage statistics) and stopped with it; with one the batch joins that cluster.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medmnist_lit.batch.worker import Task, execute
from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.serving import DatasetKey, dataset_key, serving
from medmnist_lit.utils.ray_runtime import RayOptions, check_shared_root, connect, import_ray, put

__all__ = ["RayOptions", "put_datasets", "run_on_ray"]

log = logging.getLogger("medmnist_lit")

#: What to do when a Ray node cannot see the batch directory.
SHARED_ROOT_REMEDY = "put --root on a file system every node mounts (NFS, Lustre) at the same path"


def _remote_execute(task: Task, key: DatasetKey | None, data: ImageSet | None) -> dict[str, Any]:
    """A run inside a Ray worker: its console set up once per worker, then the run, served its dataset (if any).

    Ray hands ``data`` over from the object store (a top-level argument: its arrays map the node's shared memory).
    """
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from medmnist_lit.utils.console import setup_console

    setup_console()
    with serving({key: data} if key is not None and data is not None else {}):
        return execute(task)


def _data_key(task: Task) -> tuple[DatasetKey | None, str | None]:
    """The dataset a run's DataModule loads (its key; None when its options make no sense) and its cache dir."""
    data = task.run.config.get("data") or {}
    try:
        key = dataset_key(
            data.get("source"), data.get("channels", 1), data.get("image_size"), data.get("skip_bad", False)
        )
    except (TypeError, ValueError):  # the run reports its own bad option
        return None, None
    return key, data.get("cache_dir")


def put_datasets(tasks: list[Task]) -> dict[DatasetKey, Any]:
    """Load each distinct dataset of ``tasks`` here once and put it in the object store once; key → ObjectRef.

    A dataset that does not load here (a bad source, a path only the workers see) is left out: its runs load it
    themselves and record their own error, as without Ray.
    """
    wanted: dict[DatasetKey, str | None] = {}
    for task in tasks:
        key, cache_dir = _data_key(task)
        if key is not None:
            wanted.setdefault(key, cache_dir)
    refs = {}
    for key, cache_dir in wanted.items():
        source, channels, image_size, skip_bad = key
        try:
            data = load_dataset(
                source, channels=channels, image_size=image_size, cache_dir=cache_dir, skip_bad=skip_bad
            )
        except Exception as err:  # the runs meet the same error and record it
            log.debug("not serving %s through the object store: %s", source or "the digits demo", err)
            continue
        # plain arrays, not the cache's memory map: the object store holds the bytes, tasks map them
        refs[key] = put(data.plain())
        log.info("%s: %d images in Ray's object store for the runs", source or "the digits demo", len(data))
    return refs


def _failure(task: Task, err: BaseException) -> dict[str, Any]:
    """The record of a run Ray gave up on: the reason (the last line of Ray's text) and all of Ray's text."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # Ray colours the task's name
    last = text.splitlines()[-1].strip() if text else "no reason given"
    record = task.failure(f"Ray task failed ({type(err).__name__}): {last}")
    record["traceback"] = text
    return record


def run_on_ray(tasks: list[Task], options: RayOptions, on_done: Callable[[dict[str, Any]], None]) -> None:
    """Submit every task to Ray at once; ``on_done(record)`` as each finishes, in finishing order.

    Raises:
        ValueError: Ray is not installed, the address has no cluster, or no node has the resources a run needs.
    """
    started = connect(options)  # first: it sets what Ray reads when imported
    ray = import_ray()
    try:
        if options.address is not None and tasks:  # runs write there, the batch process reads their files
            check_shared_root(Path(tasks[0].run_dir).parent, SHARED_ROOT_REMEDY)
        capacity = ray.cluster_resources()
        for kind, need in (("CPU", options.cpus_per_run), ("GPU", options.gpus_per_run)):
            if need > capacity.get(kind, 0):
                flag = f"--ray.{kind.lower()}s_per_run"
                raise ValueError(f"{flag} {need:g}: the Ray cluster has {capacity.get(kind, 0):g} {kind}(s)")
        remote = ray.remote(_remote_execute).options(
            num_cpus=options.cpus_per_run,
            num_gpus=options.gpus_per_run,
            max_retries=options.max_retries,  # worker or node death only; a run's own error is in its record
            retry_exceptions=False,
        )
        datasets = put_datasets(tasks)  # held until every task is done: a put object lives while referenced
        pending = {}
        for task in tasks:
            key, _ = _data_key(task)
            ref = datasets.get(key) if key is not None else None
            pending[remote.remote(task, key if ref is not None else None, ref)] = task
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # Ctrl-C gets through
                for ref in ready:
                    task = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayError as err:  # retries used up, or the task could not run at all
                        record = _failure(task, err)
                    on_done(record)
        finally:
            # Ctrl-C (or on_done failing): nothing may go on running. Disconnecting ends this driver's job and Ray
            # kills its tasks; a connection that stays (the Python API's own Ray) cancels them. Not force=True:
            # Ray 2.60 can abort the driver when a force-cancelled task completes at the same time.
            for ref in pending if not started else ():
                ray.cancel(ref)
    finally:
        if started:  # stops a local Ray; leaves a joined cluster running
            ray.shutdown()
