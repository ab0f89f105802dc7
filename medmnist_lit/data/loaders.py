"""Lean batch iteration over in-memory tensors.

A :class:`BatchLoader` is what the DataModule hands to the Lightning Trainer instead of a ``DataLoader``: batches
are index slices of one uint8 tensor that already lives on the training device, converted to float per batch.
There is no per-image Python work, no collation and no worker process inside an epoch. Every batch is one
mini-batch: Lightning takes one optimizer step per batch, as its documentation says.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Sampling = Literal["shuffle", "replacement", "balanced", "sequential"]
SAMPLINGS: tuple[str, ...] = ("shuffle", "replacement", "balanced", "sequential")


@dataclass(frozen=True)
class PixelTransform:
    """Affine map from uint8 pixels to model inputs: ``x = pixels * scale + shift`` (per channel).

    Pixels are scaled to [0, 1]; with standardisation the training part's mean and std are folded in.
    """

    scale: Tensor
    shift: Tensor
    shifted: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # no shift (pixels to [0, 1] without standardisation): one multiply per batch instead of two operations
        object.__setattr__(self, "shifted", bool(self.shift.any()))

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
        # in place: torch.addcmul, or a multiply that promotes uint8, with broadcast operands is an order of magnitude
        # slower on CPU
        if self.scale.dim() == 3:
            return x.mul_(self.scale).add_(self.shift) if self.shifted else x.mul_(self.scale)
        x = torch.mul(x.unsqueeze(0), self.scale)
        return x.add_(self.shift) if self.shifted else x


def gather(images: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of ``images`` (``index_select`` copies whole rows: several times faster than indexing)."""
    return images.index_select(0, index)


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
    """An iterable of ``(x, y)`` mini-batches sliced from in-memory tensors; Lightning accepts it as a dataloader.

    Cross-validation streams draw every fold's batches from one shuffled order of the development set
    (:meth:`~medmnist_lit.data.datamodule.MedMNISTDataModule.stream_loader`); ``members`` says which samples each
    fold trains on. With one fold (an ``N`` mask) each batch keeps only that fold's samples (it may be empty);
    with several (``F×N``) every batch comes with the ``F×B`` membership of its samples as a third element.

    Args:
        images: uint8 tensor ``N×C×H×W`` (ideally already on the training device).
        labels: int64 tensor ``N`` on the same device.
        sampler: Decides which samples each epoch visits and in what order.
        batch_size: Samples per mini-batch.
        transform: Pixel conversion applied per batch.
        drop_last: Drop a last mini-batch smaller than ``batch_size``.
        members: ``N`` or ``F×N`` boolean mask of the samples each fold trains on (cross-validation streams).
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
        drop_last: bool = False,
        members: Tensor | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.images = images
        self.labels = labels
        self.sampler = sampler
        self.batch_size = batch_size
        self.transform = transform.to(images.device)
        self.drop_last = drop_last
        self.members = None if members is None else members.to(images.device)

    @property
    def num_batches(self) -> int:
        """Mini-batches (optimizer steps) per epoch."""
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        order = self.sampler.order().to(self.images.device)
        if self.drop_last:
            order = order[: self.num_batches * self.batch_size]
        members = self.members
        if members is not None and members.dim() == 1:
            # one fold of a stream: drop the samples it does not train on from each batch, splitting once per
            # epoch so that the boolean indexing (a host-device sync on a GPU) does not run at every step
            keep = members[order]
            padded = torch.nn.functional.pad(keep.to(torch.int64), (0, -len(keep) % self.batch_size))
            parts = order[keep].split(padded.view(-1, self.batch_size).sum(1).tolist())
        else:
            parts = order.split(self.batch_size)
        images, labels, transform = self.images, self.labels, self.transform
        if members is not None and members.dim() == 2:
            for part in parts:
                yield transform(gather(images, part)), labels.index_select(0, part), members[:, part]
        else:
            for part in parts:
                yield transform(gather(images, part)), labels.index_select(0, part)
