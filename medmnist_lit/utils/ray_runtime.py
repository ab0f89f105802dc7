"""Ray for the commands that scale out: a local loopback-only Ray or a cluster, the object store, a shared run root.

Ray is an optional extra and is imported only here, when a command asks for it. Without an address a local Ray
is started for the command, talking over the loopback interface only (no dashboard, no usage statistics) and
stopped with it; with one the command joins that cluster and leaves it running.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("medmnist_lit")

__all__ = ["LOCAL_ENV", "RayOptions", "check_shared_root", "connect", "import_ray", "put", "puts_made"]

#: Environment of a local Ray: loopback only (Ray's own switch for a single-machine cluster), no usage reports.
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

_puts = 0  # objects this process put in Ray's object store through put(): the tests count them


@dataclass
class RayOptions:
    """Where and how work runs on Ray.

    Attributes:
        address: A running cluster to join (``ray start --head`` printed it; ``auto`` finds one on this
            machine); ``None`` starts a local Ray for this command.
        cpus_per_run: CPUs each task reserves (Ray sets the task's thread count from it); fractions allowed.
        gpus_per_run: GPUs each task reserves; fractions share a GPU between tasks.
        max_retries: How often a task whose worker or node died is tried again before it counts as failed.
    """

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    max_retries: int = 2


def import_ray(flag: str = "--executor ray") -> Any:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"{flag} needs Ray: pip install 'medmnist-lit[ray]' (or pip install ray)") from None
    return ray


def connect(options: RayOptions, flag: str = "--ray.address", executor: str = "--executor ray") -> bool:
    """Join ``options.address``, or start a local Ray; False when this process was already connected.

    Args:
        options: The address (and resources, checked by the caller).
        flag: The option naming the address, for error lines.
        executor: The option that asked for Ray, for the error line when Ray is not installed.
    """
    local = options.address is None or options.address.rpartition(":")[0] in ("127.0.0.1", "localhost")
    if local:  # before Ray is imported (it reads them then), and inherited by the Ray processes started here
        os.environ.update(LOCAL_ENV)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = import_ray(executor)
    if ray.is_initialized():
        return False
    if options.address is None:
        # "local": a new Ray of our own, never a cluster another `ray start` left on this machine (Ray's default)
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        outward = sorted({n["NodeManagerAddress"] for n in ray.nodes()} - {"127.0.0.1"})
        if outward:  # Ray was imported before LOCAL_ENV was set (the Python API after an `import ray`)
            log.warning("the local Ray listens on %s too; set %s before importing ray", outward, LOCAL_ENV)
    else:
        _check_reachable(options.address, flag)
        try:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as err:
            raise ValueError(f"{flag} {options.address}: no Ray cluster there ({err})") from None
    resources = ray.cluster_resources()
    log.info(
        "Ray %s: %d node(s), %g CPU(s), %g GPU(s)",
        "cluster" if options.address else "(local)",
        len([n for n in ray.nodes() if n.get("Alive")]),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
    return True


def _check_reachable(address: str, flag: str) -> None:
    """A ``host:port`` nobody listens on fails here at once; Ray itself would retry for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:  # auto, ray://...: left to Ray
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise ValueError(f"{flag} {address}: no Ray cluster there ({err}); start one with `ray start --head`") from None


def put(value: Any) -> Any:
    """``ray.put(value)``, counted (:func:`puts_made`): large data must reach the workers once, not per task."""
    global _puts
    ref = import_ray().put(value)
    _puts += 1
    return ref


def puts_made() -> int:
    """How many objects :func:`put` has put in the object store in this process."""
    return _puts


def _probe(root: str, token: str) -> tuple[str, str | None]:
    """On one node: read the driver's probe file under ``root`` and answer next to it; (node address, error)."""
    import ray

    node = ray.util.get_node_ip_address()
    try:
        asked = Path(root) / f".ray-probe-{token}"
        if asked.read_text() != token:
            return node, f"{asked} holds something else"
        (Path(root) / f".ray-probe-{token}-{ray.get_runtime_context().get_node_id()}").write_text(token)
    except OSError as err:
        return node, f"{type(err).__name__}: {err.strerror or err}"
    return node, None


def check_shared_root(root: Path, remedy: str) -> None:
    """Check that a task on every live node of the connected Ray sees and writes ``root`` (made here if missing).

    Raises:
        OSError: A node cannot read the driver's file under ``root`` or write there, naming the node and ``remedy``.
    """
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    asked = root / f".ray-probe-{token}"
    asked.write_text(token)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    try:
        probe = ray.remote(_probe)
        refs = {
            node: probe.options(
                num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(str(root), token)
            for node in nodes
        }
        for node, ref in refs.items():
            address, error = ray.get(ref)
            answer = root / f".ray-probe-{token}-{node}"
            if error is None and not answer.exists():
                error = f"its file {answer.name} is not visible here"
            if error is not None:
                raise OSError(f"the Ray node {address} cannot use the run root {root} ({error}); {remedy}")
    finally:
        for path in root.glob(f".ray-probe-{token}*"):
            path.unlink(missing_ok=True)
