"""``medmnist-lit batch`` and ``report``: spec expansion and validation, resume after SIGKILL, failures, tables."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from procs import children, wait_for_a_record
from runfiles import batch_records, csv_rows

from medmnist_lit.batch.spec import load_spec, parse_overrides, validate
from medmnist_lit.cli import main
from medmnist_lit.utils.stats import corrected_resampled_ttest

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "experiments").glob("*.yaml"))
SHIPPED = ("compare_splits", "optimizers", "lr_schedules", "batch_regimes", "fitting", "leakage")
TINY = ["--data.subset", "100", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
# the shipped optimizers spec on tiny data: 5 runs of about a second each
OPTIMIZERS = [str(REPO / "experiments" / "optimizers.yaml"), "--seeds", "[0]", *TINY]
#: results.csv columns that do not depend on timing (seconds) or on how often a run was attempted
STABLE = ("run", "variant", "seed", "command", "optimizer", "status", "n_train", "n_val", "n_test", "epochs")


def _spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------- the spec
GRID_SPEC = """
name: g
base:
  trainer: {max_epochs: 1}
  model: {head: mlp, hidden_sizes: [8]}
  optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.1, momentum: 0.9}}
seeds: [3, 4]
runs:
  - {name: sgd}
  - name: adam
    optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.01}}
  - {name: kf, command: cv, data.split: kfold, data.folds: 3}
grid:
  optimizer.init_args.lr: [0.1, 0.01]
  data.batch_size: [16, full]
