"""The run job: one ``fit`` or ``cv`` from a resolved config, self-contained, picklable, returning its record.

A :class:`RunJob` is plain data — the config (as the ``fit``/``cv`` parser takes it), the split file, the fold
selection, the seed and the directory it owns — and :func:`run_job` turns it into a record: status, final
metrics, per-epoch curves, wall time, and the error with its traceback when it failed. The ``fit`` and ``cv``
commands, the batch runner (in this process or in its workers) and the Python API all run through it, so a job
can be shipped to another process or machine as it is: it reads nothing from the process that made it.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import math
import re
import shutil
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmnist_lit.utils.console import console_to
from medmnist_lit.utils.dotted import set_dotted
from medmnist_lit.utils.files import write_json

__all__ = ["HISTORY_KEYS", "INTERRUPTED", "RECORD", "RunJob", "run_job"]

log = logging.getLogger("medmnist_lit")

#: File a job with a run directory writes its record to (atomically, when the run ends).
RECORD = "record.json"
#: Where a quiet job's console output goes, inside its run directory.
CONSOLE = "console.log"
#: Per-epoch curves kept in a record (fit: the run's history; cv: the mean over folds of each fold's history).
HISTORY_KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")
#: Set by a SIGINT handler (the batch's): Lightning's ``sys.exit(1)`` after Ctrl-C is an interruption, not a failure.
INTERRUPTED = threading.Event()
#: Per-class and per-label scores (val/acc_3, val/acc_HeadCT, test/auroc_Effusion), not the AUROC's intervals.
_PER_CLASS = re.compile(r"/acc_|/auroc_(?!boot95_)")


@dataclass(frozen=True)
class RunJob:
    """One ``fit`` or ``cv`` run, as plain picklable data.

    Attributes:
        command: ``"fit"`` or ``"cv"``.
        config: The command's config (``trainer``, ``model``, ``data``, ``optimizer``, ``lr_scheduler``, ``cv``
            ...), as a mapping of plain values.
        run_dir: Directory the job owns: wiped first (a restart equals an uninterrupted run), TensorBoard
            logs, checkpoints and ``record.json`` go there. ``None``: the config's logger decides (``fit`` on the
            command line: ``lightning_logs/<name>/version_<n>``) and no record file is written.
        seed: Sets ``seed_everything`` and ``data.seed`` (weights, batch order and split).
        split_file: A saved ``split.npz`` that fixes the split (``data.split_file``).
        folds: Fold selection: ``fit`` trains the one fold given (``data.fold``); ``cv`` runs these folds
            (``cv.folds_to_run``). ``None``: the config's.
        quiet: No progress bar, and the console goes to ``<run_dir>/console.log`` (for worker processes).
        labels: Extra fields copied into the record (a batch's run name, variant, config hash ...).
    """

    command: str
    config: Mapping[str, Any]
    run_dir: str | None = None
    seed: int | None = None
    split_file: str | None = None
    folds: tuple[int, ...] | None = None
    quiet: bool = False
    labels: Mapping[str, Any] = field(default_factory=dict)

    def resolved_config(self) -> dict[str, Any]:
        """The config the command runs: :attr:`config` with the seed, split, folds and run directory applied."""
        if self.command not in ("fit", "cv"):
            raise ValueError(f"a run job's command is fit or cv, got {self.command!r}")
        config = copy.deepcopy(dict(self.config))
        if self.seed is not None:
            config["seed_everything"] = self.seed
            set_dotted(config, "data.seed", self.seed)
        if self.split_file is not None:
            set_dotted(config, "data.split_file", self.split_file)
        if self.folds is not None:
            if self.command == "fit":
                if len(self.folds) != 1:
                    raise ValueError(f"a fit job trains one fold; got folds={list(self.folds)} (use a cv job)")
                set_dotted(config, "data.fold", self.folds[0])
            else:
                set_dotted(config, "cv.folds_to_run", list(self.folds))
        if self.run_dir is not None:
            path = Path(self.run_dir)
            logger = {"save_dir": str(path.parent), "name": "", "version": path.name, "default_hp_metric": False}
            set_dotted(
                config,
                "trainer.logger",
                {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": logger},
            )
        if self.quiet:
            set_dotted(config, "trainer.enable_progress_bar", False)
        return config


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _failure(err: BaseException) -> dict[str, Any]:
    message = f"{type(err).__name__}: {err}".strip()
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip("\n")
    return {"status": "failed", "error": message, "traceback": text}


def _mean_curves(histories: list[Mapping[str, list[float]]]) -> dict[str, list[float]]:
    """Per-epoch mean over folds; an epoch's mean covers the folds that reached it (early stopping)."""
    curves: dict[str, list[float]] = {}
    for key in HISTORY_KEYS:
        series = [list(h[key]) for h in histories if key in h]
        if series:
            length = max(len(s) for s in series)
            curves[key] = [math.fsum(v) / len(v) for v in ([s[i] for s in series if i < len(s)] for i in range(length))]
    return curves


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    # per-class accuracies stay in the run directory; records keep what the tables show
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not _PER_CLASS.search(k)}


