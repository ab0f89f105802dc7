"""Cross-validation and leave-one-out that researchers can trust.

Every fold gets a fresh model (seeded ``seed + fold``), optimizer, scheduler, callbacks and Trainer, its own
directory (``<run>/fold_<i>/`` with events, checkpoints and ``metrics.json``), and is scored on its own
validation fold. The run root gets ``folds.csv``, ``oof.csv`` (out-of-fold probabilities of every non-test
sample) and ``summary.json`` (mean, std, sem and 95% interval of every metric across folds; pooled
out-of-fold accuracy and AUROC; the held-out test set scored by the ensemble of fold models, and by a model
refit on all development data with ``--cv.refit``). In TensorBoard the root is one HParams trial with the fold
means under the names a fit uses, next to mean ± std learning curves across folds (:mod:`.tensorboard`).

Every task type runs (the data's :class:`~medmnist_lit.data.tasks.Task`): multi-label folds train a sigmoid per
label with BCE, in either engine. Folds, pooled out-of-fold scores and the ensemble also get MedMNIST's official
ACC and AUC beside the majority-class baseline's (``val/official_acc`` ... ``test/majority_official_auc``), and the
console prints them once with the task's note (ordinal grades).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch

from medmnist_lit.cv.figures import write_cv_figures
from medmnist_lit.cv.fold_parallel import folds_per_pass, several_devices, train_parallel, unsupported_reason
from medmnist_lit.cv.folds import TrainerRecipe, fresh_model
from medmnist_lit.cv.permutation import PermutationTest, check_permutations, permutation_test
from medmnist_lit.cv.ray_folds import ChunkJob, train_on_ray
from medmnist_lit.cv.summary import (
    OutOfFold,
    ensemble_metrics,
    fold_line,
    format_summary,
    reported_scores,
    summarize,
    summary_warnings,
    write_csv,
)
from medmnist_lit.cv.tensorboard import write_cv_tensorboard
from medmnist_lit.data.fold import Fold
from medmnist_lit.model.official_metrics import official_metrics
from medmnist_lit.splits.twins import twin_mask
from medmnist_lit.training.fit import RunResult, audit_run, fit_and_test
from medmnist_lit.training.hparams import trial_hparams
from medmnist_lit.training.official_scores import majority_target
from medmnist_lit.training.test_report import PREDICTIONS_FILE, interval_scores, write_predictions
from medmnist_lit.training.twin_scores import stage_scores
from medmnist_lit.utils.console import process_rank
from medmnist_lit.utils.figure_style import describe_run
from medmnist_lit.utils.files import write_json
from medmnist_lit.utils.ray_runtime import RayOptions

log = logging.getLogger("medmnist_lit")

#: How the first process of a data-parallel cv (``--trainer.strategy ddp``) hands its run directory to the others:
#: Lightning's launcher starts them, when the first fold trains, with a copy of its environment.
RUN_DIR_VARIABLE = "MEDMNIST_LIT_CV_RUN_DIR"


@dataclass
class CVOptions:
    """Options of ``medmnist-lit cv``.

    Attributes:
        folds_to_run: Run only these folds (0-based); all by default. A fold's results do not depend on which
            other folds run.
        refit: Also train one model on all development data and score it on the test split.
        loo_limit: Refuse leave-one-out on more development samples, and leave-one-group-out with more groups, than
            this (each sample or group is one model).
        engine: ``auto`` trains the folds' heads together in one pass over the data when the setup allows it
            (:mod:`medmnist_lit.cv.fold_parallel`) and one after another otherwise; ``parallel`` or ``sequential`` force
            one. Both give the same results, to within float tolerance.
        folds_per_pass: Folds trained together in one pass (default: as many as fit in memory).
        checkpoint: Which weights of each fold are scored: ``last`` (the final epoch; the default, an honest
            estimate) or ``best`` (the epoch with the lowest loss on the fold's own validation samples — choosing
            the epoch on the very samples that are then scored makes the estimate optimistic, badly so for
            leave-one-out, where each fold validates on one image).
        executor: ``local`` trains the folds in this process; ``ray`` splits them into chunks (each what the engine
            does with those folds: one fold-parallel pass, or one fold after another) run as Ray tasks, on a local
            Ray or the cluster at ``ray_address``. The results are the same, to within float tolerance.
        ray_address: The Ray cluster to join (``ray start --head`` printed it); a local Ray when unset.
        chunk_size: Folds per Ray task (default: the folds spread evenly over the tasks that fit the cluster at
            once, at most the folds one pass holds).
        cpus_per_chunk: CPUs each Ray task reserves (its thread count); fractions allowed.
        gpus_per_chunk: GPUs each Ray task reserves; fractions share a GPU between tasks.
        permutations: After the cv, refit the same cv (folds, seeds, engine, executor) on this many permutations of
            the development labels and report the permutation p-value of its mean ``val/acc``
            (:mod:`medmnist_lit.cv.permutation`); 0 (the default) skips it. It costs N more cvs, each about as long
            as the real one without its refit (one pass over the data per permutation with the parallel engine);
            p < 0.05 needs N >= 20.
    """

    folds_to_run: list[int] | None = None
    refit: bool = False
    loo_limit: int = 2000
    engine: Literal["auto", "parallel", "sequential"] = "auto"
    folds_per_pass: int | None = None
    checkpoint: Literal["last", "best"] = "last"
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    chunk_size: int | None = None
    cpus_per_chunk: float = 1.0
    gpus_per_chunk: float = 0.0
    permutations: int = 0


@dataclass
class CVResult:
    """Outcome of a cross-validation run.

    Attributes:
        run_dir: The run root.
        summary: What ``summary.json`` holds.
        folds: One row per fold (``folds.csv``): its number, repeat and ``metrics.json``.
        histories: Each fold's per-epoch metrics (``histories[i]["val/loss"]``), in the order of ``folds``.
    """

    run_dir: Path
    summary: dict[str, Any]
    folds: list[dict[str, float]]
    histories: list[dict[str, list[float]]] = field(default_factory=list)


def choose_engine(options: CVOptions, model: Any, recipe: TrainerRecipe) -> tuple[str, str | None]:
    """``("parallel" | "sequential", reason for sequential)`` from ``cv.engine`` and what the setup supports."""
    if options.engine not in ("auto", "parallel", "sequential"):
        raise ValueError(f"cv.engine must be auto, parallel or sequential, got {options.engine!r}")
    if options.engine == "sequential":
        return "sequential", "cv.engine is sequential"
    reason = unsupported_reason(model, recipe.callbacks, recipe.kwargs)
    if reason is None:
        return "parallel", None
    if options.engine == "parallel":
        raise ValueError(f"cv.engine=parallel is not possible here: {reason}; use cv.engine auto or sequential")
    return "sequential", reason


def _sequential(
    model: Any,
    datamodule: Any,
    recipe: TrainerRecipe,
    run_dir: Path,
    folds: list[Fold],
    checkpoint: Literal["best", "last"],
) -> Iterator[tuple[Fold, RunResult]]:
    for fold in folds:
        L.seed_everything(fold.seed, workers=True, verbose=False)
        fold_model = fresh_model(model)
        trainer = recipe.build(run_dir / fold.name)
        data = datamodule.with_fold(fold)
        yield (
            fold,
            fit_and_test(
                trainer,
                fold_model,
                data,
                announce=False,
                audit=False,
                checkpoint=checkpoint,
                trainer_test=False,
                trial=False,
            ),
        )


def cross_validate(
    model: Any,
    datamodule: Any,
    recipe: TrainerRecipe,
    run_dir: Path,
    options: CVOptions | None = None,
    *,
    seed: int = 0,
) -> CVResult:
    """Train and score one fresh model per fold; write folds.csv, oof.csv, summary.json and the TensorBoard root.

    Args:
        model: Template whose hyperparameters every fold's fresh model gets (the template is not trained).
        datamodule: A :class:`~medmnist_lit.data.datamodule.MedMNISTDataModule` with a multi-fold split.
        recipe: Builds each fold's Trainer.
        run_dir: Run root (``lightning_logs/<name>/<run>``).
        options: Fold selection, refit, engine.
        seed: Base seed; fold ``i`` is seeded ``seed + i``.
    """
    options = options or CVOptions()
    start = time.perf_counter()
    split = datamodule.split
    data = datamodule.dataset
    task = datamodule.task
    numbers = list(range(split.n_folds)) if options.folds_to_run is None else list(options.folds_to_run)
    bad = [f for f in numbers if not 0 <= f < split.n_folds]
    if bad:
        raise ValueError(f"cv.folds_to_run has {bad}, but this {split.strategy} split has folds 0..{split.n_folds - 1}")
    engine, reason = choose_engine(options, model, recipe)
    if engine == "sequential" and options.engine == "auto":
        log.info("folds train one after another: %s", reason)
    # with several processes every one trains and scores every fold (the collectives must match); the first writes
    writer = process_rank() == 0
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    histories: list[dict[str, list[float]]] = []
    oof = OutOfFold(task)
    test_probs: list[torch.Tensor] = []
    external_probs: list[torch.Tensor] = []
    folds_per_repeat = split.n_folds // max(1, int(split.params.get("repeats") or 1))
    values = [datamodule.make_fold(number, seed=seed + number, stream=True) for number in numbers]
    if options.executor == "ray":
        outcomes = _on_ray(model, datamodule, recipe, run_dir, values, options, engine)
    elif engine == "parallel":
        outcomes = train_parallel(
            model, datamodule, recipe, run_dir, values, options.folds_per_pass, options.checkpoint
        )
    else:
        outcomes = _sequential(model, datamodule, recipe, run_dir, values, options.checkpoint)
    for fold, result in outcomes:
        assert fold.number is not None
        row = {"fold": fold.number, "repeat": fold.number // folds_per_repeat, **result.metrics}
        histories.append(result.history)
        if result.val is not None:
            # pooled OOF scores are stratified by twins in each sample's own fold's training part
            twin = None if data.near_clusters is None else twin_mask(data.near_clusters, fold.val, fold.train)
            probs, train_labels = result.val.probs.numpy(), data.labels[fold.train]
            oof.add(fold.val, probs, fold.number, row["repeat"], twin=twin, train_labels=train_labels)
        rows.append(row)
        if result.test is not None:
            test_probs.append(result.test.probs)
        if result.external is not None:
            external_probs.append(result.external.probs)
        log.info(fold_line(fold.number, row, seconds=engine == "sequential"))  # parallel folds share one pass

    summary = summarize(rows)
    summary.update(oof.pooled(data.labels))
    ensemble = torch.stack(test_probs).mean(0) if test_probs else None
    if ensemble is not None:
        targets = torch.as_tensor(data.labels[split.test], dtype=torch.int64)
        summary.update(ensemble_metrics(ensemble, targets, task, "test"))
        # the fold models together trained on the whole development set: the baseline fits it, and a test twin
        # anywhere in it counts
        twin = None if data.near_clusters is None else twin_mask(data.near_clusters, split.test, split.dev)
        majority = majority_target(data.labels[split.dev], task)
        summary.update(stage_scores("test", ensemble, targets, twin=twin, majority=majority, task=task))
        summary.update(interval_scores(ensemble, targets))
    if external_probs:
        averaged, labels = torch.stack(external_probs).mean(0), datamodule.external.labels
        summary.update(ensemble_metrics(averaged, torch.as_tensor(labels, dtype=torch.int64), task, "external"))
        official = official_metrics(labels, averaged.numpy(), task)
        summary.update({"external/official_acc": official.acc, "external/official_auc": official.auc})
    if options.refit:
        summary.update(_refit(model, datamodule, recipe, run_dir, seed))
    summary["run"] = {
        "task": task.kind.value,
        "strategy": split.strategy,
        "engine": engine,
        "executor": options.executor,
        "n_folds": split.n_folds,
        "folds_run": numbers,
        "n_dev": len(split.dev),
        "n_test": len(split.test),
        "seconds": time.perf_counter() - start,
    }
    outcome = CVResult(run_dir, summary, rows, histories)
    if not writer:
        return outcome
    write_csv(run_dir / "folds.csv", rows)
    oof.write(run_dir / "oof.csv", data)
    if ensemble is not None:
        predicted = None if task.multilabel else ensemble.argmax(1).numpy()
        write_predictions(run_dir / PREDICTIONS_FILE, split.test, data, predicted, probs=ensemble.numpy())
    for warning in summary_warnings(summary):
        log.warning("WARNING: %s", warning)
    write_json(run_dir / "summary.json", summary)
    write_root_trial(model, datamodule, recipe, outcome, options, seed=seed)
    return outcome


def write_root_trial(
    model: Any, datamodule: Any, recipe: TrainerRecipe, result: CVResult, options: CVOptions, *, seed: int
) -> None:
    """The run root's TensorBoard trial (settings and the scores of ``result.summary``) and mean curves."""
    hparams = trial_hparams(
        model.hparams,
        getattr(datamodule, "hparams", {}),
        recipe.kwargs,
        seed=seed,
        command="cv",
        cv=dataclasses.asdict(options),
    )
    write_cv_tensorboard(result.run_dir, result.histories, hparams, reported_scores(result.summary))


