"""Schedules composed from ``torch.optim.lr_scheduler`` building blocks, configurable by class path."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


class WarmupCosineLR(SequentialLR):
    """Linear warm-up followed by cosine annealing: torch's ``LinearLR`` then ``CosineAnnealingLR``.

    ``SequentialLR`` needs scheduler objects, which a config file cannot build; this class builds them from
    plain numbers so ``--lr_scheduler medmnist_lit.model.schedules.WarmupCosineLR`` works. Steps count epochs unless
    the scheduler is stepped per batch (``lr_scheduler_interval: step``).

    Args:
        optimizer: The optimizer.
        warmup_steps: Length of the linear warm-up.
        total_steps: Length of the whole schedule (warm-up included).
        warmup_start_factor: Learning-rate factor at the first warm-up step.
        eta_min: Learning rate at the end of the cosine.
        last_epoch: Index of the last step when resuming.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 5,
        total_steps: int = 50,
        warmup_start_factor: float = 0.01,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
        schedulers = [
            LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=max(warmup_steps, 1)),
            CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=eta_min),
        ]
        super().__init__(optimizer, schedulers, milestones=[warmup_steps], last_epoch=last_epoch)
