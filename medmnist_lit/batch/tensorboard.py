"""A batch as one TensorBoard HParams experiment: a column for every varied setting and every reported score.

Each run of a batch is a trial (``<batch>/<run>/summary/``, see :mod:`medmnist_lit.training.hparams`). Without an
experiment, TensorBoard would take its columns from whatever trials it finds; the batch root therefore holds one
explicit experiment (its own events file, replaced on every rewrite, so a resumed batch or ``medmnist-lit
report`` leaves exactly one) listing the hyperparameters whose values differ between the trials, plus ``seed`` and
``trainer.max_epochs``, and every score any trial reports. The metrics have group ``""``: their values are read
from each trial's own run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmnist_lit.training.hparams import HParamValue, read_trial, replace_events

__all__ = ["ALWAYS_SHOWN", "experiment_columns", "write_batch_experiment"]

log = logging.getLogger("medmnist_lit")

#: Hyperparameters shown even when every trial has the same value.
ALWAYS_SHOWN = ("seed", "trainer.max_epochs")


def experiment_columns(
    trials: Sequence[tuple[Mapping[str, HParamValue], Mapping[str, float]]],
) -> tuple[dict[str, list[HParamValue]], list[str]]:
    """``({hparam: its distinct values}, [score tags])`` of the experiment over ``trials``.

    An hyperparameter is a column when its value differs between trials (a trial without it counts as a value of
    its own) or it is one of :data:`ALWAYS_SHOWN`; scores are the union of every trial's, sorted.
    """
    names = sorted({name for hparams, _ in trials for name in hparams})
    columns: dict[str, list[HParamValue]] = {}
    for name in names:
        values = [hparams.get(name) for hparams, _ in trials]
        distinct = list(dict.fromkeys(values))
        if len(distinct) > 1 or name in ALWAYS_SHOWN:
            columns[name] = [v for v in distinct if v is not None]
    scores = sorted({tag for _, metrics in trials for tag in metrics})
    return columns, scores


def _hparam(name: str, values: list[HParamValue]) -> Any:
    from tensorboard.plugins.hparams import summary_v2

    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    if len(kinds) != 1:  # mixed types: no domain, so TensorBoard filters none of them out
        return summary_v2.HParam(name)
    if kinds == {float}:
        return summary_v2.HParam(name, summary_v2.Discrete(sorted(float(v) for v in values)))
    return summary_v2.HParam(name, summary_v2.Discrete(sorted(values, key=str)))


def write_batch_experiment(directory: str | Path, records: Sequence[Mapping[str, Any] | None]) -> Path | None:
    """Write the batch's experiment at ``directory`` from the trials of its recorded runs.

    Args:
        directory: The batch directory (``batch.json``, one directory per run).
        records: The runs' records (``record.json``; ``None`` for runs not recorded yet), as
            :func:`medmnist_lit.batch.report.load` returns them.

    Returns:
        The experiment's events file, or ``None`` when no run has a trial yet.
    """
    from tensorboard.plugins.hparams import summary_v2

    directory = Path(directory)
    trials = []
    for record in records:
        if not record or not record.get("name"):
            continue
        trial = read_trial(directory / str(record["name"]))
        if trial is not None:
            trials.append(trial)
    if not trials:
        return None
    columns, scores = experiment_columns(trials)
    experiment = summary_v2.hparams_config_pb(
        hparams=[_hparam(name, values) for name, values in columns.items()],
        metrics=[summary_v2.Metric(tag, group="") for tag in scores],
    )
    path = replace_events(directory, "experiment", [(0, experiment)])
    log.debug("HParams experiment of %d trials: %d columns, %d scores", len(trials), len(columns), len(scores))
    return path