def cv_metrics(summary: dict[str, Any], folds: list[dict[str, Any]]) -> dict[str, float]:
    """Fold means (``val/acc``) and spreads (``val/acc_std``), ensemble/OOF scores, mean sizes of a cv run."""
    metrics: dict[str, float] = {}
    for key, value in summary.items():
        if key == "run" or _PER_CLASS.search(key):
            continue
        if isinstance(value, dict) and "mean" in value:
            metrics[key], metrics[f"{key}_std"] = float(value["mean"]), float(value["std"])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[key] = float(value)
    for key in ("n_train", "n_val", "n_test", "epochs"):
        values = [float(f[key]) for f in folds if key in f]
        if values:
            metrics[key] = sum(values) / len(values)
    metrics["n_folds"] = float(len(folds))
    return metrics


def _execute(command: str, config: dict[str, Any]) -> dict[str, Any]:
    from medmnist_lit.lightning_cli import build_cli, run_cv
    from medmnist_lit.training.fit import fit_and_test

    if command == "fit":
        # lightning_cli.run_fit, keeping the DataModule: the record names the data's task (the batch report's note)
        cli = build_cli("fit", config)
        result = fit_and_test(cli.trainer, cli.model, cli.datamodule, ckpt_path=cli.config.get("ckpt_path"))
        history = {k: [float(v) for v in result.history[k]] for k in HISTORY_KEYS if k in result.history}
        return {
            "status": "ok",
            "task": cli.datamodule.task.kind.value,
            "metrics": scalars(result.metrics),
            "history": history,
            "run_dir": str(result.run_dir),
        }
    cv = run_cv(config)
    return {
        "status": "ok",
        "task": cv.summary["run"].get("task"),
        "metrics": cv_metrics(cv.summary, cv.folds),
        "history": _mean_curves(cv.histories),
        "run_dir": str(cv.run_dir),
    }


def run_job(job: RunJob, *, record_failures: bool = True, write_record: bool = True) -> dict[str, Any]:
    """Run ``job`` and return its record; with a run directory, also write ``record.json`` there atomically.

    ``write_record=False`` leaves the file to the caller (a batch process, the single writer of its records).

    A run that raises is recorded as ``failed`` (error and traceback) instead of raising, unless
    ``record_failures`` is false (the command line: the error is reported and nothing is recorded). Ctrl-C
    (``KeyboardInterrupt``, or Lightning's ``sys.exit`` after one, see :data:`INTERRUPTED`) propagates and writes
    no record: the run counts as interrupted.
    """
    record: dict[str, Any] = {**job.labels, "command": job.command, "seed": job.seed}
    config = job.resolved_config()
    record["config"] = config
    run_dir = Path(job.run_dir) if job.run_dir is not None else None
    if run_dir is not None:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # leftovers of an interrupted or retried attempt would mix into this one
        run_dir.mkdir(parents=True)
    started = time.perf_counter()
    quiet = job.quiet and run_dir is not None
    with console_to(run_dir / CONSOLE) if quiet and run_dir is not None else contextlib.nullcontext():
        try:
            record.update(_execute(job.command, config))
        except SystemExit as err:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt from None
            if not record_failures:
                raise
            record.update(_failure(err))
        except Exception as err:
            if not record_failures:
                raise
            record.update(_failure(err))
        if record["status"] == "failed" and quiet:  # into the run's console.log; the caller prints one line
            log.error("run failed:\n%s", record["traceback"])
    record.update(seconds=time.perf_counter() - started, finished=_now())
    if run_dir is not None and write_record:
        write_json(run_dir / RECORD, record)
    return record
