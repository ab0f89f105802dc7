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

from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.training.test_report import interval_text
from medmnist_lit.training.twin_scores import baseline_warning, leakage_line, stage_scores
from medmnist_lit.utils.files import atomic_path
from medmnist_lit.utils.stats import binomial_interval, describe

#: Per-epoch curves averaged over folds (every engine records them).
CURVE_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
_PER_CLASS = re.compile(r"/acc_")  # per-class accuracies (val/acc_3) stay in summary.json


def ensemble_metrics(probs: torch.Tensor, targets: torch.Tensor, names: Sequence[str], prefix: str) -> dict[str, float]:
    """Metrics of (averaged) class probabilities; their logarithms act as logits, so the loss is the NLL."""
    metrics = EpochMetrics(len(names), names)
    logits = probs.clamp_min(1e-12).log()
    metrics.update(logits, targets, torch.nn.functional.cross_entropy(logits, targets))
    return {f"{prefix}/{k}": v for k, v in metrics.compute()[0].items()}


@dataclass(frozen=True)
class _Part:
    """One fold's validation samples: their probabilities, and what the pooled scores need to stratify them."""

    index: np.ndarray
    probs: np.ndarray
    fold: int
    repeat: int
    twin: np.ndarray | None
    majority: int | None


class OutOfFold:
    """Out-of-fold predictions gathered fold by fold, kept as arrays (cheap for large sets and for LOO)."""

    def __init__(self) -> None:
        self._parts: list[_Part] = []

    def add(
        self,
        index: np.ndarray,
        probs: np.ndarray,
        fold: int,
        repeat: int,
        *,
        twin: np.ndarray | None = None,
        majority: int | None = None,
    ) -> None:
        """Record one fold's validation samples and their class probabilities.

        ``twin`` marks the samples with a near-duplicate in that fold's training part and ``majority`` is its most
        common class: the pooled scores are then stratified (``oof/with_twin/…``) and get a majority baseline.
        """
        twin = None if twin is None else np.asarray(twin, dtype=bool)
        index, probs = np.asarray(index, dtype=np.int64), np.asarray(probs, dtype=np.float32)
        self._parts.append(_Part(index, probs, fold, repeat, twin, majority))

    def __len__(self) -> int:
        return sum(len(part.index) for part in self._parts)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(index, fold, repeat, probs)``, sorted by repeat then sample index."""
        if not self._parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        index = np.concatenate([p.index for p in self._parts])
        fold = np.concatenate([np.full(len(p.index), p.fold) for p in self._parts])
        repeat = np.concatenate([np.full(len(p.index), p.repeat) for p in self._parts])
        probs = np.concatenate([p.probs for p in self._parts])
        order = np.lexsort((index, repeat))
        return index[order], fold[order], repeat[order], probs[order]

    def _stratified(self, labels: np.ndarray) -> dict[str, float]:
        """``oof/with_twin/…``, ``oof/without_twin/…``, ``oof/leak_inflation`` and ``oof/majority_acc``."""
        if any(p.majority is None for p in self._parts):
            return {}
        index = np.concatenate([p.index for p in self._parts])
        probs = np.concatenate([p.probs for p in self._parts])
        majority = np.concatenate([np.full(len(p.index), p.majority) for p in self._parts])
        twins = [p.twin for p in self._parts if p.twin is not None]
        twin = np.concatenate(twins) if len(twins) == len(self._parts) else None
        return stage_scores("oof", probs, np.asarray(labels)[index], twin=twin, majority=majority)

    def pooled(self, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
        """Accuracy and AUROC of all out-of-fold predictions together, with an exact binomial interval."""
        if not len(self):
            return {}
        index, _, _, probs = self.arrays()
        targets = torch.as_tensor(np.asarray(labels)[index], dtype=torch.int64)
        pooled: dict[str, Any] = ensemble_metrics(torch.from_numpy(probs), targets, names, "oof")
        correct = int((probs.argmax(1) == targets.numpy()).sum())
        pooled["oof/acc_ci95"] = binomial_interval(correct, len(index))
        pooled["oof/n"] = len(index)
        pooled.update(self._stratified(labels))
        return pooled

    def write(self, path: Path, data: Any) -> None:
        """``oof.csv``: index, id, label, fold, repeat, predicted class and one probability column per class."""
        names = np.asarray(data.class_names)
        index, fold, repeat, probs = self.arrays()
        header = ["index", "id", "label", "fold", "repeat", "predicted", *[f"p_{name}" for name in names]]
        columns = [
            index.astype(str),
            np.asarray(data.ids)[index].astype(str),
            names[np.asarray(data.labels)[index]] if len(index) else index.astype(str),
            fold.astype(str),
            repeat.astype(str),
            names[probs.argmax(1)] if len(index) else index.astype(str),
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
    """Warnings about the cross-validation's scores: the pooled OOF or test accuracy does not beat the majority."""
    labels = (("oof", "pooled out-of-fold acc"), ("test", "test acc (fold ensemble)"))
    return [w for stage, label in labels if (w := baseline_warning(stage, summary, label))]


def format_summary(summary: dict[str, Any]) -> str:
    """Console lines: the run's wall time, mean ± std of the key metrics, pooled OOF accuracy, ensemble and refit.

    The pooled OOF and ensemble test accuracies come with their majority-class baseline and the leakage line (with
    and without a near-duplicate in training); the test accuracy with its intervals.
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
        lo, hi = summary["oof/acc_ci95"]
        lines.append(
            f"pooled out-of-fold acc: {summary['oof/acc']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={summary['oof/n']})"
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
    return "\n".join(lines)


def _baseline(summary: Mapping[str, Any], stage: str) -> str:
    key = f"{stage}/majority_acc"
    return f"; majority-class baseline {summary[key]:.4f}" if isinstance(summary.get(key), float) else ""