def _on_ray(
    model: Any,
    datamodule: Any,
    recipe: TrainerRecipe,
    run_dir: Path,
    folds: list[Fold],
    options: CVOptions,
    engine: str,
) -> Iterator[tuple[Fold, RunResult]]:
    """The folds as chunks of Ray tasks, each trained by ``engine`` as it would be here."""
    if process_rank() > 0 or several_devices(recipe.kwargs) or recipe.kwargs.get("num_nodes", 1) != 1:
        raise ValueError(
            "cv.executor ray trains each chunk of folds on one device: drop --trainer.devices/--trainer.num_nodes "
            "(and --trainer.strategy ddp), or use --cv.executor local"
        )
    if engine == "parallel":
        train: Any = functools.partial(train_parallel, per_pass=options.folds_per_pass)
        batch = folds[0].stream_batch_size or 1 if folds else 1
        per_pass = options.folds_per_pass or folds_per_pass(model, batch, len(folds), torch.device("cpu"))
    else:
        train, per_pass = _sequential, len(folds)
    # the tasks print nothing (their console is not this one): no bars
    quiet = TrainerRecipe({**recipe.kwargs, "enable_progress_bar": False}, recipe.callbacks)
    data_hparams = {k: v for k, v in datamodule.hparams.items() if not k.startswith("_")}
    job = ChunkJob(model, type(datamodule), data_hparams, quiet, run_dir.resolve(), train, options.checkpoint)
    ray_options = RayOptions(options.ray_address, options.cpus_per_chunk, options.gpus_per_chunk)
    yield from train_on_ray(job, datamodule, folds, ray_options, per_pass=per_pass, chunk=options.chunk_size)


