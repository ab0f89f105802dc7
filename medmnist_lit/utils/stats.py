"""Uncertainty of estimates: confidence intervals across folds, binomial intervals, paired comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def describe(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation, standard error and a Student-t confidence interval of the mean.

    NaN values (e.g. AUROC of a one-sample fold) are left out; ``n`` counts the rest. With fewer than two
    values the spread and the interval are NaN.

    Returns:
        ``{"mean", "std", "sem", "ci95": [lo, hi], "n"}`` (the key says 95 whatever ``confidence`` is).
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "std": math.nan, "sem": math.nan, "ci95": [math.nan, math.nan], "n": n}
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return {"mean": mean, "std": std, "sem": sem, "ci95": [mean - half, mean + half], "n": n}


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> list[float]:
    """Exact (Clopper-Pearson) interval of a proportion, e.g. leave-one-out accuracy from 0/1 outcomes."""
    if trials == 0:
        return [math.nan, math.nan]
    ci = stats.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return [float(ci.low), float(ci.high)]


def corrected_resampled_ttest(differences: Sequence[float], n_train: float, n_test: float) -> dict[str, Any]:
    """Nadeau & Bengio's corrected resampled t-test of paired differences between two models.

    Differences come from the same resamples (folds × repeats, or seeds); the variance is inflated by
    ``n_test / n_train`` because the resamples overlap, which the plain paired t-test ignores (it is then
    far too confident). Nadeau, C. & Bengio, Y. (2003), Inference for the Generalization Error, Machine
    Learning 52.

    Args:
        differences: Per-resample score of model A minus model B.
        n_train: Training-set size of one resample.
        n_test: Test (validation) set size of one resample.

    Returns:
        ``{"mean", "t", "p", "ci95": [lo, hi], "n"}``: ``p`` is two-sided and ``ci95`` the 95% interval of the
        mean difference with the corrected variance; both NaN with fewer than two differences.
    """
    d = np.asarray(differences, dtype=float)
    j = len(d)
    mean = float(d.mean()) if j else math.nan
    if j < 2:
        return {"mean": mean, "t": math.nan, "p": math.nan, "ci95": [math.nan, math.nan], "n": j}
    var = float(d.var(ddof=1)) * (1 / j + n_test / n_train)
    half = float(stats.t.ppf(0.975, df=j - 1)) * math.sqrt(var)
    ci95 = [mean - half, mean + half]
    if var == 0:
        return {"mean": mean, "t": math.inf if mean else math.nan, "p": 0.0 if mean else 1.0, "ci95": ci95, "n": j}
    t = mean / math.sqrt(var)
    return {"mean": mean, "t": t, "p": float(2 * stats.t.sf(abs(t), df=j - 1)), "ci95": ci95, "n": j}


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test of two classifiers scored on the same samples, from each one's per-sample correctness.

    Only the discordant samples count: ``a_only`` (A right, B wrong) and ``b_only`` (B right, A wrong). Under the
    null of equal accuracy each discordant sample is a fair coin, so the exact p-value is the two-sided binomial
    test of ``a_only`` successes in ``a_only + b_only`` trials at 1/2. ``chi2`` is the large-sample statistic with
    Edwards' continuity correction, ``(|a_only − b_only| − 1)² / (a_only + b_only)`` (as R's ``mcnemar.test``).

    Args:
        correct_a: Whether model A classified each sample correctly.
        correct_b: The same for model B, on the same samples in the same order.

    Returns:
        ``{"n", "a_only", "b_only", "p", "chi2", "p_chi2"}``: ``p`` exact, ``p_chi2`` from χ² with 1 degree of
        freedom; with no discordant sample ``p`` and ``p_chi2`` are 1 and ``chi2`` is 0.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"mcnemar needs two equally long 1-d sequences, got shapes {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    if discordant == 0:
        return {"n": len(a), "a_only": 0, "b_only": 0, "p": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    p = float(stats.binomtest(a_only, discordant, 0.5).pvalue)
    chi2 = (abs(a_only - b_only) - 1) ** 2 / discordant
    return {
        "n": len(a),
        "a_only": a_only,
        "b_only": b_only,
        "p": p,
        "chi2": chi2,
        "p_chi2": float(stats.chi2.sf(chi2, 1)),
    }
