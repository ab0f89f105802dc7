"""What a cross-validation run reports: per-fold rows, out-of-fold predictions and their aggregation."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmnist_lit.data.tasks import Task
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.training.official_scores import majority_target, official_line
from medmnist_lit.training.test_report import interval_text
from medmnist_lit.training.twin_scores import baseline_warning, leakage_line, stage_scores
from medmnist_lit.utils.files import atomic_path
from medmnist_lit.utils.stats import binomial_interval, describe

#: Per-epoch curves averaged over folds (every engine records them).
CURVE_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
#: Per-class (per-label) scores (val/acc_3, val/auroc_Effusion) stay in summary.json; intervals do not match.
_PER_CLASS = re.compile(r"/acc_|/auroc_(?!boot95_)")


def named(task: Task, values: np.ndarray) -> np.ndarray:
    """Class names of class indices, or the ``|``-joined names of each row's positive labels (multi-label)."""
    names = np.asarray(task.label_names)
    if not task.multilabel:
        return names[values.astype(np.int64)] if len(values) else values.astype(str)
    return np.array(["|".join(names[row.astype(bool)]) for row in values], dtype=str)


def task_metrics(task: Task, *, sync: bool = True) -> EpochMetrics:
    """The product's metrics of one stage for ``task``."""
    return EpochMetrics(task.num_outputs, list(task.label_names), sync=sync, task=task)


def _as_logits(probs: torch.Tensor, task: Task) -> torch.Tensor:
    """Logits whose scores (:meth:`Task.scores`) are ``probs``: log-probabilities, or log-odds per label."""
    if task.multilabel:
        return torch.logit(probs.float(), eps=1e-7)
    return probs.float().clamp_min(1e-12).log()


def ensemble_metrics(probs: torch.Tensor, targets: torch.Tensor, task: Task, prefix: str) -> dict[str, float]:
    """Metrics of (averaged) probabilities.

    Their logarithms (log-odds per label) act as logits, so the loss is the NLL (the mean BCE for multi-label).
    """
    metrics = task_metrics(task)
    logits = _as_logits(probs, task)
    metrics.update(logits, targets, task.loss(logits, targets))
    return {f"{prefix}/{k}": v for k, v in metrics.compute()[0].items()}


@dataclass(frozen=True)
class _Part:
    """One fold's validation samples: their probabilities, and what the pooled scores need to stratify them."""

    index: np.ndarray
    probs: np.ndarray
    fold: int
    repeat: int
    twin: np.ndarray | None
    majority: int | np.ndarray | None  # the training part's majority answer (official_scores.majority_target)