def _refit(
    model: L.LightningModule, datamodule: Any, recipe: TrainerRecipe, run_dir: Path, seed: int
) -> dict[str, float]:
    """One model trained on all development data (no validation), scored on the test split."""
    fold = datamodule.refit_fold(seed)
    L.seed_everything(seed, workers=True, verbose=False)
    refit_model = fresh_model(model)
    trainer = recipe.build(run_dir / fold.name, monitor=None)
    result = fit_and_test(trainer, refit_model, datamodule.with_fold(fold), announce=False, audit=False, trial=False)
    log.info(
        "Refit on all %d development images: test acc %.2f %%",
        len(fold.train),
        100 * result.metrics.get("test/acc", math.nan),
    )
    return {f"refit/{k}": v for k, v in result.metrics.items() if k.startswith(("test/", "external/"))}


def loo_guard(n_dev: int, limit: int) -> str:
    """The LOO announcement line; raises if ``n_dev`` exceeds ``limit``.

    No time estimate is printed: measured on the 3,000-image sample, estimates from timing a few optimizer steps
    were 2–5 times the truth (Trainer set-up, checkpoints and scoring dominate small folds); the folds' real times
    are printed as they finish.

    Raises:
        ValueError: LOO on more than ``limit`` samples, with what to do instead.
    """
    line = f"leave-one-out: {n_dev} folds (one model per development sample)"
    if n_dev > limit:
        raise ValueError(
            f"{line}, more than the limit of {limit} samples (cv.loo_limit): use --data.subset N for a "
            "stratified, seeded subsample, k-fold (--data.split kfold), or raise --cv.loo_limit"
        )
    return line


