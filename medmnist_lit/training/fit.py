"""Run functions shared by the CLI, the cross-validation runner and the batch runner: they return results."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from medmnist_lit.callbacks import EpochNumberCheckpoint, EpochSummary, ProgressBar, RunArtifacts
from medmnist_lit.callbacks.run_artifacts import run_dir
from medmnist_lit.data.fold import Fold
from medmnist_lit.data.tasks import Task
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.splits.twins import twin_mask
from medmnist_lit.training.hparams import run_scores, trainer_settings, trial_hparams, write_trial
from medmnist_lit.training.official_scores import majority_target, official_line
from medmnist_lit.training.test_report import PREDICTIONS_FILE, interval_scores, interval_text, write_predictions
from medmnist_lit.training.twin_scores import baseline_warning, leakage_line, stage_scores
from medmnist_lit.utils.checkpoints import check_compatible, load_checkpoint, secure_trainer
from medmnist_lit.utils.files import write_json

log = logging.getLogger("medmnist_lit")

#: The scores of a stage shown on the console (``validate``, ``test``).
STAGE_METRICS = ("loss", "acc", "f1", "auroc")


@dataclass
class Scores:
    """Metrics of a model on a set of samples, with the probabilities behind them."""

    metrics: dict[str, float]
    confusion: Tensor
    probs: Tensor
    targets: Tensor


@dataclass
class RunResult:
    """What a trained fold (a ``fit``, a cross-validation fold, a refit) produced.

    Attributes:
        run_dir: The run directory (the fold's directory in cross-validation).
        metrics: Final numbers (``train/…`` of the scored epoch, ``val/…``, ``test/…`` and ``external/…`` of its
            weights) plus ``best_epoch`` (the scored epoch, counted from 1), ``epochs``, sample counts and
            ``seconds``; also written to ``metrics.json``.
        best_checkpoint: Path of the checkpoint that was scored, if one was saved.
        history: Per-epoch metrics, e.g. ``history["val/loss"]`` (epoch ``k`` at index ``k - 1``).
        val: Validation scores with their probabilities (for out-of-fold predictions).
        test: Test scores with their probabilities, when scored here (for a fold ensemble); ``None`` when the
            Trainer tested (``fit``: ``metrics`` has them) or there is no test split.
        external: Scores on the ``test_source`` data, if any.
    """

    run_dir: Path
    metrics: dict[str, float]
    best_checkpoint: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    val: Scores | None = None
    test: Scores | None = None
    external: Scores | None = None


def default_callbacks(
    *, monitor: str | None = "val/loss", progress_bar: bool = True, epoch_lines: bool = True, figures: bool = True
) -> list[Callback]:
    """Fresh instances of the callbacks every training run has.

    A checkpoint of the best epoch by ``monitor`` (lowest; ``best-epoch005.ckpt`` for the fifth epoch) and of the
    last one; LearningRateMonitor logs the learning rate applied at every optimizer step, against the step;
    EpochSummary prints one line per epoch; RunArtifacts writes the split, curves and confusion matrix.
    """
    callbacks: list[Callback] = [
        EpochNumberCheckpoint(
            monitor=monitor,
            mode="min",
            save_last=True,
            filename="best-epoch{epoch_number:03d}" if monitor else "epoch{epoch_number:03d}",
            auto_insert_metric_name=False,
        ),
        LearningRateMonitor(logging_interval="step"),
        RunArtifacts(figures=figures),
    ]
    if epoch_lines:
        callbacks.append(EpochSummary())
    if progress_bar:
        callbacks.append(ProgressBar())
    return callbacks


def default_logger(name: str = "medmnist", save_dir: str = "lightning_logs", **kwargs: Any) -> TensorBoardLogger:
    """TensorBoard logger writing ``<save_dir>/<name>/version_<n>`` without Lightning's placeholder hp_metric."""
    return TensorBoardLogger(save_dir=save_dir, name=name, default_hp_metric=False, **kwargs)


def _clean(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _best_epoch(checkpoint: str | None, history: dict[str, list[float]]) -> int | None:
    """The epoch (from 1) of ``checkpoint``, else the one with the lowest validation loss."""
    if checkpoint:
        return int(load_checkpoint(checkpoint)["epoch"]) + 1  # Lightning's counter is 0-based
    losses = history.get("val/loss")
    return 1 + int(min(range(len(losses)), key=losses.__getitem__)) if losses else None


@torch.inference_mode()
def score(model: Any, loader: Any, prefix: str, metrics: EpochMetrics | None = None) -> Scores:
    """Metrics of ``model`` on every batch of ``loader``, keyed ``<prefix>/<metric>``, outside any Trainer.

    Used for numbers that must not become extra TensorBoard points (the best checkpoint's validation
    scores) and for out-of-fold predictions. ``metrics`` may be reused across calls (it is reset after each):
    building torchmetrics objects costs milliseconds, which adds up over the thousand folds of a LOO run.
    """
    was_training = model.training
    model.eval()
    # every process scores all samples itself: no synchronisation across processes
    if metrics is None:
        if hasattr(model, "new_metrics"):  # a Classifier: metrics of its task
            metrics = model.new_metrics(sync=False).to(model.device)
        else:
            metrics = EpochMetrics(model.hparams.num_classes, model.hparams.class_names, sync=False).to(model.device)
    for x, y in loader:
        logits = model(x.to(model.device))
        metrics.update(logits, y.to(model.device), model.loss(logits, y.to(model.device)))
    model.train(was_training)
    scalars, confusion, probs, targets = metrics.compute()
    return Scores({f"{prefix}/{k}": v for k, v in scalars.items()}, confusion, probs, targets)


def fold_result(
    model: Any,
    datamodule: Any,
    fold: Fold,
    directory: Path,
    history: dict[str, list[float]],
    *,
    scored_epoch: int | None,
    started: float,
    loggers: Sequence[Logger],
    test: dict[str, float] | None = None,
    checkpoint: str | None = None,
    write: bool = True,
    save_yaml: bool = True,
    metrics: EpochMetrics | None = None,
    report: bool = False,
) -> RunResult:
    """Turn a trained fold into its :class:`RunResult`, the same way for every engine.

    Scores ``model`` (holding the weights of epoch ``scored_epoch``, counted from 1) on the fold's validation
    samples, the test split (unless ``test`` already has those metrics; the scores are logged to ``loggers`` at the
    last epoch) and the ``test_source`` data, then writes ``metrics.json`` and flushes the loggers. Validation and
    test scores are also split by whether a sample has a near-duplicate in ``fold.train`` (``val/with_twin/acc`` ...)
    and come with the majority-class baseline and MedMNIST's official ACC/AUC (:mod:`medmnist_lit.training.twin_scores`,
    :mod:`medmnist_lit.training.official_scores`), from the same probabilities.

    Args:
        model: The trained :class:`~medmnist_lit.model.classifier.Classifier`.
        datamodule: The :class:`~medmnist_lit.data.datamodule.MedMNISTDataModule` the fold comes from.
        fold: The fold that was trained.
        directory: Where ``metrics.json`` goes.
        history: The fold's per-epoch metrics.
        scored_epoch: The epoch whose weights ``model`` holds (``None``: the last).
        started: ``time.perf_counter()`` when the fold started (its ``seconds`` run to now).
        loggers: The fold's loggers.
        test: Test metrics already computed (and logged) by ``Trainer.test``.
        checkpoint: The checkpoint file that was scored.
        write: Write the files (``False`` on all but the first of several processes).
        save_yaml: Let the loggers write ``hparams.yaml`` (slow: skipped for the thousand folds of a LOO run).
        metrics: A metrics object to reuse for scoring (building one costs milliseconds).
        report: The run is reported on its own (a ``fit``): add test intervals to the metrics and write
            ``test_predictions.csv``.
    """
    epochs = len(history.get("train/loss", []))
    scored = epochs if scored_epoch is None else scored_epoch
    result: dict[str, float] = {
        k: v[scored - 1] for k, v in history.items() if k.startswith("train/") and 0 < scored <= len(v)
    }
    device, test_index = model.device, datamodule.split.test

    def scores(index: np.ndarray, prefix: str) -> Scores:
        loader = datamodule.loader(index, shard=False, device=device, transform=fold.transform)
        return score(model, loader, prefix, metrics)

    val = scores(fold.val, "val") if len(fold.val) else None
    tested = test_scores = None
    if test is not None:
        result.update(test)
        if len(test_index):  # Trainer.test keeps no probabilities: score again (cheap) for the stratified scores
            test_scores = scores(test_index, "test")
    elif len(test_index):
        tested = scores(test_index, "test")
        result.update(tested.metrics)
        logged = {k: v for k, v in tested.metrics.items() if not math.isnan(v)}
        for logger in loggers:
            logger.log_metrics(logged, step=max(epochs - 1, 0))
        test_scores = tested
    if val is not None:
        result.update(val.metrics)
    task = getattr(datamodule, "task", None) or Task.single_label(datamodule.dataset.class_names)
    result.update(_stratified(datamodule.dataset, task, fold, val, test_index, test_scores))
    if report and test_scores is not None:
        result.update(interval_scores(test_scores.probs, test_scores.targets))
        if write:
            predicted = None if task.multilabel else test_scores.probs.argmax(1).numpy()
            path = directory / PREDICTIONS_FILE
            write_predictions(path, test_index, datamodule.dataset, predicted, probs=test_scores.probs.numpy())
    external = None
    if getattr(datamodule, "test_source", None):
        external = score(model, datamodule.external_loader(device, fold.transform), "external", metrics)
        result.update(external.metrics)
    result.update(
        best_epoch=float(scored),
        epochs=float(epochs),
        n_train=float(len(fold.train)),
        n_val=float(len(fold.val)),
        n_test=float(len(test_index)),
        seconds=time.perf_counter() - started,
    )
    if write:
        write_json(directory / "metrics.json", result)
        finish_loggers(loggers, save_yaml=save_yaml)
    return RunResult(directory, result, checkpoint, history, val, tested, external)


def _stratified(
    data: Any, task: Task, fold: Fold, val: Scores | None, test_index: np.ndarray, test: Scores | None
) -> dict[str, float]:
    """Validation and test scores with and without a near-duplicate in ``fold.train``, baseline and official scores."""
    clusters = data.near_clusters
    majority = majority_target(np.asarray(data.labels)[fold.train], task)
    result: dict[str, float] = {}
    for stage, index, scored in (("val", fold.val, val), ("test", test_index, test)):
        if scored is not None:
            twin = None if clusters is None else twin_mask(clusters, index, fold.train)
            result.update(stage_scores(stage, scored.probs, scored.targets, twin=twin, majority=majority, task=task))
    return result


def finish_loggers(loggers: Sequence[Logger], *, save_yaml: bool = True) -> None:
    """Flush and close the loggers, so the run is complete on disk when its function returns.

    ``save_yaml=False`` skips a TensorBoard logger's ``hparams.yaml`` (slow to write, once per fold of a
    leave-one-out run); otherwise the loggers are finalised as Lightning finalises them.
    """
    for logger in loggers:
        if save_yaml or not isinstance(logger, TensorBoardLogger):
            logger.finalize("success")  # flush now: the run is complete on disk when fit_and_test returns
        else:
            logger.experiment.flush()
            logger.experiment.close()


def fit_and_test(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: Any,
    *,
    ckpt_path: str | None = None,
    announce: bool = True,
    audit: bool = True,
    checkpoint: Literal["best", "last"] = "best",
    trainer_test: bool = True,
    trial: bool = True,
) -> RunResult:
    """Train the DataModule's fold, then score the best checkpoint (or the last epoch); write ``metrics.json``.

    Args:
        trainer: A trainer with the callbacks of :func:`default_callbacks` (or any ModelCheckpoint).
        model: A :class:`~medmnist_lit.model.classifier.Classifier`.
        datamodule: A :class:`~medmnist_lit.data.datamodule.MedMNISTDataModule`; its ``selected_fold`` is trained.
        ckpt_path: Resume training from this checkpoint.
        announce: Log the test accuracy and the run directory.
        audit: Run the leakage audit of the data and split first and save it as ``leakage.json``.
        checkpoint: Score the ``best`` checkpoint (lowest validation loss) or the ``last`` epoch's weights. Picking
            the best epoch by validation loss makes that validation score optimistic; the test score stays honest.
        trainer_test: Test with ``Trainer.test`` (its callbacks draw the confusion matrix); ``False`` scores the
            test split directly and keeps the probabilities (cross-validation's fold ensemble).
        trial: Record the run as a trial of TensorBoard's HParams tab (:mod:`medmnist_lit.training.hparams`); the
            folds and the refit of a cross-validation are not trials (the cross-validation is).

    Returns:
        The run's :class:`RunResult` (see :func:`fold_result`).
    """
    start = time.perf_counter()
    seed = os.environ.get("PL_GLOBAL_SEED")  # set by seed_everything (LightningCLI calls it before building the run)
    secure_trainer(trainer)
    if ckpt_path and list(model.parameters()):  # fail before the run directory exists, not halfway into it
        check_compatible(load_checkpoint(ckpt_path), model, ckpt_path)
    directory = run_dir(trainer)  # on every process: a collective call with several
    if audit and trainer.is_global_zero:
        audit_run(datamodule, directory)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None if checkpoint == "best" else None
    history = {k: list(v) for k, v in getattr(model, "history", {}).items()}
    scored = _best_epoch(best, history) if checkpoint == "best" else None
    test = None
    if trainer_test and len(datamodule.indices("test")):
        test = _clean(trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)[0], "test/")
    elif best:  # Trainer.test would have loaded it
        model.load_state_dict(load_checkpoint(best, map_location=model.device)["state_dict"])
    result = fold_result(
        model,
        datamodule,
        datamodule.selected_fold,
        directory,
        history,
        scored_epoch=scored,
        started=start,
        loggers=trainer.loggers,
        test=test,
        checkpoint=best,
        write=trainer.is_global_zero,
        report=trial,
    )
    metrics = result.metrics
    if trial and trainer.is_global_zero:
        hparams = trial_hparams(
            model.hparams,
            getattr(datamodule, "hparams", {}),
            trainer_settings(trainer),
            seed=None if seed is None else int(seed),
        )
        # the scores sit on the run's curves: at the scored epoch (the x-axis of epoch metrics is the 0-based epoch)
        write_trial(directory, hparams, run_scores(metrics), step=int(metrics["best_epoch"]) - 1)
    if trainer.is_global_zero and announce:
        announce_scores(metrics, datamodule)
        log.info("run dir: %s", directory)
    return result


def announce_scores(metrics: dict[str, float], datamodule: Any) -> None:
    """The console's closing scores of a run: the test accuracy and every score the user asked for as well."""
    if "test/acc" in metrics:
        accuracy, others = interval_text(metrics)
        majority = metrics.get("test/majority_acc", math.nan)
        baseline = "" if math.isnan(majority) else f"; majority-class baseline {100 * majority:.2f} %"
        task: Task | None = getattr(datamodule, "task", None)
        labels = f" (mean of its {task.num_outputs} per-label accuracies)" if task and task.multilabel else ""
        log.info(
            "Accuracy%s of the model on the %d test images: %.2f %%%s%s",
            labels,
            int(metrics["n_test"]),
            100 * metrics["test/acc"],
            accuracy,
            baseline,
        )
        if others:
            log.info("%s", others)
    for stage in ("val", "test"):
        official = official_line(stage, metrics)
        if official:
            log.info("%s", official)
    note = getattr(getattr(datamodule, "task", None), "note", None)
    if note and any(f"{stage}/official_acc" in metrics for stage in ("val", "test")):
        log.info("Note: %s", note)
    for stage in ("val", "test"):
        line = leakage_line(stage, metrics)
        if line:
            log.info("%s", line)
        warning = baseline_warning(stage, metrics)
        if warning:
            log.warning("WARNING: %s", warning)
    if "external/acc" in metrics:
        external = getattr(datamodule, "external", None)
        count = f"{len(external.labels)} " if external is not None else ""
        log.info(
            "Accuracy of the model on the %simages of %s (--data.test_source): %.2f %%",
            count,
            getattr(datamodule, "test_source", "the external source"),
            100 * metrics["external/acc"],
        )


def audit_run(datamodule: Any, directory: Path) -> dict[str, Any]:
    """Leakage audit of the data and its split with the split's class balance, saved as ``leakage.json``.

    Leaks are logged as warnings.
    """
    import warnings

    from medmnist_lit.splits.audit import audit
    from medmnist_lit.splits.balance import class_balance

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = audit(datamodule.dataset, datamodule.split)
    data = datamodule.dataset
    report["class_balance"] = class_balance(data.labels, datamodule.split, data.class_names)
    write_json(directory / "leakage.json", report)
    exact, near = report["exact"]["n_pairs"], report["near"]["n_pairs"]
    log.info(
        "leakage audit: %d exact-duplicate and %d near-duplicate pairs (%s)", exact, near, directory / "leakage.json"
    )
    for warning in caught:
        log.warning("WARNING: %s", warning.message)
    return report


def log_stage_result(command: str, result: dict[str, Any], trainer: L.Trainer) -> None:
    """Log the outcome of ``validate``/``test`` in one line each."""
    stage = "val" if command == "validate" else "test"
    scores = ", ".join(
        f"{name}: {float(result[f'{stage}/{name}']):.4f}" for name in STAGE_METRICS if f"{stage}/{name}" in result
    )
    log.info("%s %s", command, scores)
    if f"{stage}/acc" in result:
        log.info("Accuracy of the model on the %s images: %.2f %%", stage, 100 * float(result[f"{stage}/acc"]))
