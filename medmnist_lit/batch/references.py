"""Published reference scores shown beside a batch's own: the ``references:`` block of a spec.

A spec may cite published numbers for the values one varied key takes, e.g. a paper's test ACC and AUC per
dataset (``data.source``)::

    references:                                                   # in the spec, beside runs: and grid:
      citation: "Yang et al., MedMNIST v2, Scientific Data 10:41 (2023), Table 3, ResNet-18 (28)"
      key: data.source                                            # a key the spec varies
      metrics: {ACC: test/official_acc, AUC: test/official_auc}   # label → our metric (this is the default)
      values:
        "medmnist:pathmnist": {ACC: 0.907, AUC: 0.983}

The per-variant table then has a ``ref ACC`` column right after ``test/official_acc`` (and ``ref AUC`` after
``test/official_auc``), and ``results.md`` names the citation under it, so published numbers are never mistaken
for ours. Everything is checked when the spec is loaded (``batch --dry-run`` already refuses a bad block): an
unknown key, a key the spec does not vary, a value no run has, an unknown label, a score that is not a number
in [0, 1] — each is one line naming the spec file, the key and the value.

The report takes the block from ``batch.json`` when it is there, else from the spec file the batch was made from.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BLOCK_KEYS", "DEFAULT_METRICS", "References", "for_batch", "parse_references"]

log = logging.getLogger("medmnist_lit")

#: Keys of a ``references:`` block.
BLOCK_KEYS = ("citation", "key", "metrics", "values")
#: Labels of the published scores → the metric each is shown next to (MedMNIST's official ACC and AUC).
DEFAULT_METRICS = {"ACC": "test/official_acc", "AUC": "test/official_auc"}
_PREFIX = "ref "
_COUNT_COLUMN = "n_train"  # our metric columns that a variant table lacks go just before its counts


def value_text(value: Any) -> str:
    """A varied value as the tables show it (``display`` in :mod:`.spec`, for the scalars a reference is keyed by)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class References:
    """A validated ``references:`` block.

    Attributes:
        citation: Where the numbers come from (shown under the table).
        key: The varied dotted key whose values the numbers are for (``data.source``).
        metrics: Label (``ACC``) → our metric key it is shown next to (``test/official_acc``).
        values: Value of ``key`` as the tables show it → label → published score.
    """

    citation: str
    key: str
    metrics: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_METRICS))
    values: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The block as ``batch.json`` can hold it (read back by :func:`for_batch`)."""
        return {"citation": self.citation, "key": self.key, "metrics": self.metrics, "values": self.values}

    def columns(self) -> list[str]:
        """The column of each label: ``ref ACC``, ``ref AUC``."""
        return [_PREFIX + label for label in self.metrics]

    def add_columns(
        self,
        columns: list[str],
        rows: list[dict[str, Any]],
        batch: Mapping[str, Any],
        records: Sequence[Mapping[str, Any] | None],
        summary: Callable[[list[float]], str],
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The variant table with each ``ref LABEL`` column right after our metric of that label.

        Our metric is added (before the counts) where the table lacks it, summarised over the variant's finished
        runs as the table summarises the others; a variant whose value has no published score gets ``None``.

        Args:
            columns: The table's columns.
            rows: One per variant, with ``variant`` and the value of :attr:`key` as the tables show it.
            batch: ``batch.json`` (its runs, in the order of ``records``).
            records: Each run's record (``None`` for runs not recorded yet).
            summary: How the table summarises a metric over seeds (``mean ± std``).
        """
        ours: dict[str, list[Mapping[str, float]]] = {}
        for run, record in zip(batch["runs"], records, strict=True):
            if record and record.get("status") == "ok":
                ours.setdefault(run["variant"], []).append(record.get("metrics") or {})
        columns = list(columns)
        for label, metric in self.metrics.items():
            if metric not in columns:
                columns.insert(columns.index(_COUNT_COLUMN) if _COUNT_COLUMN in columns else len(columns), metric)
                for row in rows:
                    row[metric] = summary([m[metric] for m in ours.get(row["variant"], []) if metric in m])
            columns.insert(columns.index(metric) + 1, _PREFIX + label)
            for row in rows:
                score = self.values.get(str(row.get(self.key, "")), {}).get(label)
                row[_PREFIX + label] = None if score is None else value_text(score)  # as published: 0.907
        return columns, rows

    def lines(self) -> list[str]:
        """Markdown under the variant table: which columns are published, and where they come from."""
        labels = ", ".join(f"`{c}`" for c in self.columns())
        return [
            f"{labels}: published numbers, not computed by this batch (matched by `{self.key}`; – where none is "
            f"published): {self.citation}",
            "",
        ]


