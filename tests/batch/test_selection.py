"""Selection-aware batch reports: the winner's test score and optimism, leakage columns, McNemar against it."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from runfiles import csv_rows

from medmnist_lit.batch.report import write_tables
from medmnist_lit.batch.selection import held_out_metric, lower_is_better

HOLDOUT = {"data": {"split": "holdout", "test_fraction": 0.2}}


def _predictions(path: Path, labels: list[int], wrong: set[int]) -> None:
    """A ``test_predictions.csv`` that gets ``wrong`` indices wrong, written in reverse order (joined by index)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "id", "label", "predicted"])
        for i in reversed(range(len(labels))):
            writer.writerow([i, f"img{i}", labels[i], (labels[i] + 1) % 3 if i in wrong else labels[i]])


def _batch(directory: Path, metric: str, runs: dict[tuple[str, int], tuple[dict, dict]]) -> None:
    """A batch directory of finished runs: ``(variant, seed) → (metrics, config)``."""
    entries = []
    for (variant, seed), (metrics, config) in runs.items():
        run = {"name": f"{variant}__seed{seed}", "variant": variant, "seed": seed, "command": "fit", "varied": {}}
        (directory / run["name"]).mkdir(parents=True)
        record = {**run, "status": "ok", "metrics": metrics, "config": config, "seconds": 1.0, "attempt": 1}
        record["run_dir"] = str(directory / run["name"])
        (directory / run["name"] / "record.json").write_text(json.dumps(record))
        entries.append(run)
    variants = list(dict.fromkeys(v for v, _ in runs))
    batch: dict[str, Any] = {"name": "t", "spec": "t.yaml", "metric": metric, "variants": variants, "runs": entries}
    batch.update(baseline=None, varied_keys=[], seeds=sorted({s for _, s in runs}), overrides={})
    (directory / "batch.json").write_text(json.dumps(batch))


def _scores(val: float, test: float, **extra: float) -> dict[str, float]:
    return {"val/acc": val, "test/acc": test, "val/loss": 1 - val, "test/loss": 1 - test, "n_train": 60.0, **extra}


@pytest.fixture
def selected(tmp_path: Path) -> Path:
    """Variants a, b (the winner on val/acc) and c (another split), two seeds; predictions for McNemar."""
    leak = {"val/without_twin/acc": 0.5, "val/leak_inflation": 0.4, "test/without_twin/acc": 0.6}
    leak["test/majority_acc"] = 0.34
    runs = {
        ("a", 0): (_scores(0.90, 0.85, **leak), HOLDOUT),
        ("a", 1): (_scores(0.92, 0.87, **leak), HOLDOUT),
        ("b", 0): (_scores(0.95, 0.88, **leak), HOLDOUT),
        ("b", 1): (_scores(0.93, 0.86, **leak), HOLDOUT),
        ("c", 0): (_scores(0.80, 0.79), {"data": {"split": "kfold", "test_fraction": 0.2}}),
        ("c", 1): (_scores(0.80, 0.77), {"data": {"split": "kfold", "test_fraction": 0.2}}),
    }
    _batch(tmp_path, "val/acc", runs)
    labels = [i % 3 for i in range(20)]
    _predictions(tmp_path / "b__seed0" / "test_predictions.csv", labels, wrong={0, 1})
    _predictions(tmp_path / "a__seed0" / "test_predictions.csv", labels, wrong=set(range(5, 12)))
    _predictions(tmp_path / "b__seed1" / "test_predictions.csv", labels, wrong=set())
    write_tables(tmp_path)
    return tmp_path


def test_the_winner_is_marked_with_its_test_score_and_optimism(selected: Path) -> None:
    variants = {r["variant"]: r for r in csv_rows(selected / "variants.csv")}
    assert [v for v, r in variants.items() if r["selected"] == "yes"] == ["b"]
    md = (selected / "results.md").read_text()
    section = md[md.index("## Selection") : md.index("### McNemar")]
    # b: val 0.94, test 0.87 → optimism 0.07; a gaps 0.05 and c 0.02 → 0.035 in general, 0.035 from picking
    assert "`b` has the best mean `val/acc` (higher is better) of 3 variants: **0.9400** over 2 seed(s)" in section
    assert "`test/acc` on the held-out test split is **0.8700**: optimism +0.0700" in section
    assert "mean validation − test gap is +0.0350, so +0.0350 of the winner's optimism comes from picking it" in section
    assert "0.8700 is the unbiased estimate of the selected model" in section
    assert re.search(r"^\| b +\| fit +\| 2/2 +\| yes +\| 0\.9400 ± 0\.0141", md, re.M)