class OutOfFold:
    """Out-of-fold predictions gathered fold by fold, kept as arrays (cheap for large sets and for LOO).

    Args:
        task: The task; the probabilities are its scores (per class, or per label for multi-label).
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self._parts: list[_Part] = []

    def add(
        self,
        index: np.ndarray,
        probs: np.ndarray,
        fold: int,
        repeat: int,
        *,
        twin: np.ndarray | None = None,
        train_labels: np.ndarray | None = None,
    ) -> None:
        """Record one fold's validation samples and their probabilities.

        ``twin`` marks the samples with a near-duplicate in that fold's training part and ``train_labels`` are the
        labels of that training part: the pooled scores are then stratified (``oof/with_twin/…``) and get a
        majority baseline fit on each sample's own training part (``oof/majority_acc``,
        ``oof/majority_official_…``). Pooled like the model's predictions, the baseline's accuracy is often below the
        overall majority share and its AUC not exactly 0.5: a fold's training majority is, by the same token,
        under-represented in its validation part, and the folds' constant scores differ.
        """
        twin = None if twin is None else np.asarray(twin, dtype=bool)
        index, probs = np.asarray(index, dtype=np.int64), np.asarray(probs, dtype=np.float32)
        majority = None if train_labels is None else majority_target(train_labels, self.task)
        self._parts.append(_Part(index, probs, fold, repeat, twin, majority))

    def __len__(self) -> int:
        return sum(len(part.index) for part in self._parts)

    def _ordered(self, per_part: list[np.ndarray]) -> np.ndarray:
        """Per-part rows concatenated in :meth:`arrays`'s order (by repeat, then sample index)."""
        index = np.concatenate([p.index for p in self._parts])
        repeat = np.concatenate([np.full(len(p.index), p.repeat) for p in self._parts])
        return np.concatenate(per_part)[np.lexsort((index, repeat))]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(index, fold, repeat, probs)``, sorted by repeat then sample index."""
        if not self._parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return (
            self._ordered([p.index for p in self._parts]),
            self._ordered([np.full(len(p.index), p.fold) for p in self._parts]),
            self._ordered([np.full(len(p.index), p.repeat) for p in self._parts]),
            self._ordered([p.probs for p in self._parts]),
        )

    def _stratified(self, labels: np.ndarray) -> dict[str, float]:
        """``oof/with_twin/…``, ``oof/without_twin/…``, ``oof/leak_inflation``, ``oof/majority_acc``, ``oof/official…``.

        MedMNIST's official scores come with the baseline's (``oof/majority_official_…``).
        """
        answers = [p.majority for p in self._parts if p.majority is not None]
        if len(answers) < len(self._parts):
            return {}
        index = np.concatenate([p.index for p in self._parts])
        probs = np.concatenate([p.probs for p in self._parts])
        twins = [p.twin for p in self._parts if p.twin is not None]
        twin = np.concatenate(twins) if len(twins) == len(self._parts) else None
        # each sample's own fold's answer: a class index, or a 0/1 row per label
        majority = np.concatenate(
            [np.repeat(np.atleast_2d(a), len(p.index), 0) for a, p in zip(answers, self._parts, strict=True)]
        )
        majority = majority if self.task.multilabel else majority[:, 0]
        return stage_scores("oof", probs, np.asarray(labels)[index], twin=twin, majority=majority, task=self.task)

    def pooled(self, labels: np.ndarray) -> dict[str, Any]:
        """Metrics of all out-of-fold predictions together (official ones included), with the majority baseline.

        Single-label accuracy gets an exact binomial interval; multi-label accuracy averages correlated per-label
        decisions, which a binomial interval does not describe, so it gets none.
        """
        if not len(self):
            return {}
        index, _, _, probs = self.arrays()
        targets = torch.as_tensor(np.asarray(labels)[index], dtype=torch.int64)
        pooled: dict[str, Any] = ensemble_metrics(torch.from_numpy(probs), targets, self.task, "oof")
        if not self.task.multilabel:
            correct = int((probs.argmax(1) == targets.numpy()).sum())
            pooled["oof/acc_ci95"] = binomial_interval(correct, len(index))
        pooled["oof/n"] = len(index)
        pooled.update(self._stratified(labels))
        return pooled

    def write(self, path: Path, data: Any) -> None:
        """``oof.csv``: index, id, label, fold, repeat, prediction and one probability column per class or label.

        Multi-label ``label`` and ``predicted`` name the positive labels (above 0.5), joined by ``|``.
        """
        names = np.asarray(self.task.label_names)
        index, fold, repeat, probs = self.arrays()
        labels = np.asarray(data.labels)[index]
        header = ["index", "id", "label", "fold", "repeat", "predicted", *[f"p_{name}" for name in names]]
        columns = [
            index.astype(str),
            np.asarray(data.ids)[index].astype(str),
            named(self.task, labels),
            fold.astype(str),
            repeat.astype(str),
            named(self.task, probs > 0.5 if self.task.multilabel else probs.argmax(1) if len(index) else index),
            *(np.char.mod("%.6f", probs[:, c]) for c in range(probs.shape[1])),
        ]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(zip(*columns, strict=True))


def summarize(folds: list[dict[str, float]]) -> dict[str, Any]:
    """``{metric: {"mean", "std", "sem", "ci95", "n"}}`` across folds for every per-fold metric.

    Per-fold test scores (each fold model alone on the test split) are reported as ``folds/test/...`` so that
    ``test/...`` can mean the ensemble.
    """
    keys = [k for k in folds[0] if "/" in k] if folds else []
    summary: dict[str, Any] = {}
    for key in keys:
        name = f"folds/{key}" if key.startswith(("test/", "external/")) else key
        summary[name] = describe([fold.get(key, math.nan) for fold in folds])
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write dict rows (columns in first-seen order) atomically."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def mean_curves(histories: Sequence[Mapping[str, Sequence[float]]]) -> dict[str, dict[str, list[float]]]:
    """Per-epoch ``mean``, ``std`` and ``n`` over folds of each curve of :data:`CURVE_KEYS`.

    ``histories[i][key][k]`` is fold ``i``'s value at epoch ``k + 1``. An epoch's numbers cover the folds that
    reached it (early stopping ends folds at different epochs); ``std`` is the sample standard deviation (ddof=1),
    0 where one fold reached the epoch.
    """
    curves: dict[str, dict[str, list[float]]] = {}
    for key in CURVE_KEYS:
        series = [list(h[key]) for h in histories if h.get(key)]
        if not series:
            continue
        curve: dict[str, list[float]] = {"mean": [], "std": [], "n": []}
        for epoch in range(max(len(s) for s in series)):
            values = np.array([s[epoch] for s in series if epoch < len(s)], dtype=np.float64)
            curve["mean"].append(float(values.mean()))
            curve["std"].append(float(values.std(ddof=1)) if len(values) > 1 else 0.0)
            curve["n"].append(float(len(values)))
        curves[key] = curve
    return curves


def reported_scores(summary: Mapping[str, Any]) -> dict[str, float]:
    """The scores of ``summary.json`` under the names a fit uses: fold means as ``val/acc`` with ``val/acc_std``.

    Also the ensemble's ``test/…`` and ``external/…``, the pooled ``oof/…``, the refit's ``refit/test/…`` and the
    fold models' own ``folds/test/…`` (mean and std); not per-class accuracies, counts, intervals or NaN.
    """
    scores: dict[str, float] = {}
    for key, value in summary.items():
        if key == "run" or _PER_CLASS.search(key) or key.endswith("/n"):
            continue
        if isinstance(value, Mapping) and "mean" in value:
            scores[key], scores[f"{key}_std"] = float(value["mean"]), float(value["std"])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scores[key] = float(value)
    return {key: value for key, value in scores.items() if math.isfinite(value)}


def fold_line(fold: int, row: dict[str, Any], *, seconds: bool = True) -> str:
    """One console line per fold; ``seconds=False`` leaves out the time (folds trained together share one pass)."""
    parts = [f"Fold {fold}"]
    for key, label in (("val/acc", "val acc"), ("val/loss", "val loss"), ("test/acc", "test acc")):
        if key in row and not math.isnan(row[key]):
            parts.append(f"{label} {100 * row[key]:.2f} %" if key.endswith("acc") else f"{label} {row[key]:.4f}")
    parts.append(f"{row.get('epochs', 0):.0f} epochs" + (f", {row.get('seconds', 0):.1f} s" if seconds else ""))
    return ", ".join(parts)


def summary_warnings(summary: Mapping[str, Any]) -> list[str]:
    """Warnings: the pooled OOF or test accuracy (or MedMNIST ACC) does not beat the majority-class baseline's."""
    labels = (("oof", "pooled out-of-fold acc"), ("test", "test acc (fold ensemble)"))
    return [w for stage, label in labels if (w := baseline_warning(stage, summary, label))]


