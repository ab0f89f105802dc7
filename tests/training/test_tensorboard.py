"""A ``fit`` in TensorBoard: one HParams trial with curated hyperparameters and the run's reported scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cliruns import run_in
from datagen import make_image_folder
from tbevents import all_scalar_tags, columns, plugin_tags, runs, scalars, tensorboard_hparams

from medmnist_lit.cli import main
from medmnist_lit.training.hparams import run_scores

#: Settings LightningCLI, the data or the cache add that do not decide a result.
NOISE = ("_instantiator", "_class_path", "cache_dir", "eval_batch_size", "class_names", "num_classes", "input_shape")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Adam with its betas, standardised pixels, two epochs, seeded 7."""
    cwd = tmp_path_factory.mktemp("fit")
    args = ["--optimizer", "Adam", "--optimizer.lr", "0.01", "--optimizer.betas", "[0.8, 0.99]"]
    args += ["--data.standardize", "true", "--trainer.max_epochs", "2", "--seed_everything", "7"]
    args += ["--trainer.logger.init_args.name", "t", "--trainer.enable_progress_bar", "false"]
    run_in(cwd, ["fit", *args])
    return cwd / "lightning_logs"


def test_a_fit_is_one_trial_with_the_settings_a_user_writes(fitted: Path) -> None:
    experiment, groups = tensorboard_hparams(fitted)
    assert [[s["name"] for s in g["sessions"]] for g in groups] == [["t/version_0/summary"]]
    hparams = groups[0]["hparams"]
    assert hparams["model.head"] == "logistic" and "model.hidden_sizes" not in hparams  # an MLP's only
    assert hparams["optimizer"] == "Adam" and hparams["optimizer.lr"] == pytest.approx(0.01)
    assert hparams["optimizer.betas"] == "[0.8, 0.99]"
    assert hparams["data.standardize"] is True and hparams["data.batch_size"] == "64"  # a boolean stays one
    assert hparams["trainer.max_epochs"] == 2 and hparams["seed"] == 7 and hparams["data.split"] == "holdout"
    names, _ = columns(experiment)
    assert names == set(hparams)
    assert not [name for name in names if any(noise in name for noise in NOISE) or "/" in name]
    assert not [name for name in names if "foreach" in name or "fused" in name]  # implementation switches


def test_the_metric_columns_are_the_reported_scores(fitted: Path) -> None:
    run = fitted / "t" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    reported = run_scores(metrics)
    assert {"train/acc", "val/acc", "val/loss", "test/acc", "test/auroc"} <= set(reported)
    assert not [key for key in reported if "/acc_" in key]  # per-class accuracies stay in metrics.json
    experiment, groups = tensorboard_hparams(fitted)
    assert columns(experiment)[1] == {f":{key}" for key in reported}
    values = {m["name"]["tag"]: m for m in groups[0]["metricValues"]}
    for key, value in reported.items():
        assert values[key]["value"] == pytest.approx(value, rel=1e-6), key
        # at the scored epoch (0-based on the x-axis), so the point sits on the run's own curve
        assert values[key]["trainingStep"] == metrics["best_epoch"] - 1, key
    curve = dict(scalars(run)["val/loss"])
    assert curve[metrics["best_epoch"] - 1] == pytest.approx(reported["val/loss"], rel=1e-6)


def test_no_hp_charts_no_hparams_outside_the_trial_and_a_learning_rate_per_step(fitted: Path) -> None:
    run = fitted / "t" / "version_0"
    assert not [tag for tag in all_scalar_tags(fitted) if tag.startswith("hp/") or tag == "hp_metric"]
    assert plugin_tags(run, "hparams") == []  # Lightning's own log_hyperparams wrote no events
    assert runs(fitted) == [run, run / "summary"]
    session = {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    assert set(plugin_tags(run / "summary", "hparams")) == session
    assert "data/cache_dir" not in (run / "hparams.yaml").read_text()  # hparams.yaml stays as Lightning writes it
    # and the learning rate of every optimizer step, against the step
    steps = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert [step for step, _ in scalars(run)["lr-Adam"]] == list(range(steps))


def test_the_console_reports_the_external_score(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "train", {"A": 15, "B": 15}, size=8)
    make_image_folder(tmp_path / "other", {"B": 5, "A": 5}, size=8, seed=3)
    args = ["--data.source", str(tmp_path / "train"), "--data.test_source", str(tmp_path / "other")]
    args += ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    assert main(["fit", *args, "--trainer.logger.init_args.name", "x"]) == 0
    lines = capsys.readouterr().out.splitlines()
    metrics = json.loads((tmp_path / "lightning_logs" / "x" / "version_0" / "metrics.json").read_text())
    score = f"{100 * metrics['external/acc']:.2f} %"
    assert f"Accuracy of the model on the 10 images of {tmp_path / 'other'} (--data.test_source): {score}" in lines
    assert lines[-1].startswith("run dir: ")
