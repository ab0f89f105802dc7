"""Permutation test of a cross-validation: does its score beat what the same cv reaches on shuffled labels?

``cv --cv.permutations N`` refits the same cross-validation (same folds, seeds, engine and options) N times, each
time on the development labels permuted among all development samples (test labels untouched), and scores each
run as the real one is scored: the mean ``val/acc`` over folds. The p-value is the one
:func:`sklearn.model_selection.permutation_test_score` reports, ``(C + 1) / (N + 1)`` with ``C`` the permutations
scoring at least the real score; it cannot fall below ``1 / (N + 1)``, so p < 0.05 needs N >= 20. The folds stay
the real cv's (sklearn re-splits each permutation when its splitter stratifies): a fold's samples, twins kept
together and standardisation statistics are the same in every run, and only the labels differ. A multi-label
task permutes whole label rows (each sample keeps a real combination of labels, only its image changes) and scores
the mean per-label accuracy, its ``val/acc``.

Each permutation runs on a DataModule around the already-loaded images (nothing is decoded again, the split is
kept) through the engine the real cv used, so it costs about what the real cv cost. Its fold directories go to
``<run>/permutations/`` and are removed once it is scored; the run root keeps ``permutations.csv`` and the
``perm/...`` keys of ``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medmnist_lit.cv.folds import TrainerRecipe
from medmnist_lit.cv.ray_folds import ADDRESS_FLAG, EXECUTOR_FLAG
from medmnist_lit.cv.summary import write_csv
from medmnist_lit.utils.console import PACKAGE, process_rank
from medmnist_lit.utils.ray_runtime import RayOptions, connect, import_ray

log = logging.getLogger("medmnist_lit")

__all__ = [
    "PermutationTest",
    "check_permutations",
    "p_value",
    "permutation_test",
    "permuted_datamodule",
    "permuted_labels",
]

#: The score a permutation test compares: the cv's mean validation accuracy over folds.
SCORE = "val/acc"

#: Below this p-value the real score is called distinguishable from chance.
ALPHA = 0.05


def check_permutations(n: int) -> None:
    """Refuse a negative ``--cv.permutations`` (before the real cv runs).

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"--cv.permutations must be 0 (off) or a number of label permutations, got {n}")


def p_value(score: float, permuted: Sequence[float]) -> float:
    """``(C + 1) / (N + 1)``, ``C`` the permuted scores at least ``score``: sklearn's ``permutation_test_score``."""
    scores = np.asarray(permuted, dtype=float)
    return float((np.count_nonzero(scores >= score) + 1) / (len(scores) + 1))


def permuted_labels(labels: np.ndarray, dev: np.ndarray, seed: int) -> np.ndarray:
    """``labels`` with those of the development samples ``dev`` shuffled among them (seeded); the rest untouched.

    Multi-label ``N×L`` labels are shuffled by row.
    """
    dev = np.asarray(dev)
    shuffled = np.array(labels, copy=True)
    shuffled[dev] = shuffled[dev][np.random.default_rng(seed).permutation(len(dev))]
    return shuffled


def permuted_datamodule(datamodule: Any, labels: np.ndarray) -> Any:
    """A DataModule like ``datamodule`` (same options, split, images) whose dataset has ``labels``.

    The images already on a device and the folds' standardisation statistics (which depend on images only) are
    shared; only the label tensors are new.
    """
    dataset = dataclasses.replace(datamodule.dataset, labels=labels)
    external = datamodule.external if getattr(datamodule, "test_source", None) else None
    module = type(datamodule).around(
        dataset, datamodule.hparams, split=datamodule.split, external=external, fingerprint=datamodule.fingerprint
    )
    module._transforms, module._stats = datamodule._transforms, datamodule._stats
    module._tensors = {
        key: (x, torch.as_tensor(labels, dtype=torch.int64).to(y.device)) if key[0] == "main" else (x, y)
        for key, (x, y) in datamodule._tensors.items()
    }
    return module