def test_leakage_and_baseline_columns_appear_where_records_have_them(selected: Path) -> None:
    new = ("val/without_twin/acc", "val/leak_inflation", "test/without_twin/acc", "test/majority_acc")
    runs = {r["run"]: r for r in csv_rows(selected / "results.csv")}
    assert all(c in runs["a__seed0"] for c in new)
    assert float(runs["a__seed0"]["test/majority_acc"]) == 0.34 and runs["c__seed0"]["val/leak_inflation"] == ""
    variants = {r["variant"]: r for r in csv_rows(selected / "variants.csv")}
    assert variants["a"]["val/leak_inflation"] == "0.4000 ± 0.0000" and variants["c"]["val/leak_inflation"] == "–"
    header = next(line for line in (selected / "results.md").read_text().splitlines() if line.startswith("| variant"))
    assert all(c in header for c in new)


def test_mcnemar_against_the_winner_per_shared_seed(selected: Path) -> None:
    from medmnist_lit.batch.report import SPLIT_KEYS, load
    from medmnist_lit.batch.selection import mcnemar_rows

    rows = mcnemar_rows(selected, *load(selected), "b", SPLIT_KEYS)
    by = {(r["variant"], r["seed"]): r for r in rows}
    # seed 0: only b right on 5..11 (7), only a right on 0, 1 (2): P = 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9
    first = by[("a", 0)]
    assert (first["n"], first["a_only"], first["b_only"]) == (20, 7, 2)
    assert first["p"] == pytest.approx(2 * (1 + 9 + 36) / 512)
    assert first["acc_winner"] == pytest.approx(18 / 20) and first["acc_variant"] == pytest.approx(13 / 20)
    assert by[("a", 1)]["note"] == "test_predictions.csv missing in a__seed1"
    assert by[("c", 0)]["note"] == "other test split (data.split differs)"
    md = (selected / "results.md").read_text()
    assert re.search(r"^\| a +\| 0 +\| 20 +\| 7 +\| 2 +\| 0\.9000 +\| 0\.6500 +\| 0\.18 +\|", md, re.M)
    assert "test_predictions.csv missing in a__seed1" in md


def test_a_loss_is_minimised_and_a_batch_without_test_split_says_how_to_get_one(tmp_path: Path) -> None:
    assert lower_is_better("val/loss") and not lower_is_better("val/acc")
    assert held_out_metric("val/loss") == "test/loss"
    runs = {(v, 0): (_scores(val, test), HOLDOUT) for v, val, test in (("a", 0.9, 0.8), ("b", 0.8, 0.75))}
    _batch(tmp_path, "val/loss", runs)
    write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    # a: val/loss 0.1, test/loss 0.2 → optimism +0.1 (the test loss is higher than the selection loss)
    assert "`a` has the best mean `val/loss` (lower is better)" in md and "is **0.2000**: optimism +0.1000" in md
    assert "No test: `test_predictions.csv` is missing in 2 runs (a__seed0, b__seed0)" in md

    bare = tmp_path / "bare"
    bare.mkdir()
    runs = {(v, 0): ({"val/acc": val}, {"data": {}}) for v, val in (("a", 0.7), ("b", 0.9))}
    _batch(bare, "val/acc", runs)
    write_tables(bare)
    md = (bare / "results.md").read_text()
    assert "`b` has the best mean `val/acc`" in md and "no test split" in md and "--data.test_fraction 0.2" in md
    assert "McNemar" not in md


def test_selecting_on_a_test_metric_is_called_biased(tmp_path: Path) -> None:
    runs = {(v, 0): (_scores(0.9, test), HOLDOUT) for v, test in (("a", 0.8), ("b", 0.85))}
    _batch(tmp_path, "test/acc", runs)
    write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "`b` has the best mean `test/acc`" in md and "biased upwards" in md and "unbiased estimate of" not in md


def test_selection_within_each_seed_estimates_the_procedure(tmp_path: Path) -> None:
    scores = {("a", 0): (0.90, 0.85), ("b", 0): (0.95, 0.88), ("a", 1): (0.94, 0.90), ("b", 1): (0.93, 0.86)}
    _batch(tmp_path, "val/acc", {key: (_scores(*s), HOLDOUT) for key, s in scores.items()})
    write_tables(tmp_path)
    md = (tmp_path / "results.md").read_text()
    # b wins on the mean (0.94 vs 0.92); per seed b (test 0.88) then a (test 0.90): 0.89 ± 0.0141
    assert "`test/acc` **0.8900 ± 0.0141** over 2 seeds (winners by seed: 0: b, 1: a)" in md


def test_no_procedure_estimate_where_seeds_do_not_share_a_test_split(selected: Path) -> None:
    md = (selected / "results.md").read_text()
    assert "No per-seed estimate of the procedure: the variants differ in data.split" in md


def test_an_unreadable_predictions_file_is_named_in_the_table(selected: Path) -> None:
    (selected / "b__seed1" / "test_predictions.csv").write_text("index,label\n0,1\n")
    (selected / "a__seed1" / "test_predictions.csv").write_text("index,id,label,predicted\n0,x,1,1\n")
    write_tables(selected)
    assert "unreadable b__seed1/test_predictions.csv (KeyError('predicted')" in (selected / "results.md").read_text()
