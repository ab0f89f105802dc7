"""Run functions shared by the CLI, the cross-validation runner and the batch runner: they return results."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from medmnist_lit.callbacks import EpochSummary, ProgressBar, RunArtifacts
from medmnist_lit.callbacks.run_artifacts import run_dir
from medmnist_lit.model.metrics import EpochMetrics
from medmnist_lit.utils.checkpoints import check_compatible, load_checkpoint, secure_trainer
from medmnist_lit.utils.files import write_json

log = logging.getLogger("medmnist_lit")

#: Metrics copied into TensorBoard's HParams tab, as ``hp/<stage>_<metric>``.
HPARAM_METRICS = ("loss", "acc", "f1", "auroc")


@dataclass
class Scores:
    """Metrics of a model on a set of samples, with the probabilities behind them."""

    metrics: dict[str, float]
    confusion: Tensor
    probs: Tensor
    targets: Tensor


@dataclass
class RunResult:
    """What a finished ``fit`` produced.

    Attributes:
        run_dir: The run directory.
        metrics: Final numbers (``train/…`` and ``val/…`` of the best epoch, ``test/…`` of the best checkpoint)
            plus ``best_epoch``, ``epochs``, sample counts and ``seconds``; also written to ``metrics.json``.
        best_checkpoint: Path of the best checkpoint, if one was saved.
        history: Per-epoch metrics, e.g. ``history["val/loss"]``.
        val: The best checkpoint's validation scores with their probabilities (for out-of-fold predictions).
    """

    run_dir: Path
    metrics: dict[str, float]
    best_checkpoint: str | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    val: Scores | None = None


def default_callbacks(
    *, monitor: str | None = "val/loss", progress_bar: bool = True, epoch_lines: bool = True, figures: bool = True
) -> list[Callback]:
    """Fresh instances of the callbacks every training run has.

    ModelCheckpoint keeps the best epoch by ``monitor`` (lowest) and the last one; LearningRateMonitor logs the
    learning rate actually applied; EpochSummary prints one line per epoch; RunArtifacts writes the split,
    curves and confusion matrix.
    """
    callbacks: list[Callback] = [
        ModelCheckpoint(
            monitor=monitor,
            mode="min",
            save_last=True,
            filename="best-epoch{epoch:03d}" if monitor else "epoch{epoch:03d}",
            auto_insert_metric_name=False,
        ),
        LearningRateMonitor(),
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
    if checkpoint:
        return int(load_checkpoint(checkpoint)["epoch"])
    losses = history.get("val/loss")
    return int(min(range(len(losses)), key=losses.__getitem__)) if losses else None


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
        metrics = EpochMetrics(model.hparams.num_classes, model.hparams.class_names, sync=False).to(model.device)
    for x, y in loader:
        logits = model(x.to(model.device))
        metrics.update(logits, y.to(model.device), model.loss(logits, y.to(model.device)))
    model.train(was_training)
    scalars, confusion, probs, targets = metrics.compute()
    return Scores({f"{prefix}/{k}": v for k, v in scalars.items()}, confusion, probs, targets)


def evaluate(
    trainer: L.Trainer, model: Any, datamodule: Any, ckpt_path: str | None
) -> tuple[dict[str, float], Scores | None]:
    """Score ``ckpt_path`` (or the model as it is): test (logged to TensorBoard), validation, external source.

    Afterwards the model holds the checkpoint's weights.

    Returns:
        The metrics, and the validation scores with their probabilities (``None`` without validation data).
    """
    secure_trainer(trainer)
    metrics: dict[str, float] = {}
    if len(datamodule.indices("test")):
        metrics.update(
            _clean(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0], "test/")
        )
    elif ckpt_path:
        model.load_state_dict(load_checkpoint(ckpt_path, map_location=model.device)["state_dict"])
    val = None
    if len(datamodule.indices("val")):
        val = score(model, datamodule.loader(datamodule.indices("val"), shard=False), "val")
        metrics.update(val.metrics)
    if getattr(datamodule, "test_source", None):
        metrics.update(score(model, datamodule.external_loader(), "external").metrics)
    return metrics, val


def log_hparams(
    loggers: Sequence[Logger],
    model: L.LightningModule,
    datamodule: Any,
    metrics: dict[str, float],
    *,
    raw: bool = False,
    save_yaml: bool = True,
) -> None:
    """Record hyperparameters with the final metrics, so TensorBoard's HParams tab compares runs.

    ``metrics`` are run metrics (``val/acc``...) turned into ``hp/val_acc``...; with ``raw`` they are used as given.
    The loggers are finalised (flushed); ``save_yaml=False`` skips their ``hparams.yaml`` (slow to write, once
    per fold of a leave-one-out run).
    """
    params = {**{f"model/{k}": v for k, v in model.hparams.items()}}
    params.update({f"data/{k}": v for k, v in getattr(datamodule, "hparams", {}).items()})
    hp_metrics = (
        metrics
        if raw
        else {
            f"hp/{stage}_{name}": metrics[f"{stage}/{name}"]
            for stage in ("train", "val", "test", "external")
            for name in HPARAM_METRICS
            if f"{stage}/{name}" in metrics and not math.isnan(metrics[f"{stage}/{name}"])
        }
    )
    for logger in loggers:
        logger.log_hyperparams(params, metrics=hp_metrics or None)
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
) -> RunResult:
    """Train, then score the best checkpoint on validation and test data; write ``metrics.json``.

    Args:
        trainer: A trainer with the callbacks of :func:`default_callbacks` (or any ModelCheckpoint).
        model: A :class:`~medmnist_lit.model.classifier.Classifier`.
        datamodule: A :class:`~medmnist_lit.data.datamodule.MedMNISTDataModule`.
        ckpt_path: Resume training from this checkpoint.
        announce: Log the test accuracy and the run directory.
        audit: Run the leakage audit of the data and split first and save it as ``leakage.json``.
        checkpoint: Score the ``best`` checkpoint (lowest validation loss) or the ``last`` epoch's weights. Picking
            the best epoch by validation loss makes that validation score optimistic; the test score stays honest.

    Returns:
        The run's :class:`RunResult`.
    """
    start = time.perf_counter()
    secure_trainer(trainer)
    if ckpt_path:  # fail before the run directory exists, not halfway into it
        check_compatible(load_checkpoint(ckpt_path), model, ckpt_path)
    directory = run_dir(trainer)  # on every process: a collective call with several
    if audit and trainer.is_global_zero:
        audit_run(datamodule, directory)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None if checkpoint == "best" else None
    history = {k: list(v) for k, v in getattr(model, "history", {}).items()}
    epochs = len(history.get("train/loss", []))
    best_epoch = _best_epoch(best, history) if checkpoint == "best" else epochs - 1

    metrics: dict[str, float] = {}
    if best_epoch is not None:
        metrics.update({k: v[best_epoch] for k, v in history.items() if k.startswith("train/") and best_epoch < len(v)})
    scores, val = evaluate(trainer, model, datamodule, best)
    metrics.update(scores)
    sizes = datamodule.describe()
    metrics.update(
        best_epoch=float(best_epoch if best_epoch is not None else epochs - 1),
        epochs=float(epochs),
        n_train=float(sizes["n_train"]),
        n_val=float(sizes["n_val"]),
        n_test=float(sizes["n_test"]),
        seconds=time.perf_counter() - start,
    )
    if trainer.is_global_zero:
        write_json(directory / "metrics.json", metrics)
        log_hparams(trainer.loggers, model, datamodule, metrics)
    if trainer.is_global_zero and announce:
        if "test/acc" in metrics:
            log.info(
                "Accuracy of the model on the %d test images: %.2f %%",
                int(metrics["n_test"]),
                100 * metrics["test/acc"],
            )
        log.info("run dir: %s", directory)
    return RunResult(directory, metrics, best, history, val)


def audit_run(datamodule: Any, directory: Path) -> dict[str, Any]:
    """Leakage audit of the data and its split, saved as ``leakage.json``; leaks are logged as warnings."""
    import warnings

    from medmnist_lit.splits.audit import audit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = audit(datamodule.dataset, datamodule.split)
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
        f"{name}: {float(result[f'{stage}/{name}']):.4f}" for name in HPARAM_METRICS if f"{stage}/{name}" in result
    )
    log.info("%s %s", command, scores)
    if f"{stage}/acc" in result:
        log.info("Accuracy of the model on the %s images: %.2f %%", stage, 100 * float(result[f"{stage}/acc"]))


@dataclass
class LRFindResult:
    """Outcome of the learning-rate range test."""

    suggestion: float | None
    plot: Path
    lrs: list[float]
    losses: list[float]


def find_lr(trainer: L.Trainer, model: L.LightningModule, datamodule: Any, options: Any) -> LRFindResult:
    """Run Lightning's ``Tuner.lr_find`` and save the loss-versus-learning-rate plot with its suggestion."""
    import matplotlib

    matplotlib.use("Agg")
    from lightning.pytorch.tuner import Tuner

    from medmnist_lit.utils.plots import save_figure

    # the finder records one learning rate per Lightning batch: one optimizer step per batch
    datamodule.steps_per_block = 1
    finder = Tuner(trainer).lr_find(
        model,
        datamodule=datamodule,
        min_lr=options.min_lr,
        max_lr=options.max_lr,
        num_training=options.num_training,
        mode=options.mode,
        early_stop_threshold=options.early_stop_threshold,
        update_attr=False,  # the suggestion is reported, not applied: the optimizer config stays the source of truth
    )
    if finder is None:
        raise ValueError("lr-find does not run with --trainer.fast_dev_run; drop it")
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=suggestion is not None)
    path = run_dir(trainer) / "lr_find.png"
    save_figure(figure, path)
    if suggestion is None:
        log.info("No suggestion: the loss did not fall enough over the range; widen --lr_find.min_lr/max_lr")
    else:
        log.info("Suggested learning rate: %.3g  (train with --optimizer.lr %.3g)", suggestion, suggestion)
    log.info("plot: %s", path)
    return LRFindResult(suggestion, path, list(finder.results["lr"]), list(finder.results["loss"]))
