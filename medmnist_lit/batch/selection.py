"""Selection-aware reporting: the variant a batch picks by its metric, that winner's test score, and McNemar tests.

A batch ranks its variants by the mean over seeds of its metric (``batch["metric"]``, from the spec): a metric
whose name ends in ``loss`` is minimised, every other one maximised (:func:`lower_is_better`, the one rule). The
best of several validation scores is optimistic, because picking the maximum also picks the luckiest noise. The
winner's score on the held-out test split (the metric's ``test/`` counterpart, which took no part in the choice) is the
unbiased estimate of the selected model; the optimism is the selection score minus that test score (signed so
that positive means "looked better than it is"), told apart from a general validation−test gap by the mean gap
of the other variants. This "select on validation, report the winner's held-out test score" procedure is the
report's estimate of "tune then train"; nested cross-validation is not run. Where all variants share their
splits, :func:`per_seed` also repeats the whole procedure once per seed (pick on that seed's validation scores,
read that winner's score on that seed's test split), which gives the procedure's seed-to-seed spread.

McNemar: every variant that shares the winner's test split (same :data:`~medmnist_lit.batch.report.SPLIT_KEYS`
values and the same seed) is compared with it sample by sample from both runs' ``test_predictions.csv``
(columns ``index,id,label,predicted``). A multi-label run's file has per label the truth and the probability
(``label_<name>``, ``p_<name>``): its sample is right when every label is, at 0.5 (an exact match, far stricter
than MedMNIST's ACC, the mean per-label accuracy).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medmnist_lit.utils.dotted import get_dotted
from medmnist_lit.utils.stats import describe, mcnemar

__all__ = [
    "PREDICTIONS",
    "Selection",
    "held_out_metric",
    "lower_is_better",
    "mcnemar_rows",
    "mcnemar_table",
    "per_seed",
    "select",
    "selection_lines",
]

#: Per-sample test predictions a run directory (or a cv run root, for its fold ensemble) writes.
PREDICTIONS = "test_predictions.csv"


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better: losses (``val/loss``, ``test/loss``), nothing else."""
    return metric.rsplit("/", 1)[-1].endswith("loss")


def held_out_metric(metric: str) -> str:
    """The test-split metric of the same quantity (``val/acc`` → ``test/acc``, ``oof/loss`` → ``test/loss``)."""
    return "test/" + metric.split("/", 1)[1]


@dataclass
class Selection:
    """The variant a batch picks by its metric and how its selection score compares with its test score."""

    winner: str
    metric: str
    test_metric: str
    score: float
    test: float
    optimism: float
    other_gap: float
    n_variants: int
    n_seeds: int

    @property
    def lower(self) -> bool:
        """Whether the metric is minimised."""
        return lower_is_better(self.metric)


