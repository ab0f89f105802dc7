"""How evenly do *grouped* multi-label splits spread labels and samples? (issue 15; numbers in splits/multilabel.py)

ChestMNIST-like 14-label targets (``multilabel_stratification.targets``) in clusters of 300, 150 and 80 images,
the rest of 1-3 images (like near-duplicate groups). Each method's 5-fold validation parts of whole groups are
compared with the whole set: the worst label's distance from an even share of its positives (images; mean and
worst over seeds) and the largest distance of a fold's size from an even share of the images. Methods:

* ``weighted``: this project's split (``make_split(..., groups=...)``: weighted iterative stratification of groups);
* ``union iterstrat``: ``MultilabelStratifiedKFold`` over the groups, each as its members' label union (counts groups);
* ``unstratified``: ``GroupKFold(shuffle=True)`` (``make_split(..., stratify=False)``).

Then a 20% grouped hold-out test part of 5,000 such images: its size in images. Run from the repository root:
``.venv/bin/python benchmarks/multilabel_grouped_splits.py``. Measured (2 shared CPU cores, 10 seeds)::

    method              label dev mean  label dev max  size dev max
    weighted                      4.76           12.4             0
    union iterstrat               8.23           11.9           284
    unstratified                 11.19           14.4           412
    20% hold-out of 5,000 images, seeds 0-2: weighted [1000, 1000, 1000], union iterstrat [873, 983, 913]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold, MultilabelStratifiedShuffleSplit

sys.path.insert(0, str(Path(__file__).parent))
from multilabel_stratification import targets

from medmnist_lit.splits.multilabel import unit_labels
from medmnist_lit.splits.strategies import make_split

FOLDS = 5


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.r_[300, 150, 80, np.random.default_rng(seed).integers(1, 4, n)]
    return targets(n, seed), np.repeat(np.arange(len(sizes)), sizes)[:n]


def worst(y: np.ndarray, parts: list[np.ndarray]) -> tuple[float, int]:
    labels = max(float(np.abs(y[p].sum(0) - y.sum(0) * len(p) / len(y)).max()) for p in parts)
    sizes = max(abs(len(p) - len(y) // len(parts)) for p in parts)
    return labels, sizes


def union_folds(y: np.ndarray, groups: np.ndarray, seed: int) -> list[np.ndarray]:
    unit_of = np.unique(groups, return_inverse=True)[1]
    union = unit_labels(y, unit_of, int(unit_of.max()) + 1) > 0
    cv = MultilabelStratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    return [np.flatnonzero(np.isin(unit_of, v)) for _, v in cv.split(union, union)]


def main(seeds: int = 10) -> None:
    rows: dict[str, list[tuple[float, int]]] = {"weighted": [], "union iterstrat": [], "unstratified": []}
    for seed in range(seeds):
        y, groups = clustered(2000, seed)
        options = dict(strategy="kfold", folds=FOLDS, test_fraction=0, groups=groups, seed=seed)
        rows["weighted"].append(worst(y, list(make_split(y, **options).val)))  # type: ignore[arg-type]
        rows["union iterstrat"].append(worst(y, union_folds(y, groups, seed)))
        rows["unstratified"].append(worst(y, list(make_split(y, **options, stratify=False).val)))  # type: ignore[arg-type]
    print(f"{'method':<18} {'label dev mean':>15} {'label dev max':>14} {'size dev max':>13}")
    for name, values in rows.items():
        labels, sizes = np.array([v[0] for v in values]), [v[1] for v in values]
        print(f"{name:<18} {labels.mean():>15.2f} {labels.max():>14.1f} {max(sizes):>13}")
    ours, theirs = [], []
    for seed in range(3):
        y, groups = clustered(5000, seed)
        ours.append(len(make_split(y, strategy="holdout", groups=groups, seed=seed).test))
        unit_of = np.unique(groups, return_inverse=True)[1]
        union = unit_labels(y, unit_of, int(unit_of.max()) + 1) > 0
        held = round(0.2 * len(union) + 0.5)
        _, test = next(MultilabelStratifiedShuffleSplit(1, test_size=held, random_state=seed).split(union, union))
        theirs.append(int(np.isin(unit_of, test).sum()))
    print(f"20% hold-out of 5,000 images, seeds 0-2: weighted {ours}, union iterstrat {theirs}")


if __name__ == "__main__":
    main()
