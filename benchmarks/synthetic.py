"""Synthetic 64×64 grayscale images for the benchmarks: smooth random blobs plus pixel noise."""

from __future__ import annotations

import numpy as np


def blobs(
    rng: np.random.Generator,
    n: int,
    size: int = 64,
    k: int = 12,
    noise: float | tuple[float, float] = 4.0,
    batch: int = 1000,
) -> np.ndarray:
    """``n`` images (uint8 ``n×size×size``) of ``k`` Gaussian blobs each, built ``batch`` at a time.

    Args:
        noise: Standard deviation of the pixel noise, or a ``(low, high)`` range it is drawn from per image
            (JPEGs of noisier images are larger and slower to decode, like real scans of varying grain).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((n, size, size), np.uint8)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        cx, cy = (rng.uniform(0, size, (m, k, 1, 1)).astype(np.float32) for _ in range(2))
        s = rng.uniform(2, 12, (m, k, 1, 1)).astype(np.float32)
        a = rng.uniform(-1, 1, (m, k, 1, 1)).astype(np.float32)
        img = (a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))).sum(1)
        img -= img.min(axis=(1, 2), keepdims=True)
        img *= 220 / np.maximum(img.max(axis=(1, 2), keepdims=True), 1e-6)
        level = rng.uniform(*noise, (m, 1, 1)).astype(np.float32) if isinstance(noise, tuple) else noise
        img += rng.normal(0, 1, img.shape).astype(np.float32) * level
        out[start : start + m] = np.clip(img, 0, 255)
    return out
