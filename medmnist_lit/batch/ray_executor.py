"""``batch --executor ray``: every pending run as a Ray task with declared resources, on a local Ray or a cluster.

The batch process stays the driver and the single writer of records and tables: a task returns its run's
record, and :func:`run_on_ray` hands each to ``on_done`` as it arrives, as the local executor does. Ray retries
a task whose worker process or node died (``max_retries``); after that the run is recorded as failed with
Ray's reason. Ctrl-C cancels the tasks in flight (their runs are not recorded, so the next invocation reruns
them). Without an address a local Ray is started for the batch, talking over the loopback interface only (no
dashboard, no usage statistics) and stopped with it; with one the batch joins that cluster.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medmnist_lit.batch.worker import Task, execute

log = logging.getLogger("medmnist_lit")

#: Environment of a local Ray: loopback only (Ray's own switch for a single-machine cluster), no usage reports.
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RayOptions:
    """``--ray.*`` options of ``batch``.

    Attributes:
        address: A running cluster to join (``ray start --head`` printed it; ``auto`` finds one on this
            machine); ``None`` starts a local Ray for this batch.
        cpus_per_run: CPUs each run reserves (Ray sets the run's thread count from it); fractions allowed.
        gpus_per_run: GPUs each run reserves; fractions share a GPU between runs.
        max_retries: How often a run whose worker or node died is tried again before it is recorded as failed.
    """

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 2


def import_ray() -> Any:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'medmnist-lit[ray]' (or pip install ray)") from None
    return ray


def connect(options: RayOptions) -> bool:
    """Join ``options.address``, or start a local Ray; False when this process was already connected."""
    local = options.address is None or options.address.rpartition(":")[0] in ("127.0.0.1", "localhost")
    if local:  # before Ray is imported (it reads them then), and inherited by the Ray processes started here
        os.environ.update(LOCAL_ENV)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    if options.address is None:
        # "local": a new Ray of its own, even where `ray start` left a cluster (or its address file) behind
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        outward = sorted({n["NodeManagerAddress"] for n in ray.nodes()} - {"127.0.0.1"})
        if outward:  # Ray was imported before LOCAL_ENV was set (the Python API after an `import ray`)
            log.warning("the local Ray listens on %s too; set %s before importing ray", outward, LOCAL_ENV)
    else:
        _check_reachable(options.address)
        try:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as err:
            auth = "" if os.environ.get("RAY_AUTH_MODE") else "; with token authentication set RAY_AUTH_MODE=token"
            raise ValueError(f"--ray.address {options.address}: could not join ({err}){auth}") from None
    resources = ray.cluster_resources()
    log.info(
        "Ray %s: %d node(s), %g CPU(s), %g GPU(s)",
        "cluster" if options.address else "(local)",
        len([n for n in ray.nodes() if n.get("Alive")]),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
    return True


def _check_reachable(address: str) -> None:
    """A ``host:port`` nobody listens on fails here at once; Ray itself would retry for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:  # auto, ray://...: left to Ray
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise ValueError(
            f"--ray.address {address}: no Ray cluster there ({err}); start one with `ray start --head`"
        ) from None


def _remote_execute(task: Task) -> dict[str, Any]:
    """A run inside a Ray worker: its console set up once per worker, then the run."""
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    from medmnist_lit.utils.console import setup_console

    setup_console()
    return execute(task)


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
        pending = {remote.remote(task): task for task in tasks}
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
