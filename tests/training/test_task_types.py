"""A ``fit`` of every task type: trained with the real Trainer, scored with MedMNIST's official ACC/AUC.

Tiny synthetic ImageSets with the task type set (multi-label labels ``N×L`` 0/1), served by
``MedMNISTDataModule.around`` with a fixed split (the split strategies' multi-label support is another module's).
The official numbers in ``metrics.json`` must equal ``medmnist.evaluator``'s on the saved ``test_predictions.csv``.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from tbevents import scalars

from medmnist_lit.data.datamodule import MedMNISTDataModule
from medmnist_lit.data.imageset import ImageSet
from medmnist_lit.data.tasks import ORDINAL_NOTE, TaskKind
from medmnist_lit.model.classifier import Classifier
from medmnist_lit.model.official_metrics import majority_baseline, official_metrics
from medmnist_lit.splits.split import Split, as_index
from medmnist_lit.training.fit import default_callbacks, default_logger, fit_and_test
from medmnist_lit.training.predict import predict_to_csv
from medmnist_lit.utils.checkpoints import load_checkpoint

N, SIZE, N_TEST, N_VAL = 160, 8, 40, 30
OFFICIAL = ("official_acc", "official_auc", "majority_official_acc", "majority_official_auc")
LABELS = ("effusion", "mass", "nodule")


@dataclass
class Fitted:
    kind: TaskKind
    data: ImageSet
    datamodule: MedMNISTDataModule
    model: Classifier
    trainer: L.Trainer
    run: Path
    metrics: dict[str, float]
    console: str


def task_data(kind: TaskKind, seed: int = 0) -> ImageSet:
    """Images whose brightness pattern follows the class (or each label adds its own pattern)."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 40, (4, SIZE, SIZE))
    if kind is TaskKind.MULTILABEL:
        labels = (rng.random((N, len(LABELS))) < [0.5, 0.35, 0.2]).astype(np.uint8)
        names: tuple[str, ...] = LABELS
        signal = np.einsum("nl,lhw->nhw", labels.astype(float), patterns[:3])
    else:
        k = 2 if kind is TaskKind.BINARY else 4
        labels = rng.choice(k, N, p=[0.6, 0.4] if k == 2 else [0.4, 0.3, 0.2, 0.1]).astype(np.int64)
        names = tuple(f"grade{i}" for i in range(k))
        signal = patterns[labels]
    images = np.clip(128 + signal + rng.normal(0, 15, (N, SIZE, SIZE)), 0, 255).astype(np.uint8)
    return ImageSet(images, labels, names, np.array([f"s{i:03d}" for i in range(N)]), task_kind=kind)


def fixed_split() -> Split:
    index = np.arange(N)
    dev, val = index[N_TEST:], index[N_TEST : N_TEST + N_VAL]
    empty = as_index([])
    return Split("holdout", N, as_index(index[:N_TEST]), as_index(dev), (as_index(val),), (empty,), 0, {})


