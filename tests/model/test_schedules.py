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
    **model: Any,
) -> tuple[list[float], Classifier]:
    """Fit the digits demo; return the logged learning rates (one per optimizer step, in order) and the model."""
    torch.manual_seed(0)
    datamodule = MedMNISTDataModule(batch_size=64)
    optimizer = {"class_path": "torch.optim.SGD", "init_args": {"lr": LR0, "momentum": 0.9}}
    net = Classifier(num_classes=10, input_shape=(1, 8, 8), optimizer=optimizer, lr_scheduler=scheduler, **model)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        logger=TensorBoardLogger(tmp_path, name="", version="run", default_hp_metric=False),
        callbacks=[LearningRateMonitor(logging_interval="step"), *callbacks],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(net, datamodule=datamodule)
    trainer.logger.finalize("success")
    logged = scalars(tmp_path / "run")["lr-SGD"]
    assert [step for step, _ in logged] == list(range(EPOCHS * BATCHES))  # once per optimizer step, against the step
    return [lr for _, lr in logged], net


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
    # the learning rate of every optimizer step is its epoch's
    assert lrs == pytest.approx([formula(e) for e in range(EPOCHS) for _ in range(BATCHES)], rel=1e-5)


@pytest.mark.parametrize("name", sorted(STEP_SCHEDULES))
def test_step_schedule_follows_its_formula_per_optimizer_step(tmp_path: Path, name: str) -> None:
    cls, init_args, formula = STEP_SCHEDULES[name]
    lrs, _ = _train(tmp_path, scheduler={"class_path": cls, "init_args": init_args})
    assert lrs == pytest.approx([formula(t) for t in range(EPOCHS * BATCHES)], rel=1e-5, abs=1e-9)


def test_callback_schedule_per_step_matches_formula(tmp_path: Path) -> None:
    factory = functools.partial(CyclicLR, base_lr=0.01, max_lr=0.1, step_size_up=5, mode="triangular2")
    callback = LRSchedulerCallback(factory, interval="auto")
    lrs, net = _train(tmp_path, callbacks=(callback,))
    assert lrs == pytest.approx([cyclic(t, "triangular2") for t in range(EPOCHS * BATCHES)], rel=1e-5)
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
