"""Leakage audit: exact and near-duplicate images within a dataset and across the parts of a split.

Two relations are checked. *Exact* duplicates have identical pixels
(:func:`medmnist_lit.splits.groups.exact_duplicate_groups`). *Near* duplicates have thumbnails whose Pearson r is at
least a threshold, 0.98 by default (:mod:`medmnist_lit.splits.near_duplicates` documents the measure and its
calibration); near clusters are connected components and include the exact ones.

Across a split, a sample "has a copy in training" when its cluster has a member in that fold's training
part (dev minus val minus the samples ``train_fraction`` left out). This is the property a grouped split
(``--data.group_by duplicates`` / ``near_duplicates``) guarantees to be false, and it is computed from the
cluster codes with one pass over every fold's val and excluded indices, so leave-one-out splits with
thousands of folds cost about as much as one k-fold. When validation or test samples have copies in
training, :func:`audit` issues a :class:`LeakageWarning` through :mod:`warnings` (the CLI decides how to show
it) and stores the message in the report.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from medmnist_lit.splits.groups import exact_duplicate_groups
from medmnist_lit.splits.multilabel import label_text
from medmnist_lit.splits.near_duplicates import GRID, NEAR_THRESHOLD, find_near_duplicates, pearson

if TYPE_CHECKING:  # the audit only reads a split's index arrays
    from collections.abc import Sequence

    from medmnist_lit.splits.split import Split

log = logging.getLogger(__name__)


class LabelledImages(Protocol):
    """What the audit reads of a dataset: :class:`medmnist_lit.data.imageset.ImageSet` has it.

    The data layer sits above this package, so the shape is described here rather than imported.
    """

    @property
    def images(self) -> np.ndarray: ...  # noqa: D102
    @property
    def labels(self) -> np.ndarray: ...  # noqa: D102
    @property
    def ids(self) -> np.ndarray: ...  # noqa: D102
    @property
    def class_names(self) -> Sequence[str]: ...  # noqa: D102
    @property
    def source(self) -> str: ...  # noqa: D102
    def __len__(self) -> int: ...


KINDS = ("exact", "near")
#: Cross-split relations: (name, side whose samples are counted, side that holds the copy).
RELATIONS = (("val_in_train", "val", "train"), ("test_in_train", "test", "train"), ("test_in_val", "test", "val"))
_SCAN = 200  # leaked samples examined per fold when picking examples


class LeakageWarning(UserWarning):
    """Validation or test samples have an exact or near copy in the training part of a split."""


def _cluster_summary(codes: np.ndarray, ids: np.ndarray, max_examples: int) -> dict[str, Any]:
    sizes = np.bincount(codes) if len(codes) else np.zeros(0, np.int64)
    shared = np.flatnonzero(sizes > 1)
    biggest = shared[np.argsort(-sizes[shared], kind="stable")[:max_examples]]
    order = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)]
    return {
        "n_images_with_copy": int(sizes[shared].sum()),
        "n_clusters": len(shared),
        "largest_cluster": int(sizes[shared].max()) if len(shared) else 0,
        "n_pairs": int((sizes * (sizes - 1) // 2).sum()),
        "examples": [
            {"size": int(sizes[c]), "ids": [str(ids[i]) for i in order[starts[c] : starts[c + 1]][:5]]} for c in biggest
        ],
    }


def _label_conflicts(codes: np.ndarray, data: LabelledImages, max_examples: int) -> dict[str, Any]:
    """Clusters whose members carry different labels (multi-label: different 0/1 rows)."""
    labels = np.asarray(data.labels)
    # one row per distinct (cluster, label) pair; a multi-label row is its cluster then its L columns
    pairs = np.unique(np.c_[codes, labels], axis=0) if len(codes) else np.zeros((0, 2), np.int64)
    n_labels = np.bincount(pairs[:, 0], minlength=int(codes.max()) + 1 if len(codes) else 0)
    mixed = np.flatnonzero(n_labels > 1)
    members = np.isin(codes, mixed)
    examples = []
    for c in mixed[:max_examples]:
        index = np.flatnonzero(codes == c)[:5]
        shown = [label_text(y, data.class_names) for y in labels[index]]
        examples.append({"ids": [str(data.ids[i]) for i in index], "labels": shown})
    return {"n_clusters": len(mixed), "n_images": int(members.sum()), "examples": examples}


def _concat(parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated indices of every fold and the fold of each."""
    folds = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    index = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return index, folds


