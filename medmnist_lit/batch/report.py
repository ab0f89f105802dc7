"""Tables, paired comparisons and figures of a batch, rebuilt from its directory alone (``medmnist-lit report``).

Inputs are ``batch.json`` (the runs of the spec, in order), each run's ``record.json`` and, for the paired
comparison of cv runs, each run's ``folds.csv``. Outputs, all written atomically: ``results.csv`` (a row per
run), ``variants.csv`` and ``results.md`` (seeds grouped per variant, paired comparison with the baseline,
failures) and the PNG figures of :mod:`medmnist_lit.batch.figures`.

Paired comparison: two variants are paired when they run the same command on the same splits, i.e. agree on
every key of :data:`SPLIT_KEYS` (seeds then give identical splits). Fit runs pair by seed; cv runs pair by
(seed, fold) from ``folds.csv``. The differences go into Nadeau & Bengio's corrected resampled t-test, with
``n_train`` and ``n_val`` (or ``n_test`` for a ``test/`` metric) of the paired runs; the 95% interval uses the
same corrected variance.
"""

from __future__ import annotations

import csv
import functools
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.batch.references import for_batch
from medmnist_lit.batch.selection import PREDICTIONS, mcnemar_rows, mcnemar_table, per_seed, select, selection_lines
from medmnist_lit.batch.spec import display
from medmnist_lit.data.tasks import ORDINAL_NOTE, TaskKind
from medmnist_lit.utils.dotted import get_dotted
from medmnist_lit.utils.files import read_json, write_text
from medmnist_lit.utils.stats import corrected_resampled_ttest, describe

#: Data options that decide the samples and the split; variants that differ in one are not paired.
SPLIT_KEYS = (
    "data.source",
    "data.split",
    "data.folds",
    "data.repeats",
    "data.test_fraction",
    "data.val_fraction",
    "data.stratify",
    "data.groups",
    "data.group_by",
    "data.subset",
    "data.split_file",
)
#: Per-run columns, in this order, where any record has them (the batch's metric comes first).
METRIC_COLUMNS = (
    "train/acc",
    "train/loss",
    "val/acc",
    "val/acc_std",
    "val/loss",
    "val/without_twin/acc",
    "val/leak_inflation",
    "test/acc",
    "test/loss",
    "test/without_twin/acc",
    "test/majority_acc",
    "val/official_acc",
    "val/official_auc",
    "test/official_acc",
    "test/official_auc",
    "test/majority_official_acc",
    "oof/acc",
    "oof/without_twin/acc",
    "oof/official_acc",
    "oof/official_auc",
    "perm/p_value",
    "n_folds",
    "n_train",
    "n_val",
    "n_test",
    "epochs",
)
_COUNTS = ("n_folds", "n_train", "n_val", "n_test", "epochs")
#: Leakage and baseline scores the per-variant table shows next to the accuracies, where records have them.
_HONEST = ("val/without_twin/acc", "val/leak_inflation", "test/without_twin/acc", "test/majority_acc")
#: MedMNIST's official test ACC and AUC (comparable with its papers) and the majority baseline's ACC, likewise.
_OFFICIAL = ("test/official_acc", "test/official_auc", "test/majority_official_acc")


def load(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any] | None]]:
    """``batch.json`` and the record of each of its runs (``None`` for runs not recorded yet)."""
    directory = Path(directory)
    if not (directory / "batch.json").is_file():
        raise ValueError(f"{directory} is not a batch directory (no batch.json; made by medmnist-lit batch)")
    batch = read_json(directory / "batch.json")
    records = []
    for run in batch["runs"]:
        path = directory / run["name"] / "record.json"
        records.append(read_json(path) if path.is_file() else None)
    return batch, records