@dataclass
class PermutationTest:
    """Outcome of a permutation test.

    Attributes:
        score: The real cv's score (:data:`SCORE`).
        scores: Each permutation's score, in permutation order.
        seeds: The seed that shuffled each permutation's labels (``numpy.random.default_rng(seed)``).
        seconds: Wall time of all permutations together.
    """

    score: float
    scores: list[float]
    seeds: list[int]
    seconds: float = math.nan

    @property
    def p_value(self) -> float:
        """See :func:`p_value`."""
        return p_value(self.score, self.scores)

    def summary(self) -> dict[str, Any]:
        """The ``perm/...`` keys of ``summary.json``."""
        scores = np.asarray(self.scores, dtype=float)
        return {
            "perm/n": float(len(scores)),
            "perm/mean": float(scores.mean()),
            "perm/std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
            "perm/p_value": self.p_value,
            "perm/scores": [float(s) for s in scores],
        }

    def write(self, path: Path) -> None:
        """``permutations.csv``: permutation, seed, score."""
        pairs = enumerate(zip(self.seeds, self.scores, strict=True))
        write_csv(path, [{"permutation": i, "seed": seed, "score": score} for i, (seed, score) in pairs])

    def line(self) -> str:
        """The console line."""
        summary = self.summary()
        return (
            f"Permutation test ({len(self.scores)} label permutations): {SCORE} {self.score:.4f} vs "
            f"{summary['perm/mean']:.3f} ± {summary['perm/std']:.3f} on permuted labels, p = {self.p_value:.3g}"
        )

    def warning(self) -> str | None:
        """The warning line when the score is not distinguishable from chance at :data:`ALPHA`, else ``None``."""
        if self.p_value < ALPHA:
            return None
        floor = 1 / (len(self.scores) + 1)
        if self.p_value == floor:  # every permutation scored lower: only their number keeps p up
            return (
                f"Permutation test: p = {self.p_value:.3g} is the smallest {len(self.scores)} permutations can give; "
                f"use --cv.permutations {math.floor(1 / ALPHA)} or more to tell the model from chance at p < {ALPHA}"
            )
        higher = sum(s >= self.score for s in self.scores)
        return (
            f"Permutation test: {SCORE} {self.score:.4f} is not distinguishable from chance (p = {self.p_value:.3g} "
            f">= {ALPHA}): {higher} of {len(self.scores)} runs on permuted labels score as high or higher"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Errors only from the package's logger while a permutation runs.

    Its fold lines would drown the console, and its warnings are the real cv's (same setup, already shown) or
    expected (a model trained on permuted labels is at chance by design).
    """
    logger = logging.getLogger(PACKAGE)
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def permutation_test(
    cross_validate: Callable[..., Any],
    model: Any,
    datamodule: Any,
    recipe: TrainerRecipe,
    run_dir: Path,
    options: Any,
    *,
    seed: int,
    score: float,
) -> PermutationTest:
    """Run the cv ``options.permutations`` times on permuted development labels; write ``permutations.csv``.

    Args:
        cross_validate: The cv engine (:func:`medmnist_lit.cv.runner.cross_validate`), called as the real cv was.
        model: The model template.
        datamodule: The real cv's DataModule (loaded, split).
        recipe: The real cv's Trainer recipe (progress bars are turned off for the permutations).
        run_dir: The real cv's run root.
        options: The real cv's ``CVOptions`` (refit and permutations are turned off for the permutations).
        seed: The real cv's seed; permutation ``i`` shuffles with seed ``seed + i`` and trains its folds as the real
            cv did (fold ``k`` seeded ``seed + k``).
        score: The real cv's score (:data:`SCORE`).
    """
    quiet = TrainerRecipe({**recipe.kwargs, "enable_progress_bar": False}, recipe.callbacks)
    inner = dataclasses.replace(options, refit=False, permutations=0)
    labels, dev = np.asarray(datamodule.dataset.labels), datamodule.split.dev
    outcome, n = PermutationTest(score, [], []), options.permutations
    writer = process_rank() == 0
    log.info("permutation test: the cv again on %d permutations of the development labels", n)
    began = time.perf_counter()
    with _ray_kept(options):
        for i in range(n):
            started = time.perf_counter()
            shuffled = permuted_datamodule(datamodule, permuted_labels(labels, dev, seed + i))
            directory = run_dir / "permutations" / f"permutation_{i}"
            try:
                with _quiet():
                    result = cross_validate(model, shuffled, quiet, directory, inner, seed=seed)
            finally:
                if writer:
                    shutil.rmtree(directory, ignore_errors=True)
            outcome.scores.append(float(result.summary[SCORE]["mean"]))
            outcome.seeds.append(seed + i)
            seconds = time.perf_counter() - started
            log.info("permutation %d/%d: %s %.4f (%.1f s)", i + 1, n, SCORE, outcome.scores[-1], seconds)
    outcome.seconds = time.perf_counter() - began
    if writer:
        shutil.rmtree(run_dir / "permutations", ignore_errors=True)
        outcome.write(run_dir / "permutations.csv")
    return outcome


@contextlib.contextmanager
def _ray_kept(options: Any) -> Iterator[None]:
    """With ``--cv.executor ray``, one Ray for all permutations: a local Ray would otherwise start for each."""
    if options.executor != "ray":
        yield
        return
    ray_options = RayOptions(options.ray_address, options.cpus_per_chunk, options.gpus_per_chunk)
    started = connect(ray_options, ADDRESS_FLAG, EXECUTOR_FLAG)
    try:
        yield
    finally:
        if started:  # stops a local Ray; leaves a joined cluster running
            import_ray(EXECUTOR_FLAG).shutdown()
