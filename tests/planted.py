"""A MedMNIST-style ``.npz`` with planted near-duplicates: copies (with slight noise) of training images placed in
the validation and test splits, so a test knows exactly which samples have a twin in training.

``amplitude=0`` gives label-free noise images (labels random): only memorising a training twin helps, so the twins
score far above the rest (planted leakage). A large ``amplitude`` adds a class pattern every image follows: the
twins carry no extra information and score like the rest (no leakage).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datagen import make_npz

from medmnist_lit.data import grouping

#: Options that split without any groups: the near-duplicates land on both sides, as the tests need.
NO_GROUPS = ["--data.group_by", "none" if "none" in typing.get_args(grouping.GroupBy) else "null"]


@dataclass(frozen=True)
class Planted:
    """The written file and the truth: ``cluster[i]`` is the dataset index of the image sample ``i`` copies."""

    path: Path
    cluster: np.ndarray
    sizes: tuple[int, int, int]


def planted_npz(
    path: Path,
    *,
    sizes: tuple[int, int, int] = (60, 30, 30),
    twins: tuple[int, int] = (10, 7),
    amplitude: float = 0.0,
    size: int = 16,
    classes: int = 3,
    seed: int = 0,
) -> Planted:
    """Write the file: the first ``twins[0]`` validation and ``twins[1]`` test images copy training images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    labels = [rng.integers(0, classes, n) for n in sizes]
    images = []
    for n, part in zip(sizes, labels, strict=True):
        pixels = rng.normal(128, 40, (n, size, size))  # independent noise: no two images correlate by chance
        for i, label in enumerate(part):
            angle = 0.9 * label
            pixels[i] += amplitude * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 + label) * np.pi)
        images.append(pixels)
    cluster = np.arange(sum(sizes))
    for part, count in ((1, twins[0]), (2, twins[1])):
        mates = rng.choice(sizes[0], count, replace=False)
        images[part][:count] = images[0][mates] + rng.normal(0, 2, (count, size, size))
        labels[part][:count] = labels[0][mates]
        cluster[sum(sizes[:part]) : sum(sizes[:part]) + count] = mates
    arrays = {}
    for name, pixels, part in zip(("train", "val", "test"), images, labels, strict=True):
        arrays[f"{name}_images"] = np.clip(pixels, 0, 255).astype(np.uint8)
        arrays[f"{name}_labels"] = part.astype(np.uint8).reshape(-1, 1)
    return Planted(make_npz(path, **arrays), cluster, sizes)


def expected_twins(cluster: np.ndarray, part: np.ndarray, training: np.ndarray) -> int:
    """How many samples of ``part`` have a planted twin (another member of their cluster) in ``training``."""
    members = set(np.asarray(training).tolist())
    return sum(
        any(j != i and j in members for j in np.flatnonzero(cluster == cluster[i])) for i in np.asarray(part).tolist()
    )