"""


def test_runs_times_grid_times_seeds_with_stable_names(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, GRID_SPEC), root=tmp_path / "logs", overrides={"trainer.max_epochs": 2})
    assert len(spec.runs) == 3 * 4 * 2 and len(spec.variants) == 12
    assert spec.variants[:4] == [
        "sgd__lr=0.1__batch_size=16",
        "sgd__lr=0.1__batch_size=full",
        "sgd__lr=0.01__batch_size=16",
        "sgd__lr=0.01__batch_size=full",
    ]
    assert [r.name for r in spec.runs[:13:12]] == [
        "sgd__lr=0.1__batch_size=16__seed3",
        "sgd__lr=0.1__batch_size=16__seed4",
    ]
    assert spec.baseline == "sgd__lr=0.1__batch_size=16"  # the first variant when the spec names none
    adam = next(r for r in spec.runs if r.name == "adam__lr=0.01__batch_size=full__seed4")
    # a mapping replaces the base's optimizer (no momentum for Adam); the grid's dotted key edits inside it
    assert adam.config["optimizer"] == {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}}
    assert adam.config["data"] == {"batch_size": "full", "seed": 4} and adam.config["seed_everything"] == 4
    assert adam.config["trainer"]["max_epochs"] == 2  # command-line overrides come last
    assert adam.config["trainer"]["logger"]["init_args"] == {
        "save_dir": str(tmp_path / "logs"),
        "name": "g",
        "version": "adam__lr=0.01__batch_size=full__seed4",
        "default_hp_metric": False,
    }
    assert adam.varied == {
        "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01}},
        "optimizer.init_args.lr": 0.01,
        "data.batch_size": "full",
    }
    sgd = next(r for r in spec.runs if r.variant == "sgd__lr=0.01__batch_size=16")
    assert sgd.config["optimizer"]["init_args"] == {"lr": 0.01, "momentum": 0.9}
    assert {r.command for r in spec.runs if r.variant.startswith("kf")} == {"cv"}
    # the hash covers what a run computes, not where it writes
    moved = load_spec(_spec(tmp_path, GRID_SPEC), root=tmp_path / "elsewhere", overrides={"trainer.max_epochs": 2})
    assert [r.config_hash for r in moved.runs] == [r.config_hash for r in spec.runs]
    validate(spec)  # every run parses


def test_unknown_spec_key_is_named(tmp_path: Path) -> None:
    path = _spec(tmp_path, "name: x\nseeds: [0]\ngird: {data.batch_size: [1]}\n")
    with pytest.raises(ValueError, match=r"spec.yaml: unknown spec key 'gird'"):
        load_spec(path)


def test_seeds_from_the_command_line_are_validated_like_the_spec_s(tmp_path: Path) -> None:
    path = _spec(tmp_path, "name: x\nseeds: [0]\n")
    assert [r.seed for r in load_spec(path, seeds=[2, 1]).runs] == [2, 1]
    with pytest.raises(ValueError, match=r"spec.yaml: --seeds has duplicates: \[0, 0\]"):
        load_spec(path, seeds=[0, 0])  # two runs would share one name and directory
    with pytest.raises(ValueError, match=r"--seeds must be a non-empty list of non-negative integers"):
        load_spec(path, seeds=[-1])


def test_a_multi_process_run_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    text = "name: ddp\nseeds: [0]\nruns:\n  - {name: one}\n  - {name: two, trainer.devices: 2, trainer.strategy: ddp}\n"
    path = _spec(tmp_path, text)
    assert main(["batch", str(path), "--root", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert "run 'two__seed0' (fit): trainer.devices=2 cannot run inside a batch" in err and "one__seed0" not in err
    assert not (tmp_path / "logs").exists()


def test_bad_config_key_names_the_key_and_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _spec(
        tmp_path,
        "name: bad\nseeds: [0]\nruns:\n  - {name: good}\n  - {name: typo, data.batch_siz: 16}\n",
    )
    spec = load_spec(path, root=tmp_path)
    with pytest.raises(ValueError) as err:
        validate(spec)
    assert "run 'typo__seed0' (fit)" in str(err.value) and "batch_siz" in str(err.value)
    assert "good__seed0" not in str(err.value)
    # through the command: exit status 2, nothing started, nothing written
    assert main(["batch", str(path), "--root", str(tmp_path / "logs")]) == 2
    assert "batch_siz" in capsys.readouterr().err and not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds: [0]\nruns: [{name: a, data.seed: 3}]\n", "data.seed is set by seeds"),
        ("runs: [{name: a, data.folds: 3}]\ngrid: {data.folds: [2, 4]}\n", "grid key 'data.folds' always replaces"),
        ("runs: [{name: a}, {name: a}]\n", "two runs are named 'a'"),
        ("runs: [{name: a b}]\n", "run name 'a b'"),
        ("grid: {data.folds: 3}\n", "grid key 'data.folds' needs a non-empty list"),
        ("runs: [{name: a}]\nbaseline: b\n", "baseline 'b' is not a variant"),
        ("base: missing.yaml\n", "base config 'missing.yaml' not found"),
    ],
)
def test_spec_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_spec(_spec(tmp_path, text))


def test_overrides_are_read_as_yaml() -> None:
    got = parse_overrides(["--data.source", "/x y", "--trainer.max_epochs=5", "--model.hidden_sizes", "[8, 8]"])
    assert got == {"data.source": "/x y", "trainer.max_epochs": 5, "model.hidden_sizes": [8, 8]}
    with pytest.raises(ValueError, match="needs a value"):
        parse_overrides(["--data.subset"])


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_specs_pass_dry_run(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "experiments" / f"{name}.yaml"
    assert path in SPECS
    assert main(["batch", str(path), "--dry-run", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    spec = yaml.safe_load(path.read_text())
    n_runs = (
        len(spec["seeds"])
        * len(spec.get("runs") or [None])
        * math.prod(len(v) for v in (spec.get("grid") or {}).values())
    )
    assert out[0] == f"batch {name}: {n_runs} runs in {tmp_path / name}"
    assert out[-1] == f"would run {n_runs} ({n_runs} new)" and len(out) == n_runs + 2
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


# -------------------------------------------------------------------------------------- running batches
@pytest.fixture
def reference(optimizers_reference: Path) -> Path:
    """The shipped optimizers spec run uninterrupted, in this process, on tiny data (tests/batch/conftest.py)."""
    return optimizers_reference


def test_batch_writes_records_tables_and_figures(reference: Path) -> None:
    records = batch_records(reference)
    assert sorted(records) == sorted(f"{v}__seed0" for v in ("sgd", "sgd_momentum", "adagrad", "adam", "adamw"))
    for name, record in records.items():
        assert record["status"] == "ok" and record["attempt"] == 1, name
        assert (reference / name / "metrics.json").exists() and (reference / name / "config.yaml").exists()
        assert len(record["history"]["val/acc"]) == 1 and 0 <= record["metrics"]["val/acc"] <= 1
    rows = csv_rows(reference / "results.csv")
    assert [r["run"] for r in rows] == [f"{v}__seed0" for v in ("sgd", "sgd_momentum", "adagrad", "adam", "adamw")]
    assert rows[1]["optimizer"] == "SGD(lr=0.01, momentum=0.9)" and rows[0]["n_train"] == "60.0"
    for column in ("val/acc", "train/acc", "test/acc", "seconds", "epochs"):
        assert all(r[column] for r in rows), column
    md = (reference / "results.md").read_text()
    assert "## Paired comparison with `sgd`" in md and re.search(r"^\| adam +\| 1 seeds +\|", md, re.M)
    tables = [line for line in md.splitlines() if line.startswith("|")]
    header = md.splitlines()[md.splitlines().index(tables[0]) + 1]
    assert re.fullmatch(r"(\|-+)+\|", header)  # a real Markdown table: header, rule, rows
    assert all(line.endswith("|") and (" | " in line or set(line) <= {"|", "-"}) for line in tables)
    for figure in ("metric.png", "curves.png", "train_val.png", "time.png"):
        assert (reference / figure).stat().st_size > 1000 and f"({figure})" in md


def test_report_rebuilds_identical_tables(reference: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(reference, copy)
    tables = {name: (copy / name).read_bytes() for name in ("results.csv", "variants.csv", "results.md")}
    for name in tables:
        (copy / name).unlink()
    assert main(["report", str(copy)]) == 0
    assert {name: (copy / name).read_bytes() for name in tables} == tables
    assert main(["report", str(tmp_path)]) == 2 and "not a batch directory" in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads worker pids from /proc")
def test_sigkill_mid_batch_then_resume_matches_uninterrupted(reference: Path, tmp_path: Path) -> None:
    root = tmp_path / "logs"
    command = [sys.executable, "-m", "medmnist_lit", "batch", *OPTIMIZERS, "--root", str(root), "--workers", "2"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    batch = root / "optimizers"
    wait_for_a_record(proc, batch)
    workers = children(proc.pid)  # the workers (and multiprocessing's resource tracker)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workers and not any(_alive(p) for p in workers), "workers outlived the batch process"
    before = batch_records(batch)
    assert 1 <= len(before) < 5, "the kill should land mid-batch"
    snapshot = {p: p.stat().st_mtime_ns for p in batch.rglob("*") if p.is_file()}
    time.sleep(0.5)  # nothing may keep writing after the kill
    assert {p: p.stat().st_mtime_ns for p in batch.rglob("*") if p.is_file()} == snapshot

    assert main(["batch", *OPTIMIZERS, "--root", str(root)]) == 0  # resume, in this process
    after = batch_records(batch)
    assert sorted(after) == sorted(batch_records(reference))
    for name, record in before.items():
        assert after[name] == record, f"{name} was finished before the kill and must not run again"
    for name in set(after) - set(before):  # restarted in a clean directory: no worker console.log left over
        assert not (batch / name / "console.log").exists(), name
        assert len(list((batch / name / "checkpoints").iterdir())) == 2, name
    got, want = csv_rows(batch / "results.csv"), csv_rows(reference / "results.csv")
    assert [{k: r[k] for k in STABLE} for r in got] == [{k: r[k] for k in STABLE} for r in want]
    for g, w in zip(got, want, strict=True):
        for key in ("val/acc", "train/acc", "test/acc", "val/loss", "test/loss"):
            assert float(g[key]) == pytest.approx(float(w[key]), rel=1e-5), (g["run"], key)
    assert main(["batch", *OPTIMIZERS, "--root", str(root)]) == 0  # all recorded: nothing runs again
    assert batch_records(batch) == after


FAILING = """
name: failing
base:
  trainer: {max_epochs: 1, enable_progress_bar: false}
  data: {subset: 60, batch_size: 32}
