"""What a cross-validation run reports: per-fold rows, out-of-fold predictions and their aggregation."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.utils.files import atomic_path
from medmnist_lit.utils.stats import binomial_interval, describe


def ensemble_metrics(probs: torch.Tensor, targets: torch.Tensor, names: Sequence[str], prefix: str) -> dict[str, float]:
    """Metrics of (averaged) class probabilities; their logarithms act as logits, so the loss is the NLL."""
    metrics = EpochMetrics(len(names), names)
    logits = probs.clamp_min(1e-12).log()
    metrics.update(logits, targets, torch.nn.functional.cross_entropy(logits, targets))
    return {f"{prefix}/{k}": v for k, v in metrics.compute()[0].items()}


class OutOfFold:
    """Out-of-fold predictions gathered fold by fold, kept as arrays (cheap for large sets and for LOO)."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, int, int]] = []

    def add(self, index: np.ndarray, probs: np.ndarray, fold: int, repeat: int) -> None:
        """Record one fold's validation samples and their class probabilities."""
        self._parts.append((np.asarray(index, dtype=np.int64), np.asarray(probs, dtype=np.float32), fold, repeat))

    def __len__(self) -> int:
        return sum(len(index) for index, *_ in self._parts)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(index, fold, repeat, probs)``, sorted by repeat then sample index."""
        if not self._parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        index = np.concatenate([p[0] for p in self._parts])
        fold = np.concatenate([np.full(len(p[0]), p[2]) for p in self._parts])
        repeat = np.concatenate([np.full(len(p[0]), p[3]) for p in self._parts])
        probs = np.concatenate([p[1] for p in self._parts])
        order = np.lexsort((index, repeat))
        return index[order], fold[order], repeat[order], probs[order]

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


def fold_line(fold: int, row: dict[str, Any]) -> str:
    """One console line per fold."""
    parts = [f"Fold {fold}"]
    for key, label in (("val/acc", "val acc"), ("val/loss", "val loss"), ("test/acc", "test acc")):
        if key in row and not math.isnan(row[key]):
            parts.append(f"{label} {100 * row[key]:.2f} %" if key.endswith("acc") else f"{label} {row[key]:.4f}")
    parts.append(f"{row.get('epochs', 0):.0f} epochs, {row.get('seconds', 0):.1f} s")
    return ", ".join(parts)


def format_summary(summary: dict[str, Any]) -> str:
    """A few console lines: mean ± std of the key metrics, pooled OOF accuracy, ensemble and refit test."""
    lines = []
    for key in ("val/acc", "val/loss", "val/f1", "val/auroc"):
        if key in summary and not math.isnan(summary[key]["mean"]):
            s = summary[key]
            lo, hi = s["ci95"]
            lines.append(f"{key}: {s['mean']:.4f} ± {s['std']:.4f} (95% CI {lo:.4f}–{hi:.4f}, {s['n']} folds)")
    if "oof/acc" in summary:
        lo, hi = summary["oof/acc_ci95"]
        lines.append(
            f"pooled out-of-fold acc: {summary['oof/acc']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={summary['oof/n']})"
        )
    labels = (
        ("test/acc", "test acc (fold ensemble)"),
        ("refit/test/acc", "test acc (refit)"),
        ("external/acc", "external acc (fold ensemble)"),
    )
    lines.extend(f"{label}: {summary[key]:.4f}" for key, label in labels if key in summary)
    return "\n".join(lines)