def _ordered(batch: dict[str, Any], records: list[dict[str, Any] | None]) -> list[tuple[dict, dict | None]]:
    """Runs sorted by variant, then seed, as declared (whatever order they ran in)."""
    variant_rank = {v: i for i, v in enumerate(batch["variants"])}
    seed_rank = {s: i for i, s in enumerate(batch["seeds"])}
    pairs = list(zip(batch["runs"], records, strict=True))
    return sorted(pairs, key=lambda p: (variant_rank[p[0]["variant"]], seed_rank.get(p[0]["seed"], 0)))


def _metrics(record: dict[str, Any] | None) -> dict[str, float]:
    return (record or {}).get("metrics") or {}


def metric_columns(batch: dict[str, Any], records: Sequence[dict[str, Any] | None]) -> list[str]:
    """Metric columns present in any record, the batch's metric (and its fold spread) first."""
    present = {k for r in records for k in _metrics(r)}
    metric = batch["metric"]
    first = [metric, *([f"{metric}_std"] if f"{metric}_std" in present else [])]
    return first + [c for c in METRIC_COLUMNS if c in present and c not in first]


def _settings(run: dict[str, Any], keys: list[str]) -> dict[str, str]:
    """The value of each varied key in ``run`` (``(default)`` where its config leaves it to the parser)."""
    settings = run.get("settings") or {}
    return {k: settings.get(k, display(run["varied"][k]) if k in run["varied"] else "") for k in keys}


