"""What a cross-validation run reports: per-fold rows, out-of-fold predictions and their aggregation."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmnist_lit.files import atomic_path
from medmnist_lit.metrics import EpochMetrics
from medmnist_lit.stats import binomial_interval, describe


def ensemble_metrics(probs: torch.Tensor, targets: torch.Tensor, names: Sequence[str], prefix: str) -> dict[str, float]:
    """Metrics of (averaged) class probabilities; their logarithms act as logits, so the loss is the NLL."""
    metrics = EpochMetrics(len(names), names)
    logits = probs.clamp_min(1e-12).log()
    metrics.update(logits, targets, torch.nn.functional.cross_entropy(logits, targets))
    return {f"{prefix}/{k}": v for k, v in metrics.compute()[0].items()}


def oof_rows(index: np.ndarray, probs: np.ndarray, data: Any, fold: int, repeat: int) -> list[dict[str, Any]]:
    """Rows of ``oof.csv`` for one fold's validation samples."""
    names = list(data.class_names)
    return [
        {
            "index": int(i),
            "id": str(data.ids[i]),
            "label": names[int(data.labels[i])],
            "fold": fold,
            "repeat": repeat,
            "predicted": names[int(p.argmax())],
            **{f"p_{name}": float(v) for name, v in zip(names, p, strict=True)},
        }
        for i, p in zip(index, probs, strict=True)
    ]


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


def pooled_oof(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Accuracy and AUROC of all out-of-fold predictions together, with an exact binomial interval of accuracy."""
    if not rows:
        return {}
    probs = torch.tensor([[row[f"p_{n}"] for n in names] for row in rows], dtype=torch.float32)
    targets = torch.tensor([list(names).index(row["label"]) for row in rows], dtype=torch.int64)
    pooled: dict[str, Any] = ensemble_metrics(probs, targets, names, "oof")
    correct = int((probs.argmax(1) == targets).sum())
    pooled["oof/acc_ci95"] = binomial_interval(correct, len(rows))
    pooled["oof/n"] = len(rows)
    return pooled


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