def shared_run_dir(trainer: L.Trainer) -> Path:
    """The run root of a cv: the logger's directory, the same one in every process of a data-parallel run.

    Each fold has its own Trainer, so there is no process group yet when the root is chosen: the first process
    chooses it (the next free ``version_<n>``) and passes it on in :data:`RUN_DIR_VARIABLE`; a later process
    would otherwise see that version taken and choose the next one.
    """
    inherited = os.environ.get(RUN_DIR_VARIABLE)
    if inherited and process_rank() > 0:
        return Path(inherited)
    run_dir = Path(trainer.log_dir or trainer.default_root_dir)
    if trainer.world_size > 1:
        os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    return run_dir


def run_cv_cli(cli: Any, options: CVOptions) -> CVResult:
    """``medmnist-lit cv`` on an instantiated :class:`~medmnist_lit.lightning_cli.TrainingCLI`."""
    datamodule, template, trainer = cli.datamodule, cli.model, cli.trainer
    check_permutations(options.permutations)
    split = datamodule.split
    run_dir = shared_run_dir(trainer)
    trainer_config = cli.config_init.trainer.as_dict()
    recipe = TrainerRecipe(kwargs=trainer_config, callbacks=list(trainer_config.get("callbacks") or []))
    n_folds = split.n_folds if options.folds_to_run is None else len(options.folds_to_run)
    engine, _ = choose_engine(options, template, recipe)
    if split.strategy == "loo":
        log.info("%s (%s)", loo_guard(len(split.dev), options.loo_limit), engine)
    elif split.strategy == "logo" and split.n_folds > options.loo_limit:
        raise ValueError(
            f"leave-one-group-out: {split.n_folds} folds (one model per group; without --data.groups a group is a "
            f"near-duplicate cluster), more than the limit of {options.loo_limit} (cv.loo_limit): give subject "
            "groups with --data.groups FILE.csv, use --data.split group_kfold, or raise --cv.loo_limit"
        )
    else:
        log.info("%s: %d folds (%s)", split.strategy, n_folds, engine)
    writer = process_rank() == 0
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        audit_run(datamodule, run_dir)
        cli.parser.save(cli.config, run_dir / "config.yaml", skip_none=False, overwrite=True)
        datamodule.save_split(run_dir / "split.npz")
    seed = int(cli.config.get("seed_everything") or 0)
    result = cross_validate(template, datamodule, recipe, run_dir, options, seed=seed)
    test: PermutationTest | None = None
    if options.permutations:
        score = result.summary["val/acc"]["mean"]
        test = permutation_test(cross_validate, template, datamodule, recipe, run_dir, options, seed=seed, score=score)
        result.summary.update(test.summary())
        result.summary["run"]["permutation_seconds"] = test.seconds
        if writer:  # the permutation scores join the summary and the root's HParams row
            write_json(run_dir / "summary.json", result.summary)
            write_root_trial(template, datamodule, recipe, result, options, seed=seed)
    if not writer:
        return result
    subtitle = describe_run(template, datamodule, trainer_config.get("max_epochs"))
    write_cv_figures(run_dir, result.histories, result.folds, result.summary, subtitle=subtitle)
    log.info(format_summary(result.summary, note=datamodule.task.note))
    if test is not None:
        log.info(test.line())
        if warning := test.warning():
            log.warning("WARNING: %s", warning)
    log.info("run dir: %s", run_dir)
    return result
