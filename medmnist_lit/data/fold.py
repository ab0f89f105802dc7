"""A fold as a value: what one model trains and validates on, how its pixels convert, and its seed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from medmnist_lit.data.loaders import BatchLoader, EpochSampler, PixelTransform, Sampling
from medmnist_lit.splits.split import Split
from medmnist_lit.utils.chunks import CHUNK_BYTES, row_blocks


@dataclass(frozen=True, eq=False)
class Fold:
    """The share of a split that one model is trained on, handed to whoever trains it.

    Made by :func:`split_fold` (the DataModule's ``make_fold`` and ``refit_fold``); the DataModule
    builds loaders for a given fold (:meth:`~medmnist_lit.data.datamodule.MedMNISTDataModule.with_fold`), so
    nothing about which fold is trained lives in mutable state. Picklable.

    Attributes:
        number: The fold's index in the split (0-based), or ``None`` for a refit on all development data.
        train: Sorted sample indices the model trains on.
        val: Sorted sample indices it is validated on (empty for a refit).
        transform: Pixel conversion; standardisation statistics come from ``train`` only.
        seed: Seed the fold's run starts from (model initialisation; ``seed + fold`` in cross-validation), or
            ``None`` when the caller seeds the run itself.
        stream: Cross-validation: training batches are drawn from one shuffled order of these samples (the
            development set), shared by all folds, each batch keeping only this fold's ``train`` samples; so the
            folds see the same batches whether they train one after another or together. ``None``: batches are
            drawn from ``train`` alone.
        stream_batch_size: Samples per stream batch, scaled so a fold's batches hold the configured batch size
            on average.
    """

    number: int | None
    train: np.ndarray
    val: np.ndarray
    transform: PixelTransform
    seed: int | None = None
    stream: np.ndarray | None = None
    stream_batch_size: int | None = None

    @property
    def name(self) -> str:
        """``fold_<number>``, or ``refit``: the fold's directory name in a cross-validation run."""
        return "refit" if self.number is None else f"fold_{self.number}"


def split_fold(
    split: Split,
    number: int | None,
    transform: Callable[[np.ndarray], PixelTransform],
    *,
    seed: int | None = None,
    stream_batch_size: int | Literal["full"] | None = None,
) -> Fold:
    """Fold ``number`` of ``split`` (``None``: all development data, no validation part).

    Args:
        split: The split.
        number: The fold, or ``None`` for a refit.
        transform: Pixel conversion from the fold's training indices.
        seed: The seed its run starts from.
        stream_batch_size: Make it a stream fold (cross-validation) for this configured batch size; the stream's
            batches are scaled so that a fold's hold this many samples on average.
    """
    if number is None:
        return Fold(None, split.dev, np.zeros(0, dtype=np.int64), transform(split.dev), seed)
    train, val = split.train(number), split.val[number]
    if stream_batch_size is None:
        return Fold(number, train, val, transform(train), seed)
    held = [len(v) + len(e) for v, e in zip(split.val, split.excluded, strict=True)]
    mean_train = len(split.dev) - float(np.mean(held))  # the mean training-part size over all folds
    if stream_batch_size == "full":
        batch_size = len(split.dev)
    else:
        batch_size = max(1, round(int(stream_batch_size) * len(split.dev) / max(mean_train, 1.0)))
    return Fold(number, train, val, transform(train), seed, stream=split.dev, stream_batch_size=batch_size)


def fold_loader(
    images: Tensor,
    labels: Tensor,
    folds: Sequence[Fold],
    sampling: Sampling,
    seed: int,
    batch_size: int,
    drop_last: bool,
    rank: int = 0,
    world_size: int = 1,
    together: bool = False,
) -> BatchLoader:
    """Shuffled training mini-batches of one fold, or of stream folds trained ``together``.

    A plain fold's batches (of ``batch_size``) come from its ``train`` samples. Stream folds draw batches of their
    ``stream_batch_size`` from the shared stream: one fold alone keeps its own samples of each batch; folds trained
    together get the ``folds × batch`` membership of each batch's samples (see
    :class:`~medmnist_lit.data.loaders.BatchLoader`).
    """
    first = folds[0]
    if len(folds) > 1 and not together:
        raise ValueError(f"one fold at a time, or together=True; got {len(folds)} folds")
    if first.stream is None or first.stream_batch_size is None:
        if together:
            raise ValueError("folds train together only on a shared stream: make them with stream=True")
        sampler = EpochSampler(torch.tensor(first.train), labels, sampling, seed, rank, world_size)
        return BatchLoader(images, labels, sampler, batch_size, first.transform, drop_last)
    members = torch.zeros(len(folds), len(labels), dtype=torch.bool)
    for row, fold in enumerate(folds):
        members[row, torch.tensor(fold.train)] = True
    sampler = EpochSampler(torch.tensor(first.stream), labels, sampling, seed, rank, world_size)
    transform = PixelTransform.stack([fold.transform for fold in folds])
    mask = members if together else members[0]
    return BatchLoader(images, labels, sampler, first.stream_batch_size, transform, drop_last, mask)


@dataclass(frozen=True)
class PixelStats:
    """Per-channel pixel mean and std on the [0, 1] scale: the standardisation statistics of a training part.

    Plain floats (exactly the float32 values computed), so a checkpoint stores them as they are and
    :func:`pixel_transform` rebuilds the same conversion, bit for bit.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]


def fold_statistics(
    images: np.ndarray, train: np.ndarray, channels: int, *, chunk_bytes: int = CHUNK_BYTES
) -> PixelStats:
    """The per-channel mean and std of the ``train`` images only.

    Histograms are summed over blocks of at most ``chunk_bytes`` of images, so a memory-mapped training part is
    never copied whole; the result is the same, bit for bit.
    """
    hist = np.zeros((channels, 256), np.int64)
    row_bytes = 9 * int(np.prod(images.shape[1:]))  # the uint8 block, and bincount's int64 copy of one channel
    for block in row_blocks(len(train), row_bytes, chunk_bytes):
        pixels = np.asarray(images[train[block]]).reshape(-1, channels)
        for c in range(channels):
            hist[c] += np.bincount(pixels[:, c], minlength=256)
    mean, std = _histogram_stats(hist)
    return PixelStats(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def pixel_transform(channels: int, stats: PixelStats | None = None) -> PixelTransform:
    """Pixels to [0, 1]; with ``stats`` also standardised with them."""
    if stats is None:
        return PixelTransform.unit(channels)
    mean, std = (torch.tensor(values, dtype=torch.float32) for values in (stats.mean, stats.std))
    return PixelTransform.standardize(mean, std)


def _histogram_stats(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std on the [0, 1] scale, from 256-bin histograms shaped ``(channels, 256)``."""
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for counts in hist.astype(np.float64):
        total = counts.sum()
        mean = (counts * values).sum() / total
        means.append(mean)
        stds.append(np.sqrt((counts * (values - mean) ** 2).sum() / total))
    return np.asarray(means, dtype=np.float32), np.asarray(stds, dtype=np.float32)
