"""How evenly do k-fold splits spread ChestMNIST-like multi-label targets? (issue 15, item 2's groundwork)

Synthetic 14-label targets with ChestX-ray14's label prevalences (NIH, as in ChestMNIST: hernia 0.2% ...
infiltration 17.7%), correlated through a shared latent "abnormal" factor so about half the images have a finding.
Each method's 5 validation folds are compared with the whole set: the largest deviation of a label's prevalence
(points, and in images from an even share of its positives), and the avoidable (fold, label) pairs without a
single positive (where the official per-label AUC, and so the macro AUC, is undefined). Methods:

* ``unstratified``: ``KFold(shuffle=True)``;
* ``most common``: ``StratifiedKFold`` on each sample's most prevalent positive label (0 = no finding);
* ``rarest``: ``StratifiedKFold`` on each sample's rarest positive label;
* ``iterstrat``: ``MultilabelStratifiedKFold`` (package ``iterative-stratification``, Sechidis et al. 2011);
* ``skmultilearn``: ``IterativeStratification`` (package ``scikit-multilearn``), second order.

The two packages are optional: a method whose package is missing is skipped. Run:
``PYTHONPATH=<dir with iterstrat/ and skmultilearn/> python benchmarks/multilabel_stratification.py``.

Measured (iterative-stratification 0.1.9, scikit-multilearn 0.2.0, scikit-learn 1.9.1; 2 shared CPU cores; worst
of 5 seeds, time the mean; ``img``: the worst label's distance from an even share of its positives, in images)::

         n method        max dev (pt) max dev (img) empty size spread       s
      2000 unstratified          4.30          17.2     1           0    0.00
      2000 most common           2.30           9.2     2           0    0.00
      2000 rarest                2.85          11.4     0           0    0.00
      2000 iterstrat             0.20           0.8     0           0    0.02
      2000 skmultilearn          0.80           3.2     1           0    0.03
     78468 unstratified          0.69         108.2     0           1    0.00
     78468 most common           0.37          57.4     0           1    0.01
     78468 rarest                0.51          80.2     0           1    0.01
     78468 iterstrat             0.01           0.8     0           1    0.73
     78468 skmultilearn          0.04           5.6     0           2    5.23

Iterative stratification puts every label within one image of its even share at both sizes; keying
``StratifiedKFold`` by one label per sample halves the unstratified error at best and can still leave a fold
without a rare label's positives (undefined official AUC). scikit-multilearn is slower, less even, and ignores seeds.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

# ChestX-ray14 prevalences (%), ChestMNIST's label order
PREVALENCE = [10.3, 2.5, 11.9, 17.7, 5.2, 5.6, 1.3, 4.7, 4.2, 2.1, 2.2, 1.5, 3.0, 0.2]
FOLDS = 5

Splitter = Callable[[np.ndarray, int], Iterator[np.ndarray]]


def targets(n: int, seed: int) -> np.ndarray:
    """``(n, 14)`` uint8 labels with about the given prevalences, correlated through a shared factor."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 1))
    own = rng.normal(size=(n, len(PREVALENCE)))
    latent = 0.6 * shared + 0.8 * own  # unit variance
    cut = np.array([np.quantile(latent[:, j], 1 - p / 100) for j, p in enumerate(PREVALENCE)])
    return (latent > cut).astype(np.uint8)


def by_key(key: Callable[[np.ndarray], np.ndarray]) -> Splitter:
    def split(y: np.ndarray, seed: int) -> Iterator[np.ndarray]:
        strata = key(y)
        for _, val in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(strata, strata):
            yield val

    return split


def most_common(y: np.ndarray) -> np.ndarray:
    order = np.argsort(-y.mean(0))  # labels from the most to the least prevalent
    ranked = y[:, order]
    return np.where(ranked.any(1), order[ranked.argmax(1)] + 1, 0)


def rarest(y: np.ndarray) -> np.ndarray:
    order = np.argsort(y.mean(0))
    ranked = y[:, order]
    return np.where(ranked.any(1), order[ranked.argmax(1)] + 1, 0)


def unstratified(y: np.ndarray, seed: int) -> Iterator[np.ndarray]:
    for _, val in KFold(FOLDS, shuffle=True, random_state=seed).split(y):
        yield val


def methods() -> dict[str, Splitter]:
    found: dict[str, Splitter] = {
        "unstratified": unstratified,
        "most common": by_key(most_common),
        "rarest": by_key(rarest),
    }
    try:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        def iterstrat(y: np.ndarray, seed: int) -> Iterator[np.ndarray]:
            for _, val in MultilabelStratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(y, y):
                yield val

        found["iterstrat"] = iterstrat
    except ImportError:
        pass
    try:
        from skmultilearn.model_selection import IterativeStratification

        def skml(y: np.ndarray, seed: int) -> Iterator[np.ndarray]:
            # scikit-multilearn 0.2.0 passes shuffle=False to its base class: its folds ignore any seed
            splitter = IterativeStratification(n_splits=FOLDS, order=2)
            for _, val in splitter.split(y, y):
                yield val

        found["skmultilearn"] = skml
    except ImportError:
        pass
    return found


def measure(split: Splitter, y: np.ndarray, seed: int) -> tuple[float, float, int, int, float]:
    """Largest deviation of a prevalence (points) and of a positive count (images, from total / folds), avoidable
    empty (fold, label) pairs (beyond the folds a label with fewer positives than folds must leave empty), the
    fold-size spread and the seconds taken."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # StratifiedKFold: strata with fewer members than folds
        folds = list(split(y, seed))
    seconds = time.perf_counter() - start
    rates = np.array([y[f].mean(0) for f in folds])
    points = float(np.abs(rates - y.mean(0)).max() * 100)
    counts = np.array([y[f].sum(0) for f in folds])
    images = float(np.abs(counts - y.sum(0) / FOLDS).max())
    unavoidable = np.maximum(0, FOLDS - y.sum(0))
    empty = int(np.maximum(0, (counts == 0).sum(0) - unavoidable).sum())
    sizes = [len(f) for f in folds]
    return points, images, empty, max(sizes) - min(sizes), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 78468])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    found = methods()
    print(f"{FOLDS}-fold validation parts, {args.seeds} seeds; worst over seeds (time: mean)")
    print(
        f"{'n':>6} {'method':<13} {'max dev (pt)':>12} {'max dev (img)':>13} {'empty':>5} {'size spread':>11} {'s':>7}"
    )
    for n in args.sizes:
        for name, split in found.items():
            rows = [measure(split, targets(n, seed), seed) for seed in range(args.seeds)]
            points, images, empty, spread = (max(r[i] for r in rows) for i in range(4))
            seconds = float(np.mean([r[4] for r in rows]))
            print(f"{n:>6} {name:<13} {points:>12.2f} {images:>13.1f} {empty:>5} {spread:>11} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