class Lines(logging.Handler):
    """Collects the console's messages."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def fit(kind: TaskKind, root: Path, **model: Any) -> Fitted:
    L.seed_everything(0, verbose=False)
    data = task_data(kind)
    hparams = {"source": str(root / "data.npz"), "group_by": None, "batch_size": 16, "standardize": True}
    datamodule = MedMNISTDataModule.around(data, hparams, split=fixed_split(), fingerprint="synthetic")
    classifier = Classifier(optimizer={"class_path": "torch.optim.Adam", "init_args": {"lr": 0.03}}, **model)
    trainer = L.Trainer(
        max_epochs=4,
        logger=default_logger(save_dir=str(root)),
        callbacks=default_callbacks(progress_bar=False),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    logger, lines = logging.getLogger("medmnist_lit"), Lines()
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(lines)
    try:
        result = fit_and_test(trainer, classifier, datamodule, audit=kind is not TaskKind.MULTILABEL)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    console = "\n".join(lines.lines)
    return Fitted(kind, data, datamodule, classifier, trainer, result.run_dir, result.metrics, console)


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    # medmnist.info makes ~/.medmnist when first imported: let that happen in a temporary home
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        return importlib.import_module("medmnist.evaluator")


@pytest.fixture(scope="module", params=[TaskKind.BINARY, TaskKind.ORDINAL, TaskKind.MULTILABEL], ids=lambda k: k.name)
def fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    kind: TaskKind = request.param
    weights = {"class_weights": "balanced"} if kind is TaskKind.MULTILABEL else {}
    return fit(kind, tmp_path_factory.mktemp(kind.name.lower()), **weights)


def saved_predictions(fitted: Fitted) -> tuple[np.ndarray, np.ndarray]:
    """MedMNIST-layout targets ((N, 1) or (N, L)) and the probabilities of ``test_predictions.csv``."""
    with (fitted.run / "test_predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = fitted.data.class_names
    probs = np.array([[float(r[f"p_{n}"]) for n in names] for r in rows])
    if fitted.kind is TaskKind.MULTILABEL:
        return np.array([[int(r[f"label_{n}"]) for n in names] for r in rows]), probs
    assert [int(r["predicted"]) for r in rows] == probs.argmax(1).tolist()
    return np.array([[int(r["label"])] for r in rows]), probs


def test_metrics_json_has_the_official_scores_and_the_baseline(fitted: Fitted) -> None:
    metrics = json.loads((fitted.run / "metrics.json").read_text())
    for stage in ("val", "test"):
        for key in (*OFFICIAL, "acc", "f1", "auroc", "loss", "majority_acc"):
            assert np.isfinite(metrics[f"{stage}/{key}"]), f"{stage}/{key}"
    if fitted.kind is TaskKind.MULTILABEL:
        assert {f"test/{m}_{n}" for m in ("acc", "auroc") for n in LABELS} <= set(metrics)
        assert "test/acc_binom95_low" not in metrics and "test/auroc_boot95_low" in metrics
    data = fitted.data
    train = fitted.datamodule.split.train(0)
    for stage, index in (("val", fitted.datamodule.split.val[0]), ("test", fitted.datamodule.split.test)):
        baseline = majority_baseline(data.labels[train], data.labels[index], data.task)
        assert metrics[f"{stage}/majority_official_acc"] == pytest.approx(baseline.acc)
        assert metrics[f"{stage}/majority_official_auc"] == pytest.approx(baseline.auc)
    # the model learnt the planted patterns, so it beats the baseline and no warning is given
    assert metrics["test/official_auc"] > 0.8
    assert metrics["test/official_acc"] > metrics["test/majority_official_acc"]


def test_official_scores_equal_medmnists_evaluator_on_the_saved_predictions(
    fitted: Fitted, evaluator: ModuleType
) -> None:
    y_true, y_score = saved_predictions(fitted)
    np.testing.assert_array_equal(y_true.squeeze(1) if y_true.shape[1] == 1 else y_true, fitted.data.labels[:N_TEST])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auc = evaluator.getAUC(y_true, y_score, fitted.kind.value)
        acc = evaluator.getACC(y_true, y_score, fitted.kind.value)
    # the CSV rounds the probabilities to 6 decimals
    assert fitted.metrics["test/official_auc"] == pytest.approx(auc, abs=1e-4)
    assert fitted.metrics["test/official_acc"] == pytest.approx(acc, abs=1e-4)
    assert official_metrics(y_true, y_score, fitted.kind) == pytest.approx((auc, acc))
    # the product's own accuracy is MedMNIST's ACC for these tasks (argmax, or per label at 0.5)
    assert fitted.metrics["test/acc"] == pytest.approx(fitted.metrics["test/official_acc"], abs=1e-6)


def test_tensorboard_and_console_show_the_official_scores(fitted: Fitted) -> None:
    logged = scalars(fitted.run / "summary")
    for stage in ("val", "test"):
        for key in OFFICIAL:
            [(_, value)] = logged[f"{stage}/{key}"]
            assert value == pytest.approx(fitted.metrics[f"{stage}/{key}"], rel=1e-6)
    m = fitted.metrics
    line = (
        f"MedMNIST metrics: test ACC {m['test/official_acc']:.3f} AUC {m['test/official_auc']:.3f} "
        f"(majority class: ACC {m['test/majority_official_acc']:.3f} AUC {m['test/majority_official_auc']:.3f})"
    )
    assert line in fitted.console.splitlines()
    assert "MedMNIST metrics: val ACC" in fitted.console
    per_label = "Accuracy (mean of its 3 per-label accuracies) of the model on the 40 test images: "
    assert (per_label in fitted.console) == (fitted.kind is TaskKind.MULTILABEL)
    assert fitted.console.count(ORDINAL_NOTE) == (fitted.kind is TaskKind.ORDINAL)
    assert "does not beat the majority-class baseline" not in fitted.console


def test_the_checkpoint_knows_the_task_and_the_head_its_loss(fitted: Fitted) -> None:
    best = fitted.trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    assert load_checkpoint(best)["hyper_parameters"]["task"] == fitted.kind.value
    model = fitted.model
    assert model.task == fitted.data.task
    logits = torch.randn(5, model.num_classes)
    expected = logits.sigmoid() if fitted.kind is TaskKind.MULTILABEL else logits.softmax(-1)
    assert torch.allclose(model.scores(logits), expected)
    if fitted.kind is TaskKind.MULTILABEL:  # "balanced": each label's negatives-to-positives ratio in training
        labels = fitted.data.labels[fitted.datamodule.split.train(0)]
        positives = labels.sum(0)
        assert model.class_weight is not None
        np.testing.assert_allclose(model.class_weight.numpy(), (len(labels) - positives) / positives, rtol=1e-6)


def test_predict_writes_the_labels_above_one_half(fitted: Fitted, tmp_path: Path) -> None:
    best = fitted.trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    path = predict_to_csv(trainer, fitted.model, fitted.datamodule, best, str(tmp_path / "p.csv"))
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = list(fitted.data.class_names)
    assert len(rows) == N_TEST
    for row, label in zip(rows, fitted.data.labels[:N_TEST], strict=True):
        p = np.array([float(row[f"p_{n}"]) for n in names])
        if fitted.kind is TaskKind.MULTILABEL:
            assert row["label"] == ";".join(n for n, on in zip(names, label, strict=True) if on)
            assert row["predicted"] == ";".join(n for n, v in zip(names, p, strict=True) if v > 0.5)
        else:
            assert row["label"] == names[int(label)] and row["predicted"] == names[int(p.argmax())]


def test_a_model_built_for_another_task_is_refused(tmp_path: Path) -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    with pytest.raises(MisconfigurationException, match="built for a multi-class task but the data's task is"):
        fit(TaskKind.ORDINAL, tmp_path, task="multi-class")
    with pytest.raises(ValueError, match=r"model\.task: unknown task type 'chest'"):
        Classifier(task="chest")


def test_the_cli_fits_an_ordinal_medmnist_dataset_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    """``fit --data.source medmnist:retinamnist`` (a file already in the root): the task comes from the data."""
    from datagen import make_npz

    from medmnist_lit.cli import main

    root = tmp_path / "medmnist"
    root.mkdir()
    monkeypatch.setenv("MEDMNIST_ROOT", str(root))
    monkeypatch.setenv("MEDMNIST_LIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    make_npz(root / "retinamnist.npz", n_train=40, n_val=15, n_test=15, num_classes=5, size=28)
    args = ["--data.source", "medmnist:retinamnist", "--data.split", "predefined", "--data.batch_size", "8"]
    args += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    assert main(["fit", *args, "--trainer.logger.init_args.name", "r"]) == 0
    lines = capsys.readouterr().out.splitlines()
    run = tmp_path / "lightning_logs" / "r" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {f"{s}/{k}" for s in ("val", "test") for k in OFFICIAL} <= set(metrics)
    official = [line for line in lines if line.startswith("MedMNIST metrics: ")]
    assert [line.split(" ACC")[0] for line in official] == ["MedMNIST metrics: val", "MedMNIST metrics: test"]
    assert sum(ORDINAL_NOTE in line for line in lines) == 1
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["task"] == TaskKind.ORDINAL.value
    # evaluating the checkpoint rebuilds the model for its task
    assert main(["test", *args, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]) == 0