def _ok(records: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [r for r in records if r and r.get("status") == "ok"]


def _value(record: dict[str, Any], key: str) -> float:
    return float((record.get("metrics") or {}).get(key, math.nan))


def _mean(records: list[dict[str, Any]], key: str) -> float:
    values = [v for v in (_value(r, key) for r in records) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def select(batch: dict[str, Any], records: list[dict[str, Any] | None]) -> Selection | None:
    """The best variant by the mean over its finished seeds of the batch's metric; ``None`` with fewer than two.

    Ties go to the variant declared first. ``test``, ``optimism`` and ``other_gap`` are NaN without a test split.
    """
    metric = batch["metric"]
    test_metric = held_out_metric(metric)
    sign = -1.0 if lower_is_better(metric) else 1.0
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for run, record in zip(batch["runs"], records, strict=True):
        by_variant.setdefault(run["variant"], []).extend(_ok([record]))
    scores = {v: _mean(by_variant.get(v, []), metric) for v in batch["variants"]}
    scores = {v: s for v, s in scores.items() if not math.isnan(s)}
    if len(scores) < 2:
        return None
    winner = max(scores, key=lambda v: sign * scores[v])  # max keeps the first of equal scores
    gaps = {v: sign * (scores[v] - _mean(by_variant[v], test_metric)) for v in scores}
    others = [g for v, g in gaps.items() if v != winner and not math.isnan(g)]
    winner_runs = [r for r in by_variant[winner] if not math.isnan(_value(r, metric))]
    return Selection(
        winner=winner,
        metric=metric,
        test_metric=test_metric,
        score=scores[winner],
        test=_mean(winner_runs, test_metric),
        optimism=gaps[winner],
        other_gap=float(np.mean(others)) if others else math.nan,
        n_variants=len(scores),
        n_seeds=len(winner_runs),
    )


def per_seed(
    batch: dict[str, Any], records: list[dict[str, Any] | None], split_keys: Sequence[str]
) -> tuple[list[tuple[Any, str, float]], str]:
    """Select within each seed, score that seed's winner on its own test split: "tune, then train" as a procedure.

    Each seed draws its own split, shared by every variant when they agree on ``split_keys``; picking on that
    seed's validation metric and reading the winner's test score of the same seed repeats the whole procedure
    once per seed (a repeated hold-out stand-in for nested cross-validation).

    Returns:
        ``(seed, winner, test score)`` for each seed with two or more scored variants, and a note that says why
        there are none where variants do not share splits (empty otherwise).
    """
    metric, test_metric = batch["metric"], held_out_metric(batch["metric"])
    sign = -1.0 if lower_is_better(metric) else 1.0
    rank = {v: i for i, v in enumerate(batch["variants"])}
    runs = [
        (run, rec)
        for run, rec in zip(batch["runs"], records, strict=True)
        if rec and rec.get("status") == "ok" and not math.isnan(_value(rec, metric) + _value(rec, test_metric))
    ]
    configs = [rec.get("config") or {} for _, rec in runs]
    for key in split_keys:
        if len({repr(get_dotted(c, key)) for c in configs}) > 1:
            return [], f"the variants differ in {key}, so a seed's runs do not share one test split"
    rows = []
    for seed in batch["seeds"]:
        mine = sorted(((run, rec) for run, rec in runs if run["seed"] == seed), key=lambda p: rank[p[0]["variant"]])
        if len(mine) >= 2:
            run, rec = max(mine, key=lambda p: sign * _value(p[1], metric))  # the first declared of equal scores
            rows.append((seed, run["variant"], _value(rec, test_metric)))
    return rows, ""


def selection_lines(selection: Selection, procedure: tuple[list[tuple[Any, str, float]], str] = ([], "")) -> list[str]:
    """The ``results.md`` section on the winner: its selection and test scores and the optimism, in words.

    ``procedure`` is :func:`per_seed`'s answer; with two or more seeds it adds the procedure's estimate.
    """
    s = selection
    better = "lower" if s.lower else "higher"
    lines = ["## Selection", ""]
    head = (
        f"`{s.winner}` has the best mean `{s.metric}` ({better} is better) of {s.n_variants} variants: "
        f"**{s.score:.4f}** over {s.n_seeds} seed(s)"
    )
    if s.metric.startswith("test/"):
        return [
            *lines,
            f"{head}. The batch's metric is a test metric, so the test split chose the winner and its test score is "
            "biased upwards like any selection score: set the spec's `metric` to a `val/` metric (e.g. `val/acc`) to "
            "keep the test split for an unbiased estimate.",
            "",
        ]
    if math.isnan(s.test):
        return [
            *lines,
            f"{head}. This batch has no test split, so nothing estimates the winner without the optimism of picking "
            "the best validation score: rerun with `--data.test_fraction 0.2` (or set `data.test_fraction` in the "
            "spec's `base`) to hold out a test split.",
            "",
        ]
    lines.append(
        f"{head}; its `{s.test_metric}` on the held-out test split is **{s.test:.4f}**: "
        f"optimism {s.optimism:+.4f} (how much better the selection score looks than the test score)."
    )
    if not math.isnan(s.other_gap):
        lines.append(
            f"The other variants' mean validation − test gap is {s.other_gap:+.4f}, so {s.optimism - s.other_gap:+.4f} "
            "of the winner's optimism comes from picking it, the rest from a gap every variant has."
        )
    lines += [
        "",
        f"The test split took no part in the choice, so {s.test:.4f} is the unbiased estimate of the selected "
        f"model. Report it, not {s.score:.4f}: selecting on validation and reporting the winner's held-out test "
        'score is this report\'s estimate of "tune, then train" (nested cross-validation is not run).',
        "",
    ]
    rows, note = procedure
    if len(rows) >= 2:
        d = describe([test for _, _, test in rows])
        winners = ", ".join(f"{seed}: {variant}" for seed, variant, _ in rows)
        lines += [
            f"As a procedure, picking the best `{s.metric}` within each seed and scoring that seed's winner on the "
            f"seed's own test split gives `{s.test_metric}` **{d['mean']:.4f} ± {d['std']:.4f}** over {d['n']} seeds "
            f"(winners by seed: {winners}), the spread from seed to seed included.",
            "",
        ]
    elif note:
        lines += [f"No per-seed estimate of the procedure: {note}.", ""]
    return lines


# ---------------------------------------------------------------------------------------------- McNemar
def _predictions(path: Path) -> tuple[dict[int, tuple[Any, Any]], bool] | None:
    """``index → (label, predicted)`` of a ``test_predictions.csv`` and whether it is multi-label; ``None`` if missing.

    Single-label files (``index,id,label,predicted``) give class indices; multi-label ones
    (``index,id,label_<name>…,p_<name>…``) the set of true labels and the set above 0.5, so equal sets are an exact
    match.
    """
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        names = [c.removeprefix("label_") for c in reader.fieldnames or () if c.startswith("label_")]
        multilabel = "label" not in (reader.fieldnames or ()) and bool(names)
        try:
            if multilabel:
                return {
                    int(r["index"]): (
                        frozenset(n for n in names if int(r[f"label_{n}"])),
                        frozenset(n for n in names if float(r[f"p_{n}"]) > 0.5),
                    )
                    for r in reader
                }, True
            return {int(r["index"]): (int(r["label"]), int(r["predicted"])) for r in reader}, False
        except (KeyError, TypeError, ValueError) as err:  # a hand-edited or truncated file: named in the table
            raise ValueError(
                f"unreadable {path.parent.name}/{path.name} ({err!r}; needs integer index,label,predicted, or "
                "index,label_<name>…,p_<name>… for multi-label)"
            ) from err


def mcnemar_rows(
    directory: str | Path,
    batch: dict[str, Any],
    records: list[dict[str, Any] | None],
    winner: str,
    split_keys: Sequence[str],
) -> list[dict[str, Any]]:
    """McNemar test of the winner against each variant on the same test split, one row per shared seed.

    A row holds ``variant``, ``seed``, the counts and p-values of :func:`~medmnist_lit.utils.stats.mcnemar`
    (A = the winner) and both accuracies (exact-match for multi-label), or a ``note`` saying why there is no test
    (a missing file, test sets that differ).
    """
    directory = Path(directory)
    ok = [(run, rec) for run, rec in zip(batch["runs"], records, strict=True) if rec and rec.get("status") == "ok"]
    mine = {run["seed"]: (run, rec) for run, rec in ok if run["variant"] == winner}
    rows: list[dict[str, Any]] = []
    for variant in batch["variants"]:
        if variant == winner:
            continue
        for run, rec in ok:
            if run["variant"] != variant or run["seed"] not in mine:
                continue
            row: dict[str, Any] = {"variant": variant, "seed": run["seed"], "note": ""}
            w_run, w_rec = mine[run["seed"]]
            differs = [k for k in split_keys if get_dotted(rec["config"], k) != get_dotted(w_rec["config"], k)]
            if differs:
                rows.append({**row, "note": f"other test split ({differs[0]} differs)"})
                continue
            try:  # the run's folder in this batch directory, not record["run_dir"]: a moved batch still finds them
                read = [_predictions(directory / r["name"] / PREDICTIONS) for r in (w_run, run)]
            except ValueError as err:
                rows.append({**row, "note": str(err)})
                continue
            first, second = read
            if first is None or second is None:
                missing = [r["name"] for r, p in zip((w_run, run), read, strict=True) if p is None]
                rows.append({**row, "note": f"{PREDICTIONS} missing in {', '.join(missing)}"})
                continue
            (a, a_multilabel), (b, b_multilabel) = first, second
            if a_multilabel != b_multilabel:
                rows.append({**row, "note": "one run is multi-label, the other not"})
                continue
            row["multilabel"] = a_multilabel
            if a.keys() != b.keys() or any(a[i][0] != b[i][0] for i in a):
                rows.append({**row, "note": "the two test sets differ (indices or labels)"})
                continue
            order = sorted(a)
            right_a = [a[i][0] == a[i][1] for i in order]
            right_b = [b[i][0] == b[i][1] for i in order]
            row.update(mcnemar(right_a, right_b))
            row.update(acc_winner=float(np.mean(right_a)), acc_variant=float(np.mean(right_b)))
            rows.append(row)
    return rows


def mcnemar_table(rows: list[dict[str, Any]], winner: str) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of :func:`mcnemar_rows` for a Markdown table."""
    header = ["variant", "seed", "n", f"only {winner} right", "only variant right", f"acc {winner}", "acc variant"]
    cells: list[list[str]] = []
    for row in rows:
        if row["note"]:
            cells.append([row["variant"], str(row["seed"]), "–", row["note"], "", "", "", ""])
            continue
        cells.append(
            [
                row["variant"],
                str(row["seed"]),
                str(row["n"]),
                str(row["a_only"]),
                str(row["b_only"]),
                f"{row['acc_winner']:.4f}",
                f"{row['acc_variant']:.4f}",
                f"{row['p']:.3g}",
            ]
        )
    return [*header, "p (exact)"], cells
