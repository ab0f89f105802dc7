"""A run as one trial of TensorBoard's HParams tab: curated hyperparameters next to the numbers the run reported.

A trial is the sub-run ``<run_dir>/summary/``: one events file holding the session (the hyperparameters, no
experiment) and the run's reported scores as scalars under the names a fit uses (``val/acc``, ``test/acc``,
``external/acc`` ...). TensorBoard builds its metric columns from the scalar tags of each session's run, so the
columns are exactly the reported scores, and no ``hp/*`` charts appear. A ``fit`` run is one trial; a
cross-validation run is one trial at its root (its folds are not trials); a batch adds one experiment at its root.

Hyperparameter names are those of the command line: ``model.head``, ``optimizer`` (the class name) with its
arguments as ``optimizer.lr``, ``optimizer.betas`` (``--optimizer Adam --optimizer.lr 0.01``), ``lr_scheduler``
likewise, ``data.batch_size``, ``trainer.max_epochs``, ``cv.refit`` and ``seed`` (``seed_everything``). Values keep
their type (booleans stay booleans); lists and tuples are shown as text (``[0.9, 0.999]``), as is
``data.batch_size`` (``64`` or ``full``: one type per column); paths are shown by their last component. A setting
that is ``None`` or does not apply (an MLP's widths for a logistic head) is left out: the cell stays empty.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.record_writer import RecordWriter

from medmnist_lit.model.classifier import DEFAULT_OPTIMIZER
from medmnist_lit.utils.files import atomic_path

__all__ = [
    "SUMMARY_RUN",
    "HParamValue",
    "read_trial",
    "replace_events",
    "run_scores",
    "scalar_summary",
    "trainer_settings",
    "trial_hparams",
    "write_trial",
]

HParamValue = bool | float | int | str

#: The sub-run of a run directory that holds its trial.
SUMMARY_RUN = "summary"
#: Optimizer and scheduler arguments that choose an implementation or resume state, not the result.
IMPLEMENTATION_ARGS = frozenset({"foreach", "fused", "capturable", "differentiable", "verbose", "last_epoch"})
#: Model settings that only an MLP head has.
MLP_KEYS = ("hidden_sizes", "activation", "dropout", "batch_norm")
#: Data settings that change what is trained or scored (not where the cache lives or how fast it is evaluated).
DATA_KEYS = (
    "source",
    "test_source",
    "channels",
    "image_size",
    "subset",
    "split",
    "split_file",
    "fold",
    "folds",
    "repeats",
    "test_fraction",
    "val_fraction",
    "train_fraction",
    "stratify",
    "groups",
    "group_by",
    "seed",
    "batch_size",
    "sampling",
    "drop_last",
    "standardize",
)
_PATH_KEYS = frozenset({"source", "test_source", "split_file", "groups"})
#: Trainer settings shown only when they differ from Lightning's defaults (``max_epochs`` is always shown).
_TRAINER_DEFAULTS: dict[str, Any] = {
    "max_steps": -1,
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "precision": "32-true",
}
# per-class accuracies (val/acc_3, val/acc_HeadCT) and per-label AUROCs stay in metrics.json (not the intervals)
_PER_CLASS = re.compile(r"/acc_|/auroc_(?!boot95_)")


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value(value: Any) -> HParamValue | None:
    """A value as TensorBoard shows it: bool, number or text; ``None`` stays ``None`` (left out)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    return _text(value)


def _component(config: Mapping[str, Any] | None, name: str) -> dict[str, Any]:
    """``optimizer`` → its class name, ``optimizer.<arg>`` → each argument that decides the result."""
    if not config:
        return {}
    params: dict[str, Any] = {name: str(config.get("class_path", "")).rsplit(".", 1)[-1]}
    for key, value in (config.get("init_args") or {}).items():
        if key not in IMPLEMENTATION_ARGS:
            params[f"{name}.{key}"] = value
    return params


def _model(model: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"model.head": model.get("head")}
    if model.get("head") == "mlp":
        params.update({f"model.{key}": model.get(key) for key in MLP_KEYS})
    params["model.label_smoothing"] = model.get("label_smoothing")
    params["model.class_weights"] = model.get("class_weights")
    params.update(_component(model.get("optimizer") or DEFAULT_OPTIMIZER, "optimizer"))
    scheduler = model.get("lr_scheduler")
    params.update(_component(scheduler, "lr_scheduler"))
    if scheduler:
        params["model.lr_scheduler_interval"] = model.get("lr_scheduler_interval")
        if str(scheduler.get("class_path", "")).endswith("ReduceLROnPlateau"):
            params["model.monitor"] = model.get("monitor")
    return params


def _data(data: Mapping[str, Any], command: str) -> dict[str, Any]:
    split = data.get("split")
    skip = set()
    if split not in ("kfold", "group_kfold"):
        skip |= {"folds", "repeats"}
    elif split == "group_kfold":
        skip.add("repeats")
    if split != "holdout":
        skip.add("val_fraction")
    if split == "predefined":
        skip.add("test_fraction")
    if command != "fit" or split in ("holdout", "predefined"):
        skip.add("fold")  # a cv run trains every fold; a single-fold split has only fold 0
    params: dict[str, Any] = {}
    for key in DATA_KEYS:
        if key in skip or key not in data:
            continue
        value = data[key]
        if key in _PATH_KEYS and value is not None:
            value = Path(str(value)).name
        elif key == "batch_size":
            value = str(value)  # an int or "full": one type per column
        params[f"data.{key}"] = value
    if "source" in data and data["source"] is None:
        params["data.source"] = "digits (demo)"
    return params


