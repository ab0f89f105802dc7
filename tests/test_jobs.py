"""The run job: plain picklable data in, a record out; the same record in a fresh process as in this one."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from medmnist_lit.cli import main
from medmnist_lit.jobs import RECORD, RunJob, run_job

BASE = {
    "trainer": {"max_epochs": 2, "enable_progress_bar": False, "deterministic": True},
    "data": {"batch_size": 64, "subset": 300},
    "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
}


def test_resolved_config_applies_seed_split_folds_and_directory(tmp_path: Path) -> None:
    job = RunJob("cv", BASE, run_dir=str(tmp_path / "b" / "r"), seed=3, split_file="s.npz", folds=(0, 2), quiet=True)
    config = job.resolved_config()
    assert config["seed_everything"] == 3 and config["data"]["seed"] == 3
    assert config["data"]["split_file"] == "s.npz" and config["cv"]["folds_to_run"] == [0, 2]
    logger = config["trainer"]["logger"]["init_args"]
    assert (logger["save_dir"], logger["name"], logger["version"]) == (str(tmp_path / "b"), "", "r")
    assert config["trainer"]["enable_progress_bar"] is False
    assert BASE["data"] == {"batch_size": 64, "subset": 300}  # the job's own config is never changed
    assert RunJob("fit", BASE, folds=(1,)).resolved_config()["data"]["fold"] == 1
    with pytest.raises(ValueError, match="trains one fold"):
        RunJob("fit", BASE, folds=(0, 1)).resolved_config()
    with pytest.raises(ValueError, match="fit or cv"):
        RunJob("test", BASE).resolved_config()


def test_a_job_runs_the_same_in_a_fresh_process(tmp_path: Path) -> None:
    """The job depends on nothing in the calling process: a spawned interpreter gives the same record."""
    here = RunJob("fit", BASE, run_dir=str(tmp_path / "here"), seed=1)
    there = RunJob("fit", BASE, run_dir=str(tmp_path / "there"), seed=1, quiet=True)
    assert pickle.loads(pickle.dumps(there)) == there
    local = run_job(here)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        remote = pool.submit(run_job, there).result()
    assert local["status"] == remote["status"] == "ok", remote.get("traceback")
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "n_train"):
        assert remote["metrics"][key] == pytest.approx(local["metrics"][key], abs=1e-6), key
    assert remote["history"].keys() == local["history"].keys()
    for key, values in local["history"].items():
        assert remote["history"][key] == pytest.approx(values, abs=1e-6), key
    for directory in (tmp_path / "here", tmp_path / "there"):  # each job owns its directory
        assert json.loads((directory / RECORD).read_text())["status"] == "ok"
        assert (directory / "checkpoints").is_dir() and (directory / "metrics.json").is_file()
    assert (tmp_path / "there" / "console.log").is_file()


def test_cv_job_runs_the_selected_folds_and_averages_their_curves(tmp_path: Path) -> None:
    config = {**BASE, "data": {**BASE["data"], "split": "kfold", "folds": 3}}
    record = run_job(RunJob("cv", config, run_dir=str(tmp_path / "cv"), seed=0, folds=(0, 2)))
    assert record["status"] == "ok", record.get("traceback")
    assert record["metrics"]["n_folds"] == 2
    assert sorted(p.name for p in (tmp_path / "cv").glob("fold_*")) == ["fold_0", "fold_2"]
    assert len(record["history"]["val/acc"]) == 2 and len(record["history"]["train/loss"]) == 2


def test_failures_are_recorded_or_raised(tmp_path: Path, capsys) -> None:
    bad = {**BASE, "data": {**BASE["data"], "subset": 1}}
    record = run_job(RunJob("fit", bad, run_dir=str(tmp_path / "f")))
    assert record["status"] == "failed" and "subset" in record["error"] and "Traceback" in record["traceback"]
    assert json.loads((tmp_path / "f" / RECORD).read_text())["status"] == "failed"
    with pytest.raises(ValueError, match="subset"):
        run_job(RunJob("fit", bad), record_failures=False)
    # the command line runs the same job and reports the error in one line
    assert main(["fit", "--data.subset", "1"]) == 2
    assert "subset" in capsys.readouterr().err


def test_the_command_line_and_a_job_agree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--trainer.max_epochs", "2", "--data.batch_size", "64", "--data.subset", "300", "--seed_everything", "1"]
    args += [
        "--data.seed",
        "1",
        "--optimizer.lr",
        "0.05",
        "--optimizer.momentum",
        "0.9",
        "--trainer.deterministic",
        "true",
    ]
    assert main(["fit", *args, "--trainer.enable_progress_bar", "false"]) == 0
    cli = json.loads((tmp_path / "lightning_logs" / "medmnist" / "version_0" / "metrics.json").read_text())
    record = run_job(RunJob("fit", BASE, run_dir=str(tmp_path / "job"), seed=1))
    assert record["metrics"]["test/acc"] == pytest.approx(cli["test/acc"], abs=1e-6)
    assert record["metrics"]["val/loss"] == pytest.approx(cli["val/loss"], abs=1e-6)
