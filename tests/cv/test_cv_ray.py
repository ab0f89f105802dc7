"""``cv --cv.executor ray`` on a local Ray of 2 CPUs, loopback only: equal to local cv fold for fold, data put once."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import descendants
from runfiles import csv_rows

from medmnist_lit.cli import main
from medmnist_lit.cv.ray_folds import chunk_size
from medmnist_lit.utils import ray_runtime
from medmnist_lit.utils.ray_runtime import LOCAL_ENV

os.environ.update(LOCAL_ENV)  # before Ray is imported: it reads them then (loopback only, no usage reports)
ray = pytest.importorskip("ray")

FAST = ["--trainer.max_epochs", "2", "--data.batch_size", "32", "--optimizer.lr", "0.05"]
KFOLD = ["--data.split", "kfold", "--data.folds", "4", "--data.subset", "160"]
LOO = ["--data.split", "loo", "--data.subset", "12", "--data.test_fraction", "0", "--trainer.max_epochs", "1"]
LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|\[::1\]|\[::ffff:127\.\d+\.\d+\.\d+\]|\*|0\.0\.0\.0):(\d+|\*)$")


def _ray_sockets() -> list[tuple[str, str]]:
    """(local, peer) of every TCP socket of the Ray processes this test process started (``ss``)."""
    ours = descendants(os.getpid())
    out = subprocess.run(["ss", "-Htanp"], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines() if {int(p) for p in re.findall(r"pid=(\d+)", line)} & ours]
    return [(fields[3], fields[4]) for fields in lines]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """One local Ray for the module: 2 CPUs, bound to 127.0.0.1, no dashboard."""
    saved = dict(os.environ)
    ray.init(
        address="local",  # our own, not one another test started with `ray start`
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _node_ip_address="127.0.0.1",
    )
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def _cv(root: Path, name: str, *args: str) -> Path:
    assert main(["cv", *FAST, "--trainer.logger.init_args.name", name, *args]) == 0
    return root / "lightning_logs" / name / "version_0"


def _same(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            _same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        close = got == pytest.approx(want, rel=1e-5, abs=2e-6)  # oof.csv rounds to 6 decimals
        assert (math.isnan(got) and math.isnan(want)) or close, where
    else:
        assert got == want, where


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _files(directory: Path) -> list[str]:
    """The files under ``directory`` but TensorBoard's (named by time and host)."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if "tfevents" not in p.name)


def _assert_same_run(got: Path, want: Path) -> None:
    """folds.csv, oof.csv, summary.json (all but timing and the executor) and the fold directories are the same."""
    for name in ("folds.csv", "oof.csv"):
        rows, expected = csv_rows(got / name), csv_rows(want / name)
        skip = {"seconds"}
        _same(
            [{k: _number(v) for k, v in r.items() if k not in skip} for r in rows],
            [{k: _number(v) for k, v in r.items() if k not in skip} for r in expected],
            name,
        )
    summary, expected = (json.loads((p / "summary.json").read_text()) for p in (got, want))
    assert summary["run"].pop("executor") == "ray" and expected["run"].pop("executor") == "local"
    del summary["run"]["seconds"], expected["run"]["seconds"]
    _same(summary, expected, "summary")
    folds = sorted(p.name for p in want.glob("fold_*"))
    assert folds and sorted(p.name for p in got.glob("fold_*")) == folds
    for fold in folds:
        assert _files(got / fold) == _files(want / fold), fold
        assert list((got / fold).glob("events.out.tfevents.*")), fold
        metrics, expected = (json.loads((p / fold / "metrics.json").read_text()) for p in (got, want))
        del metrics["seconds"], expected["seconds"]
        _same(metrics, expected, f"{fold}/metrics.json")
    assert not list(got.glob(".ray-probe-*"))


