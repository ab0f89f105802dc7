"""Resuming a fit from its checkpoint continues the whole run: epochs, ``train/*`` scores and curves from epoch 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmnist_lit.lightning_cli import run_fit
from medmnist_lit.model.classifier import Classifier
from medmnist_lit.utils.checkpoints import load_checkpoint

BASE = ["--data.subset", "400", "--data.batch_size", "64", "--optimizer.lr", "0.05"]
BASE += ["--trainer.enable_progress_bar", "false"]


def _fit(name: str, epochs: int, *extra: str):
    return run_fit([*BASE, "--trainer.logger.init_args.name", name, "--trainer.max_epochs", str(epochs), *extra])


def test_resume_keeps_epochs_train_scores_and_curves_of_the_whole_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = _fit("r", 2)
    last = first.run_dir / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(last)["medmnist_lit_history"]["history"]  # plain floats: a weights-only load
    assert saved == first.history and len(saved["train/loss"]) == 2
    assert Classifier.load_from_checkpoint(last).history == first.history

    resumed = _fit("r", 4, "--ckpt_path", str(last))
    metrics = json.loads((resumed.run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and 1 <= metrics["best_epoch"] <= 4
    train_keys = {key for key in metrics if key.startswith("train/")}
    assert {"train/loss", "train/acc", "train/f1", "train/auroc"} <= train_keys
    assert set(resumed.history) == set(first.history)
    for key, values in resumed.history.items():
        assert len(values) == 4, key  # what curves.png and a batch record are drawn from
        assert values[:2] == first.history[key], key

    # the same 4 epochs in one go: batches depend only on (seed, epoch), the optimizer state is restored
    straight = _fit("s", 4)
    for key, values in straight.history.items():
        assert resumed.history[key] == pytest.approx(values, rel=1e-4, abs=1e-6), key