seeds: [0]
runs:
  - {name: fine}
  - {name: broken, data.subset: 1}   # passes the parser, fails when the data module is built
"""


def test_failed_run_is_recorded_and_rerun_only_with_retry(tmp_path: Path, capsys) -> None:
    spec = str(_spec(tmp_path, FAILING))
    root = str(tmp_path / "logs")
    batch = tmp_path / "logs" / "failing"
    assert main(["batch", spec, "--root", root]) == 1
    records = batch_records(batch)
    assert records["fine__seed0"]["status"] == "ok"
    broken = records["broken__seed0"]
    assert broken["status"] == "failed" and "data.subset must be at least 2" in broken["error"]
    assert "datamodule.py" in broken["traceback"] and broken["attempt"] == 1
    assert "`broken__seed0`: ValueError: data.subset must be at least 2" in (batch / "results.md").read_text()
    assert [r["status"] for r in csv_rows(batch / "results.csv")] == ["ok", "failed"]

    assert main(["batch", spec, "--root", root]) == 1  # failed runs are not retried by default
    assert batch_records(batch) == records
    assert main(["batch", spec, "--root", root, "--retry-failed"]) == 1
    again = batch_records(batch)
    assert again["broken__seed0"]["attempt"] == 2 and again["fine__seed0"] == records["fine__seed0"]

    # a changed config is never silently reused: an error naming run and key, or a rerun when asked
    capsys.readouterr()
    assert main(["batch", spec, "--root", root, "--trainer.max_epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "fine__seed0 (trainer.max_epochs: 1 → 2)" in err and "--rerun-changed" in err
    assert main(["batch", spec, "--root", root, "--trainer.max_epochs", "2", "--dry-run"]) == 0
    assert "fine__seed0    fit  changed" in capsys.readouterr().out
    assert main(["batch", spec, "--root", root, "--trainer.max_epochs", "2", "--rerun-changed"]) == 1
    assert batch_records(batch)["fine__seed0"]["metrics"]["epochs"] == 2


CRASHING = """
name: crashing
base:
  trainer: {max_epochs: 1, enable_progress_bar: false}
  data: {subset: 60, batch_size: 32}
