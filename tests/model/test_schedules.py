"""Learning-rate schedules: the learning rate logged by LearningRateMonitor follows each scheduler's formula."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from tbevents import scalars
from torch.optim.lr_scheduler import CyclicLR, StepLR

from medmnist_lit.callbacks import LRSchedulerCallback
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.model.classifier import Classifier

LR0 = 0.1
EPOCHS = 5
BATCHES = 17  # digits demo: 1,077 training images in batches of 64


def _train(
    tmp_path: Path,
    *,
    scheduler: dict | None = None,
    callbacks: tuple = (),
    steps_per_block: int | None = 1,
    **model: Any,
) -> tuple[list[float], Classifier]:
    """Fit the digits demo; return the logged learning rates (one per logged step, in order) and the model."""
    torch.manual_seed(0)
    datamodule = MedMNISTDataModule(batch_size=64, steps_per_block=steps_per_block)
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": LR0, "momentum": 0.9}}
    net = Classifier(num_classes=10, input_shape=(1, 8, 8), optimizer=optimizer, lr_scheduler=scheduler, **model)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        logger=TensorBoardLogger(tmp_path, name="", version="run", default_hp_metric=False),
        callbacks=[LearningRateMonitor(), *callbacks],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(net, datamodule=datamodule)
    trainer.logger.finalize("success")
    # an optimizer without a model scheduler is logged at each epoch start and each batch start: same step, same lr
    by_step = dict(scalars(tmp_path / "run")["lr-SGD"])
    return [by_step[step] for step in sorted(by_step)], net


def cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def cyclic(t: int, mode: str, base: float = 0.01, top: float = 0.1, half: int = 5, gamma: float = 0.99) -> float:
    cycle = math.floor(1 + t / (2 * half))
    x = abs(t / half - 2 * cycle + 1)
    scale = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**t}[mode]
    return base + (top - base) * max(0.0, 1 - x) * scale


def one_cycle(t: int, total: int = EPOCHS * BATCHES, top: float = 0.1, pct: float = 0.3) -> float:
    initial, final = top / 25, top / 25 / 1e4
    peak = pct * total - 1
    if t <= peak:
        return cos_anneal(initial, top, t / peak)
    return cos_anneal(top, final, (t - peak) / (total - 1 - peak))


def warmup_cosine(e: int, warmup: int = 2, total: int = 5, start: float = 0.1) -> float:
    if e < warmup:
        return LR0 * (start + (1 - start) * e / warmup)
    return cos_anneal(LR0, 0.0, (e - warmup) / (total - warmup))


EPOCH_SCHEDULES = {
    "StepLR": ({"step_size": 2, "gamma": 0.5}, lambda e: LR0 * 0.5 ** (e // 2)),
    "MultiStepLR": ({"milestones": [1, 3], "gamma": 0.1}, lambda e: LR0 * 0.1 ** sum(e >= m for m in (1, 3))),
    "ExponentialLR": ({"gamma": 0.8}, lambda e: LR0 * 0.8**e),
    "CosineAnnealingLR": ({"T_max": 4, "eta_min": 0.01}, lambda e: cos_anneal(LR0, 0.01, e / 4)),
    "medmnist_lit.model.schedules.WarmupCosineLR": (
        {"warmup_steps": 2, "total_steps": 5, "warmup_start_factor": 0.1},
        warmup_cosine,
    ),
    # an absolute threshold no epoch can beat: the first epoch improves on inf, every later one is a plateau
    "ReduceLROnPlateau": (
        {"factor": 0.5, "patience": 0, "threshold": 1e9, "threshold_mode": "abs"},
        lambda e: LR0 * 0.5 ** max(0, e - 1),
    ),
}

STEP_SCHEDULES = {
    "triangular": (
        "CyclicLR",
        {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5, "mode": "triangular"},
        functools.partial(cyclic, mode="triangular"),
    ),
    "triangular2": (
        "CyclicLR",
        {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5, "mode": "triangular2"},
        functools.partial(cyclic, mode="triangular2"),
    ),
    "exp_range": (
        "CyclicLR",
        {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 5, "mode": "exp_range", "gamma": 0.99},
        functools.partial(cyclic, mode="exp_range"),
    ),
    "one_cycle": ("OneCycleLR", {"max_lr": 0.1, "total_steps": EPOCHS * BATCHES}, one_cycle),
}


@pytest.mark.parametrize("name", sorted(EPOCH_SCHEDULES))
def test_epoch_schedule_follows_its_formula(tmp_path: Path, name: str) -> None:
    init_args, formula = EPOCH_SCHEDULES[name]
    lrs, _ = _train(tmp_path, scheduler={"class_path": name, "init_args": init_args})
    assert lrs == pytest.approx([formula(e) for e in range(EPOCHS)], rel=1e-5)


@pytest.mark.parametrize("name", sorted(STEP_SCHEDULES))
def test_step_schedule_follows_its_formula_per_optimizer_step(tmp_path: Path, name: str) -> None:
    cls, init_args, formula = STEP_SCHEDULES[name]
    lrs, _ = _train(tmp_path, scheduler={"class_path": cls, "init_args": init_args})
    assert lrs == pytest.approx([formula(t) for t in range(EPOCHS * BATCHES)], rel=1e-5, abs=1e-9)


def test_callback_schedule_per_step_matches_formula_with_blocks(tmp_path: Path) -> None:
    # blocks of 4 optimizer steps per Lightning batch: the LR is logged once per block, yet it advances per step
    factory = functools.partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="triangular2")
    callback = LRSchedulerCallback(factory, interval="auto")
    lrs, net = _train(tmp_path, callbacks=(callback,), steps_per_block=4)
    starts = [b * 4 + e * BATCHES for e in range(EPOCHS) for b in range(math.ceil(BATCHES / 4))]
    assert lrs == pytest.approx([cyclic(t, "triangular2") for t in starts], rel=1e-5)
    assert net.trainer.global_step == EPOCHS * BATCHES


def test_callback_schedule_per_epoch(tmp_path: Path) -> None:
    callback = LRSchedulerCallback(functools.partial(StepLR, step_size=1, gamma=0.5))
    lrs, _ = _train(tmp_path, callbacks=(callback,))
    per_epoch = lrs[::BATCHES]  # the first batch of each epoch
    assert per_epoch == pytest.approx([LR0 * 0.5**e for e in range(EPOCHS)])


def test_two_schedules_on_one_optimizer_are_refused(tmp_path: Path) -> None:
    callback = LRSchedulerCallback(functools.partial(StepLR, step_size=1))
    with pytest.raises(MisconfigurationException, match="second time"):
        _train(tmp_path, scheduler={"class_path": "StepLR", "init_args": {"step_size": 1}}, callbacks=(callback,))


def test_blocks_do_not_change_training(tmp_path: Path) -> None:
    # one Lightning batch per optimizer step, or several steps per batch: identical optimisation
    _, a = _train(tmp_path / "a", steps_per_block=1)
    _, b = _train(tmp_path / "b", steps_per_block=5)
    _, c = _train(tmp_path / "c", steps_per_block=None)
    for other in (b, c):
        for p, q in zip(a.parameters(), other.parameters(), strict=True):
            torch.testing.assert_close(p, q)
    assert a.history["val/loss"] == pytest.approx(c.history["val/loss"])


class _BackwardHook(L.Callback):
    """A callback with a step hook: Lightning's full per-step path must then run."""

    def __init__(self) -> None:
        self.calls = 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self.calls += 1


def test_lean_steps_equal_lightnings_full_step_path(tmp_path: Path) -> None:
    hook = _BackwardHook()
    _, lean = _train(tmp_path / "lean", steps_per_block=4)
    _, full = _train(tmp_path / "full", callbacks=(hook,), steps_per_block=4)
    assert lean._lean and not full._lean
    assert hook.calls == EPOCHS * BATCHES  # the hook ran once per optimizer step
    assert lean.trainer.global_step == full.trainer.global_step == EPOCHS * BATCHES
    for p, q in zip(lean.parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(p, q)
