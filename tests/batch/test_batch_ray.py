"""``batch --executor ray`` on a local Ray of 2 CPUs, loopback only: equivalence, worker death, driver death."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from datagen import make_image_folder
from procs import descendants, wait_for_a_record
from runfiles import batch_records, csv_rows

from medmnist_lit.batch.ray_executor import put_datasets
from medmnist_lit.batch.spec import Run
from medmnist_lit.batch.worker import Task
from medmnist_lit.cli import main
from medmnist_lit.data.cache import load_dataset
from medmnist_lit.data.serving import dataset_key, serving
from medmnist_lit.utils.ray_runtime import LOCAL_ENV, puts_made

os.environ.update(LOCAL_ENV)  # before Ray is imported: it reads them then (loopback only, no usage reports)
ray = pytest.importorskip("ray")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
if not sys.platform.startswith("linux"):
    pytest.skip("finds Ray's worker processes in /proc", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
TINY = ["--data.subset", "100", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
OPTIMIZERS = [str(REPO / "experiments" / "optimizers.yaml"), "--seeds", "[0]", *TINY]
RUNS = sorted(f"{v}__seed0" for v in ("sgd", "sgd_momentum", "adagrad", "adam", "adamw"))
#: results.csv columns that do not depend on timing (seconds) or on how often a run was attempted
STABLE = ("run", "variant", "seed", "command", "optimizer", "status", "n_train", "n_val", "n_test", "epochs")
SCORES = ("val/acc", "train/acc", "test/acc", "val/loss", "test/loss")
TASK = "ray::_remote_execute"  # the process title of a Ray worker while it runs one of ours
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]):\d+$")


def _ray_sockets() -> list[tuple[str, str, str]]:
    """(state, local, peer) of every TCP socket of this process's Ray processes (``ss``)."""
    ours = descendants(os.getpid())
    out = subprocess.run(["ss", "-Htanp"], capture_output=True, text=True, check=True).stdout
    sockets = []
    for line in out.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            state, _, _, local, peer = line.split()[:5]
            sockets.append((state, local, peer))
    return sockets


