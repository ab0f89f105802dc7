"""``medmnist-lit fit`` and friends end to end on the bundled digits demo (tiny, no files needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from cliruns import run_in
from tbevents import plugin_tags, scalars

from medmnist_lit.cli import main
from medmnist_lit.model.classifier import Classifier
from medmnist_lit.splits.split import Split

FAST = ["--trainer.max_epochs", "3", "--data.batch_size", "64", "--trainer.logger.init_args.name", "t"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fit of the digits demo, shared by the tests that inspect its run directory."""
    cwd = tmp_path_factory.mktemp("fit")
    args = ["--optimizer", "SGD", "--optimizer.lr", "0.05", "--optimizer.momentum", "0.9"]
    run_in(cwd, ["fit", *FAST, *args, "--data.test_fraction", "0.3", "--data.seed", "3"])
    return cwd / "lightning_logs" / "t" / "version_0"


def test_fit_writes_every_file_of_a_run_directory(fitted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = {p.name for p in fitted.iterdir()}
    assert {
        "config.yaml",
        "split.npz",
        "metrics.json",
        "curves.png",
        "confusion_matrix.png",
        "hparams.yaml",
    } <= names
    assert any(name.startswith("events.out.tfevents") for name in names)
    checkpoints = {p.name for p in (fitted / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch") for name in checkpoints)
    metrics = json.loads((fitted / "metrics.json").read_text())
    for key in (
        "train/loss",
        "val/loss",
        "val/acc",
        "test/loss",
        "test/acc",
        "test/f1",
        "test/auroc",
        "val/acc_3",
    ):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["test/acc"] > 0.8  # digits are easy; 3 epochs of SGD with momentum get there
    assert metrics["epochs"] == 3 and metrics["n_test"] == 540
    config = (fitted / "config.yaml").read_text()
    assert "momentum: 0.9" in config and "lr: 0.05" in config


def test_saved_split_recreates_the_run(fitted: Path) -> None:
    split = Split.load(fitted / "split.npz")
    assert split.strategy == "holdout" and len(split.test) == 540 and split.seed == 3
    assert len(np.intersect1d(split.train(0), split.val[0])) == 0


def test_leakage_json_holds_the_class_balance_of_the_default_grouped_split(fitted: Path) -> None:
    report = json.loads((fitted / "leakage.json").read_text())
    split, balance = Split.load(fitted / "split.npz"), report["class_balance"]
    assert split.params["grouped"]  # the digits hold a few near-duplicate clusters: the default keeps them together
    parts = {part["part"]: part for part in balance["parts"]}
    assert set(parts) == {"test", "fold_0/val", "fold_0/train"} and parts["test"]["n"] == len(split.test)
    for part in parts.values():
        assert sum(part["shares"]) == pytest.approx(1, abs=1e-3)
    worst = max(parts.values(), key=lambda part: abs(part["points"]))
    assert balance["largest"]["points"] == worst["points"] and abs(worst["points"]) < 5


def test_tensorboard_has_curves_lr_and_hparams(fitted: Path) -> None:
    logged = scalars(fitted)
    for tag in ("train/loss", "val/loss", "train/acc", "val/acc"):
        assert [step for step, _ in logged[tag]] == [0, 1, 2], tag  # one point per epoch, x-axis = epoch
    assert logged["train/loss"][-1][1] < logged["train/loss"][0][1]
    assert all(value == pytest.approx(0.05) for _, value in logged["lr-SGD"])
    assert not [tag for tag in logged if tag.startswith("hp/")]  # no single-point hp/* charts in the Scalars tab
    assert "_hparams_/session_start_info" in plugin_tags(fitted / "summary", "hparams")  # the trial: a sub-run
    assert plugin_tags(fitted, "custom_scalars")  # the train-vs-val chart layout


def test_console_prints_one_line_per_epoch_and_the_result(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *FAST, "--trainer.enable_progress_bar", "false"]) == 0
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("Epoch [")]
    assert len(epochs) == 3 and epochs[0].startswith("Epoch [1/3], Train Loss: ")
    assert "Validation Loss: " in epochs[0] and "Validation Acc: " in epochs[0]
    assert any(line.startswith("Accuracy of the model on the 360 test images: ") for line in out)
    assert out[-1] == f"run dir: {Path('lightning_logs') / 't' / 'version_0'}"


def test_checkpoint_loads_weights_only_and_tests(fitted: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    best = next((fitted / "checkpoints").glob("best-epoch*.ckpt"))
    state = torch.load(best, map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["optimizer"]["init_args"]["momentum"] == 0.9
    model = Classifier.load_from_checkpoint(best, weights_only=True)
    assert model.hparams.num_classes == 10
    monkeypatch.chdir(tmp_path)
    assert main(["test", "--ckpt_path", str(best), "--trainer.logger", "false"]) == 0
    # model and data settings come from the checkpoint: the same 540-image test split gets the same score
    expected = json.loads((fitted / "metrics.json").read_text())["test/acc"]
    assert f"Accuracy of the model on the test images: {100 * expected:.2f} %" in capsys.readouterr().out


def test_predict_writes_probabilities(fitted: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "pred.csv"
    ckpt = next((fitted / "checkpoints").glob("best-epoch*.ckpt"))  # the checkpoint fit scored on the test split
    assert main(["predict", "--ckpt_path", str(ckpt), "--predict.output", str(out), "--trainer.logger", "false"]) == 0
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:3] == ["id", "label", "predicted"] and len(rows) == 541
    probs = np.array([[float(v) for v in row.split(",")[3:]] for row in rows[1:]])
    assert probs.shape == (540, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)
    # the predictions are the ones fit scored: their accuracy is the run's test accuracy
    correct = np.mean([row.split(",")[1] == row.split(",")[2] for row in rows[1:]])
    assert correct == pytest.approx(json.loads((fitted / "metrics.json").read_text())["test/acc"], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv"]  # nothing else written


def test_predict_a_plain_folder_of_images(fitted: Path, tmp_path: Path, monkeypatch) -> None:
    from datagen import write_image

    monkeypatch.chdir(tmp_path)
    for i in range(3):
        write_image(tmp_path / "new" / f"scan_{i}.png", size=8, seed=i)
    (tmp_path / "new" / "notes.txt").write_text("not an image")
    out = tmp_path / "pred.csv"
    ckpt = str(fitted / "checkpoints" / "last.ckpt")
    args = ["--predict.source", str(tmp_path / "new"), "--predict.output", str(out), "--trainer.logger", "false"]
    assert main(["predict", "--ckpt_path", ckpt, *args]) == 0
    rows = out.read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["scan_0.png", "scan_1.png", "scan_2.png"]
    assert all(row.split(",")[1] == "" for row in rows[1:])  # no labels for plain images
    write_image(tmp_path / "big" / "x.png", size=16)
    assert main(["predict", "--ckpt_path", ckpt, "--predict.source", str(tmp_path / "big"), *args[2:]]) == 2


def test_config_typo_names_the_key(capsys) -> None:
    assert main(["fit", "--model.hiden_sizes", "[512]"]) == 2
    assert "unknown option --model.hiden_sizes; did you mean --model.hidden_sizes?" in capsys.readouterr().err


def test_print_config_round_trips(tmp_path: Path, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", "experiments/seed_mlp.yaml", "--print_config"])
    printed = capsys.readouterr().out
    assert "hidden_sizes:" in printed and "class_path: torch.optim.SGD" in printed
    config = tmp_path / "c.yaml"
    config.write_text(printed)
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "fit",
                "--config",
                str(config),
                "--trainer.max_epochs",
                "1",
                "--trainer.logger.init_args.name",
                "p",
            ]
        )
        == 0
    )
    run = tmp_path / "lightning_logs" / "p" / "version_0"
    assert (run / "metrics.json").exists()
    # nothing of the printed config was lost on the way back in
    used = yaml.safe_load((run / "config.yaml").read_text())
    assert used["model"]["hidden_sizes"] == [512, 512] and used["model"]["dropout"] == 0.2
    assert used["optimizer"]["class_path"] == "torch.optim.SGD" and used["optimizer"]["init_args"]["lr"] == 0.001
    assert used["data"]["batch_size"] == 16 and used["trainer"]["max_epochs"] == 1


def test_lr_find_saves_plot_and_suggestion(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["lr-find", "--lr_find.num_training", "30", "--trainer.logger.init_args.name", "lr"]
    assert main(args) == 0
    assert (tmp_path / "lightning_logs" / "lr" / "version_0" / "lr_find.png").exists()
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("Suggested learning rate: "))
    suggestion = float(line.split()[3])
    assert 1e-6 <= suggestion <= 1.0  # inside the range searched (the --lr_find defaults)
    assert f"--optimizer.lr {suggestion:.3g}" in line
