"""One run across devices: ``fit`` and a 2-fold ``cv`` with Lightning DDP (2 CPU processes, gloo) equal one device.

Like with like: a step of 2 processes with batches of B is the step of one device with batches of 2B. Both processes
draw the same epoch order and take every other sample of it, so their k-th batches together hold exactly the
single device's k-th batch, and DDP's averaged gradient is that of the mean loss over the union (the classifier
weights each process by its share: a cv stream gives them unequal counts). 120 training samples split evenly, so no
process pads its share with a repeated sample.

DDP runs the command as a subprocess, the way a user does: Lightning's launcher re-executes it for the second
process. Everything stays on the loopback interface: a private network namespace holding only ``lo`` where the
tests run as root (as in CI), ``MASTER_ADDR=127.0.0.1`` and gloo on ``lo`` in any case.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import medmnist_lit
from medmnist_lit.cli import main

B = 16
COMMON = [
    "--data.subset", "200", "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--seed_everything", "0",
    "--optimizer", "SGD", "--optimizer.lr", "0.05", "--optimizer.momentum", "0.9",
]  # fmt: skip
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--data.batch_size", str(B)]
ONE = ["--trainer.devices", "1", "--data.batch_size", str(2 * B)]
CV = ["--data.split", "kfold", "--data.folds", "2"]
# inside the namespace: bring lo up and refuse to run unless it is the only interface
ONLY_LOOPBACK = 'ip link set lo up && test "$(ip -o link | cut -d: -f2 | tr -d " ")" = lo && exec "$@"'


def _private_network() -> list[str]:
    """The command prefix that runs a command in a new network namespace, where it may make one (root, as in CI).

    Without one, traffic still stays on loopback (MASTER_ADDR, gloo on lo), but torch's rendezvous store listens on
    every interface while the run lasts.
    """
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        return []
    if subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False).returncode != 0:
        return []  # a container without the capability
    return ["unshare", "--net", "sh", "-c", ONLY_LOOPBACK, "sh"]


def _loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp(cwd: Path, command: str, args: list[str]) -> str:
    """Run ``medmnist-lit command`` on 2 CPU processes; its console output."""
    root = str(Path(medmnist_lit.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_loopback_port()),
        "GLOO_SOCKET_IFNAME": "lo",
        "MEDMNIST_LIT_CACHE": str(cwd / "cache"),
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    }
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MEDMNIST_LIT_CV_RUN_DIR"):
        env.pop(key, None)
    assert env["MASTER_ADDR"] == "127.0.0.1"
    cmd = [*_private_network(), sys.executable, "-m", "medmnist_lit", command, *args]
    done = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fit and cv, each on 2 processes (subprocesses) and on one device (in this process)."""
    cwd = tmp_path_factory.mktemp("ddp")
    out = {
        "fit": _ddp(cwd, "fit", [*COMMON, *DDP, "--trainer.logger.init_args.name", "fit2"]),
        "cv": _ddp(cwd, "cv", [*COMMON, *CV, *DDP, "--trainer.logger.init_args.name", "cv2"]),
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MEDMNIST_LIT_CACHE", str(cwd / "cache"))
        assert main(["fit", *COMMON, *ONE, "--trainer.logger.init_args.name", "fit1"]) == 0
        # the engine DDP falls back to (on one device the fold-parallel one gives the same numbers, other files)
        one_by_one = ["--cv.engine", "sequential"]
        assert main(["cv", *COMMON, *CV, *ONE, *one_by_one, "--trainer.logger.init_args.name", "cv1"]) == 0
    return {"logs": cwd / "lightning_logs", "out": out}


def _files(run: Path) -> list[str]:
    """Every file of a run directory, event files by kind (their names hold a time stamp and a process id)."""
    names = [str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()]
    return sorted(re.sub(r"events\.out\.tfevents\.[^/]*?(\.(cv|trial))?$", r"events\1", n) for n in names)


def _close(a: Any, b: Any, where: str = "") -> None:
    """Equal within float tolerance, recursively (timings excepted)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            if key not in ("seconds", "engine"):
                _close(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), where
    else:
        assert a == b, where


def _csv(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [{k: float(v) if re.fullmatch(r"-?[\d.e+-]+|nan", v) else v for k, v in r.items()} for r in rows]


def test_ddp_fit_equals_one_device_and_writes_once(runs: dict[str, Any]) -> None:
    two, one = runs["logs"] / "fit2", runs["logs"] / "fit1"
    assert [p.name for p in two.iterdir()] == ["version_0"]  # the second process made no run directory of its own
    two, one = two / "version_0", one / "version_0"
    assert _files(two) == _files(one)  # the same files, once: one events file per stage, one metrics.json
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["n_train"] == 120 and metrics["epochs"] == 2
    _close(metrics, json.loads((one / "metrics.json").read_text()))
    out = runs["out"]["fit"]
    assert out.count("starting (loading PyTorch") == 1 and out.count("run dir:") == 1  # rank zero's lines only
    assert len(re.findall(r"^Epoch \[\d/2\]", out, re.M)) == 2


def test_ddp_cv_equals_one_device_fold_for_fold(runs: dict[str, Any]) -> None:
    two, one = runs["logs"] / "cv2", runs["logs"] / "cv1"
    assert [p.name for p in two.iterdir()] == ["version_0"]
    two, one = two / "version_0", one / "version_0"
    assert _files(two) == _files(one)
    _close(json.loads((two / "summary.json").read_text()), json.loads((one / "summary.json").read_text()))
    _close(_csv(two / "folds.csv"), _csv(one / "folds.csv"))
    _close(_csv(two / "oof.csv"), _csv(one / "oof.csv"))
    out = runs["out"]["cv"]
    assert "several devices train data-parallel" in out  # the fold-parallel engine steps aside
    assert out.count("Fold 0,") == 1 and out.count("run dir:") == 1


@pytest.mark.parametrize(
    ("devices", "several"),
    [(1, False), (2, True), ("1", False), ("2", True), ("0,1", True), ("[0]", False), ([0, 1], True), ("auto", False)],
)
def test_cv_engine_sees_several_devices_as_the_cli_passes_them(devices: Any, several: bool) -> None:
    from medmnist_lit.cv.fold_parallel import several_devices

    assert several_devices({"devices": devices, "accelerator": "cpu"}) is several


def test_console_lines_come_from_the_first_process_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from medmnist_lit.utils.console import RANK_VARIABLES, setup_console

    for key in RANK_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    setup_console()
    log = logging.getLogger("medmnist_lit")
    monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning's launcher gives the second process
    log.info("second process says")
    log.error("second process fails")
    monkeypatch.setenv("LOCAL_RANK", "0")
    log.info("first process says")
    out = capsys.readouterr().out
    assert "second process says" not in out and "second process fails" in out and "first process says" in out


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_strategies_that_train_in_child_processes_are_refused(
    strategy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", "--trainer.strategy", strategy, "--trainer.devices", "2", "--trainer.accelerator", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"fit: error: trainer.strategy {strategy} trains in child processes" in err
    assert "use --trainer.strategy ddp" in err and len(err.strip().splitlines()) == 1
