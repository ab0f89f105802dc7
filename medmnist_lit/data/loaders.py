"""Lean batch iteration over in-memory tensors.

A :class:`BatchLoader` is what the DataModule hands to the Lightning Trainer instead of a ``DataLoader``:
batches are index slices of one uint8 tensor that already lives on the training device, converted to
float per batch. There is no per-image Python work, no collation and no worker process inside an epoch.

For training, the loader yields :class:`Block` objects that hold several consecutive mini-batches. The
:class:`~medmnist_lit.model.classifier.Classifier` takes one optimizer step per mini-batch, so the optimisation is
exactly mini-batch SGD with the configured batch size, while Lightning's per-batch machinery (hooks,
progress bar, logging) runs once per block. This is what makes small batches cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Sampling = Literal["shuffle", "replacement", "balanced", "sequential"]
SAMPLINGS: tuple[str, ...] = ("shuffle", "replacement", "balanced", "sequential")

#: Samples per block when ``steps_per_block`` is automatic: enough to amortise Lightning's per-batch
#: overhead (a few hundred microseconds) over many optimizer steps.
AUTO_BLOCK_SAMPLES = 2048


@dataclass(frozen=True)
class PixelTransform:
    """Affine map from uint8 pixels to model inputs: ``x = pixels * scale + shift`` (per channel).

    Pixels are scaled to [0, 1]; with standardisation the training part's mean and std are folded in.
    """

    scale: Tensor
    shift: Tensor

    @classmethod
    def unit(cls, channels: int) -> PixelTransform:
        """Scale pixels to [0, 1]."""
        return cls(torch.full((channels, 1, 1), 1 / 255), torch.zeros(channels, 1, 1))

    @classmethod
    def standardize(cls, mean: Tensor, std: Tensor) -> PixelTransform:
        """Scale to [0, 1], then subtract ``mean`` and divide by ``std`` (both per channel, on [0, 1])."""
        std = std.clamp_min(1e-6)
        return cls((1 / (255 * std)).view(-1, 1, 1), (-mean / std).view(-1, 1, 1))

    @classmethod
    def stack(cls, transforms: list[PixelTransform]) -> PixelTransform:
        """One transform per fold; applied to ``N×C×H×W`` pixels it gives ``F×N×C×H×W`` inputs."""
        if all(
            torch.equal(t.scale, transforms[0].scale) and torch.equal(t.shift, transforms[0].shift) for t in transforms
        ):
            return transforms[0]  # identical (no standardisation): keep one shared input
        scale = torch.stack([t.scale for t in transforms])[:, None]
        shift = torch.stack([t.shift for t in transforms])[:, None]
        return cls(scale, shift)

    def to(self, device: torch.device) -> PixelTransform:
        """Move to ``device``."""
        return PixelTransform(self.scale.to(device), self.shift.to(device))

    def __call__(self, pixels: Tensor) -> Tensor:
        """Convert a uint8 batch ``N×C×H×W`` to float inputs (``F×N×C×H×W`` for a stacked transform)."""
        x = pixels.to(self.scale.dtype)
        # in-place multiply-add: torch.addcmul with broadcast operands is an order of magnitude slower on CPU
        if self.scale.dim() == 3:
            return x.mul_(self.scale).add_(self.shift)
        return torch.mul(x.unsqueeze(0), self.scale).add_(self.shift)


def gather(images: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of ``images`` (``index_select`` copies whole rows: several times faster than indexing)."""
    return images.index_select(0, index)


