"""The fold-parallel engine gives the same folds as training them one after another."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medmnist_lit.lightning_cli import run_cv
from medmnist_lit.model.heads import MLP, StackedHead

SGD = {
    "class_path": "torch.optim.SGD",
    "init_args": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
}
ADAM = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.005}}


def _config(tmp_path: Path, name: str, engine: str, **parts: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "trainer": {
            "max_epochs": 3,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path), "name": name, "default_hp_metric": False},
            },
        },
        "model": {"head": "logistic"},
        "data": {"split": "kfold", "folds": 3, "batch_size": 32, "subset": 600},
        "optimizer": SGD,
        "cv": {"engine": engine},
    }
    for key, value in parts.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) and key != "optimizer" else value
    return config


def _both(tmp_path: Path, **parts: Any) -> tuple[Any, Any]:
    parallel = run_cv(_config(tmp_path, "parallel", "parallel", **parts))
    sequential = run_cv(_config(tmp_path, "sequential", "sequential", **parts))
    return parallel, sequential


def _assert_same_folds(parallel: Any, sequential: Any) -> None:
    assert parallel.summary["run"]["engine"] == "parallel" and sequential.summary["run"]["engine"] == "sequential"
    for fold in range(3):
        a = json.loads((parallel.run_dir / f"fold_{fold}" / "metrics.json").read_text())
        b = json.loads((sequential.run_dir / f"fold_{fold}" / "metrics.json").read_text())
        for key in (
            "train/loss",
            "train/acc",
            "val/loss",
            "val/acc",
            "val/auroc",
            "test/loss",
            "test/acc",
            "best_epoch",
        ):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (fold, key)
        weights, checkpoints = [], []
        for run in (parallel, sequential):
            best = next((run.run_dir / f"fold_{fold}" / "checkpoints").glob("best-*.ckpt"))
            checkpoints.append(torch.load(best, map_location="cpu", weights_only=True))
            weights.append(checkpoints[-1]["state_dict"])
        assert weights[0].keys() == weights[1].keys()
        # the same self-contained record (classes, pixel statistics, split, source) and history up to the epoch
        records = [c["MedMNISTDataModule"] for c in checkpoints]
        assert records[0].keys() == records[1].keys()
        for key in records[0]:
            if key in ("mean", "std") and records[0][key] is not None:  # pixel statistics: float tolerance
                assert records[0][key] == pytest.approx(records[1][key], rel=1e-5), (fold, key)
            else:
                assert records[0][key] == records[1][key], (fold, key)
        histories = [c["medmnist_lit_history"]["history"] for c in checkpoints]
        assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= histories[0].keys() <= histories[1].keys()
        for key in histories[0]:  # (the parallel engine keeps no per-class accuracies per epoch)
            assert histories[0][key] == pytest.approx(histories[1][key], rel=1e-4, abs=1e-6), (fold, key)
        for key in weights[0]:
            torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("head", "optimizer"),
    [("logistic", SGD), ("logistic", ADAM), ("mlp", SGD), ("mlp", ADAM)],
    ids=["logistic-sgd", "logistic-adam", "mlp-sgd", "mlp-adam"],
)
def test_parallel_equals_sequential(tmp_path: Path, head: str, optimizer: dict) -> None:
    model = {"head": head, "hidden_sizes": [16, 8], "dropout": 0.0}
    _assert_same_folds(*_both(tmp_path, model=model, optimizer=optimizer))


def test_parallel_equals_sequential_with_standardisation_schedule_and_label_smoothing(tmp_path: Path) -> None:
    # per-fold standardisation gives every head its own input; a per-batch schedule steps all heads alike
    schedule = {"class_path": "torch.optim.lr_scheduler.OneCycleLR", "init_args": {"max_lr": 0.1, "total_steps": 200}}
    parts = {"data": {"standardize": True}, "lr_scheduler": schedule, "model": {"label_smoothing": 0.1}}
    _assert_same_folds(*_both(tmp_path, **parts))


def test_parallel_equals_sequential_with_clipping_accumulation_and_step_limits(tmp_path: Path) -> None:
    # each head is clipped on its own norm; 8 batches of 48 per epoch in steps of 2: 4 steps per epoch, and
    # max_steps cuts the third epoch after 2 steps (Lightning validates after it only if the epoch completed)
    trainer = {"gradient_clip_val": 0.05, "accumulate_grad_batches": 2, "limit_train_batches": 8, "max_steps": 10}
    parallel, sequential = _both(tmp_path, trainer=trainer)
    _assert_same_folds(parallel, sequential)
    for a, b in zip(parallel.histories, sequential.histories, strict=True):  # CVResult carries the curves
        for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    assert [len(h["train/loss"]) for h in parallel.histories] == [3] * 3
    assert [len(h["val/loss"]) for h in parallel.histories] == [2] * 3
    unclipped = run_cv(_config(tmp_path, "free", "parallel", trainer={**trainer, "gradient_clip_val": None}))
    assert unclipped.folds[0]["val/loss"] != pytest.approx(parallel.folds[0]["val/loss"], rel=1e-3)  # it clipped


def test_leave_one_out_in_passes(tmp_path: Path) -> None:
    # 40 LOO folds in passes of 16 heads: folds in different passes still match sequential training
    data = {"split": "loo", "subset": 40, "test_fraction": 0.0, "batch_size": 8}
    parallel = run_cv(_config(tmp_path, "p", "parallel", data=data, cv={"engine": "parallel", "folds_per_pass": 16}))
    sequential = run_cv(
        _config(tmp_path, "s", "sequential", data=data, cv={"engine": "sequential", "folds_to_run": [0, 17, 39]})
    )
    for fold in (0, 17, 39):
        a = json.loads((parallel.run_dir / f"fold_{fold}" / "metrics.json").read_text())
        b = json.loads((sequential.run_dir / f"fold_{fold}" / "metrics.json").read_text())
        for key in ("train/loss", "val/loss", "val/acc", "best_epoch"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (fold, key)
    assert parallel.summary["oof/n"] == 40


def test_unsupported_setups_fall_back_or_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cv(_config(tmp_path, "bn", "auto", model={"head": "mlp", "hidden_sizes": [8], "batch_norm": True}))
    assert result.summary["run"]["engine"] == "sequential"
    with pytest.raises(ValueError, match="batch norm"):
        run_cv(_config(tmp_path, "bn2", "parallel", model={"head": "mlp", "hidden_sizes": [8], "batch_norm": True}))
    # validation inside the epoch is each fold's own validation loop: folds train one after another, saying why
    result = run_cv(_config(tmp_path, "vci", "auto", trainer={"val_check_interval": 0.5, "max_epochs": 1}))
    assert result.summary["run"]["engine"] == "sequential"
    assert "folds train one after another: trainer.val_check_interval=0.5" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"limit_val_batches=0\.5 needs each fold's own validation loop"):
        run_cv(_config(tmp_path, "lvb", "parallel", trainer={"limit_val_batches": 0.5}))
    monitor = {"class_path": "lightning.pytorch.callbacks.DeviceStatsMonitor"}
    with pytest.raises(
        ValueError, match="the callback DeviceStatsMonitor expects one fold's model and Trainer at a time"
    ):
        run_cv(_config(tmp_path, "cb", "parallel", trainer={"callbacks": [monitor]}))


def test_stacked_head_computes_each_head() -> None:
    torch.manual_seed(0)
    heads = [MLP(16, 3, hidden_sizes=(5, 4), activation="tanh") for _ in range(4)]
    stacked = StackedHead(heads)
    x = torch.rand(7, 1, 4, 4)
    expected = torch.stack([h(x) for h in heads])
    torch.testing.assert_close(stacked(x), expected)
    per_head = torch.rand(4, 7, 1, 4, 4)
    torch.testing.assert_close(stacked(per_head), torch.stack([h(xi) for h, xi in zip(heads, per_head, strict=True)]))
    restored = MLP(16, 3, hidden_sizes=(5, 4), activation="tanh")
    restored.load_state_dict(stacked.head_state(2, list(stacked.weights), list(stacked.biases)))
    torch.testing.assert_close(restored(x), heads[2](x))