def official_lines(summary: Mapping[str, Any]) -> list[str]:
    """Console lines of MedMNIST's official ACC and AUC: fold mean ± std, pooled OOF and test ensemble, baselines."""
    lines = []
    acc, auc = summary.get("val/official_acc"), summary.get("val/official_auc")
    if isinstance(acc, Mapping) and isinstance(auc, Mapping):
        line = (
            f"MedMNIST metrics: val ACC {acc['mean']:.3f} ± {acc['std']:.3f} AUC {auc['mean']:.3f} ± {auc['std']:.3f}"
        )
        majority = summary.get("val/majority_official_acc")
        lines.append(
            line + (f" (fold mean ± std; majority class: ACC {majority['mean']:.3f})" if majority else " (fold mean)")
        )
    for stage, label in (("oof", "pooled out-of-fold"), ("test", "test (fold ensemble)")):
        official = official_line(stage, summary, label)
        lines.extend([official] if official else [])
    return lines


def format_summary(summary: dict[str, Any], note: str | None = None) -> str:
    """Console lines: the run's wall time, mean ± std of the key metrics, pooled OOF accuracy, ensemble and refit.

    The pooled OOF and ensemble test accuracies come with their majority-class baseline and the leakage line (with
    and without a near-duplicate in training); the test accuracy with its intervals; MedMNIST's official ACC and
    AUC with theirs (:func:`official_lines`), followed by the task's ``note`` (:attr:`Task.note`) when given.
    """
    lines = []
    run = summary.get("run") or {}
    if "seconds" in run:
        folds = len(run.get("folds_run", ())) or run.get("n_folds", 0)
        lines.append(f"{run.get('strategy', 'cv')}: {folds} folds in {run['seconds']:.1f} s ({run.get('engine')})")
    for key in ("val/acc", "val/loss", "val/f1", "val/auroc"):
        if key in summary and not math.isnan(summary[key]["mean"]):
            s = summary[key]
            lo, hi = s["ci95"]
            lines.append(f"{key}: {s['mean']:.4f} ± {s['std']:.4f} (95% CI {lo:.4f}–{hi:.4f}, {s['n']} folds)")
    if "oof/acc" in summary:
        lo, hi = summary.get("oof/acc_ci95") or (math.nan, math.nan)
        interval = f"95% CI {lo:.4f}–{hi:.4f}, " if "oof/acc_ci95" in summary else ""
        lines.append(
            f"pooled out-of-fold acc: {summary['oof/acc']:.4f} ({interval}n={summary['oof/n']})"
            + _baseline(summary, "oof")
        )
    if "test/acc" in summary:
        accuracy, others = interval_text(summary, percent=False)
        lines.append(f"test acc (fold ensemble): {summary['test/acc']:.4f}{accuracy}{_baseline(summary, 'test')}")
        lines.extend([others] if others else [])
    for stage, label in (("oof", "pooled out-of-fold acc"), ("test", "test acc (fold ensemble)")):
        line = leakage_line(stage, summary, label)
        lines.extend([line] if line else [])
    labels = (
        ("refit/test/acc", "test acc (refit)"),
        ("external/acc", "external acc (fold ensemble)"),
        ("refit/external/acc", "external acc (refit)"),
    )
    lines.extend(f"{label}: {summary[key]:.4f}" for key, label in labels if key in summary)
    lines.extend(official_lines(summary))
    lines.extend([f"Note: {note}"] if note else [])
    return "\n".join(lines)


def _baseline(summary: Mapping[str, Any], stage: str) -> str:
    key = f"{stage}/majority_acc"
    return f"; majority-class baseline {summary[key]:.4f}" if isinstance(summary.get(key), float) else ""
