"""Lightning's contract: every Trainer argument and callback hook means what Lightning's documentation says.

One batch is one mini-batch and one optimizer step, so the options that count batches or steps count mini-batches
and optimizer steps, the learning rate is logged once per step, and the progress bar counts the epoch's steps.
The digits demo's training part has 1,077 images: 17 mini-batches of 64 per epoch.
"""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from tbevents import scalars

from medmnist_lit.callbacks import ProgressBar
from medmnist_lit.cli import main
from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.model.classifier import Classifier
from medmnist_lit.training.fit import default_callbacks

BATCHES = 17  # mini-batches of 64 per epoch
SGD = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}}


class Counter(L.Callback):
    """Counts hooks, the gradient norm Lightning hands to the optimizer, and when validation runs."""

    def __init__(self) -> None:
        self.batch_ends = 0
        self.optimizer_steps = 0
        self.validations: list[int] = []
        self.norms_before: list[float] = []
        self.norms_applied: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        self.batch_ends += 1
        # the optimizer has stepped and the gradients are not zeroed before the next batch: these were applied
        self.norms_applied.append(_norm(pl_module))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.optimizer_steps += 1
        self.norms_before.append(_norm(pl_module))  # Lightning clips after this hook

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validations.append(trainer.global_step)


def _norm(module: L.LightningModule) -> float:
    grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def _fit(batch_size: int = 64, callbacks: tuple = (), **trainer: Any) -> tuple[L.Trainer, Counter]:
    torch.manual_seed(0)
    counter = Counter()
    model = Classifier(10, (1, 8, 8), optimizer=SGD)
    options: dict[str, Any] = {
        "max_epochs": 2,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    fitted = L.Trainer(**{**options, **trainer}, callbacks=[counter, *callbacks])
    fitted.fit(model, datamodule=MedMNISTDataModule(batch_size=batch_size))
    return fitted, counter


def cyclic(t: int, base: float = 0.01, top: float = 0.1, half: int = 5) -> float:
    """torch's CyclicLR, ``triangular`` mode, at optimizer step ``t``."""
    cycle = math.floor(1 + t / (2 * half))
    return base + (top - base) * max(0.0, 1 - abs(t / half - 2 * cycle + 1))


def test_cyclic_lr_is_logged_once_per_optimizer_step_and_follows_its_formula(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    schedule = ["--lr_scheduler", "CyclicLR", "--lr_scheduler.base_lr", "0.01", "--lr_scheduler.max_lr", "0.1"]
    args = ["--lr_scheduler.step_size_up", "5", "--trainer.max_epochs", "2", "--data.batch_size", "64"]
    assert main(["fit", *schedule, *args, "--trainer.logger.init_args.name", "c"]) == 0
    logged = scalars(tmp_path / "lightning_logs" / "c" / "version_0")["lr-SGD"]
    assert [step for step, _ in logged] == list(range(2 * BATCHES))  # once per step, against the step
    assert [lr for _, lr in logged] == pytest.approx([cyclic(t) for t in range(2 * BATCHES)], rel=1e-5)


def test_gradient_clip_val_bounds_the_gradient_norm(tmp_path: Path, monkeypatch) -> None:
    _, free = _fit()
    _, counter = _fit(gradient_clip_val=0.05)
    assert max(free.norms_applied) > 0.05  # without clipping the norm exceeds the bound ...
    assert max(counter.norms_before) > 0.05
    assert max(counter.norms_applied) <= 0.05 * (1 + 1e-4)  # ... with it, every applied gradient is within it
    _, by_value = _fit(gradient_clip_val=1e-3, gradient_clip_algorithm="value")
    assert max(by_value.norms_applied) <= 1e-3 * math.sqrt(650) * (1 + 1e-4)  # each of 650 entries within ±1e-3
    monkeypatch.chdir(tmp_path)  # and from the command line, where it used to crash
    assert main(["fit", "--trainer.gradient_clip_val", "1.0", "--trainer.max_epochs", "1"]) == 0


def test_accumulate_grad_batches_takes_a_quarter_of_the_steps() -> None:
    # batches of 68: 16 per epoch, so 4 accumulated steps per epoch
    plain, _ = _fit(batch_size=68)
    accumulated, counter = _fit(batch_size=68, accumulate_grad_batches=4)
    assert plain.global_step == 32 and accumulated.global_step == 8
    assert counter.batch_ends == 32 and counter.optimizer_steps == 8


def test_a_callback_sees_one_batch_end_per_mini_batch_and_one_step_hook_per_step() -> None:
    trainer, counter = _fit()
    assert counter.batch_ends == counter.optimizer_steps == trainer.global_step == 2 * BATCHES


def test_max_steps_val_check_interval_and_limit_train_batches_count_mini_batches() -> None:
    trainer, counter = _fit(max_steps=10)
    assert trainer.global_step == counter.batch_ends == 10  # stops mid-epoch, after 10 of the first 17 steps
    _, counter = _fit(val_check_interval=5)  # an int: every 5 training batches
    assert counter.validations == [5, 10, 15, 22, 27, 32]
    _, counter = _fit(val_check_interval=0.5)  # a fraction of the epoch: every int(17 * 0.5) = 8 batches
    assert counter.validations == [8, 16, 25, 33]
    trainer, counter = _fit(limit_train_batches=5)
    assert trainer.global_step == counter.batch_ends == 10 and counter.validations == [5, 10]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _BarWatcher(L.Callback):
    """Records the bar's position and total after every batch (it runs after the bar's own hook)."""

    def __init__(self, bar: ProgressBar) -> None:
        self.bar = bar
        self.seen: list[tuple[int, int]] = []

    def on_train_batch_end(self, *_: Any) -> None:
        self.seen.append((self.bar.train_progress_bar.n, self.bar.train_progress_bar.total))


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log-file"])
def test_progress_bar_counts_the_optimizer_steps_of_an_epoch(monkeypatch, terminal: bool) -> None:
    screen = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    bar = ProgressBar()
    bar.min_interval = 0.0  # redraw at every batch on a terminal
    watcher = _BarWatcher(bar)
    trainer, _ = _fit(callbacks=(bar, watcher), enable_progress_bar=True)
    steps_per_epoch = trainer.global_step // 2
    assert steps_per_epoch == BATCHES and {total for _, total in watcher.seen} == {BATCHES}
    if terminal:  # advances per mini-batch, with a rate and an ETA, epochs counted from 1
        assert [n for n, _ in watcher.seen] == [*range(1, BATCHES + 1)] * 2
        text = screen.getvalue()
        assert "Epoch 1/2" in text and "Epoch 2/2" in text and "step/s" in text and "<00:00" in text
    else:  # off a terminal the bar turns itself off: a log file gets the epoch lines only, no frames
        assert [n for n, _ in watcher.seen] == [0] * (2 * BATCHES)
        assert "\r" not in screen.getvalue() and "Epoch 1/2" not in screen.getvalue()


def test_epochs_are_counted_from_one_wherever_a_person_reads_them(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--trainer.max_epochs", "3", "--optimizer.lr", "0.05", "--trainer.enable_progress_bar", "false"]
    assert main(["fit", *args, "--trainer.logger.init_args.name", "e"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch [")]
    assert [line.split(",")[0] for line in lines] == ["Epoch [1/3]", "Epoch [2/3]", "Epoch [3/3]"]
    run = tmp_path / "lightning_logs" / "e" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    best = next((run / "checkpoints").glob("best-epoch*.ckpt"))
    assert metrics["best_epoch"] == 3 and best.name == "best-epoch003.ckpt"  # validation loss falls every epoch
    # Lightning's own counters stay 0-based: the checkpoint's epoch and TensorBoard's steps
    assert torch.load(best, weights_only=True)["epoch"] == 2
    assert [step for step, _ in scalars(run)["val/loss"]] == [0, 1, 2]


def test_steps_per_block_is_gone_and_refused_by_name(capsys) -> None:
    assert main(["fit", "--data.steps_per_block", "4"]) == 2
    assert "steps_per_block" in capsys.readouterr().err


def test_the_default_callbacks_log_the_learning_rate_per_step() -> None:
    monitors = [c for c in default_callbacks() if isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    assert [m.logging_interval for m in monitors] == ["step"]
