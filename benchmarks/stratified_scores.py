"""Benchmark the hand-written stratified scores (issue 14) against torchmetrics, scikit-learn and scipy.

Usage::

    python benchmarks/stratified_scores.py                          # the whole benchmark (~2-3 minutes)
    python benchmarks/stratified_scores.py --repeats 9 --boot-repeats 5
    python benchmarks/stratified_scores.py --part twins             # only the twin halves (or: bootstrap)

Two pieces of ``medmnist_lit`` compute scores with numpy instead of calling a metrics library:

* **Twin halves** (``training/twin_scores.py`` ``stage_scores``): accuracy, loss, macro-F1 and AUROC of the samples
  with / without a near-duplicate in training, both halves in one weighted pass (``utils/bootstrap.py``
  ``weighted_scores``). Compared with the same scores from the library, one half at a time:
  (a) :class:`~medmnist_lit.model.metrics.EpochMetrics` built once and reused (as ``fit.score`` does),
  (b) ``EpochMetrics`` built per call (as ``cv/summary.py`` ``ensemble_metrics`` does),
  (c) torchmetrics functional (``multiclass_accuracy`` micro, ``multiclass_f1_score`` macro, ``multiclass_auroc``
  macro), (d) scikit-learn (AUROC over the classes the half has, as the reference for a half missing classes).
  Also shown: the AUROC of a half that lacks classes, where torchmetrics counts each missing class as 0.
* **Stratified bootstrap** (``utils/bootstrap.py`` ``bootstrap_intervals``, 1,000 resamples, weight matrices).
  Compared with loops over the *same* resamples (the script reproduces the function's draws) scored by
  torchmetrics functional and by scikit-learn, and with ``scipy.stats.bootstrap`` (percentile method; it cannot
  stratify, so it resamples all samples together, with the torchmetrics statistic). At the large size the loops
  run ``--loop-resamples`` resamples and their time is scaled to 1,000 (marked ``×``).

Every variant runs with ``--threads`` torch and BLAS threads (default 1). Synthetic data, seeded: 6 classes in
the class balance of Medical MNIST, probabilities = softmax of Gaussian logits (σ 1) with +3.2 on the true class
(accuracy ≈ 0.95). Timings are medians of interleaved rounds (the variants take turns within every round), so
ratios within one run compare like with like on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import sklearn
import torch
import torchmetrics
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from threadpoolctl import threadpool_limits
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_auroc, multiclass_f1_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medmnist_lit.model.metrics import EpochMetrics  # noqa: E402
from medmnist_lit.training.twin_scores import stage_scores  # noqa: E402
from medmnist_lit.utils.bootstrap import _CHUNK, bootstrap_intervals, weighted_scores  # noqa: E402

K = 6
#: Images per class of Medical MNIST (AbdomenCT, BreastMRI, CXR, ChestCT, Hand, HeadCT).
CLASS_SIZES = np.array([10_000, 8_954, 10_000, 10_000, 10_000, 10_000])
#: Classes that have near-duplicates (CT and MRI slices); X-rays and hands never do.
TWIN_CLASSES = (0, 1, 3, 5)
NAMES = ("acc", "f1", "auroc")


def synthetic(n: int, seed: int, signal: float = 3.2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: class probabilities ``n×6`` and true classes (Medical MNIST's class balance)."""
    rng = np.random.default_rng(seed)
    targets = rng.choice(K, size=n, p=CLASS_SIZES / CLASS_SIZES.sum())
    logits = rng.normal(0.0, 1.0, (n, K))
    logits[np.arange(n), targets] += signal
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True), targets


def twin_mask(targets: np.ndarray, seed: int, share: float = 0.5) -> np.ndarray:
    """About ``share`` of the CT/MRI samples have a twin; the with-twin half lacks classes 2 and 4."""
    rng = np.random.default_rng(seed + 1)
    return np.isin(targets, TWIN_CLASSES) & (rng.random(len(targets)) < share)