def test_kfold_on_ray_equals_local_fold_for_fold(cluster: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = _cv(tmp_path, "local", *KFOLD)
    puts = ray_runtime.puts_made()
    on_ray = _cv(tmp_path, "ray", *KFOLD, "--cv.executor", "ray", "--cv.chunk_size", "2")
    assert ray_runtime.puts_made() == puts + 1  # the dataset went to the object store once, for both tasks
    _assert_same_run(on_ray, local)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    if not shutil.which("ss"):  # iproute2 missing: the node addresses above are what can be checked
        return
    sockets = _ray_sockets()
    assert sockets, "no Ray sockets found"
    outward = [s for s in sockets if not (LOOPBACK.match(s[0]) and LOOPBACK.match(s[1]))]
    assert not outward, f"sockets beyond the loopback interface: {outward}"


def test_loo_in_chunks_equals_local(cluster: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = _cv(tmp_path, "local", *LOO)
    puts = ray_runtime.puts_made()
    on_ray = _cv(tmp_path, "ray", *LOO, "--cv.executor", "ray", "--cv.chunk_size", "5")  # chunks of 5, 5 and 2
    assert ray_runtime.puts_made() == puts + 1
    _assert_same_run(on_ray, local)
    assert json.loads((on_ray / "summary.json").read_text())["run"]["n_folds"] == 12


def test_sequential_folds_on_ray_equal_local(cluster: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [*KFOLD, "--cv.engine", "sequential", "--trainer.max_epochs", "1"]
    local = _cv(tmp_path, "local", *args)
    _assert_same_run(_cv(tmp_path, "ray", *args, "--cv.executor", "ray"), local)


def test_chunk_size_from_resources() -> None:
    assert chunk_size(5000, per_pass=10_000, slots=2) == 2500  # one pass per CPU
    assert chunk_size(5000, per_pass=1000, slots=2) == 1000  # no more than one pass holds
    assert chunk_size(3, per_pass=10, slots=8) == 1
    assert chunk_size(3, per_pass=10, slots=8, override=2) == 2
    with pytest.raises(ValueError, match=r"cv\.chunk_size must be at least 1"):
        chunk_size(3, per_pass=10, slots=2, override=0)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="mounts a private tmpfs (root)")
def test_a_run_root_the_workers_cannot_see_fails_in_one_line(cluster: str, tmp_path: Path) -> None:
    # the driver's run root is a tmpfs mounted in its own mount namespace only: the Ray workers see another folder
    root = tmp_path / "private"
    root.mkdir()
    cv = [sys.executable, "-m", "medmnist_lit", "cv", *FAST, *KFOLD, "--cv.executor", "ray"]
    script = 'mount -t tmpfs tmpfs "$0" && cd "$0" && exec "$@"'
    command = ["unshare", "-m", "sh", "-c", script, str(root), *cv, "--cv.ray_address", cluster]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if "unshare failed" in done.stderr or "mount: " in done.stderr:
        pytest.skip(f"no private mount here: {done.stderr.strip()}")
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert errors[0].startswith("medmnist-lit cv: error: the Ray node 127.0.0.1 cannot use the run root "), errors
    assert "lightning_logs" in errors[0] and "--trainer.logger.init_args.save_dir" in errors[0], errors
    assert not list(root.rglob("*")), "the workers wrote nothing where the driver could not see it"


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where Ray is not installed
    assert main(["cv", *FAST, *KFOLD, "--cv.executor", "ray"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    wanted = "medmnist-lit cv: error: --cv.executor ray needs Ray: pip install 'medmnist-lit[ray]' (or pip install ray)"
    assert errors[0].startswith(wanted), errors


def test_tasks_map_the_put_dataset_without_a_copy(cluster: str) -> None:
    # a task given the put dataset's reference reads the object store's read-only shared memory (no copy), and a
    # DataModule around the loaded data serves what the original serves
    from medmnist_lit.cv.ray_folds import loaded_data
    from medmnist_lit.data.datamodule import MedMNISTDataModule

    def images_in_task(data: Any) -> tuple[bool, int]:  # local: sent by value (the workers cannot import tests)
        images = data.dataset.images
        return images.flags.writeable, int(images.sum())

    datamodule = MedMNISTDataModule(split="kfold", folds=2, subset=100)
    ref = ray_runtime.put(loaded_data(datamodule))
    writeable, total = ray.get(ray.remote(images_in_task).remote(ref))
    assert not writeable and total == int(datamodule.dataset.images.sum())
    served = MedMNISTDataModule.around(ray.get(ref).dataset, dict(datamodule.hparams), split=datamodule.split)
    assert served.split is datamodule.split and served.tensors()[0].equal(datamodule.tensors()[0])