def _fail(path: Path | str, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _score(value: Any, path: Path | str, where: str) -> float:
    """A published score: a finite number in [0, 1] (a fraction, not a percentage)."""
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not 0 <= number <= 1:
        raise _fail(path, f"{where} must be a number in [0, 1] (a fraction: 0.907, not 90.7), got {value!r}")
    return float(number)


def parse_references(block: Any, path: Path | str, run_values: Mapping[str, Sequence[str]]) -> References | None:
    """Validate a spec's ``references:`` block against the values its runs take.

    Args:
        block: The block as read from YAML (``None``: no references).
        path: The spec file (named in every error).
        run_values: Each varied key → the values its runs take, as the tables show them.

    Raises:
        ValueError: One line naming the spec file, the key and the value at fault.
    """
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise _fail(path, f"references must be a mapping with {', '.join(BLOCK_KEYS)}, got {block!r}")
    unknown = [k for k in block if k not in BLOCK_KEYS]
    if unknown:
        raise _fail(path, f"unknown references key {unknown[0]!r} (allowed: {', '.join(BLOCK_KEYS)})")
    citation = block.get("citation")
    if not isinstance(citation, str) or not citation.strip():
        raise _fail(path, f"references.citation must name the source of the numbers, got {citation!r}")
    key = block.get("key")
    if not isinstance(key, str) or key not in run_values:
        varied = ", ".join(run_values) or "none"
        raise _fail(path, f"references.key {key!r} is not a key the spec varies (varied: {varied})")
    metrics = block.get("metrics", DEFAULT_METRICS)
    if (
        not isinstance(metrics, Mapping)
        or not metrics
        or not all(isinstance(k, str) and isinstance(v, str) and "/" in v for k, v in metrics.items())
    ):
        raise _fail(path, f"references.metrics must map labels to metric keys like test/official_acc, got {metrics!r}")
    values = block.get("values")
    if not isinstance(values, Mapping) or not values:
        raise _fail(path, f"references.values must map each value of {key} to its scores, got {values!r}")
    known = set(run_values[key])
    parsed: dict[str, dict[str, float]] = {}
    for value, scores in values.items():
        text = value_text(value)
        if text not in known:
            have = ", ".join(sorted(known))
            raise _fail(path, f"references.values has {text!r}, which no run has as {key} (runs have: {have})")
        if not isinstance(scores, Mapping) or not scores:
            raise _fail(path, f"references.values[{text!r}] must map labels ({', '.join(metrics)}) to scores")
        for label in scores:
            if label not in metrics:
                raise _fail(
                    path,
                    f"references.values[{text!r}] has unknown label {label!r} (references.metrics: "
                    f"{', '.join(metrics)})",
                )
        parsed[text] = {
            label: _score(score, path, f"references.values[{text!r}].{label}") for label, score in scores.items()
        }
    return References(citation.strip(), key, dict(metrics), parsed)


def _batch_values(batch: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each varied key → the values its runs take, from ``batch.json``'s per-run settings."""
    out: dict[str, list[str]] = {}
    for key in batch.get("varied_keys", []):
        out[key] = sorted({str((run.get("settings") or {}).get(key, "")) for run in batch.get("runs", [])})
    return out


def for_batch(batch: Mapping[str, Any]) -> References | None:
    """The references of a batch: ``batch.json``'s block, else the spec file's (``None`` when neither has one).

    The report never fails for them: a spec file that moved, or that no longer validates against the batch's
    runs, is named in a warning and the table has no reference columns.
    """
    from medmnist_lit.utils.config_files import load_yaml

    values = _batch_values(batch)
    if batch.get("references") is not None:
        return parse_references(batch["references"], "batch.json", values)
    if "references" in batch:  # written by this version: the spec had no block
        return None
    spec = Path(str(batch.get("spec", "")))
    if not spec.is_file():
        return None
    try:
        loaded = load_yaml(spec, what="batch spec")
        block = loaded.get("references") if isinstance(loaded, Mapping) else None
        return parse_references(block, spec, values)
    except ValueError as err:
        log.warning("no published references in the tables: %s", err)
        return None
