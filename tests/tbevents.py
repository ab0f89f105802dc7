"""Read TensorBoard event files back, to check what a run logged; ask a TensorBoard server what it shows."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_events(run_dir: Path) -> EventAccumulator:
    """All events of the run directory (scalars, images, plugin data)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar in the run directory."""
    acc = load_events(run_dir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def plugin_tags(run_dir: Path, plugin: str) -> list[str]:
    """Tags written for a TensorBoard plugin (e.g. ``hparams``, ``custom_scalars``); none if it wrote nothing."""
    acc = load_events(run_dir)
    try:
        return list(acc.PluginTagToContent(plugin))
    except KeyError:  # no event of that plugin in the run
        return []


def runs(root: Path) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds an events file: TensorBoard's runs."""
    return sorted({path.parent for path in root.rglob("*tfevents*")})


def all_scalar_tags(root: Path) -> set[str]:
    """The scalar tags of every run under ``root``."""
    return {tag for run in runs(root) for tag in load_events(run).Tags()["scalars"]}


def margin_charts(run_dir: Path) -> dict[str, list[str]]:
    """``{chart title: [value, lower, upper]}`` of the Margin charts of the run's Custom Scalars layout."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = load_events(run_dir)
    charts: dict[str, list[str]] = {}
    for event in acc.Tensors("custom_scalars__config__"):
        layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
        for category in layout.category:
            for chart in category.chart:
                if chart.HasField("margin"):
                    series = chart.margin.series[0]
                    charts[chart.title] = [series.value, series.lower, series.upper]
    return charts


def tensorboard_hparams(logdir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What TensorBoard's HParams tab shows for ``logdir``: the experiment and its session groups.

    A TensorBoard server runs in this process on 127.0.0.1 (a free port), loads the directory once and answers
    the same HTTP calls as the browser's HParams tab.
    """
    from tensorboard import program

    board = program.TensorBoard()
    flags = ["--host", "127.0.0.1", "--port", "0", "--load_fast", "false"]
    board.configure(argv=[None, "--logdir", str(logdir), *flags, "--reload_task", "blocking", "--reload_interval", "0"])
    url = board.launch()

    def post(path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            url + "data/plugin/hparams/" + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    experiment = post("experiment", {"experimentName": ""})
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    groups = post(
        "session_groups",
        {"experimentName": "", "allowedStatuses": statuses, "colParams": [], "startIndex": 0, "sliceSize": 1000},
    )
    return experiment, groups["sessionGroups"]


def columns(experiment: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The HParams tab's hyperparameter and metric columns (metrics as ``group:tag``)."""
    hparams = {info["name"] for info in experiment["hparamInfos"]}
    metrics = {f"{m['name'].get('group', '')}:{m['name']['tag']}" for m in experiment["metricInfos"]}
    return hparams, metrics
