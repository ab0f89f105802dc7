"""Read TensorBoard event files back, to check what a run logged."""

from __future__ import annotations

from pathlib import Path

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
    """Tags written for a TensorBoard plugin (e.g. ``hparams``, ``custom_scalars``)."""
    acc = load_events(run_dir)
    return list(acc.PluginTagToContent(plugin))
