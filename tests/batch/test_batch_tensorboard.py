"""A batch in TensorBoard: one HParams experiment at its root, columns = varied settings + seed + epochs + scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tbevents import columns, plugin_tags, runs, tensorboard_hparams

from medmnist_lit.batch.report import load
from medmnist_lit.batch.tensorboard import experiment_columns, write_batch_experiment
from medmnist_lit.cli import main
from medmnist_lit.training.hparams import run_scores

SPEC = """
name: opt
base:
  model: {head: logistic}
  data: {subset: 100}
  trainer: {max_epochs: 1, enable_progress_bar: false}
seeds: [0]
runs:
  - name: sgd
    optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.05, momentum: 0.9}}
  - name: adam
    optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.01, betas: [0.8, 0.99]}}
"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two optimizers, one seed, one epoch each on 100 digits: the batch writes its experiment itself."""
    root = tmp_path_factory.mktemp("batch")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDMNIST_LIT_CACHE", str(root / "cache"))
        assert main(["batch", str(spec), "--root", str(root / "logs")]) == 0
    directory = root / "logs" / "opt"
    assert len(list(directory.glob("*tfevents*"))) == 1  # the batch wrote its experiment (batch.report.write_report)
    return directory


def _experiments(directory: Path) -> list[Path]:
    return [run for run in runs(directory) if "_hparams_/experiment" in plugin_tags(run, "hparams")]


def test_one_experiment_with_a_column_per_varied_setting_and_per_score(batch: Path) -> None:
    assert _experiments(batch) == [batch]
    experiment, groups = tensorboard_hparams(batch)
    assert len(groups) == 2 and all(len(g["sessions"]) == 1 for g in groups)
    hparams, metrics = columns(experiment)
    assert {
        "optimizer",
        "optimizer.lr",
        "optimizer.momentum",
        "optimizer.betas",
        "seed",
        "trainer.max_epochs",
    } <= hparams
    # exactly the settings that differ between the trials (a trial without one counts as a value), + seed, epochs
    trials = [g["hparams"] for g in groups]
    names = {name for trial in trials for name in trial}
    varied = {name for name in names if len({json.dumps(trial.get(name)) for trial in trials}) > 1}
    assert hparams == varied | {"seed", "trainer.max_epochs"}
    assert "model.head" not in hparams and "data.subset" not in hparams  # the same in every run
    betas = next(info for info in experiment["hparamInfos"] if info["name"] == "optimizer.betas")
    assert betas["domainDiscrete"] == ["[0.8, 0.99]"]
    reported = set()
    for run in batch.glob("*__seed*"):
        reported |= set(run_scores(json.loads((run / "metrics.json").read_text())))
    assert metrics == {f":{key}" for key in reported} and ":val/acc" in metrics
    for group in groups:  # every trial has a value in every score column
        assert {m["name"]["tag"] for m in group["metricValues"]} == reported


def test_rewriting_the_experiment_keeps_exactly_one(batch: Path) -> None:
    first = sorted(batch.glob("*tfevents*"))
    write_batch_experiment(batch, load(batch)[1])
    write_batch_experiment(batch, load(batch)[1])
    assert len(list(batch.glob("*tfevents*"))) == 1 and sorted(batch.glob("*tfevents*")) != first
    assert _experiments(batch) == [batch]


def test_a_setting_missing_from_some_trials_is_a_column() -> None:
    trials = [({"seed": 0, "optimizer": "SGD", "optimizer.momentum": 0.9, "model.head": "mlp"}, {"val/acc": 0.5})]
    trials.append(({"seed": 0, "optimizer": "Adam", "model.head": "mlp"}, {"val/acc": 0.6, "test/acc": 0.4}))
    hparams, scores = experiment_columns(trials)
    assert hparams == {"optimizer": ["SGD", "Adam"], "optimizer.momentum": [0.9], "seed": [0]}
    assert scores == ["test/acc", "val/acc"]