def interleaved(
    variants: dict[str, Callable[[], Any]], rounds: int, inner: int = 1, warm_up: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each variant (mean of ``inner`` calls), one entry per round; the order rotates."""
    names = list(variants)
    for fn in variants.values() if warm_up else ():
        fn()  # warm-up (imports, allocator, torch dispatch caches)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(inner):
                variants[name]()
            times[name].append((time.perf_counter() - start) / inner)
    return times


def table(times: dict[str, list[float]], unit: float, label: str, scale: dict[str, float] | None = None) -> None:
    """Print median, ratio to the first variant and the rounds; ``scale`` multiplies a variant's times."""
    scale = scale or {}
    base = None
    print(f"  {'variant':<66} {'median ' + label:>14} {'× first':>8}  rounds")
    for name, values in times.items():
        values = [v * scale.get(name, 1.0) for v in values]
        med = statistics.median(values)
        base = base or med
        mark = " ×" if name in scale else ""
        rounds = ", ".join(f"{v * unit:.3g}" for v in values)
        print(f"  {name + mark:<66} {med * unit:>14.3f} {med / base:>8.2f}  [{rounds}]")


# ---------------------------------------------------------------------------------------------------- twin halves


def nll(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-12, None))


def library_stage_scores(
    stage: str, probs: np.ndarray, targets: np.ndarray, twin: np.ndarray, majority: int, half: Callable
) -> dict[str, float]:
    """``stage_scores`` with each half scored by ``half(probs, targets) -> {acc, loss, f1, auroc}``."""
    result = {f"{stage}/majority_acc": float(np.mean(targets == majority))}
    for part, mask in (("with_twin", twin), ("without_twin", ~twin)):
        empty = dict.fromkeys(("acc", "loss", "f1", "auroc"), math.nan)
        scores = half(probs[mask], targets[mask]) if mask.any() else empty
        result.update({f"{stage}/{part}/{key}": value for key, value in scores.items()})
        result[f"{stage}/{part}/n"] = float(mask.sum())
    acc = float((probs.argmax(1) == targets).mean())
    result[f"{stage}/leak_inflation"] = acc - result[f"{stage}/without_twin/acc"]
    return result