def run_rows(batch: dict[str, Any], records: list[dict[str, Any] | None]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and one row per run: varied values, seed, command, status, metrics, wall time, error."""
    columns = ["run", "variant", "seed", "command", *batch["varied_keys"], "status"]
    metrics = metric_columns(batch, records)
    columns += [*metrics, "seconds", "attempt", "error"]
    rows = []
    for run, record in _ordered(batch, records):
        row: dict[str, Any] = {k: run[k] for k in ("variant", "seed", "command")}
        row["run"] = run["name"]
        row.update(_settings(run, batch["varied_keys"]))
        row["status"] = record["status"] if record else "pending"
        row.update({k: _metrics(record).get(k) for k in metrics})
        row["seconds"] = record.get("seconds") if record else None
        row["attempt"] = record.get("attempt") if record else None
        row["error"] = (record.get("error") or "").splitlines()[0][:300] if record and record.get("error") else ""
        rows.append(row)
    return columns, rows


def _mean_std(values: list[float], digits: int = 4, spread: bool = True) -> str:
    d = describe(values)
    if d["n"] == 0:
        return "–"
    if d["n"] < 2 or not spread:
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} ± {d['std']:.{digits}f}"


def variant_rows(batch: dict[str, Any], records: list[dict[str, Any] | None]) -> tuple[list[str], list[dict]]:
    """Columns and one row per variant: mean ± std over its seeds of the metric, train/val/test accuracy, cost.

    With two or more scored variants, ``selected`` marks the one the batch's metric picks (:mod:`.selection`).
    """
    metric = batch["metric"]
    present_columns = metric_columns(batch, records)
    wanted = [metric, "train/acc", "val/acc", "test/acc", *_HONEST, *_OFFICIAL]
    scores = [c for c in dict.fromkeys(wanted) if c in present_columns]
    present = {k for r in records for k in _metrics(r)}
    chosen = select(batch, records)
    columns = ["variant", "command", *batch["varied_keys"], "runs ok", *(["selected"] if chosen else []), *scores]
    columns += ["train − val acc"] if {"train/acc", "val/acc"} <= present else []
    columns += ["fold std (val/acc)"] if "val/acc_std" in present else []
    columns += ["n_train", "epochs", "seconds/run"]
    rows = []
    for variant in batch["variants"]:
        runs = [(run, rec) for run, rec in _ordered(batch, records) if run["variant"] == variant]
        ok = [_metrics(rec) for _, rec in runs if rec and rec.get("status") == "ok"]
        first = runs[0][0]
        row: dict[str, Any] = {"variant": variant, "command": first["command"], "runs ok": f"{len(ok)}/{len(runs)}"}
        row["selected"] = "yes" if chosen and chosen.winner == variant else ""
        row.update(_settings(first, batch["varied_keys"]))
        row.update({c: _mean_std([m[c] for m in ok if c in m]) for c in scores})
        if "train − val acc" in columns:
            row["train − val acc"] = _mean_std(
                [m["train/acc"] - m["val/acc"] for m in ok if "train/acc" in m and "val/acc" in m]
            )
        if "fold std (val/acc)" in columns:
            row["fold std (val/acc)"] = _mean_std([m["val/acc_std"] for m in ok if "val/acc_std" in m])
        row["n_train"] = _mean_std([m["n_train"] for m in ok if "n_train" in m], 0, spread=False)
        row["epochs"] = _mean_std([m["epochs"] for m in ok if "epochs" in m], 0, spread=False)
        seconds = [rec["seconds"] for _, rec in runs if rec and rec.get("status") == "ok" and "seconds" in rec]
        row["seconds/run"] = _mean_std(seconds, 1)
        rows.append(row)
    references = for_batch(batch)  # published scores beside ours (a spec's references: block)
    return references.add_columns(columns, rows, batch, records, _mean_std) if references else (columns, rows)


# ------------------------------------------------------------------------------------------ comparison
def _folds(directory: Path, name: str) -> dict[int, dict[str, float]]:
    path = directory / name / "folds.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {
            int(r["fold"]): {k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(handle)
        }


def _paired_units(
    folds_of: Callable[[str], dict[int, dict[str, float]]],
    metric: str,
    a: list[tuple[dict, dict]],
    b: list[tuple[dict, dict]],
    command: str,
) -> tuple[list[float], list[float], list[float], str]:
    """Differences a − b with the train and evaluation sizes of each pair, and the unit name (seeds or folds)."""
    size = "n_test" if metric.startswith("test/") else "n_val"
    by_seed = {run["seed"]: (run, rec) for run, rec in b}
    diffs, n_train, n_eval = [], [], []
    unit = "seeds"
    for run, rec in a:
        if run["seed"] not in by_seed:
            continue
        other_run, other = by_seed[run["seed"]]
        folds_a = folds_of(run["name"]) if command == "cv" else {}
        folds_b = folds_of(other_run["name"]) if command == "cv" else {}
        if folds_a and folds_b and any(metric in f for f in folds_a.values()):
            unit = "folds"
            for fold in sorted(set(folds_a) & set(folds_b)):
                fa, fb = folds_a[fold], folds_b[fold]
                if metric in fa and metric in fb and not (math.isnan(fa[metric]) or math.isnan(fb[metric])):
                    diffs.append(fa[metric] - fb[metric])
                    n_train.append((fa["n_train"] + fb["n_train"]) / 2)
                    n_eval.append((fa[size] + fb[size]) / 2)
            continue
        ma, mb = _metrics(rec), _metrics(other)
        if metric in ma and metric in mb and not (math.isnan(ma[metric]) or math.isnan(mb[metric])):
            diffs.append(ma[metric] - mb[metric])
            n_train.append((ma.get("n_train", math.nan) + mb.get("n_train", math.nan)) / 2)
            n_eval.append((ma.get(size, math.nan) + mb.get(size, math.nan)) / 2)
    return diffs, n_train, n_eval, unit


def comparisons(directory: str | Path, batch: dict[str, Any], records: list[dict | None]) -> list[dict[str, Any]]:
    """Each variant against the baseline: mean difference, corrected 95% interval and p-value, or why not paired."""
    baseline, metric = batch.get("baseline"), batch["metric"]
    if not baseline:
        return []
    ok = [(run, rec) for run, rec in _ordered(batch, records) if rec and rec.get("status") == "ok"]
    base = [(run, rec) for run, rec in ok if run["variant"] == baseline]
    folds_of = functools.cache(lambda name: _folds(Path(directory), name))  # the baseline's is read once
    rows = []
    for variant in batch["variants"]:
        if variant == baseline:
            continue
        mine = [(run, rec) for run, rec in ok if run["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "n": 0, "mean": math.nan, "ci95": [math.nan, math.nan]}
        row.update(p=math.nan, unit="", note="")
        if not mine or not base:
            rows.append({**row, "note": "no finished runs"})
            continue
        if mine[0][0]["command"] != base[0][0]["command"]:
            rows.append({**row, "note": f"not paired ({mine[0][0]['command']} vs {base[0][0]['command']})"})
            continue
        differs = [k for k in SPLIT_KEYS if get_dotted(mine[0][1]["config"], k) != get_dotted(base[0][1]["config"], k)]
        if differs:
            rows.append({**row, "note": f"not paired ({differs[0]} differs)"})
            continue
        diffs, n_train, n_eval, unit = _paired_units(folds_of, metric, mine, base, mine[0][0]["command"])
        if not diffs:
            rows.append({**row, "note": f"no shared seeds with {metric}"})
            continue
        nt, ne = float(np.nanmean(n_train)), float(np.nanmean(n_eval))
        test = corrected_resampled_ttest(diffs, nt, ne)
        rows.append({**row, "n": len(diffs), "mean": test["mean"], "ci95": test["ci95"]})
        rows[-1].update(p=test["p"], unit=unit)
    return rows


# -------------------------------------------------------------------------------------------- writing
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(row.get(c)) for c in columns] for row in rows])
    return buffer.getvalue()


def _md_cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if column in _COUNTS else f"{value:.1f}" if column == "seconds" else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def _md_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table of already formatted cells (tabulate lays it out)."""
    from tabulate import tabulate

    return tabulate(rows, headers=columns, tablefmt="github", disable_numparse=True).splitlines()


def _md_rows(columns: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    return columns, [[_md_cell(c, row.get(c)) for c in columns] for row in rows]


def _signed(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.4f}"


def _selection_md(directory: Path, batch: dict[str, Any], records: list[dict | None]) -> list[str]:
    """The winner's selection and test scores, and McNemar tests against it on the shared test split."""
    chosen = select(batch, records)
    if chosen is None:
        return []
    lines = selection_lines(chosen, per_seed(batch, records, SPLIT_KEYS))
    if math.isnan(chosen.test):
        return lines
    rows = mcnemar_rows(directory, batch, records, chosen.winner, SPLIT_KEYS)
    lines += [f"### McNemar test against `{chosen.winner}` on the shared test split", ""]
    if not rows:
        return [*lines, "No other variant has a finished run with the winner's seeds.", ""]
    if all(row["note"].startswith(PREDICTIONS) for row in rows):
        missing = sorted({name for row in rows for name in row["note"].split(" missing in ")[1].split(", ")})
        return [
            *lines,
            f"No test: `{PREDICTIONS}` is missing in {len(missing)} runs ({', '.join(missing[:3])}"
            f"{', …' if len(missing) > 3 else ''}); runs made before fit and cv wrote it lack it, so rerun the batch "
            "into a new `--root` to get one.",
            "",
        ]
    exact = (
        " (multi-label: a sample is right when every label is, an exact match stricter than MedMNIST's ACC)"
        if any(row.get("multilabel") for row in rows)
        else ""
    )
    lines += [
        "Per shared seed, from both runs' `test_predictions.csv`: the test samples only one of the two models "
        f"classifies correctly{exact}, and the exact two-sided p-value (not corrected for the number of comparisons).",
        "",
        *_md_table(*mcnemar_table(rows, chosen.winner)),
        "",
    ]
    return lines


def task_note(records: Sequence[dict[str, Any] | None]) -> str | None:
    """The caveat of the runs' task (:attr:`~medmnist_lit.data.tasks.Task.note`: ordinal grades), if any run has one."""
    ordinal = any(r and r.get("task") == TaskKind.ORDINAL.value for r in records)
    return ORDINAL_NOTE if ordinal else None


def markdown(directory: Path, batch: dict[str, Any], records: list[dict | None], figures: Sequence[str]) -> str:
    """``results.md``: per-variant table, paired comparison, per-run table, failures and figures."""
    statuses = [(r or {}).get("status", "pending") for r in records]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    metric = batch["metric"]
    lines = [f"# Batch `{batch['name']}`", ""]
    lines += [f"Spec `{batch['spec']}` · metric `{metric}` · {len(records)} runs: {counts}", ""]
    if batch.get("overrides"):
        lines += ["Overrides: " + " ".join(f"`--{k} {display(v)}`" for k, v in batch["overrides"].items()), ""]
    lines += [f"Note: {note}", ""] if (note := task_note(records)) else []
    lines += ["## Variants (mean ± std over seeds)", "", *_md_table(*_md_rows(*variant_rows(batch, records))), ""]
    lines += references.lines() if (references := for_batch(batch)) else []
    lines += _selection_md(directory, batch, records)
    rows = comparisons(directory, batch, records)
    if rows:
        lines += [f"## Paired comparison with `{batch['baseline']}`", ""]
        lines += [
            f"Difference in `{metric}` (variant − baseline) over shared seeds (fit) or (seed, fold) pairs (cv); "
            "95% interval and p-value of the corrected resampled t-test (Nadeau & Bengio, 2003).",
            "",
        ]
        cells = []
        for row in rows:
            if row["note"]:
                cells.append([row["variant"], "–", row["note"], "", ""])
                continue
            lo, hi = row["ci95"]
            interval = "–" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]"
            p = "–" if math.isnan(row["p"]) else f"{row['p']:.3g}"
            cells.append([row["variant"], f"{row['n']} {row['unit']}", _signed(row["mean"]), interval, p])
        lines += _md_table(["variant", "pairs", f"Δ {metric}", "95% interval", "p"], cells)
        lines.append("")
    lines += ["## Runs", "", *_md_table(*_md_rows(*run_rows(batch, records))), ""]
    failed = [r for r in records if r and r.get("status") == "failed"]
    if failed:
        lines += ["## Failed runs", ""]
        lines += [f"- `{r['name']}`: {(r.get('error') or '').splitlines()[0][:300]}" for r in failed]
        lines += ["", "Tracebacks are in each run's `record.json`; rerun with `--retry-failed`.", ""]
    if figures:
        lines += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    return "\n".join(lines)


def write_tables(directory: str | Path, figures: Sequence[str] | None = None) -> list[Path]:
    """Write ``results.csv``, ``variants.csv`` and ``results.md`` from the batch directory (atomically)."""
    from medmnist_lit.batch.figures import FIGURES

    directory = Path(directory)
    batch, records = load(directory)
    if figures is None:  # figures of an earlier full report stay linked while tables are updated per run
        figures = [name for name in FIGURES if (directory / name).is_file()]
    paths = [directory / "results.csv", directory / "variants.csv", directory / "results.md"]
    write_text(paths[0], _csv_text(*run_rows(batch, records)))
    write_text(paths[1], _csv_text(*variant_rows(batch, records)))
    write_text(paths[2], markdown(directory, batch, records, figures))
    return paths


def write_report(directory: str | Path) -> list[Path]:
    """Tables, figures and the TensorBoard HParams experiment of a batch directory; returns the paths written."""
    from medmnist_lit.batch.figures import write_figures
    from medmnist_lit.batch.tensorboard import write_batch_experiment

    directory = Path(directory)
    batch, records = load(directory)
    write_batch_experiment(directory, records)
    figures = write_figures(directory, batch, records)
    return [*write_tables(directory, [p.name for p in figures]), *figures]


def report_command(args: Sequence[str]) -> int:
    """``medmnist-lit report DIR``: rebuild a batch's tables and figures from disk."""
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: medmnist-lit report BATCH_DIR   (e.g. lightning_logs/optimizers)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    for path in write_report(args[0]):
        print(path)
    return 0