class Block:
    """Consecutive mini-batches of one training epoch, gathered lazily when iterated.

    Gathering lazily keeps each mini-batch in cache between its gather and its use.

    With ``exclude`` (a ``folds × N`` boolean mask of samples each fold must not train on) a single fold's
    excluded samples are dropped from each mini-batch, or, with ``masked``, every mini-batch comes with a
    ``folds × batch`` keep-mask as a third element (the fold-parallel engine).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        index: Tensor,
        batch_size: int,
        transform: PixelTransform,
        exclude: Tensor | None = None,
        masked: bool = False,
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.exclude = exclude
        self.masked = masked
        if exclude is not None and not masked:
            # one fold: drop its excluded samples from each mini-batch here, once per block, so that the
            # boolean indexing (a host-device sync on a GPU) does not run at every step
            keep = ~exclude[0, index]
            padded = torch.nn.functional.pad(keep.to(torch.int64), (0, -len(keep) % batch_size))
            self.parts = index[keep].split(padded.view(-1, batch_size).sum(1).tolist())
        else:
            self.parts = index.split(batch_size)

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        exclude = self.exclude
        for part in self.parts:
            if exclude is None or not self.masked:
                yield self.transform(gather(self.images, part)), self.labels[part]
            else:
                yield self.transform(gather(self.images, part)), self.labels[part], ~exclude[:, part]


class EpochSampler:
    """Draws the sample order of each epoch from a generator seeded by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every training epoch (as for a ``DistributedSampler``), so the
    order depends only on the seed and the epoch: the same in a fresh process, after a resume, and for a
    fold run alone or after other folds.

    Args:
        indices: Sample indices to draw from.
        labels: Labels of all samples (only used for ``"balanced"``).
        sampling: ``"shuffle"`` (a permutation: without replacement), ``"replacement"`` (uniform with
            replacement), ``"balanced"`` (with replacement, each class equally likely) or ``"sequential"``.
        seed: Base seed.
        rank: This process's rank when training on several devices.
        world_size: Number of processes; each takes every ``world_size``-th sample of a shared order.
    """

    def __init__(
        self,
        indices: Tensor,
        labels: Tensor | None = None,
        sampling: Sampling = "shuffle",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; choose one of {list(SAMPLINGS)}")
        self.indices = indices.cpu()
        self.sampling = sampling
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.weights: Tensor | None = None
        if sampling == "balanced":
            if labels is None:
                raise ValueError("balanced sampling needs labels")
            own = labels.cpu()[self.indices]
            counts = torch.bincount(own).double()
            self.weights = (1.0 / counts)[own]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`order` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.world_size)

    def order(self) -> Tensor:
        """Sample indices of the current epoch (this rank's share)."""
        n = len(self.indices)
        if self.sampling == "sequential":
            order = self.indices
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            if self.sampling == "shuffle":
                order = self.indices[torch.randperm(n, generator=gen)]
            elif self.sampling == "replacement":
                order = self.indices[torch.randint(n, (n,), generator=gen)]
            else:
                assert self.weights is not None
                order = self.indices[torch.multinomial(self.weights, n, replacement=True, generator=gen)]
        if self.world_size > 1:
            # pad by wrapping so every rank runs the same number of steps (as DistributedSampler does)
            total = len(self) * self.world_size
            if total > n:
                order = torch.cat([order, order[: total - n]])
            order = order[self.rank :: self.world_size]
        return order


class BatchLoader:
    """An iterable of batches sliced from in-memory tensors; Lightning accepts it as a dataloader.

    Args:
        images: uint8 tensor ``N×C×H×W`` (ideally already on the training device).
        labels: int64 tensor ``N`` on the same device.
        sampler: Decides which samples each epoch visits and in what order.
        batch_size: Samples per mini-batch.
        transform: Pixel conversion applied per batch.
        steps_per_block: Mini-batches per yielded :class:`Block` (training); ``None`` yields plain
            ``(x, y)`` batches (evaluation).
        drop_last: Drop a last mini-batch smaller than ``batch_size``.
        exclude: ``folds × N`` mask of samples each fold must not train on (cross-validation streams).
        masked: Yield keep-masks with the batches instead of dropping excluded samples (see :class:`Block`).
    """

    #: Lightning inspects ``sampler``/``batch_sampler`` like a ``DataLoader``'s (``set_epoch``, shuffle checks).
    batch_sampler = None

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        sampler: EpochSampler,
        batch_size: int,
        transform: PixelTransform,
        steps_per_block: int | None = None,
        drop_last: bool = False,
        exclude: Tensor | None = None,
        masked: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images = images
        self.labels = labels
        self.sampler = sampler
        self.batch_size = batch_size
        self.transform = transform.to(images.device)
        self.steps_per_block = steps_per_block
        self.drop_last = drop_last
        self.exclude = exclude
        self.masked = masked

    @property
    def num_batches(self) -> int:
        """Mini-batches per epoch."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        if self.steps_per_block is None:
            return self.num_batches
        return math.ceil(self.num_batches / self.steps_per_block)

    def __iter__(self) -> Iterator[Block | tuple[Tensor, ...]]:
        order = self.sampler.order().to(self.images.device)
        if self.drop_last:
            order = order[: self.num_batches * self.batch_size]
        if self.steps_per_block is None:
            for part in order.split(self.batch_size):
                yield self.transform(gather(self.images, part)), self.labels[part]
        else:
            for chunk in order.split(self.batch_size * self.steps_per_block):
                yield Block(self.images, self.labels, chunk, self.batch_size, self.transform, self.exclude, self.masked)


def auto_steps_per_block(batch_size: int) -> int:
    """Mini-batches per block so that a block holds about :data:`AUTO_BLOCK_SAMPLES` samples."""
    return max(1, AUTO_BLOCK_SAMPLES // batch_size)
