"""Batch reports of every task type: MedMNIST's official columns, the ordinal note, McNemar on multi-label runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from runfiles import csv_rows

from medmnist_lit.batch.report import METRIC_COLUMNS, SPLIT_KEYS, load, write_tables
from medmnist_lit.batch.selection import mcnemar_rows
from medmnist_lit.data.tasks import ORDINAL_NOTE, TaskKind

HOLDOUT = {"data": {"split": "holdout", "test_fraction": 0.2}}
OFFICIAL = ("test/official_acc", "test/official_auc", "test/majority_official_acc")


def _batch(directory: Path, runs: dict[tuple[str, int], dict[str, float]], task: str, command: str = "fit") -> None:
    """A batch directory of finished runs ``(variant, seed) → metrics`` of one task, ranked on ``val/acc``."""
    entries = []
    for (variant, seed), metrics in runs.items():
        run = {"name": f"{variant}__seed{seed}", "variant": variant, "seed": seed, "command": command, "varied": {}}
        (directory / run["name"]).mkdir(parents=True)
        record = {**run, "status": "ok", "metrics": metrics, "config": HOLDOUT, "seconds": 1.0, "attempt": 1}
        record.update(run_dir=str(directory / run["name"]), task=task)
        (directory / run["name"] / "record.json").write_text(json.dumps(record))
        entries.append(run)
    variants = list(dict.fromkeys(v for v, _ in runs))
    batch: dict[str, Any] = {"name": "t", "spec": "t.yaml", "metric": "val/acc", "variants": variants, "runs": entries}
    batch.update(baseline=None, varied_keys=[], seeds=sorted({s for _, s in runs}), overrides={})
    (directory / "batch.json").write_text(json.dumps(batch))


def _scores(val: float, test: float) -> dict[str, float]:
    official = {"test/official_acc": test, "test/official_auc": test + 0.05, "test/majority_official_acc": 0.4}
    return {"val/acc": val, "test/acc": test, "val/official_acc": val, "val/official_auc": 0.9, **official}


def test_official_columns_and_the_ordinal_note(tmp_path: Path) -> None:
    assert set(OFFICIAL) <= set(METRIC_COLUMNS) and "oof/official_auc" in METRIC_COLUMNS
    runs = {("a", 0): _scores(0.6, 0.55), ("a", 1): _scores(0.62, 0.57), ("b", 0): _scores(0.5, 0.5)}
    _batch(tmp_path, runs, TaskKind.ORDINAL.value)
    write_tables(tmp_path)
    rows = {r["run"]: r for r in csv_rows(tmp_path / "results.csv")}
    assert float(rows["a__seed0"]["test/official_acc"]) == 0.55
    assert float(rows["a__seed1"]["test/majority_official_acc"]) == 0.4
    assert float(rows["b__seed0"]["val/official_auc"]) == 0.9
    variants = {r["variant"]: r for r in csv_rows(tmp_path / "variants.csv")}
    assert variants["a"]["test/official_acc"] == "0.5600 ± 0.0141"
    assert variants["a"]["test/majority_official_acc"] == "0.4000 ± 0.0000"
    md = (tmp_path / "results.md").read_text()
    assert md.count(ORDINAL_NOTE) == 1
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert all(c in header for c in OFFICIAL)


def test_no_note_for_other_tasks(tmp_path: Path) -> None:
    _batch(tmp_path, {("a", 0): _scores(0.6, 0.55)}, TaskKind.BINARY.value)
    write_tables(tmp_path)
    assert "Note:" not in (tmp_path / "results.md").read_text()


LABELS = ("effusion", "mass", "nodule")


def _label_sets(path: Path, truth: list[str], predicted: list[str]) -> None:
    """A multi-label ``test_predictions.csv`` (``label_<name>`` 0/1, ``p_<name>``) of ``|``-joined label sets."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "id", *[f"label_{n}" for n in LABELS], *[f"p_{n}" for n in LABELS]])
        for i, (t, p) in enumerate(zip(truth, predicted, strict=True)):
            ys = [int(n in t.split("|")) for n in LABELS]
            ps = [0.9 if n in p.split("|") else 0.1 for n in LABELS]
            writer.writerow([i, f"img{i}", *ys, *ps])


def test_mcnemar_of_multilabel_runs_counts_exact_matches(tmp_path: Path) -> None:
    runs = {("a", 0): _scores(0.8, 0.7), ("b", 0): _scores(0.9, 0.8)}
    _batch(tmp_path, runs, TaskKind.MULTILABEL.value)
    truth = ["effusion|mass", "", "nodule", "mass", "effusion"]
    # b (the winner) misses one label of sample 0; a gets samples 2 and 3 wrong, label order aside
    _label_sets(tmp_path / "b__seed0" / "test_predictions.csv", truth, ["effusion", "", "nodule", "mass", "effusion"])
    _label_sets(
        tmp_path / "a__seed0" / "test_predictions.csv", truth, ["mass|effusion", "", "", "mass|nodule", "effusion"]
    )
    rows = mcnemar_rows(tmp_path, *load(tmp_path), "b", SPLIT_KEYS)
    assert len(rows) == 1 and rows[0]["note"] == ""
    assert (rows[0]["n"], rows[0]["a_only"], rows[0]["b_only"]) == (5, 2, 1)
    assert rows[0]["acc_winner"] == pytest.approx(0.8) and rows[0]["acc_variant"] == pytest.approx(0.6)
    write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "multi-label: a sample is right when every label is" in md
    assert re.search(r"^\| a +\| 0 +\| 5 +\| 2 +\| 1 +\|", md, re.M)


@pytest.mark.parametrize("command", ["fit", "cv"])
def test_a_job_records_its_task_and_official_metrics(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datagen import make_npz

    from medmnist_lit.data.medmnist_source import ROOT_ENV
    from medmnist_lit.jobs import RunJob, run_job

    root = tmp_path / "medmnist"
    root.mkdir()
    make_npz(root / "retinamnist.npz", n_train=40, n_val=10, n_test=10, num_classes=5, size=28, rgb=True)
    monkeypatch.setenv(ROOT_ENV, str(root))
    config = {
        "trainer": {"max_epochs": 1, "enable_progress_bar": False},
        "data": {"source": "medmnist:retinamnist", "batch_size": 16, "split": "kfold", "folds": 2},
    }
    record = run_job(RunJob(command, config, run_dir=str(tmp_path / "run"), seed=0, quiet=True))
    assert record["status"] == "ok", record.get("traceback")
    assert record["task"] == TaskKind.ORDINAL.value
    assert {"test/official_acc", "test/official_auc", "test/majority_official_acc"} <= record["metrics"].keys()
    assert not [k for k in record["metrics"] if re.search(r"/(acc|auroc)_\d$", k)]  # per class: run directory only