def _fold_counts(codes: np.ndarray, split: Split) -> dict[str, np.ndarray]:
    """Per fold, the samples of each relation in :data:`RELATIONS` whose cluster has a member on the other side.

    Linear in the total size of all folds' val and excluded parts (plus one pass over the data), never in
    ``folds × N``: a fold's training part differs from dev only by those held-out indices.
    """
    n_folds = split.n_folds
    g = int(codes.max()) + 1 if len(codes) else 1
    dev_count = np.bincount(codes[split.dev], minlength=g)
    test_count = np.bincount(codes[split.test], minlength=g)
    val, val_fold = _concat(split.val)
    excluded, excluded_fold = _concat(split.excluded)
    val_key = val_fold * g + codes[val]  # one key per (fold, cluster); fits int64 for any realistic size
    keys, held = np.unique(np.r_[val_key, excluded_fold * g + codes[excluded]], return_counts=True)
    # val_in_train: the cluster keeps members in dev after removing what this fold holds out
    leaked = dev_count[codes[val]] > held[np.searchsorted(keys, val_key)]
    val_in_train = np.bincount(val_fold[leaked], minlength=n_folds)
    # test_in_train: every test sample whose cluster is in dev leaks, except where a fold holds out all of it
    cluster, fold = keys % g, keys // g
    emptied = held == dev_count[cluster]
    base = int(test_count[dev_count > 0].sum())
    lost = np.bincount(fold[emptied], weights=test_count[cluster[emptied]], minlength=n_folds)
    val_keys = np.unique(val_key)
    test_in_val = np.bincount(val_keys // g, weights=test_count[val_keys % g], minlength=n_folds)
    return {
        "val_in_train": val_in_train.astype(np.int64),
        "test_in_train": (base - lost).astype(np.int64),
        "test_in_val": test_in_val.astype(np.int64),
    }


class _Examples:
    """Picks example (sample, copy) id pairs for the folds that leak, a few folds at most."""

    def __init__(self, data: LabelledImages, split: Split, codes: dict[str, np.ndarray], grid: int) -> None:
        self.data, self.split, self.codes, self.grid = data, split, codes, grid
        self.members: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for kind, c in codes.items():
            order = np.argsort(c, kind="stable")
            self.members[kind] = (order, np.r_[0, np.cumsum(np.bincount(c))])

    def _sides(self, fold: int) -> dict[str, np.ndarray]:
        n = self.split.n_samples
        sides = {name: np.zeros(n, bool) for name in ("train", "val", "test")}
        sides["train"][self.split.train(fold)] = True
        sides["val"][self.split.val[fold]] = True
        sides["test"][self.split.test] = True
        return sides

    def pick(self, kind: str, side: str, other: str, counts: np.ndarray, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` examples; near examples prefer pairs that are not identical copies."""
        out: list[dict[str, Any]] = []
        spare: list[dict[str, Any]] = []  # near examples that are identical copies, used only to fill up
        codes, exact = self.codes[kind], self.codes["exact"]
        order, starts = self.members[kind]
        for fold in np.flatnonzero(counts)[: max(limit, 0)].tolist():
            sides = self._sides(fold)
            has = np.bincount(codes[sides[other]], minlength=len(starts) - 1) > 0
            for sample in np.flatnonzero(sides[side] & has[codes])[:_SCAN].tolist():
                mates = order[starts[codes[sample]] : starts[codes[sample] + 1]]
                mates = mates[sides[other][mates]]
                ids = [str(self.data.ids[sample]), str(self.data.ids[mates[0]])]
                if kind == "exact":
                    out.append({"fold": fold, "ids": ids})
                elif (exact[mates] == exact[sample]).all():
                    spare.append({"fold": fold, "ids": ids, "r": 1.0})
                else:  # the closest mate that is not an identical copy
                    mates = mates[exact[mates] != exact[sample]][:64]
                    r = pearson(self.data.images[np.full(len(mates), sample)], self.data.images[mates], grid=self.grid)
                    best = int(np.argmax(r))
                    ids[1] = str(self.data.ids[mates[best]])
                    out.append({"fold": fold, "ids": ids, "r": round(float(r[best]), 4)})
                if len(out) >= limit:
                    return out
        return (out + spare)[: max(limit, 0)]


def _split_report(
    data: LabelledImages, split: Split, codes: dict[str, np.ndarray], grid: int, max_examples: int, max_fold_rows: int
) -> dict[str, Any]:
    counts = {kind: _fold_counts(c, split) for kind, c in codes.items()}
    n_folds = split.n_folds
    totals: dict[str, Any] = {}
    for relation, _, _ in RELATIONS:
        totals[relation] = {
            kind: {
                "total": int(counts[kind][relation].sum()),
                "max": int(counts[kind][relation].max()) if n_folds else 0,
                "folds": int(np.count_nonzero(counts[kind][relation])),
            }
            for kind in KINDS
        }
    rows = None
    if n_folds <= max_fold_rows:
        rows = []
        for fold in range(n_folds):
            n_held = len(split.val[fold]) + len(split.excluded[fold])
            row: dict[str, Any] = {"fold": fold, "n_train": len(split.dev) - n_held, "n_val": len(split.val[fold])}
            for relation, _, _ in RELATIONS:
                row[relation] = {kind: int(counts[kind][relation][fold]) for kind in KINDS}
            rows.append(row)
    picker = _Examples(data, split, codes, grid)
    examples = {
        relation: {kind: picker.pick(kind, side, other, counts[kind][relation], max_examples) for kind in KINDS}
        for relation, side, other in RELATIONS
    }
    return {
        "strategy": split.strategy,
        "n_folds": n_folds,
        "n_test": len(split.test),
        "n_dev": len(split.dev),
        "grouped": bool(split.params.get("grouped", False)),
        "folds": rows,
        "totals": totals,
        "examples": examples,
    }


def _leak_message(report: dict[str, Any]) -> str | None:
    """One warning naming the counts of val/test samples with copies in training, or ``None``."""
    totals, n_folds = report["split"]["totals"], report["split"]["n_folds"]
    parts = []
    for kind, what in (("exact", "an exact copy"), ("near", "a near-duplicate")):
        val, test = totals["val_in_train"][kind]["total"], totals["test_in_train"][kind]["max"]
        counted = []
        if val:
            counted.append(f"{val} validation sample(s)" + (f" (summed over {n_folds} folds)" if n_folds > 1 else ""))
        if test:
            counted.append(
                f"{'up to ' if n_folds > 1 else ''}{test} test sample(s){' per fold' if n_folds > 1 else ''}"
            )
        if counted:
            parts.append(f"{' and '.join(counted)} have {what} in training")
    if not parts:
        return None
    exact = totals["val_in_train"]["exact"]["total"] or totals["test_in_train"]["exact"]["total"]
    if report["split"]["strategy"] == "predefined":
        remedy = "The official split is used as published: believe its *_without_twin scores."
    elif exact:
        remedy = (
            "Split with `--data.group_by duplicates` to keep exact copies on one side, or with the default "
            "`--data.group_by near_duplicates` for both."
        )
    else:
        remedy = "Split with the default `--data.group_by near_duplicates` to keep them on one side."
    threshold = report["measure"]["threshold"]
    return f"Leakage: {'; '.join(parts)} (near: Pearson r >= {threshold} of thumbnails, same cluster). {remedy}"


def audit(
    data: LabelledImages,
    split: Split | None = None,
    *,
    threshold: float = NEAR_THRESHOLD,
    grid: int = GRID,
    max_examples: int = 5,
    max_fold_rows: int = 20,
) -> dict[str, Any]:
    """Find exact and near-duplicate images, label conflicts, and copies shared across a split.

    Args:
        data: The dataset (a memory-mapped one is streamed).
        split: Optional split of ``data``; adds per-fold counts of val/test samples with copies in training
            and of test samples with copies in val.
        threshold: Pearson r of thumbnails for near-duplicates (see :mod:`medmnist_lit.splits.near_duplicates`).
        grid: Thumbnail side in cells.
        max_examples: Examples (clusters or id pairs) kept per count.
        max_fold_rows: Report one row per fold up to this many folds; beyond it only totals (sum, largest
            per-fold value and number of folds with leakage), e.g. for leave-one-out.

    Returns:
        JSON-serialisable report: ``n_samples``, ``measure``, ``exact``, ``near``, ``label_conflicts``,
        ``split`` (``None`` without a split), ``warnings`` and ``seconds``.

    Raises:
        ValueError: The split was made for a dataset of a different size.

    Warns:
        LeakageWarning: Validation or test samples have an exact or near copy in training.
    """
    started = time.perf_counter()
    n = len(data)
    if split is not None and split.n_samples != n:
        raise ValueError(
            f"the split covers {split.n_samples} samples but the dataset has {n}; audit the split with the "
            "dataset it was made for"
        )
    exact = exact_duplicate_groups(data.images)
    near = find_near_duplicates(data.images, threshold=threshold, grid=grid)
    codes = {"exact": exact, "near": near.codes}
    conflicts = _label_conflicts(exact, data, max_examples)
    near_summary = _cluster_summary(near.codes, data.ids, max_examples)
    near_summary["n_pairs"] = near.n_pairs  # direct pairs above the threshold, not all pairs within clusters
    near_summary["n_flat"] = near.n_flat
    near_summary["n_mixed_label_clusters"] = _label_conflicts(near.codes, data, 0)["n_clusters"]
    report: dict[str, Any] = {
        "n_samples": n,
        "source": data.source,
        "measure": {
            "exact": "identical pixels (BLAKE2b digest, verified byte for byte)",
            "near": f"Pearson r of {grid}x{grid} grayscale cell-mean thumbnails >= {threshold}; "
            "clusters are connected components and include exact copies",
            "threshold": float(threshold),
            "grid": int(grid),
        },
        "exact": _cluster_summary(exact, data.ids, max_examples),
        "near": near_summary,
        "label_conflicts": conflicts,
        "split": None,
        "warnings": [],
    }
    if conflicts["n_clusters"]:
        log.warning(
            "%d cluster(s) of identical images (%d images) carry different labels, e.g. %s",
            conflicts["n_clusters"], conflicts["n_images"], conflicts["examples"][0]["ids"],
        )  # fmt: skip
    if split is not None:
        report["split"] = _split_report(data, split, codes, grid, max_examples, max_fold_rows)
        message = _leak_message(report)
        if message:
            report["warnings"].append(message)
            warnings.warn(message, LeakageWarning, stacklevel=2)
    report["seconds"] = round(time.perf_counter() - started, 3)
    log.debug("leakage audit of %d images took %.2f s", n, report["seconds"])
    return report


def _pair(counts: dict[str, int]) -> str:
    return f"{counts['exact']:>6} / {counts['near']:<6}"


def _closeness(example: dict[str, Any], threshold: float) -> str:
    """``, r=0.991``; below the threshold, say why the pair is counted at all (a cluster is a connected component)."""
    if "r" not in example:
        return ""
    r = example["r"]
    if r >= threshold:
        return f", r={r}"
    return f", r={r} < {threshold}: same cluster through images in between"


def _ids(ids: list[str], limit: int = 3) -> str:
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


def format_audit(report: dict[str, Any]) -> str:
    """Console summary of an :func:`audit` report (several lines, no trailing newline)."""
    measure = report["measure"]
    lines = [
        f"Leakage audit of {report['n_samples']:,} images ({report['seconds']:.1f} s); near-duplicates: Pearson r >= "
        f"{measure['threshold']} of {measure['grid']}x{measure['grid']} thumbnails, clusters = connected components"
    ]
    for kind, title in (("exact", "exact duplicates"), ("near", "near-duplicates")):
        s = report[kind]
        if not s["n_clusters"]:
            lines.append(f"  {title + ':':18}none")
            continue
        lines.append(
            f"  {title + ':':18}{s['n_images_with_copy']:,} images in {s['n_clusters']:,} cluster(s) "
            f"(largest {s['largest_cluster']}), {s['n_pairs']:,} pair(s); e.g. {_ids(s['examples'][0]['ids'])}"
        )
    conflicts = report["label_conflicts"]
    if conflicts["n_clusters"]:
        example = conflicts["examples"][0]
        shown = ", ".join(f"{i} ({y})" for i, y in zip(example["ids"][:3], example["labels"][:3], strict=True))
        lines.append(
            f"  label conflicts:  {conflicts['n_clusters']} cluster(s) of identical images ({conflicts['n_images']} "
            f"images) carry different labels, e.g. {shown}"
        )
    split = report["split"]
    if split is not None:
        n_folds = split["n_folds"]
        lines.append(
            f"  split {split['strategy']}{', grouped' if split['grouped'] else ''}: {n_folds} fold(s), "
            f"{split['n_test']:,} test, {split['n_dev']:,} dev; samples with a copy on the other side:"
        )
        if split["folds"] is not None:
            titles = "".join(f"{f'{side} in {other}':^17}" for _, side, other in RELATIONS)
            lines.append(f"    {'fold':>5} {'train':>7} {'val':>6}   {titles}  (exact / near)")
            for row in split["folds"]:
                cells = "  ".join(_pair(row[r]) for r, _, _ in RELATIONS)
                lines.append(f"    {row['fold']:>5} {row['n_train']:>7} {row['n_val']:>6}   {cells}")
        for relation, side, other in RELATIONS:
            t = split["totals"][relation]
            cells = "; ".join(
                f"{kind} {t[kind]['total']:,} total, max {t[kind]['max']:,}/fold, {t[kind]['folds']} of {n_folds} folds"
                for kind in KINDS
            )
            lines.append(f"    {side + ' in ' + other + ':':15}{cells}")
            for kind in KINDS:
                for ex in split["examples"][relation][kind][:2]:
                    closeness = _closeness(ex, measure["threshold"])
                    lines.append(f"      {kind}: {ex['ids'][0]} ~ {ex['ids'][1]} (fold {ex['fold']}{closeness})")
    lines.extend(f"  WARNING: {w}" for w in report["warnings"])
    return "\n".join(lines)