def _assert_loopback_only() -> None:
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    if shutil.which("ss") is None:  # iproute2 missing: the nodes' addresses are all there is to check
        return
    sockets = _ray_sockets()
    assert sockets, "no Ray sockets found"
    outward = [
        s
        for s in sockets
        if not LOOPBACK.match(s[1]) or (s[2] not in ("*:*", "0.0.0.0:*") and not LOOPBACK.match(s[2]))
    ]
    assert not outward, f"Ray sockets beyond the loopback interface: {outward}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local Ray for the module (2 CPUs, loopback only, no dashboard); yields its address."""
    saved = dict(os.environ)
    os.environ.update(LOCAL_ENV)
    # the workers inherit the environment now: the test cache (conftest sets it per test, after this)
    os.environ["MEDMNIST_LIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        _assert_loopback_only()
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def local(optimizers_reference: Path) -> Path:
    """The batch run by the local executor, in this process (tests/batch/conftest.py)."""
    return optimizers_reference


def _assert_same_results(got: Path, want: Path) -> None:
    rows, expected = csv_rows(got / "results.csv"), csv_rows(want / "results.csv")
    assert [{k: r[k] for k in STABLE} for r in rows] == [{k: r[k] for k in STABLE} for r in expected]
    for g, w in zip(rows, expected, strict=True):
        for key in SCORES:  # the runs' thread counts differ: float sums may differ in the last bits
            assert float(g[key]) == pytest.approx(float(w[key]), rel=1e-5), (g["run"], key)


def _tasks() -> list[int]:
    """Pids of this module's Ray workers running one of our runs now."""
    pids = []
    for pid in descendants(os.getpid()):  # the module's Ray runs under this process
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(TASK.encode()):
                pids.append(pid)
        except OSError:
            continue
    return pids


def _run_dir_of(pid: int) -> str | None:
    """The run a Ray worker is running: the directory of the console.log it writes to."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith("/console.log"):
            return Path(target).parent.name
    return None


def test_batch_on_ray_equals_the_local_executor(cluster: str, local: Path, tmp_path: Path) -> None:
    puts = puts_made()
    assert main(["batch", *OPTIMIZERS, "--root", str(tmp_path), "--executor", "ray"]) == 0
    assert puts_made() - puts == 1  # five runs on one dataset (the demo): put in the object store once
    batch = tmp_path / "optimizers"
    records = batch_records(batch)
    assert sorted(records) == RUNS
    assert all(r["status"] == "ok" and r["attempt"] == 1 for r in records.values())
    assert all((batch / name / "console.log").exists() for name in RUNS)  # quiet runs: each console in its run
    _assert_same_results(batch, local)
    _assert_loopback_only()  # also while workers exist


def test_a_killed_ray_worker_is_retried_and_every_run_recorded_once(cluster: str, local: Path, tmp_path: Path) -> None:
    killed, status = _kill_a_worker_mid_run(
        lambda: main(["batch", *OPTIMIZERS, "--root", str(tmp_path), "--executor", "ray"])
    )
    assert killed is not None, "no Ray worker was caught mid-run"
    assert status == [0]
    records = batch_records(tmp_path / "optimizers")
    assert sorted(records) == RUNS and all(r["status"] == "ok" for r in records.values())
    assert records[killed]["attempt"] == 1  # Ray's retry is the same attempt of the batch
    _assert_same_results(tmp_path / "optimizers", local)


def _kill_a_worker_mid_run(target, deadline: float = 120) -> tuple[str | None, list[int]]:
    """Run ``target`` (a batch) in a thread; SIGKILL the first Ray worker caught mid-run. (run name, exit statuses)"""
    status: list[int] = []
    batch = threading.Thread(target=lambda: status.append(target()))
    batch.start()
    killed, end = None, time.monotonic() + deadline
    while killed is None and batch.is_alive() and time.monotonic() < end:
        for pid in _tasks():
            name = _run_dir_of(pid)  # mid-run: its console.log is open
            if name is not None:
                os.kill(pid, signal.SIGKILL)
                killed = name
                break
        time.sleep(0.02)
    batch.join(timeout=300)
    return killed, status


def test_a_run_whose_worker_dies_more_often_than_retried_is_recorded_failed(cluster: str, tmp_path: Path) -> None:
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\nseeds: [0]\nbase: {data: {subset: 100}, trainer: {max_epochs: 3}}\n")
    command = ["batch", str(spec), "--root", str(tmp_path), "--executor", "ray", "--ray.max_retries", "0"]
    killed, status = _kill_a_worker_mid_run(lambda: main(command))
    assert killed == "base__seed0" and status == [1]
    record = json.loads((tmp_path / "one" / killed / "record.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("Ray task failed (WorkerCrashedError)")


def test_sigkill_of_the_driver_then_the_same_command_resumes(cluster: str, local: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "medmnist_lit", "batch", *OPTIMIZERS, "--root", str(tmp_path)]
    command += ["--executor", "ray", "--ray.address", cluster]  # RAY_AUTH_MODE=token: ray.init set it here
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    batch = tmp_path / "optimizers"
    wait_for_a_record(proc, batch)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while _tasks() and time.monotonic() < deadline:  # Ray ends the dead driver's tasks
        time.sleep(0.1)
    assert not _tasks(), "the dead driver's runs kept running"
    before = batch_records(batch)
    assert 1 <= len(before) < len(RUNS), "the kill should land mid-batch"
    snapshot = {p: p.stat().st_mtime_ns for p in batch.rglob("*") if p.is_file()}
    time.sleep(0.5)  # nothing may keep writing after the kill
    assert {p: p.stat().st_mtime_ns for p in batch.rglob("*") if p.is_file()} == snapshot

    assert main(["batch", *OPTIMIZERS, "--root", str(tmp_path), "--executor", "ray"]) == 0
    after = batch_records(batch)
    assert sorted(after) == RUNS
    for name, record in before.items():
        assert after[name] == record, f"{name} was finished before the kill and must not run again"
    _assert_same_results(batch, local)


def _run(name: str, data: dict) -> Task:
    run = Run(name=name, variant=name, seed=0, command="fit", config={"data": data}, varied={})
    return Task(run=run, run_dir=f"/nonexistent/{name}")


def _load_remotely(source: str, cache_dir: str, key=None, data=None) -> tuple[dict, list[str]]:
    """In a Ray task: what load_dataset gives (served ``data`` under ``key`` if given), and what is in ``cache_dir``."""
    with serving({key: data} if key is not None else {}):
        got = load_dataset(source, cache_dir=cache_dir)
    arrays = {"images": got.images, "labels": got.labels, "ids": got.ids}
    return {**arrays, "writeable": got.images.flags.writeable}, sorted(os.listdir(cache_dir))


def test_each_dataset_is_put_once_and_a_task_is_served_it_without_the_cache(cluster: str, tmp_path: Path) -> None:
    source = make_image_folder(tmp_path / "images", {"a": 3, "b": 2})
    tasks = [  # two runs on one dataset (other cache dirs, other options), one on another, one that cannot load
        _run("one", {"source": str(source), "cache_dir": str(tmp_path / "c1"), "subset": 4}),
        _run("two", {"source": str(source), "cache_dir": str(tmp_path / "c2"), "split": "kfold"}),
        _run("rgb", {"source": str(source), "channels": 3}),
        _run("bad", {"source": str(tmp_path / "missing")}),
    ]
    puts = puts_made()
    refs = put_datasets(tasks)
    assert puts_made() - puts == 2
    key = dataset_key(source)
    assert set(refs) == {key, dataset_key(source, channels=3)}
    want = load_dataset(source, cache_dir=tmp_path / "c1")

    empty = tmp_path / "empty"
    empty.mkdir()
    remote = ray.remote(_load_remotely)
    got, listing = ray.get(remote.remote(str(source), str(empty), key, refs[key]))
    assert listing == []  # neither decoded nor read from a cache: served from the object store
    assert not got["writeable"]  # Ray's read-only mapping of the object store, not a copy
    for name in ("images", "labels", "ids"):
        np.testing.assert_array_equal(got[name], getattr(want, name))
    _, listing = ray.get(remote.remote(str(source), str(empty)))  # not served: the task decodes into its cache
    assert listing


def test_a_batch_on_ray_reads_its_dataset_from_the_object_store_only(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medmnist_lit.batch.ray_executor as executor

    source = make_image_folder(tmp_path / "images", {"a": 12, "b": 12})
    cache = tmp_path / "cache"

    def put_then_empty_the_cache(tasks: list[Task]) -> dict:
        refs = executor_put(tasks)
        shutil.rmtree(cache)  # a task that decoded or read the cache now would leave an entry here
        cache.mkdir()
        return refs

    executor_put = executor.put_datasets
    monkeypatch.setattr(executor, "put_datasets", put_then_empty_the_cache)
    spec = tmp_path / "two.yaml"
    data = f"{{source: {source}, cache_dir: {cache}}}"
    spec.write_text(
        f"name: two\nseeds: [0, 1]\nbase: {{data: {data}, model: {{head: mlp}}, trainer: {{max_epochs: 1}}}}\n"
    )
    puts = puts_made()
    assert main(["batch", str(spec), "--root", str(tmp_path), "--executor", "ray"]) == 0
    assert puts_made() - puts == 1
    records = batch_records(tmp_path / "two")
    assert sorted(records) == ["base__seed0", "base__seed1"] and all(r["status"] == "ok" for r in records.values())
    assert list(cache.iterdir()) == []