seeds: [0]
runs:
  - {name: crash, trainer.callbacks: [{class_path: crashing.KillProcess}]}   # its worker process dies
  - {name: fine}   # in flight beside it when the pool breaks: tried again
"""


def test_a_run_that_kills_its_worker_is_recorded_failed_and_the_batch_goes_on(tmp_path: Path) -> None:
    from medmnist_lit.batch.worker import WORKER_DIED

    spec = str(_spec(tmp_path, CRASHING))
    assert main(["batch", spec, "--root", str(tmp_path / "logs"), "--workers", "2"]) == 1
    records = batch_records(tmp_path / "logs" / "crashing")
    assert {name: r["status"] for name, r in records.items()} == {"crash__seed0": "failed", "fine__seed0": "ok"}
    assert records["crash__seed0"]["error"] == WORKER_DIED and records["crash__seed0"]["attempt"] == 1
    assert [r["status"] for r in csv_rows(tmp_path / "logs" / "crashing" / "results.csv")] == ["failed", "ok"]


def _write_run(directory: Path, run: dict, metrics: dict, config: dict, folds: list[dict] | None = None) -> None:
    (directory / run["name"]).mkdir(parents=True)
    record = {**run, "status": "ok", "metrics": metrics, "config": config, "seconds": 1.0, "attempt": 1}
    (directory / run["name"] / "record.json").write_text(json.dumps(record))
    if folds:
        with (directory / run["name"] / "folds.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(folds[0]))
            writer.writeheader()
            writer.writerows(folds)


def test_paired_comparison_by_seed_and_by_fold(tmp_path: Path) -> None:
    """Fit variants pair by seed, cv variants by (seed, fold); different splits are not paired."""
    from medmnist_lit.batch.report import comparisons, load

    fit_acc = {("a", 0): 0.80, ("a", 1): 0.82, ("a", 2): 0.81, ("b", 0): 0.85, ("b", 1): 0.84, ("b", 2): 0.88}
    runs = []
    for (variant, seed), acc in fit_acc.items():
        run = {"name": f"{variant}__seed{seed}", "variant": variant, "seed": seed, "command": "fit", "varied": {}}
        _write_run(tmp_path, run, {"val/acc": acc, "n_train": 600.0, "n_val": 200.0}, {"data": {"split": "holdout"}})
        runs.append(run)
    run = {"name": "c__seed0", "variant": "c", "seed": 0, "command": "fit", "varied": {}}
    _write_run(tmp_path, run, {"val/acc": 0.9, "n_train": 600.0, "n_val": 200.0}, {"data": {"split": "kfold"}})
    runs.append(run)
    fold_acc = {"k": [0.7, 0.72, 0.75], "m": [0.74, 0.73, 0.80]}
    for variant, accs in fold_acc.items():
        for seed in (0, 1):
            run = {"name": f"{variant}__seed{seed}", "variant": variant, "seed": seed, "command": "cv", "varied": {}}
            folds = [
                {"fold": f, "repeat": 0, "val/acc": acc + seed / 100, "n_train": 400.0, "n_val": 100.0}
                for f, acc in enumerate(accs)
            ]
            _write_run(tmp_path, run, {"val/acc": 0.0}, {"data": {"split": "kfold"}}, folds)
            runs.append(run)
    batch: dict[str, Any] = {"name": "t", "spec": "t.yaml", "metric": "val/acc", "variants": ["a", "b", "c", "k", "m"]}
    batch.update(baseline="a", varied_keys=[], seeds=[0, 1, 2], overrides={}, runs=runs)
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    rows = {r["variant"]: r for r in comparisons(tmp_path, *load(tmp_path))}
    expected = corrected_resampled_ttest([0.05, 0.02, 0.07], 600, 200)
    assert rows["b"]["n"] == 3 and rows["b"]["unit"] == "seeds"
    assert rows["b"]["mean"] == pytest.approx(expected["mean"]) and rows["b"]["p"] == pytest.approx(expected["p"])
    lo, hi = rows["b"]["ci95"]
    assert lo < expected["mean"] < hi and (hi - lo) / 2 == pytest.approx(
        4.302652729911275 * statistics.stdev([0.05, 0.02, 0.07]) * math.sqrt(1 / 3 + 200 / 600), rel=1e-6
    )
    assert rows["c"]["note"] == "not paired (data.split differs)"
    assert rows["k"]["note"] == "not paired (cv vs fit)"

    batch["baseline"] = "k"
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    rows = {r["variant"]: r for r in comparisons(tmp_path, *load(tmp_path))}
    diffs = [0.04, 0.01, 0.05] * 2
    expected = corrected_resampled_ttest(diffs, 400, 100)
    assert rows["m"]["n"] == 6 and rows["m"]["unit"] == "folds"
    assert rows["m"]["mean"] == pytest.approx(expected["mean"]) and rows["m"]["p"] == pytest.approx(expected["p"])


def test_a_second_batch_on_the_same_directory_is_refused(tmp_path: Path, capsys) -> None:
    from filelock import FileLock

    spec = _spec(tmp_path, GRID_SPEC)
    directory = tmp_path / "g"
    directory.mkdir()
    with FileLock(directory / ".lock", timeout=0):  # what a running batch holds
        assert main(["batch", str(spec), "--root", str(tmp_path), *TINY]) == 2
    assert "another batch is running in" in capsys.readouterr().err
    assert not list(directory.glob("*/record.json"))
