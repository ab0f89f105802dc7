"""A cross-validation in TensorBoard: one trial at the root, mean ± std curves across folds, LR points per step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tbevents import all_scalar_tags, columns, margin_charts, plugin_tags, runs, scalars, tensorboard_hparams

from medmnist_lit.cli import main
from medmnist_lit.cv.summary import format_summary, mean_curves

ARGS = ["--data.split", "kfold", "--data.folds", "3", "--data.subset", "300", "--optimizer.lr", "0.05"]
ARGS += ["--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false"]


def _cv(name: str, *args: str) -> Path:
    assert main(["cv", *ARGS, "--trainer.logger.init_args.name", name, *args]) == 0
    return Path("lightning_logs") / name / "version_0"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 3-fold cross-validation with both engines (and their console output)."""
    cwd = tmp_path_factory.mktemp("cv")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MEDMNIST_LIT_CACHE", str(cwd / "cache"))
        _cv("parallel", "--cv.engine", "parallel")
        _cv("sequential", "--cv.engine", "sequential")
    return cwd / "lightning_logs"


def test_the_root_is_the_only_trial_with_fold_means_under_the_fit_s_names(logs: Path) -> None:
    run = logs / "parallel" / "version_0"
    experiment, groups = tensorboard_hparams(logs / "parallel")
    assert [[s["name"] for s in g["sessions"]] for g in groups] == [["version_0/summary"]]
    for fold in range(3):
        assert plugin_tags(run / f"fold_{fold}", "hparams") == []  # folds are not trials
    assert plugin_tags(run, "hparams") == []
    hparams, metrics = columns(experiment)
    assert {":val/acc", ":val/acc_std", ":val/loss", ":test/acc", ":oof/acc", ":train/loss"} <= metrics
    assert not [m for m in metrics if "/acc_" in m and not m.endswith("_std")]  # no per-class accuracies
    assert {"data.split", "data.folds", "cv.checkpoint", "trainer.max_epochs", "seed"} <= hparams
    assert "data.fold" not in hparams  # a cv run trains every fold
    summary = json.loads((run / "summary.json").read_text())
    values = {m["name"]["tag"]: m["value"] for m in groups[0]["metricValues"]}
    assert values["val/acc"] == pytest.approx(summary["val/acc"]["mean"], rel=1e-6)
    assert values["val/acc_std"] == pytest.approx(summary["val/acc"]["std"], rel=1e-6)
    assert values["test/acc"] == pytest.approx(summary["test/acc"], rel=1e-6)  # the fold ensemble
    assert values["oof/acc"] == pytest.approx(summary["oof/acc"], rel=1e-6)
    assert not [tag for tag in all_scalar_tags(logs) if tag.startswith("hp/")]


def test_mean_and_band_curves_across_folds_against_the_epoch(logs: Path) -> None:
    run = logs / "sequential" / "version_0"
    folds = [scalars(run / f"fold_{fold}")["val/loss"] for fold in range(3)]
    assert all([step for step, _ in fold] == [0, 1, 2] for fold in folds)
    values = np.array([[value for _, value in fold] for fold in folds])
    logged = scalars(run)
    mean, std = values.mean(0), values.std(0, ddof=1)
    assert [step for step, _ in logged["cv/val_loss"]] == [0, 1, 2]
    assert [v for _, v in logged["cv/val_loss"]] == pytest.approx(mean, rel=1e-5)
    assert [v for _, v in logged["cv/val_loss_lower"]] == pytest.approx(mean - std, rel=1e-5)
    assert [v for _, v in logged["cv/val_loss_upper"]] == pytest.approx(mean + std, rel=1e-5)
    assert not [tag for tag in all_scalar_tags(run / "fold_0") if tag.startswith("cv/")]
    charts = margin_charts(run)
    assert ["cv/val_loss", "cv/val_loss_lower", "cv/val_loss_upper"] in charts.values()
    assert ["cv/train_acc", "cv/train_acc_lower", "cv/train_acc_upper"] in charts.values()
    assert runs(run) == [run, *(run / f"fold_{fold}" for fold in range(3)), run / "summary"]


def test_one_learning_rate_point_per_optimizer_step_in_every_fold_of_both_engines(logs: Path) -> None:
    for engine in ("parallel", "sequential"):
        for fold in range(3):
            directory = logs / engine / "version_0" / f"fold_{fold}"
            steps = torch.load(directory / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
            points = [step for step, _ in scalars(directory).get("lr-SGD", [])]
            assert steps > 0 and points == list(range(steps)), (engine, fold)


def test_the_console_prints_measured_times_only(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _cv("p", "--cv.engine", "parallel", "--trainer.max_epochs", "1")
    out = capsys.readouterr().out
    assert "≈" not in out and "kfold: 3 folds (parallel)" in out.splitlines()
    folds = [line for line in out.splitlines() if line.startswith("Fold ")]
    assert len(folds) == 3 and all(line.endswith("1 epochs") for line in folds)  # no share of the pass's time
    assert any(line.startswith("folds 0–2 trained together in one pass") for line in out.splitlines())
    assert any(line.startswith("kfold: 3 folds in ") and line.endswith(" s (parallel)") for line in out.splitlines())


def test_mean_curves_cover_the_folds_that_reached_each_epoch() -> None:
    histories = [{"val/loss": [1.0, 0.5, 0.25]}, {"val/loss": [3.0, 1.5]}, {"train/loss": [2.0]}]
    curves = mean_curves(histories)
    assert set(curves) == {"val/loss", "train/loss"}
    assert curves["val/loss"]["mean"] == [2.0, 1.0, 0.25] and curves["val/loss"]["n"] == [2, 2, 1]
    assert curves["val/loss"]["std"] == pytest.approx([np.sqrt(2), np.sqrt(0.5), 0.0])


def test_the_summary_lists_every_score_asked_for() -> None:
    summary = {"external/acc": 0.5, "refit/test/acc": 0.75, "refit/external/acc": 0.625}
    lines = format_summary(summary).splitlines()
    assert "external acc (fold ensemble): 0.5000" in lines and "external acc (refit): 0.6250" in lines