def trainer_settings(trainer: Any) -> dict[str, Any]:
    """The Trainer settings a trial shows, read from a Trainer's public attributes."""
    algorithm = getattr(trainer, "gradient_clip_algorithm", None)
    return {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "gradient_clip_algorithm": getattr(algorithm, "value", algorithm),
        "precision": trainer.precision,
    }


def _trainer(settings: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"trainer.max_epochs": settings.get("max_epochs")}
    for key, default in _TRAINER_DEFAULTS.items():
        value = settings.get(key)
        if value is not None and str(value) != str(default):
            params[f"trainer.{key}"] = value
    if settings.get("gradient_clip_val") is not None:
        params["trainer.gradient_clip_algorithm"] = settings.get("gradient_clip_algorithm") or "norm"
    return params


def trial_hparams(
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    trainer: Mapping[str, Any],
    *,
    seed: int | None,
    command: str = "fit",
    cv: Mapping[str, Any] | None = None,
) -> dict[str, HParamValue]:
    """The curated, flat hyperparameters of one trial (see the module docstring for the names and values).

    Args:
        model: The model's hyperparameters (``Classifier.hparams``).
        data: The DataModule's hyperparameters.
        trainer: Trainer settings (:func:`trainer_settings`, or the ``trainer`` section of a config).
        seed: The ``seed_everything`` value (``None``: not seeded, left out).
        command: ``fit`` or ``cv`` (a cv run has no ``data.fold``; it has the ``cv.*`` options).
        cv: The cv options (``checkpoint``, ``refit``, ``folds_to_run``).
    """
    params = {**_model(model), **_data(data, command), **_trainer(trainer)}
    if command == "cv" and cv is not None:
        params.update({f"cv.{key}": cv.get(key) for key in ("checkpoint", "refit", "folds_to_run")})
    params["seed"] = seed
    return {key: value for key, value in ((k, _value(v)) for k, v in params.items()) if value is not None}


def run_scores(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scores a run reports (``<stage>/<metric>`` of ``metrics.json``), without per-class accuracies or NaN."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if "/" in key
        and not _PER_CLASS.search(key)
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


# ------------------------------------------------------------------------------------------- events files
def scalar_summary(values: Mapping[str, float]) -> Summary:
    """A summary of plain scalars (what ``SummaryWriter.add_scalar`` writes)."""
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(v)) for tag, v in values.items()])


def replace_events(directory: Path, kind: str, summaries: Iterable[tuple[int, Summary]]) -> Path:
    """Write one events file of ``(step, summary)`` records into ``directory``, replacing earlier ones of ``kind``.

    The file is written atomically (TensorBoard never reads half of it) and is then the only events file of
    ``kind`` there, so rewriting (a resumed batch, ``report``) never leaves two trials or two experiments.
    """
    now = time.time()
    path = directory / f"events.out.tfevents.{time.time_ns()}.{socket.gethostname()}.{kind}"
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        writer = RecordWriter(handle)
        writer.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        for step, summary in summaries:
            writer.write(Event(wall_time=now, step=step, summary=summary).SerializeToString())
    for old in directory.glob(f"events.out.tfevents.*.{kind}"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def write_trial(run_dir: Path, hparams: Mapping[str, HParamValue], scores: Mapping[str, float], *, step: int) -> Path:
    """Write the trial of ``run_dir`` into ``<run_dir>/summary/``: the session and the scores at ``step``.

    ``step`` is where the scores sit on the run's own curves (the x-axis of epoch metrics is the 0-based epoch).
    """
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

    start = summary_v2.hparams_pb(dict(hparams), trial_id=os.fspath(run_dir))
    end_info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    end = Summary(
        value=[
            Summary.Value(
                tag=metadata.SESSION_END_INFO_TAG,
                metadata=metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end_info)),
                tensor=metadata.NULL_TENSOR,
            )
        ]
    )
    directory = run_dir / SUMMARY_RUN
    directory.mkdir(parents=True, exist_ok=True)
    return replace_events(directory, "trial", [(0, start), (max(step, 0), scalar_summary(scores)), (0, end)])


def read_trial(run_dir: Path) -> tuple[dict[str, HParamValue], dict[str, float]] | None:
    """The hyperparameters and scores of the trial of ``run_dir`` (``None`` if it has none)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.plugins.hparams import metadata

    files = sorted((run_dir / SUMMARY_RUN).glob("events.out.tfevents.*"))
    if not files:
        return None
    hparams: dict[str, HParamValue] = {}
    scores: dict[str, float] = {}
    for path in files:
        for event in LegacyEventFileLoader(os.fspath(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scores[value.tag] = value.simple_value
                elif value.tag == metadata.SESSION_START_INFO_TAG:
                    info = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                    hparams = {name: getattr(v, v.WhichOneof("kind")) for name, v in info.hparams.items()}
    return hparams, scores
