"""Benchmark the leakage audit: exact duplicates, near-duplicates and a 5-fold split of 60,000 images.

Usage::

    python benchmarks/audit.py                     # synthetic 60,000 images of 64×64 (both layouts below)
    python benchmarks/audit.py --source PATH       # a real folder / zip / npz (via load_dataset) instead
    python benchmarks/audit.py --repeats 5 --n 60000

Synthetic layouts, each checked against what was planted:

* ``tiled``: 10,000 smooth random base images, each repeated 6 times; one repeat is kept as an exact copy and
  the others are perturbed (pixel noise σ 2, brightness ±8, contrast 0.95-1.05), so every image has
  near-duplicates (a heavy near-pair load: ~150,000 pairs).
* ``distinct``: 57,000 distinct images plus 1,500 exact and 1,500 perturbed copies of random ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from synthetic import blobs  # noqa: E402

from medmnist_lit.data.imageset import ImageSet  # noqa: E402
from medmnist_lit.splits.audit import audit, format_audit  # noqa: E402
from medmnist_lit.splits.groups import exact_duplicate_groups  # noqa: E402
from medmnist_lit.splits.near_duplicates import find_near_duplicates  # noqa: E402
from medmnist_lit.splits.strategies import make_split  # noqa: E402


def perturb(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Slightly changed copies: contrast 0.95-1.05, brightness ±8, pixel noise σ 2."""
    n = len(images)
    gain = rng.uniform(0.95, 1.05, (n, 1, 1)).astype(np.float32)
    shift = rng.uniform(-8, 8, (n, 1, 1)).astype(np.float32)
    noisy = images * gain + shift + rng.normal(0, 2, images.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def synthetic(layout: str, n: int, seed: int = 0) -> tuple[ImageSet, np.ndarray]:
    """A synthetic dataset and its planted cluster per image (the base image it derives from)."""
    rng = np.random.default_rng(seed)
    if layout == "tiled":
        n_base = n // 6
        base = blobs(rng, n_base)
        origin = np.tile(np.arange(n_base), 6)[:n]
        images = base[origin]
        changed = np.arange(n) >= 2 * n_base  # tiles 0 and 1 stay identical: one planted exact copy each
        images[changed] = perturb(rng, images[changed])
    else:
        n_copy = n // 40
        n_base = n - 2 * n_copy
        base = blobs(rng, n_base)
        origin = np.r_[np.arange(n_base), rng.integers(0, n_base, 2 * n_copy)]
        images = base[origin]
        images[n_base + n_copy :] = perturb(rng, images[n_base + n_copy :])
    order = rng.permutation(n)
    images, origin = images[order], origin[order]
    labels = (origin % 6).astype(np.int64)  # copies share their base's label
    ids = np.array([f"c{y}/{i:06d}.png" for i, y in enumerate(labels)])
    data = ImageSet(images, labels, tuple(f"c{k}" for k in range(6)), ids, source=f"synthetic {layout}")
    return data, origin


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def run(data: ImageSet, repeats: int, origin: np.ndarray | None) -> None:
    print(f"images: {len(data):,} {data.images.shape[1:]} loadavg={os.getloadavg()[0]:.2f}")
    t, times, exact = median_time(lambda: exact_duplicate_groups(data.images), repeats)
    print(f"exact_duplicate_groups    median {t:.3f} s  {[round(x, 3) for x in times]}")
    t, times, near = median_time(lambda: find_near_duplicates(data.images), repeats)
    print(f"find_near_duplicates      median {t:.3f} s  {[round(x, 3) for x in times]}")
    split = make_split(data.labels, strategy="kfold", folds=5, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, times, report = median_time(lambda: audit(data, split), repeats)
    print(f"audit (exact+near+5-fold) median {t:.3f} s  {[round(x, 3) for x in times]}")
    if origin is not None:
        planted = len(np.unique(origin[np.bincount(origin)[origin] > 1]))
        pure = len(np.unique(np.c_[near.codes, origin], axis=0)) == len(np.unique(near.codes))
        whole = len(np.unique(np.c_[near.codes, origin], axis=0)) == len(np.unique(origin))
        print(
            f"planted: {planted:,} base images with copies; near clusters hold exactly the planted groups: "
            f"{pure and whole} (no unplanted merges: {pure}, no planted group split: {whole}); "
            f"exact clusters: {len(np.unique(exact)):,} codes"
        )
    print(format_audit(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, help="a real folder/zip/npz instead of the synthetic sets")
    parser.add_argument("--n", type=int, default=60_000, help="synthetic images per layout")
    parser.add_argument("--layout", choices=("tiled", "distinct", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--verbose", action="store_true", help="show the library's log lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]} numpy={np.__version__}")
    if args.source:
        from medmnist_lit.data.cache import load_dataset

        print(f"\n== {args.source}")
        run(load_dataset(args.source), args.repeats, None)
        return
    for layout in ("tiled", "distinct") if args.layout == "both" else (args.layout,):
        start = time.perf_counter()
        data, origin = synthetic(layout, args.n)
        print(f"\n== synthetic {layout} (built in {time.perf_counter() - start:.1f} s)")
        run(data, args.repeats, origin)


if __name__ == "__main__":
    main()