def epoch_metrics_half(metrics: EpochMetrics | None) -> Callable:
    """One half through EpochMetrics (update with log-probabilities as logits, then compute), as cv/summary does."""

    def half(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        m = metrics if metrics is not None else EpochMetrics(K)
        logits = torch.from_numpy(probs).float().clamp_min(1e-12).log()
        y = torch.from_numpy(targets)
        m.update(logits, y, torch.nn.functional.cross_entropy(logits, y))
        scalars = m.compute()[0]
        return {key: scalars[key] for key in ("acc", "loss", "f1", "auroc")}

    return half


def functional_half(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """One half through torchmetrics functional (the metrics EpochMetrics uses, nothing else)."""
    p, y = torch.from_numpy(probs).float(), torch.from_numpy(targets)
    options = {"validate_args": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auroc = float(multiclass_auroc(p, y, K, average="macro", **options))
    return {
        "acc": float(multiclass_accuracy(p, y, K, average="micro", **options)),
        "loss": float(nll(probs, targets).mean()),
        "f1": float(multiclass_f1_score(p, y, K, average="macro", **options)),
        "auroc": auroc if len(np.unique(targets)) > 1 else math.nan,
    }


def sklearn_auroc(probs: np.ndarray, targets: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present (scikit-learn, one binary AUROC per present class)."""
    present = np.unique(targets)
    if len(present) < 2:
        return math.nan
    if len(present) == K:
        return float(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    # what multi_class="ovr" computes: the mean of the binary AUROCs of each class against the rest
    return float(np.mean([roc_auc_score(targets == c, probs[:, c]) for c in present]))


def sklearn_half(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    predicted = probs.argmax(1)
    return {
        "acc": float(accuracy_score(targets, predicted)),
        "loss": float(nll(probs, targets).mean()),
        "f1": float(f1_score(targets, predicted, average="macro")),
        "auroc": sklearn_auroc(probs, targets),
    }


def missing_classes_demo(seed: int) -> None:
    """AUROC of halves that lack classes: hand-written vs torchmetrics vs scikit-learn (classes present)."""
    print("\n== AUROC of a half that lacks classes (macro one-vs-rest)")
    print("  reference: sklearn roc_auc_score(..., multi_class='ovr', labels=present) raises ValueError here, because")
    print("  the probability columns of the present classes do not sum to 1; so the reference is the mean of sklearn's")
    print("  binary roc_auc_score(y == c, p[:, c]) over the present classes c (what multi_class='ovr' averages).")
    probs, targets = synthetic(360, seed, signal=0.6)  # a weak model, so AUROC is far from 1
    twin = twin_mask(targets, seed)
    present = tuple(int(c) for c in np.unique(targets[twin]))
    try:
        roc_auc_score(targets[twin], probs[twin][:, present], multi_class="ovr", labels=list(present))
    except ValueError as error:
        print(f"  (sklearn with labels=present: ValueError: {error})")
    header = f"  {'half':<40} {'n':>4} {'classes':<16} {'hand-written':>12} {'torchmetrics':>12} {'sklearn':>8}"
    print(header)
    cases = {
        f"with-twin half (classes {present})": twin,
        "without-twin half (all classes)": ~twin,
        "with-twin half, CT only (classes 0, 3)": twin & np.isin(targets, (0, 3)),
    }
    for label, mask in cases.items():
        p, y = probs[mask], targets[mask]
        ours = stage_scores("t", probs, targets, twin=mask, majority=0)["t/with_twin/auroc"]
        tm = epoch_metrics_half(None)(p, y)["auroc"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_class = multiclass_auroc(torch.from_numpy(p).float(), torch.from_numpy(y), K, average=None)
        classes = ",".join(str(int(c)) for c in np.unique(y))
        print(f"  {label:<40} {mask.sum():>4} {classes:<16} {ours:>12.4f} {tm:>12.4f} {sklearn_auroc(p, y):>8.4f}")
        print(f"    torchmetrics per class: {[round(float(v), 4) for v in per_class]}")


def twins_size(n: int, repeats: int, seed: int) -> None:
    """Twin halves of ``n`` samples: agreement with the libraries, then interleaved timings."""
    probs, targets = synthetic(n, seed)
    twin = twin_mask(targets, seed)
    majority = 0
    reused = EpochMetrics(K)
    variants = {
        "hand-written: stage_scores (one vectorised pass)": lambda: stage_scores(
            "test", probs, targets, twin=twin, majority=majority
        ),
        "(a) EpochMetrics per half, built once and reused": lambda: library_stage_scores(
            "test", probs, targets, twin, majority, epoch_metrics_half(reused)
        ),
        "(b) EpochMetrics per half, built per call": lambda: library_stage_scores(
            "test", probs, targets, twin, majority, epoch_metrics_half(None)
        ),
        "(c) torchmetrics functional per half": lambda: library_stage_scores(
            "test", probs, targets, twin, majority, functional_half
        ),
        "(d) scikit-learn per half (AUROC over present classes)": lambda: library_stage_scores(
            "test", probs, targets, twin, majority, sklearn_half
        ),
    }
    ours = variants["hand-written: stage_scores (one vectorised pass)"]()
    print(
        f"\n== twin halves, {n:,} samples: {int(twin.sum())} with a twin (classes "
        f"{sorted(set(targets[twin].tolist()))}), {int((~twin).sum())} without; acc "
        f"{(probs.argmax(1) == targets).mean():.3f}; loadavg {os.getloadavg()[0]:.2f}"
    )
    for name, fn in list(variants.items())[1:]:
        other = fn()
        keys = [k for k in ours if k != "test/with_twin/auroc"]
        same_nan = all(math.isnan(ours[k]) == math.isnan(other[k]) for k in keys)
        diffs = {k: abs(ours[k] - other[k]) for k in keys if not math.isnan(ours[k])}
        key = max(diffs, key=diffs.get)
        print(
            f"  {name[:3]} vs hand-written: max |diff| {diffs[key]:.2e} ({key}), NaNs alike {same_nan}; "
            f"with-twin AUROC "
            f"{ours['test/with_twin/auroc']:.4f} vs {other['test/with_twin/auroc']:.4f}"
        )
    inner = max(3, min(200, int(20_000 / n)))
    table(interleaved(variants, repeats, inner), 1e3, "ms")


def twins(sizes: list[int], repeats: int, seed: int) -> None:
    for n in sizes:
        twins_size(n, repeats, seed)


# ------------------------------------------------------------------------------------------------------ bootstrap


def resample_indices(targets: np.ndarray, resamples: int, seed: int) -> list[np.ndarray]:
    """The sample indices of each resample of ``bootstrap_intervals(..., seed=seed)``: its draws, reproduced."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(targets == c) for c in np.unique(targets)]
    out = []
    for start in range(0, resamples, _CHUNK):
        b = min(_CHUNK, resamples - start)
        draws = [index[rng.integers(0, len(index), size=(b, len(index)))] for index in members]
        out.extend(np.concatenate([d[r] for d in draws]) for r in range(b))
    return out


def tm_statistic(p: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    options = {"validate_args": False}
    return (
        float(multiclass_accuracy(p, y, K, average="micro", **options)),
        float(multiclass_f1_score(p, y, K, average="macro", **options)),
        float(multiclass_auroc(p, y, K, average="macro", **options)),
    )


def sk_statistic(p: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    predicted = p.argmax(1)
    return (
        float(accuracy_score(y, predicted)),
        float(f1_score(y, predicted, average="macro")),
        float(roc_auc_score(y, p, multi_class="ovr", average="macro")),
    )


def percentile(values: np.ndarray, confidence: float = 0.95) -> np.ndarray:
    """Percentile intervals per column, as bootstrap_intervals computes them: rows ``lo, hi``."""
    tail = (1 - confidence) / 2
    return np.quantile(values, [tail, 1 - tail], axis=0)


def bootstrap_size(n: int, repeats: int, seed: int, loop_resamples: int, resamples: int = 1000) -> None:
    """Bootstrap of ``n`` samples: agreement (point, per resample, intervals), then interleaved timings."""
    probs, targets = synthetic(n, seed)
    p_t, y_t = torch.from_numpy(probs).float(), torch.from_numpy(targets)
    loops = resamples if n <= 2000 else loop_resamples
    index = resample_indices(targets, loops, seed)

    def tm_loop(index: list[np.ndarray] = index) -> np.ndarray:
        return np.array([tm_statistic(p_t[i], y_t[i]) for i in (torch.from_numpy(j) for j in index)])

    def sk_loop(index: list[np.ndarray] = index) -> np.ndarray:
        return np.array([sk_statistic(probs[i], targets[i]) for i in index])

    def scipy_boot() -> Any:
        def statistic(i: np.ndarray) -> np.ndarray:
            j = torch.from_numpy(i)
            return np.array(tm_statistic(p_t[j], y_t[j]))

        return stats.bootstrap(
            (np.arange(n),),
            statistic,
            vectorized=False,
            n_resamples=loops,
            method="percentile",
            random_state=seed,
        )

    print(f"\n== stratified bootstrap, {n:,} samples, {resamples:,} resamples; loadavg {os.getloadavg()[0]:.2f}")
    # point estimates: one row of ones through the vectorised scores vs the libraries
    ours = weighted_scores(probs, targets, np.ones((1, n)))
    point = np.array([ours[name][0] for name in NAMES])
    tm_point, sk_point = np.array(tm_statistic(p_t, y_t)), np.array(sk_statistic(probs, targets))
    print(f"  point estimates acc/f1/auroc: hand-written {np.round(point, 6).tolist()}")
    print(
        f"  max |diff| vs torchmetrics {np.abs(point - tm_point).max():.2e}, "
        f"vs scikit-learn {np.abs(point - sk_point).max():.2e}"
    )
    # the same resamples: per-resample values and intervals
    counts = np.zeros((loops, n))
    for r, i in enumerate(index):
        np.add.at(counts[r], i, 1.0)
    vec = weighted_scores(probs, targets, counts)
    vec_values = np.stack([vec[name] for name in NAMES], 1)
    tm_values, sk_values = tm_loop(), sk_loop()
    print(
        f"  same {loops:,} resamples, max |diff| per resample: vs torchmetrics "
        f"{np.abs(vec_values - tm_values).max():.2e}, vs scikit-learn {np.abs(vec_values - sk_values).max():.2e}"
    )
    intervals = {
        f"hand-written bootstrap_intervals (seed {seed})": bootstrap_intervals(
            probs, targets, resamples=resamples, seed=seed
        )
    }
    for s in (seed + 1, seed + 2):
        intervals[f"hand-written, seed {s} (Monte-Carlo noise)"] = bootstrap_intervals(
            probs, targets, resamples=resamples, seed=s
        )
    mark = "" if loops == resamples else f" ({loops} resamples)"
    for name, values in (("torchmetrics loop, same resamples" + mark, tm_values),):
        lo, hi = percentile(values)
        intervals[name] = {key: [lo[c], hi[c]] for c, key in enumerate(NAMES)}
    sp = scipy_boot()
    intervals["scipy.stats.bootstrap, NOT stratified" + mark] = {
        key: [sp.confidence_interval.low[c], sp.confidence_interval.high[c]] for c, key in enumerate(NAMES)
    }
    print(f"  {'95% intervals':<58} {'acc':>17} {'f1':>17} {'auroc':>17}")
    for name, iv in intervals.items():
        cells = " ".join(f"[{iv[k][0]:.4f},{iv[k][1]:.4f}]" for k in NAMES)
        print(f"  {name:<58} {cells}")
    first = intervals[f"hand-written bootstrap_intervals (seed {seed})"]
    if not mark:
        same = intervals["torchmetrics loop, same resamples"]
        gap = max(abs(first[k][b] - same[k][b]) for k in NAMES for b in (0, 1))
        print(f"  max |diff| of the bounds, hand-written vs torchmetrics loop on the same resamples: {gap:.2e}")
    noise = max(abs(first[k][b] - iv[k][b]) for iv in list(intervals.values())[1:3] for k in NAMES for b in (0, 1))
    print(f"  Monte-Carlo noise of a bound (seeds {seed} vs {seed + 1}, {seed + 2}): up to {noise:.4f}")
    variants = {
        "hand-written: bootstrap_intervals (vectorised)": lambda: bootstrap_intervals(
            probs, targets, resamples=resamples, seed=seed
        ),
        "torchmetrics functional loop": tm_loop,
        "scikit-learn loop": sk_loop,
        "scipy.stats.bootstrap + torchmetrics statistic (not stratified)": scipy_boot,
    }
    scale = {} if loops == resamples else {name: resamples / loops for name in list(variants)[1:]}
    if scale:
        print(f"  (×: loop variants timed on {loops} resamples, times scaled to {resamples:,})")
    table(interleaved(variants, repeats, warm_up=False), 1.0, "s", scale)  # all ran once above


def bootstrap(sizes: list[int], repeats: int, seed: int, loop_resamples: int, resamples: int = 1000) -> None:
    for n in sizes:
        bootstrap_size(n, repeats, seed, loop_resamples, resamples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("twins", "bootstrap", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds of the twin-half timings")
    parser.add_argument("--boot-repeats", type=int, default=3, help="interleaved rounds of the bootstrap timings")
    parser.add_argument("--twin-sizes", type=int, nargs="+", default=[1, 360, 11_791])
    parser.add_argument("--boot-sizes", type=int, nargs="+", default=[600, 11_791])
    parser.add_argument("--loop-resamples", type=int, default=50, help="resamples of the loops above 2,000 samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and BLAS threads for every variant (default 1: on the shared 2-core machine torch's 2 threads "
        "made the torchmetrics loops 3-4x slower under load)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(
        f"cpus={os.cpu_count()} torch threads={torch.get_num_threads()} python={sys.version.split()[0]} "
        f"numpy={np.__version__} torch={torch.__version__} torchmetrics={torchmetrics.__version__} "
        f"sklearn={sklearn.__version__} scipy={scipy.__version__}"
    )
    if args.part in ("twins", "both"):
        missing_classes_demo(args.seed)
        twins(args.twin_sizes, args.repeats, args.seed)
    if args.part in ("bootstrap", "both"):
        bootstrap(args.boot_sizes, args.boot_repeats, args.seed, args.loop_resamples)


if __name__ == "__main__":
    main()
